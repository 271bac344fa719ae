#!/bin/sh
# Build the Debian 12 stack image: magrathea/stack-bookworm:<hash12> and :latest.
#   usage: scripts/stack-bookworm.sh
# Prints the tagged image name (magrathea/stack-bookworm:<hash12>) on stdout;
# progress goes to stderr. <hash12> is a hash of the recipe (suite, mirror,
# package list, RECIPE revision), so it is stable across rebuilds. Idempotent:
#   - image with that tag exists        -> nothing to do (re-points :latest)
#   - cached rootfs tarball exists      -> docker import only
#   - otherwise                         -> debootstrap + apt-get, cache tarball, import
# Cache dir: $MAGRATHEA_CACHE (default /var/cache/magrathea).
# Env: MIRROR overrides the Debian mirror (default: the one in /etc/apt/sources*).
set -eu
umask 022

REPO=magrathea/stack-bookworm
SUITE=bookworm
CACHE=${MAGRATHEA_CACHE:-/var/cache/magrathea}
HERE=$(cd "$(dirname "$0")" && pwd)
# Bump RECIPE when anything below changes the image (rootfs steps, ENV/CMD).
RECIPE=1
PACKAGES="python3 python3-venv python3-pip nodejs npm php-cli git ca-certificates curl busybox procps"

say() { echo "stack-bookworm: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
"$HERE/docker-up.sh"

# --- the Debian mirror this machine's apt actually uses ---
find_mirror() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822: URIs: line(s); skip the security archive.
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

# --- recipe hash -> tag ---
HASH=$(echo "recipe=$RECIPE suite=$SUITE mirror=$MIRROR packages=$PACKAGES" | sha256sum | cut -c1-12)
IMAGE="$REPO:$HASH"
TARBALL="$CACHE/stack-bookworm-$HASH.tar.gz"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE already exists"
    docker tag "$IMAGE" "$REPO:latest"
    echo "$IMAGE"
    exit 0
fi

mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
    export DEBIAN_FRONTEND=noninteractive
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        apt-get install -y -q --no-install-recommends debootstrap >&2 || {
            apt-get update -q >&2
            apt-get install -y -q --no-install-recommends debootstrap >&2
        }
    fi

    BUILD="$CACHE/build-$HASH"
    R="$BUILD/rootfs"
    unmount_all() {
        for m in var/cache/apt/archives dev/pts dev proc sys; do
            if mountpoint -q "$R/$m" 2>/dev/null; then umount -l "$R/$m" || true; fi
        done
    }
    cleanup() {
        unmount_all
        # Never rm through a live bind mount.
        if ! grep -q " $R/" /proc/mounts; then rm -rf "$BUILD"; fi
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    cleanup
    mkdir -p "$R" "$CACHE/debootstrap-debs" "$CACHE/apt-archives/partial"

    start=$(date +%s)
    say "debootstrap $SUITE from $MIRROR (log: $BUILD/debootstrap.log)"
    if ! debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap-debs" \
            "$SUITE" "$R" "$MIRROR" >"$BUILD/debootstrap.log" 2>&1; then
        tail -n 30 "$BUILD/debootstrap.log" >&2
        [ -f "$R/debootstrap/debootstrap.log" ] && tail -n 30 "$R/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    say "debootstrap done in $(( $(date +%s) - start ))s"

    {
        echo "deb $MIRROR $SUITE main"
        echo "deb $MIRROR $SUITE-updates main"
        [ -n "$SECURITY_MIRROR" ] && echo "deb $SECURITY_MIRROR $SUITE-security main"
    } >"$R/etc/apt/sources.list"
    printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
    chmod 0755 "$R/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || true

    mount -t proc proc "$R/proc"
    mount -t sysfs sysfs "$R/sys"
    mount --bind /dev "$R/dev"
    mount --bind /dev/pts "$R/dev/pts"
    mount --bind "$CACHE/apt-archives" "$R/var/cache/apt/archives"

    say "apt-get install $PACKAGES"
    chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 HOME=/root /bin/sh -eu -c "
        apt-get update -q
        apt-get dist-upgrade -y -q
        apt-get install -y -q --no-install-recommends $PACKAGES
        groupadd -g 1000 app
        useradd -u 1000 -g 1000 -d /app -M -s /bin/bash app
        mkdir -p /app && chown app:app /app
        echo magrathea-stack-bookworm > /etc/stack-release
    " >"$BUILD/apt.log" 2>&1 || { tail -n 40 "$BUILD/apt.log" >&2; die "apt-get in chroot failed"; }

    unmount_all
    rm -f "$R/usr/sbin/policy-rc.d"
    rm -rf "$R/var/lib/apt/lists/"* "$R/var/cache/apt/"*.bin "$R/var/cache/apt/archives/"*.deb \
           "$R/tmp/"* "$R/var/tmp/"* "$R/var/log/"*.log "$R/root/.cache"
    : >"$R/etc/resolv.conf"
    say "rootfs built in $(( $(date +%s) - start ))s; packing $TARBALL"
    tar --numeric-owner --sort=name --one-file-system \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        -C "$R" -cf - . | gzip -1 >"$TARBALL.tmp"
    mv "$TARBALL.tmp" "$TARBALL"
    cleanup
    trap - EXIT
fi

say "importing $IMAGE from $TARBALL"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$TARBALL" "$IMAGE" >/dev/null
docker tag "$IMAGE" "$REPO:latest"
echo "$IMAGE"
