#!/bin/sh
# Build the service images offline from Debian 12's packages, like the stacks:
#   magrathea/svc-postgres-15:<hash12>    and :latest   PostgreSQL 15 + psql, pg_dump, pg_restore
#   magrathea/svc-redis-7:<hash12>        and :latest   Redis 7 + redis-cli
#   magrathea/svc-mariadb-10.11:<hash12>  and :latest   MariaDB 10.11 + mariadb, mariadb-dump
#   usage: scripts/service-images.sh
# Prints the three tagged image names on stdout; progress goes to stderr.
# The images hold Debian's packages only: the node agent mounts its entry script
# (src/agent/services/entry.sh, compiled into the binary) at /usr/local/bin/magrathea-svc,
# so it changes with the binary and never needs a rebuild here.
# <hash12> is a hash of the recipe (suite, mirror, packages, RECIPE), so it
# is stable across rebuilds. Idempotent and cached like scripts/stack-bookworm.sh:
#   - the three images with those tags exist  -> nothing to do (re-points :latest)
#   - the three cached rootfs tarballs exist  -> docker import only
#   - otherwise -> one debootstrap (minbase) shared by the three, apt-get per image on a copy
#     of it, tarballs cached in $MAGRATHEA_CACHE (default /var/cache/magrathea), import.
# Env: MIRROR overrides the Debian mirror (default: the one in /etc/apt/sources*).
set -eu
umask 022

SUITE=bookworm
CACHE=${MAGRATHEA_CACHE:-/var/cache/magrathea}
HERE=$(cd "$(dirname "$0")" && pwd)
# Bump RECIPE when anything below changes the images (rootfs steps, ENV/CMD).
RECIPE=2
# name:version:packages (the version is part of the image name: an upgrade is a new image).
SERVICES="postgres:15:postgresql-15,postgresql-client-15,libnss-wrapper
redis:7:redis-server,redis-tools
mariadb:10.11:mariadb-server,mariadb-client,libnss-wrapper"

say() { echo "service-images: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
"$HERE/docker-up.sh"

# --- the Debian mirror this machine's apt actually uses (as stack-bookworm.sh) ---
find_mirror() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' "$f"
    done | grep -v -e security -e '^$' | head -n 1 | grep . && return 0
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" { u = $2; if ($2 ~ /^\[/) { for (i = 2; i <= NF; i++) if ($i ~ /\]$/) { u = $(i+1); break } } print u }' "$f"
    done | grep -v security | grep -E '/debian/?$' | head -n 1 | grep . && return 0
    echo http://deb.debian.org/debian
}
MIRROR=${MIRROR:-$(find_mirror)}
MIRROR=${MIRROR%/}
case "$MIRROR" in
    */debian) SECURITY_MIRROR="${MIRROR}-security" ;;
    *) SECURITY_MIRROR="" ;;
esac

HASH=$(echo "recipe=$RECIPE suite=$SUITE mirror=$MIRROR services=$SERVICES" | sha256sum | cut -c1-12)

# repo NAME VERSION / tarball NAME VERSION
repo() { echo "magrathea/svc-$1-$2"; }
tarball() { echo "$CACHE/svc-$1-$2-$HASH.tar.gz"; }

all_images=1
all_tarballs=1
for line in $SERVICES; do
    name=${line%%:*}; rest=${line#*:}; version=${rest%%:*}
    docker image inspect "$(repo "$name" "$version"):$HASH" >/dev/null 2>&1 || all_images=0
    [ -s "$(tarball "$name" "$version")" ] || all_tarballs=0
done

if [ "$all_images" = 0 ] && [ "$all_tarballs" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        apt-get install -y -q --no-install-recommends debootstrap >&2 || {
            apt-get update -q >&2
            apt-get install -y -q --no-install-recommends debootstrap >&2
        }
    fi
    BUILD="$CACHE/svc-build-$HASH"
    BASE="$BUILD/base"
    R="$BUILD/rootfs"
    unmount_all() {
        for m in var/cache/apt/archives dev/pts dev proc sys; do
            if mountpoint -q "$R/$m" 2>/dev/null; then umount -l "$R/$m" || true; fi
        done
    }
    cleanup() {
        unmount_all
        # Never rm through a live bind mount.
        if ! grep -q " $BUILD/" /proc/mounts; then rm -rf "$BUILD"; fi
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    cleanup
    mkdir -p "$BASE" "$CACHE/debootstrap-debs" "$CACHE/apt-archives/partial"

    start=$(date +%s)
    say "debootstrap $SUITE from $MIRROR (log: $BUILD/debootstrap.log)"
    if ! debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap-debs" \
            "$SUITE" "$BASE" "$MIRROR" >"$BUILD/debootstrap.log" 2>&1; then
        tail -n 30 "$BUILD/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    {
        echo "deb $MIRROR $SUITE main"
        echo "deb $MIRROR $SUITE-updates main"
        [ -n "$SECURITY_MIRROR" ] && echo "deb $SECURITY_MIRROR $SUITE-security main"
    } >"$BASE/etc/apt/sources.list"
    # Debian's postgresql-common would create and start a cluster "main" while installing.
    mkdir -p "$BASE/etc/postgresql-common/createcluster.d"
    echo 'create_main_cluster = false' >"$BASE/etc/postgresql-common/createcluster.d/00-magrathea.conf"
    say "debootstrap done in $(( $(date +%s) - start ))s"

    # in_chroot LOG SCRIPT: run SCRIPT in $R with apt's archives cached on the host.
    in_chroot() {
        printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
        chmod 0755 "$R/usr/sbin/policy-rc.d"
        cp /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || true
        mount -t proc proc "$R/proc"
        mount -t sysfs sysfs "$R/sys"
        mount --bind /dev "$R/dev"
        mount --bind /dev/pts "$R/dev/pts"
        mount --bind "$CACHE/apt-archives" "$R/var/cache/apt/archives"
        chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 HOME=/root /bin/sh -eu -c "$2" \
            >"$BUILD/$1" 2>&1 || { tail -n 40 "$BUILD/$1" >&2; unmount_all; die "$1: chroot step failed"; }
        unmount_all
        rm -f "$R/usr/sbin/policy-rc.d"
        rm -rf "$R/var/lib/apt/lists/"* "$R/var/cache/apt/"*.bin "$R/var/cache/apt/archives/"*.deb \
               "$R/tmp/"* "$R/var/tmp/"* "$R/var/log/"*.log "$R/root/.cache" \
               "$R/usr/share/doc/"* "$R/usr/share/man/"* "$R/usr/share/info/"*
        : >"$R/etc/resolv.conf"
    }

    for line in $SERVICES; do
        name=${line%%:*}; rest=${line#*:}; version=${rest%%:*}; packages=$(echo "${rest#*:}" | tr , ' ')
        out=$(tarball "$name" "$version")
        [ -s "$out" ] && continue
        start=$(date +%s)
        rm -rf "$R"
        cp -a "$BASE" "$R"
        say "$name $version: apt-get install $packages"
        in_chroot "apt-$name.log" "
            apt-get update -q
            apt-get dist-upgrade -y -q
            apt-get install -y -q --no-install-recommends $packages
            # What the packages' own install scripts initialised is not the service's data.
            rm -rf /var/lib/postgresql/* /var/lib/mysql/* /var/lib/redis/* /var/run/mysqld
            # Size: message translations, and PostgreSQL's LLVM JIT (a plugin it does without,
            # silently, when it is missing; 130 MB).
            rm -rf /usr/share/locale/* /usr/lib/postgresql/*/lib/bitcode
            rm -f /usr/lib/postgresql/*/lib/llvmjit*.so /usr/lib/*/libLLVM-*.so*
            mkdir -p /data /run/svc && chmod 1777 /run/svc
            echo magrathea-svc-$name-$version > /etc/service-release
        "
        tar --numeric-owner --sort=name --one-file-system \
            --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
            -C "$R" -cf - . | gzip -1 >"$out.tmp"
        mv "$out.tmp" "$out"
        say "$name $version: rootfs packed in $(( $(date +%s) - start ))s ($(du -h "$out" | cut -f1))"
    done
    cleanup
    trap - EXIT
    # Older recipes' tarballs are dead weight now.
    for old in "$CACHE"/svc-*.tar.gz; do
        case "$old" in *"-$HASH.tar.gz") ;; *) rm -f "$old" ;; esac
    done
fi

for line in $SERVICES; do
    name=${line%%:*}; rest=${line#*:}; version=${rest%%:*}
    r=$(repo "$name" "$version")
    if ! docker image inspect "$r:$HASH" >/dev/null 2>&1; then
        say "importing $r:$HASH"
        # The postgres binaries (initdb, postgres, pg_ctl) live outside PATH on Debian.
        docker import \
            --change "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
            --change 'ENV LANG=C.UTF-8' \
            --change "LABEL magrathea.service-type=$name" \
            --change 'CMD ["/usr/local/bin/magrathea-svc", "run"]' \
            "$(tarball "$name" "$version")" "$r:$HASH" >/dev/null
    fi
    docker tag "$r:$HASH" "$r:latest"
    echo "$r:$HASH"
done
