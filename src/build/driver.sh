#!/bin/sh
# Runs inside the build container: the Heroku buildpack API v2, in order.
#   driver.sh BUILD CACHE ENV META BUILDPACK...
# With MAGRATHEA_DETECT=1 the first buildpack whose bin/detect matches is used alone;
# otherwise every buildpack given runs (multi-buildpack), each one's bin/export sourced
# before the next, as Heroku does. Release YAML goes to META, never into the slug.
set -u
BUILD=$1 CACHE=$2 ENVD=$3 META=$4
shift 4

name_of() { basename "$1"; }

# Wall time of the buildpack scripts (detect, compile, release), printed at the end so a
# build's own time can be told apart from the platform's. /proc/uptime: busybox `date` has
# no %N, and centiseconds are enough.
now_cs() { read -r up _ </proc/uptime; echo $((${up%.*} * 100 + 1${up#*.} - 100)); }
T0=$(now_cs)

if [ "${MAGRATHEA_DETECT:-0}" = 1 ]; then
    chosen=""
    for bp in "$@"; do
        if name=$("$bp/bin/detect" "$BUILD" 2>/dev/null); then
            chosen=$bp
            break
        fi
    done
    if [ -z "$chosen" ]; then
        tried=""
        for bp in "$@"; do tried="$tried $(name_of "$bp")"; done
        echo " !     no buildpack matched this app; tried:$tried" >&2
        echo " !     add a Procfile, or name buildpacks in magrathea.yml or .buildpacks" >&2
        exit 3
    fi
    set -- "$chosen"
    echo "-----> ${name:-$(name_of "$chosen")} app detected"
fi

i=0
for bp in "$@"; do
    i=$((i + 1))
    if [ ! -f "$bp/bin/compile" ]; then
        echo " !     buildpack $(name_of "$bp") has no bin/compile" >&2
        exit 4
    fi
    name=$(sh "$bp/bin/detect" "$BUILD" 2>/dev/null | head -n 1) || true
    [ -n "$name" ] || name=$(name_of "$bp")
    [ "$#" -gt 1 ] && echo "-----> Buildpack $i/$#: $name"
    echo "$name" >>"$META/buildpacks"
    if ! sh "$bp/bin/compile" "$BUILD" "$CACHE" "$ENVD"; then
        echo " !     Push rejected, failed to compile $name app" >&2
        exit 1
    fi
    if [ -f "$bp/bin/release" ]; then
        if ! sh "$bp/bin/release" "$BUILD" >"$META/release-$i.yml"; then
            echo " !     bin/release of $name failed" >&2
            exit 1
        fi
    fi
    if [ -f "$bp/export" ]; then
        # shellcheck disable=SC1090,SC1091
        . "$bp/export"
    fi
done
d=$(($(now_cs) - T0))
printf -- '-----> buildpacks took %d.%02ds\n' $((d / 100)) $((d % 100))
exit 0
