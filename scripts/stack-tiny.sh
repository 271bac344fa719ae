#!/bin/sh
# Build the tiny busybox stack image: magrathea/stack-tiny:<hash12> and :latest.
#   usage: scripts/stack-tiny.sh
# Prints the content-tagged image name (magrathea/stack-tiny:<hash12>) on stdout;
# progress goes to stderr. Idempotent: the rootfs tar is deterministic, so when
# the image with that content tag exists nothing is imported (only :latest is
# re-pointed at it).
set -eu
umask 022

REPO=magrathea/stack-tiny
CACHE=${MAGRATHEA_CACHE:-/var/cache/magrathea}
HERE=$(cd "$(dirname "$0")" && pwd)

say() { echo "stack-tiny: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

"$HERE/docker-up.sh"

# --- a static busybox binary: from the installed package, else from the .deb ---
mkdir -p "$CACHE/debs"
if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
        && [ -x /bin/busybox ]; then
    BB=/bin/busybox
else
    deb=$(ls "$CACHE"/debs/busybox-static_*.deb 2>/dev/null | tail -n 1 || true)
    if [ -z "$deb" ]; then
        say "downloading busybox-static .deb"
        if ! (cd "$CACHE/debs" && apt-get download busybox-static >&2); then
            apt-get update -q >&2
            (cd "$CACHE/debs" && apt-get download busybox-static >&2)
        fi
        deb=$(ls "$CACHE"/debs/busybox-static_*.deb | tail -n 1)
    fi
    rm -rf "$CACHE/busybox-static"
    dpkg-deb -x "$deb" "$CACHE/busybox-static"
    BB="$CACHE/busybox-static/bin/busybox"
fi
[ -x "$BB" ] || die "no busybox binary at $BB"
"$BB" --list >/dev/null || die "$BB does not run"

# --- assemble the rootfs (merged-/usr layout, everything in /usr/bin) ---
WORK=$(mktemp -d /tmp/stack-tiny.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
R="$WORK/rootfs"
mkdir -p "$R/usr/bin" "$R/usr/local/bin" "$R/etc" "$R/app" "$R/tmp" "$R/root" \
         "$R/var/tmp" "$R/dev" "$R/proc" "$R/sys" "$R/home"
cp "$BB" "$R/usr/bin/busybox"
chmod 0755 "$R/usr/bin/busybox"
for a in $("$BB" --list); do
    [ "$a" = busybox ] && continue
    ln -s busybox "$R/usr/bin/$a"
done
ln -s usr/bin "$R/bin"
ln -s usr/bin "$R/sbin"
ln -s bin "$R/usr/sbin"

cat >"$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$R/etc/group" <<'EOF'
root:x:0:
app:x:1000:
nogroup:x:65534:
EOF
echo "magrathea-stack-tiny" >"$R/etc/stack-release"
chmod 1777 "$R/tmp" "$R/var/tmp"
chmod 0700 "$R/root"
chown 1000:1000 "$R/app"

# --- deterministic tar: sorted names, fixed mtime, numeric owners, gnu format ---
TAR="$WORK/rootfs.tar"
tar --sort=name --mtime='@0' --numeric-owner --format=gnu \
    -C "$R" -cf "$TAR" .

CHANGES='ENV PATH=/usr/local/bin:/usr/bin:/bin
CMD ["/bin/sh"]'
HASH=$( { sha256sum <"$TAR"; printf '%s\n' "$CHANGES"; } | sha256sum | cut -c1-12)
IMAGE="$REPO:$HASH"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE already exists"
else
    say "importing $IMAGE"
    docker import \
        --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
        --change 'CMD ["/bin/sh"]' \
        "$TAR" "$IMAGE" >/dev/null
fi
docker tag "$IMAGE" "$REPO:latest"
echo "$IMAGE"
