#!/bin/sh
# images/base.sh OUT.tar - build the appliance's base root: Debian 12 from
# mmdebstrap with the packages of images/packages, as a tar (needs root).
# images/build.sh caches the result keyed on this file, the package list and
# the week (the mirror moves), so it runs only on a cold cache (~4-5 min).
set -euf     # -f: the path patterns below are dpkg's, not the shell's
[ $# -eq 1 ] || { echo "usage: images/base.sh OUT.tar" >&2; exit 64; }
here=$(cd "$(dirname "$0")" && pwd)
pkgs=$(sed 's/#.*//' "$here/packages" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')

# The machine's own apt sources when it has them (same mirror, same
# security updates), else Debian's.
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    set -- "$1" /etc/apt/sources.list.d/debian.sources
else
    set -- "$1" "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main"
fi
out=$1; shift

# initramfs-tools: the root is ext4 (detection does not work in a chroot).
# Left out: documentation and translations (copyright files kept), and the
# kernel modules a headless network appliance has no use for (graphics,
# sound, TV and radio, wireless, Bluetooth, staging, lab instruments),
# a third of the root's size.
nomods=
for d in drivers/gpu sound drivers/media drivers/net/wireless net/wireless net/mac80211 \
         drivers/bluetooth net/bluetooth drivers/staging drivers/comedi drivers/iio drivers/usb/gadget; do
    nomods="$nomods --dpkgopt=path-exclude=/lib/modules/*/kernel/$d/*"
    nomods="$nomods --dpkgopt=path-exclude=/usr/lib/modules/*/kernel/$d/*"
done
# The root is put together in memory when there is room (about 1.2 GB at
# its largest): no file system journal under dpkg's many small writes.
if [ "$(df -Pm /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')" -gt 4096 ] 2>/dev/null; then
    export TMPDIR=/dev/shm
fi
# shellcheck disable=SC2086
exec mmdebstrap --variant=apt --format=tar --include="$pkgs" \
    --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
    --setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo FSTYPE=ext4 >"$1/etc/initramfs-tools/conf.d/imfuse-root"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' $nomods \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$out" "$@" </dev/null
