# Sourced by the Debian stack scripts (stack-bookworm.sh, stack-trixie.sh): the whole recipe
# of a full stack, as Heroku's stacks come: two images from one debootstrap.
#   magrathea/stack-$SUITE-run:<hash12> and :latest     the run image: what apps run on
#       (language runtimes and the shared libraries compiled code links against)
#   magrathea/stack-$SUITE-build:<hash12> and :latest   the build image: the run image plus
#       what buildpacks expect (compilers, -dev headers, package managers)
#   magrathea/stack-$SUITE:latest                        an alias of the build image (a
#       superset of the run image), for controllers and scripts from before the split
# The caller sets SUITE, RECIPE, RUN_PACKAGES and BUILD_PACKAGES, then calls stack_build.
# It prints both tagged image names on stdout (run image first); progress goes to stderr.
# <hash12> is a hash of the recipe (suite, mirror, package lists, RECIPE revision), so it
# is stable across rebuilds; the string hashed is the one stack-bookworm.sh always hashed,
# so images and tarballs cached before this file existed stay valid. Idempotent:
#   - both images with those tags exist  -> nothing to do (re-points :latest)
#   - both cached rootfs tarballs exist  -> docker import only
#   - otherwise                          -> debootstrap + apt-get, cache tarballs, import
# Cache dir: $MAGRATHEA_CACHE (default /var/cache/magrathea); older tarballs of this stack
# are removed once the new ones are in place.
# Env: MIRROR overrides the Debian mirror (default: the one in /etc/apt/sources*).

say() { echo "stack-$SUITE: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

stack_build() {
    REPO=magrathea/stack-$SUITE-run
    BUILD_REPO=magrathea/stack-$SUITE-build
    ALIAS=magrathea/stack-$SUITE
    CACHE=${MAGRATHEA_CACHE:-/var/cache/magrathea}
    _here=$(cd "$(dirname "$0")" && pwd)

    [ "$(id -u)" = 0 ] || die "must run as root"
    "$_here/docker-up.sh"

    . "$_here/lib/rootfs.sh"
    rootfs_find_mirror

    # --- recipe hash -> tags ---
    HASH=$(echo "recipe=$RECIPE suite=$SUITE mirror=$MIRROR run=$RUN_PACKAGES build=$BUILD_PACKAGES" | sha256sum | cut -c1-12)
    IMAGE="$REPO:$HASH"
    BUILD_IMAGE="$BUILD_REPO:$HASH"
    TARBALL="$CACHE/stack-$SUITE-$HASH.tar.gz"
    BUILD_TARBALL="$CACHE/stack-$SUITE-build-$HASH.tar.gz"

    if docker image inspect "$IMAGE" >/dev/null 2>&1 && docker image inspect "$BUILD_IMAGE" >/dev/null 2>&1; then
        say "$IMAGE and $BUILD_IMAGE already exist"
        docker tag "$IMAGE" "$REPO:latest"
        docker tag "$BUILD_IMAGE" "$BUILD_REPO:latest"
        docker tag "$BUILD_IMAGE" "$ALIAS:latest"
        echo "$IMAGE"
        echo "$BUILD_IMAGE"
        return 0
    fi

    mkdir -p "$CACHE"
    if [ ! -s "$TARBALL" ] || [ ! -s "$BUILD_TARBALL" ]; then
        _stack_rootfs
    fi
    _stack_import "$TARBALL" "$IMAGE" "$REPO"
    _stack_import "$BUILD_TARBALL" "$BUILD_IMAGE" "$BUILD_REPO"
    docker tag "$BUILD_IMAGE" "$ALIAS:latest"
    echo "$IMAGE"
    echo "$BUILD_IMAGE"
}

# debootstrap + apt-get: the run rootfs, packed, then the build packages on top, packed.
_stack_rootfs() {
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
        echo magrathea-stack-$SUITE > /etc/stack-release
    "
    say "run rootfs built in $(( $(date +%s) - start ))s; packing $TARBALL"
    rootfs_pack "$R" "$TARBALL"

    start=$(date +%s)
    say "build image: apt-get install $BUILD_PACKAGES"
    rootfs_in_chroot "$R" "$BUILD/apt-build.log" "
        apt-get update -q
        apt-get install -y -q --no-install-recommends $BUILD_PACKAGES
        echo magrathea-stack-$SUITE-build > /etc/stack-release
    "
    say "build rootfs built in $(( $(date +%s) - start ))s more; packing $BUILD_TARBALL"
    rootfs_pack "$R" "$BUILD_TARBALL"
    cleanup
    trap - EXIT
    # Older recipes' tarballs of this stack are dead weight now.
    for old in "$CACHE"/stack-"$SUITE"-*.tar.gz; do
        case "$old" in "$TARBALL" | "$BUILD_TARBALL") ;; *) rm -f "$old" ;; esac
    done
}

_stack_import() {
    say "importing $2 from $1"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        "$1" "$2" >/dev/null
    docker tag "$2" "$3:latest"
}
