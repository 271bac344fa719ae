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

. "$HERE/lib/rootfs.sh"
rootfs_find_mirror

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
    BUILD="$CACHE/svc-build-$HASH"
    BASE="$BUILD/base"
    R="$BUILD/rootfs"
    cleanup() {
        rootfs_unmount "$R"
        # Never rm through a live bind mount.
        if ! grep -q " $BUILD/" /proc/mounts; then rm -rf "$BUILD"; fi
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    cleanup
    rootfs_debootstrap "$BASE" "$BUILD/debootstrap.log"
    # Debian's postgresql-common would create and start a cluster "main" while installing.
    mkdir -p "$BASE/etc/postgresql-common/createcluster.d"
    echo 'create_main_cluster = false' >"$BASE/etc/postgresql-common/createcluster.d/00-magrathea.conf"

    for line in $SERVICES; do
        name=${line%%:*}; rest=${line#*:}; version=${rest%%:*}; packages=$(echo "${rest#*:}" | tr , ' ')
        out=$(tarball "$name" "$version")
        [ -s "$out" ] && continue
        start=$(date +%s)
        rm -rf "$R"
        cp -a "$BASE" "$R"
        say "$name $version: apt-get install $packages"
        rootfs_in_chroot "$R" "$BUILD/apt-$name.log" "
            apt-get update -q
            apt-get dist-upgrade -y -q
            apt-get install -y -q --no-install-recommends $packages
            # What the packages' own install scripts initialised is not the service's data.
            rm -rf /var/lib/postgresql/* /var/lib/mysql/* /var/lib/redis/* /var/run/mysqld
            # Size: message translations, and PostgreSQL's LLVM JIT (a plugin it does without,
            # silently, when it is missing; 130 MB).
            rm -rf /usr/share/locale/* /usr/lib/postgresql/*/lib/bitcode
            rm -f /usr/lib/postgresql/*/lib/llvmjit*.so /usr/lib/*/libLLVM-*.so*
            rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/*
            mkdir -p /data /run/svc && chmod 1777 /run/svc
            echo magrathea-svc-$name-$version > /etc/service-release
        "
        rootfs_pack "$R" "$out"
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
