# Sourced by the image scripts (stack-bookworm.sh, service-images.sh): the Debian rootfs
# steps they share. The caller sets CACHE and defines say/die first.
#
#   rootfs_find_mirror                  # sets MIRROR (env MIRROR wins) and SECURITY_MIRROR
#   rootfs_debootstrap DIR LOG          # minbase debootstrap of $SUITE into DIR, apt sources set
#   rootfs_in_chroot R LOG SCRIPT       # run SCRIPT in rootfs R (apt archives cached on the
#                                       # host), then strip caches, docs and logs from R
#   rootfs_unmount R                    # undo in_chroot's mounts (safe to call at any time)
#   rootfs_pack R TARBALL               # R as a gzip tarball, written through TARBALL.tmp

# The Debian mirror this machine's apt actually uses: deb822 sources first, then .list lines;
# the security archive is derived, not searched.
rootfs_find_mirror() {
    if [ -z "${MIRROR:-}" ]; then
        MIRROR=$(
            for f in /etc/apt/sources.list.d/*.sources; do
                [ -f "$f" ] || continue
                awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' "$f"
            done | grep -v -e security -e '^$' | head -n 1
        )
    fi
    if [ -z "$MIRROR" ]; then
        MIRROR=$(
            for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
                [ -f "$f" ] || continue
                awk '$1 == "deb" { u = $2; if ($2 ~ /^\[/) { for (i = 2; i <= NF; i++) if ($i ~ /\]$/) { u = $(i+1); break } } print u }' "$f"
            done | grep -v security | grep -E '/debian/?$' | head -n 1
        )
    fi
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
    MIRROR=${MIRROR%/}
    case "$MIRROR" in
        */debian) SECURITY_MIRROR="${MIRROR}-security" ;;
        *) SECURITY_MIRROR="" ;;
    esac
}

rootfs_debootstrap() {
    export DEBIAN_FRONTEND=noninteractive
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        apt-get install -y -q --no-install-recommends debootstrap >&2 || {
            apt-get update -q >&2
            apt-get install -y -q --no-install-recommends debootstrap >&2
        }
    fi
    mkdir -p "$1" "$CACHE/debootstrap-debs" "$CACHE/apt-archives/partial"
    _start=$(date +%s)
    say "debootstrap $SUITE from $MIRROR (log: $2)"
    if ! debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap-debs" \
            "$SUITE" "$1" "$MIRROR" >"$2" 2>&1; then
        tail -n 30 "$2" >&2
        [ -f "$1/debootstrap/debootstrap.log" ] && tail -n 30 "$1/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    {
        echo "deb $MIRROR $SUITE main"
        echo "deb $MIRROR $SUITE-updates main"
        [ -n "$SECURITY_MIRROR" ] && echo "deb $SECURITY_MIRROR $SUITE-security main"
    } >"$1/etc/apt/sources.list"
    say "debootstrap done in $(( $(date +%s) - _start ))s"
}

rootfs_unmount() {
    for _m in var/cache/apt/archives dev/pts dev proc sys; do
        if mountpoint -q "$1/$_m" 2>/dev/null; then umount -l "$1/$_m" || true; fi
    done
}

rootfs_in_chroot() {
    _r=$1
    printf '#!/bin/sh\nexit 101\n' >"$_r/usr/sbin/policy-rc.d"
    chmod 0755 "$_r/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$_r/etc/resolv.conf" 2>/dev/null || true
    mount -t proc proc "$_r/proc"
    mount -t sysfs sysfs "$_r/sys"
    mount --bind /dev "$_r/dev"
    mount --bind /dev/pts "$_r/dev/pts"
    mount --bind "$CACHE/apt-archives" "$_r/var/cache/apt/archives"
    chroot "$_r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 HOME=/root /bin/sh -eu -c "$3" \
        >"$2" 2>&1 || { tail -n 40 "$2" >&2; rootfs_unmount "$_r"; die "$(basename "$2"): chroot step failed"; }
    rootfs_unmount "$_r"
    rm -f "$_r/usr/sbin/policy-rc.d"
    rm -rf "$_r/var/lib/apt/lists/"* "$_r/var/cache/apt/"*.bin "$_r/var/cache/apt/archives/"*.deb \
           "$_r/tmp/"* "$_r/var/tmp/"* "$_r/var/log/"*.log "$_r/root/.cache" "$_r/root/.npm"
    : >"$_r/etc/resolv.conf"
}

rootfs_pack() {
    tar --numeric-owner --sort=name --one-file-system \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        -C "$1" -cf - . | gzip -1 >"$2.tmp"
    mv "$2.tmp" "$2"
}
