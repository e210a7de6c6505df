#!/bin/sh
# images/build.sh - make image: the appliance's disk image in build/image/:
#   root.img     ext4 root file system, label imfuse-root
#   vmlinuz, initrd.img   its kernel and initramfs (also in its /boot)
# Debian 12 from images/base.sh (cached in /var/tmp/imfuse-image, keyed on
# the package list, base.sh and the week), the project's .deb (make deb)
# installed with dpkg, the overlay of images/overlay/ (fstab, host name,
# DHCP on Ethernet ports, the first-boot user step), serial console.
# Rebuilt only when the base, the .deb or the recipe changed.  Needs root
# (chroot for dpkg); no loop devices (mkfs.ext4 -d).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ "$(id -u)" = 0 ] || { echo "make image: needs root (dpkg in a chroot)" >&2; exit 1; }
for t in mmdebstrap mkfs.ext4 unshare; do
    command -v $t >/dev/null || { echo "make image: $t missing (make deps)" >&2; exit 1; }
done
out=build/image
cache=${IMFUSE_IMAGE_CACHE:-/var/tmp/imfuse-image}
mkdir -p "$out" "$cache"
export TMPDIR="$top/$out/tmp"
mkdir -p "$TMPDIR"
t0=$(date +%s)

# On a cold cache the base root is built while the .deb is.
key=$(cat images/packages images/base.sh | sha256sum | cut -c1-16)-$(date +%G-W%V)
base=$cache/base-$key.tar
base_pid=
if [ ! -s "$base" ]; then
    echo "make image: building the base root $base (a cold cache: a few minutes; log $cache/base.log)" >&2
    images/base.sh "$base.new" >"$cache/base.log" 2>&1 &
    base_pid=$!
fi
deb=$(./tools/deb.sh | tail -n 1) || deb=
if [ -n "$base_pid" ]; then
    if ! wait "$base_pid"; then
        grep -v '^\./' "$cache/base.log" | tail -n 20 >&2
        rm -f "$base.new"
        exit 1
    fi
    rm -f "$cache"/base-*.tar
    mv "$base.new" "$base"
fi
[ -f "$deb" ] || { echo "make image: make deb failed" >&2; exit 1; }

stamp=$( (echo "$base"; sha256sum "$deb" images/build.sh; find images/overlay -type f -print0 |
          LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-32)
if [ -f "$out/root.img" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "make image: $out/root.img is up to date"
    exit 0
fi
rm -f "$out/stamp" "$out/root.img" "$out/vmlinuz" "$out/initrd.img"

root=$out/root
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" -xf "$base"

# The package, with dpkg alone: no network, and a runtime library missing
# from images/packages fails here with dpkg's message.  Its postinst
# creates the imfuse user (systemd-sysusers) and enables the unit.
cp "$deb" "$root/tmp/"
unshare -m --propagation private sh -c '
    mount -t proc proc "$1/proc" && mount --bind /dev "$1/dev" &&
    exec chroot "$1" dpkg -i "/tmp/$2"' sh "$root" "$(basename "$deb")" >"$out/dpkg.log" 2>&1 || {
    cat "$out/dpkg.log" >&2
    exit 1
}
rm -f "$root/tmp/$(basename "$deb")"

cp -a images/overlay/. "$root/"
chown -R 0:0 "$root/etc/fstab" "$root/etc/hostname" "$root/etc/hosts" "$root/etc/systemd" "$root/usr/local/lib/imfuse"
# each machine makes its own machine-id at its first boot; the console
# prompts of systemd-firstboot would stop an unattended first boot
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# a login prompt on the first serial port whatever the kernel's console= says
systemctl --root="$root" enable imfused.service imfuse-first-user.service systemd-networkd.service \
    serial-getty@ttyS0.service >"$out/systemctl.log" 2>&1
systemctl --root="$root" disable systemd-networkd-wait-online.service >>"$out/systemctl.log" 2>&1
systemctl --root="$root" mask systemd-firstboot.service >>"$out/systemctl.log" 2>&1

cp "$root"/boot/vmlinuz-* "$out/vmlinuz.new"
cp "$root"/boot/initrd.img-* "$out/initrd.img.new"
# room for the store to grow: what is there, half as much again, and 512 MiB
used=$(du -sm "$root" | cut -f1)
size=$((used * 3 / 2 + 512))
mkfs.ext4 -q -F -L imfuse-root -d "$root" "$out/root.img.new" "${size}M"
rm -rf "$root" "$TMPDIR"
mv "$out/vmlinuz.new" "$out/vmlinuz"
mv "$out/initrd.img.new" "$out/initrd.img"
mv "$out/root.img.new" "$out/root.img"
echo "$stamp" >"$out/stamp"
echo "make image: $out/root.img (${size} MiB, $(du -sm "$out/root.img" | cut -f1) MiB used) in $(( $(date +%s) - t0 )) s"
