#!/bin/sh
# Runs inside the build container: Heroku's classic buildpack API (v2), in order.
#   driver.sh MODE BUILD_DIR CACHE_DIR ENV_DIR META BUILDPACK_DIR...
# MODE detect: the first buildpack whose bin/detect passes is used alone (auto-detection).
# MODE list: every buildpack given runs in that order, and each must pass its bin/detect,
# as on Heroku. bin/detect, bin/compile and bin/release are executed (their own shebang);
# a script that lost its exec bit is run with bash, with a warning. Each buildpack's
# `export` file (at its root, where Heroku's multi-buildpack docs put it; `bin/export` too)
# is sourced by bash before the next buildpack runs. bin/release YAML goes to META, never
# into the slug.
#
# Re-run under bash when the stack has it: `export` files are bash. The tiny stack has
# only busybox sh; its buildpacks are POSIX sh.
if [ -z "${BASH_VERSION:-}" ] && command -v bash >/dev/null 2>&1; then
    exec bash "$0" "$@"
fi
set -u
# Names start with _mg_: `export` files are sourced into this shell and must not clobber
# the driver's own state by accident.
_mg_mode=$1 _mg_build=$2 _mg_cache=$3 _mg_env=$4 _mg_meta=$5
shift 5
if command -v bash >/dev/null 2>&1; then _mg_shell=bash; else _mg_shell=sh; fi

_mg_name_of() { basename "$1"; }

# _mg_run BUILDPACK SCRIPT ARGS...: run bin/SCRIPT as an executable, or with the shell when
# its exec bit is missing (a zip download or a Windows checkout loses it).
_mg_run() {
    _mg_f=$1/bin/$2
    shift 2
    if [ "$_mg_shell" != bash ]; then
        case "$(head -n 1 "$_mg_f" 2>/dev/null)" in
            '#!'*bash*)
                echo " !     $_mg_f needs bash, which stack ${STACK:-?} does not have; build on a stack with bash (stack: bookworm in magrathea.yml)" >&2
                return 127
                ;;
        esac
    fi
    if [ -x "$_mg_f" ]; then
        "$_mg_f" "$@"
    else
        echo " !     $_mg_f is not executable; running it with $_mg_shell" >&2
        "$_mg_shell" "$_mg_f" "$@"
    fi
}

# Wall time of the buildpack scripts (detect, compile, release), printed at the end so a
# build's own time can be told apart from the platform's. /proc/uptime: busybox `date` has
# no %N, and centiseconds are enough.
_mg_now() { read -r _mg_up _ </proc/uptime; echo $((${_mg_up%.*} * 100 + 1${_mg_up#*.} - 100)); }
_mg_t0=$(_mg_now)

cd "$_mg_build" || exit 1

if [ "$_mg_mode" = detect ]; then
    _mg_chosen=""
    for _mg_bp in "$@"; do
        if [ -f "$_mg_bp/bin/detect" ] && _mg_name=$(_mg_run "$_mg_bp" detect "$_mg_build" 2>/dev/null); then
            _mg_chosen=$_mg_bp
            break
        fi
    done
    if [ -z "$_mg_chosen" ]; then
        _mg_tried=""
        for _mg_bp in "$@"; do _mg_tried="$_mg_tried $(_mg_name_of "$_mg_bp")"; done
        echo " !     no buildpack matched this app; tried:$_mg_tried" >&2
        echo " !     add a Procfile, or name buildpacks in magrathea.yml or .buildpacks" >&2
        exit 3
    fi
    set -- "$_mg_chosen"
    _mg_name=$(printf '%s\n' "$_mg_name" | head -n 1)
    echo "-----> ${_mg_name:-$(_mg_name_of "$_mg_chosen")} app detected"
fi

_mg_i=0
for _mg_bp in "$@"; do
    _mg_i=$((_mg_i + 1))
    _mg_label=$(_mg_name_of "$_mg_bp")
    if [ ! -f "$_mg_bp/bin/compile" ]; then
        echo " !     buildpack $_mg_label has no bin/compile" >&2
        exit 4
    fi
    if [ "$_mg_mode" = list ]; then
        [ "$#" -gt 1 ] && echo "-----> Buildpack $_mg_i/$#: $_mg_label"
        if [ ! -f "$_mg_bp/bin/detect" ]; then
            _mg_name=$_mg_label
        elif ! _mg_name=$(cd "$_mg_build" && _mg_run "$_mg_bp" detect "$_mg_build"); then
            echo " !     App not compatible with buildpack: $_mg_label (bin/detect failed)" >&2
            exit 5
        fi
        _mg_name=$(printf '%s\n' "$_mg_name" | head -n 1)
        [ -n "$_mg_name" ] || _mg_name=$_mg_label
        echo "-----> $_mg_name app detected"
    fi
    echo "$_mg_name" >>"$_mg_meta/buildpacks"
    if ! (cd "$_mg_build" && _mg_run "$_mg_bp" compile "$_mg_build" "$_mg_cache" "$_mg_env"); then
        echo " !     Push rejected, failed to compile $_mg_name app" >&2
        exit 1
    fi
    if [ -f "$_mg_bp/bin/release" ]; then
        if ! (cd "$_mg_build" && _mg_run "$_mg_bp" release "$_mg_build") >"$_mg_meta/release-$_mg_i.yml"; then
            echo " !     bin/release of $_mg_name failed" >&2
            exit 1
        fi
    fi
    for _mg_x in "$_mg_bp/export" "$_mg_bp/bin/export"; do
        if [ -f "$_mg_x" ]; then
            # Written by buildpacks for buildpacks: may read unset variables.
            set +u
            # shellcheck disable=SC1090
            . "$_mg_x"
            set -u
        fi
    done
    cd "$_mg_build" || exit 1
done
_mg_d=$(($(_mg_now) - _mg_t0))
printf -- '-----> buildpacks took %d.%02ds\n' $((_mg_d / 100)) $((_mg_d % 100))
exit 0
