#!/bin/sh
# Build the Debian 12 stack, as Heroku's stacks come: two images from one debootstrap.
#   magrathea/stack-bookworm-run:<hash12> and :latest        the run image: what apps run
#       on (language runtimes and the shared libraries compiled code links against)
#   magrathea/stack-bookworm-build:<hash12> and :latest      the build image: the run
#       image plus what buildpacks expect (compilers, -dev headers, package managers)
#   magrathea/stack-bookworm:latest                           an alias of the build image
#       (a superset of the run image), for controllers and scripts from before the split
#   usage: scripts/stack-bookworm.sh
# Prints both tagged image names on stdout (run image first); progress goes to stderr.
# <hash12> is a hash of the recipe (suite, mirror, package lists, RECIPE revision), so it
# is stable across rebuilds. Idempotent:
#   - both images with those tags exist  -> nothing to do (re-points :latest)
#   - both cached rootfs tarballs exist  -> docker import only
#   - otherwise                          -> debootstrap + apt-get, cache tarballs, import
# Cache dir: $MAGRATHEA_CACHE (default /var/cache/magrathea); older tarballs of this stack
# are removed once the new ones are in place.
# Env: MIRROR overrides the Debian mirror (default: the one in /etc/apt/sources*).
set -eu
umask 022

REPO=magrathea/stack-bookworm-run
BUILD_REPO=magrathea/stack-bookworm-build
ALIAS=magrathea/stack-bookworm
SUITE=bookworm
CACHE=${MAGRATHEA_CACHE:-/var/cache/magrathea}
HERE=$(cd "$(dirname "$0")" && pwd)
# Bump RECIPE when anything below changes the images (rootfs steps, ENV/CMD).
RECIPE=2
# Run image: runtimes (npm too: Procfiles say `npm start`), the libraries that compiled
# extensions link against at run time, and the PHP extensions composer checks for at build
# time (so what built also runs).
PHP_EXT="php-curl php-mbstring php-xml php-zip php-pgsql php-sqlite3 php-intl php-gd"
RUN_PACKAGES="bash ca-certificates curl busybox procps tzdata netbase \
python3 nodejs npm php-cli $PHP_EXT \
libpq5 libssl3 libffi8 zlib1g libxml2 libxslt1.1 libyaml-0-2 libsqlite3-0 libjpeg62-turbo \
libpng16-16 libreadline8 libbz2-1.0 liblzma5 libgmp10"
# Build image: the run image plus what real buildpacks expect to find.
BUILD_PACKAGES="build-essential pkg-config autoconf automake libtool git unzip zip xz-utils \
jq file patch gettext-base wget openssh-client \
python3-dev python3-venv python3-pip composer \
libpq-dev libssl-dev libffi-dev zlib1g-dev libxml2-dev libxslt1-dev libyaml-dev \
libsqlite3-dev libjpeg-dev libpng-dev libreadline-dev libbz2-dev liblzma-dev \
libgmp-dev libcurl4-openssl-dev"

say() { echo "stack-bookworm: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
"$HERE/docker-up.sh"

. "$HERE/lib/rootfs.sh"
rootfs_find_mirror

# --- recipe hash -> tags ---
HASH=$(echo "recipe=$RECIPE suite=$SUITE mirror=$MIRROR run=$RUN_PACKAGES build=$BUILD_PACKAGES" | sha256sum | cut -c1-12)
IMAGE="$REPO:$HASH"
BUILD_IMAGE="$BUILD_REPO:$HASH"
TARBALL="$CACHE/stack-bookworm-$HASH.tar.gz"
BUILD_TARBALL="$CACHE/stack-bookworm-build-$HASH.tar.gz"

if docker image inspect "$IMAGE" >/dev/null 2>&1 && docker image inspect "$BUILD_IMAGE" >/dev/null 2>&1; then
    say "$IMAGE and $BUILD_IMAGE already exist"
    docker tag "$IMAGE" "$REPO:latest"
    docker tag "$BUILD_IMAGE" "$BUILD_REPO:latest"
    docker tag "$BUILD_IMAGE" "$ALIAS:latest"
    echo "$IMAGE"
    echo "$BUILD_IMAGE"
    exit 0
fi

mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ] || [ ! -s "$BUILD_TARBALL" ]; then
    BUILD="$CACHE/build-$HASH"
    R="$BUILD/rootfs"
    cleanup() {
        rootfs_unmount "$R"
        # Never rm through a live bind mount.
        if ! grep -q " $R/" /proc/mounts; then rm -rf "$BUILD"; fi
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    cleanup
    start=$(date +%s)
    rootfs_debootstrap "$R" "$BUILD/debootstrap.log"

    say "run image: apt-get install $RUN_PACKAGES"
    rootfs_in_chroot "$R" "$BUILD/apt-run.log" "
        apt-get update -q
        apt-get dist-upgrade -y -q
        apt-get install -y -q --no-install-recommends $RUN_PACKAGES
        groupadd -g 1000 app
        useradd -u 1000 -g 1000 -d /app -M -s /bin/bash app
        mkdir -p /app && chown app:app /app
        echo magrathea-stack-bookworm > /etc/stack-release
    "
    say "run rootfs built in $(( $(date +%s) - start ))s; packing $TARBALL"
    rootfs_pack "$R" "$TARBALL"

    start=$(date +%s)
    say "build image: apt-get install $BUILD_PACKAGES"
    rootfs_in_chroot "$R" "$BUILD/apt-build.log" "
        apt-get update -q
        apt-get install -y -q --no-install-recommends $BUILD_PACKAGES
        echo magrathea-stack-bookworm-build > /etc/stack-release
    "
    say "build rootfs built in $(( $(date +%s) - start ))s more; packing $BUILD_TARBALL"
    rootfs_pack "$R" "$BUILD_TARBALL"
    cleanup
    trap - EXIT
    # Older recipes' tarballs of this stack are dead weight now.
    for old in "$CACHE"/stack-bookworm-*.tar.gz; do
        case "$old" in "$TARBALL" | "$BUILD_TARBALL") ;; *) rm -f "$old" ;; esac
    done
fi

import() {
    say "importing $2 from $1"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        "$1" "$2" >/dev/null
    docker tag "$2" "$3:latest"
}
import "$TARBALL" "$IMAGE" "$REPO"
import "$BUILD_TARBALL" "$BUILD_IMAGE" "$BUILD_REPO"
docker tag "$BUILD_IMAGE" "$ALIAS:latest"
echo "$IMAGE"
echo "$BUILD_IMAGE"
