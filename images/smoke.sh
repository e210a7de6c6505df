#!/bin/sh
# images/smoke.sh - boot the appliance image (make image) in qemu and run
# the smoke test inside it (images/smoke/guest.sh: imfused under systemd,
# READY and the watchdog, imfusectl, the first-boot user, a client login, a
# clean stop).  The guest prints "IMFUSE-SMOKE: PASS" on its serial console
# and powers off.  The machines here do not run systemd as PID 1, so the
# guest is where the unit is tested.
#
# A copy of the image gets the smoke unit, its script and a first-user seed
# (debugfs writes them into the ext4 file system; the image itself stays
# clean).  qemu runs TCG (no KVM needed), bounded by a timeout.  Needs root
# for make image.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 2
if [ "$(id -u)" != 0 ]; then
    echo "skipped: needs root (make image)" >&2
    exit 77
fi
for t in qemu-system-x86_64 debugfs mmdebstrap; do
    command -v $t >/dev/null || { echo "skipped: $t missing (make deps)" >&2; exit 77; }
done
t0=$(date +%s)
./images/build.sh || { echo "FAIL - make image"; exit 1; }
t1=$(date +%s)
img=build/image
work=$img/smoke
rm -rf "$work"
mkdir -p "$work/tmp"
export TMPDIR="$top/$work/tmp"

cp --sparse=always "$img/root.img" "$work/root.img"
printf 'smoke\nsmoke pass 1\n' >"$work/first-user"
chmod 0600 "$work/first-user"
debugfs -w -f - "$work/root.img" >"$work/debugfs.log" 2>&1 <<DEBUGFS
write $work/first-user /etc/imfuse/first-user
sif /etc/imfuse/first-user mode 0100600
mkdir /usr/local/lib/imfuse-smoke
write images/smoke/guest.sh /usr/local/lib/imfuse-smoke/guest.sh
sif /usr/local/lib/imfuse-smoke/guest.sh mode 0100755
write images/smoke/imfuse-smoke.service /etc/systemd/system/imfuse-smoke.service
sif /etc/systemd/system/imfuse-smoke.service mode 0100644
symlink /etc/systemd/system/multi-user.target.wants/imfuse-smoke.service /etc/systemd/system/imfuse-smoke.service
DEBUGFS
if grep -qiE 'error|not found|could not|invalid' "$work/debugfs.log"; then
    cat "$work/debugfs.log"
    echo "FAIL - debugfs could not prepare the smoke copy"
    exit 1
fi

# -no-reboot: the guest's power-off (or a panic, panic=-1) ends qemu
timeout 600 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1024 -display none -monitor none \
    -serial "file:$work/serial.log" -nic none -no-reboot \
    -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
    -append "root=LABEL=imfuse-root console=ttyS0 panic=-1 imfuse.smoke" \
    -drive "file=$work/root.img,format=raw,if=virtio" </dev/null >"$work/qemu.log" 2>&1
rc=$?
t2=$(date +%s)
# the guest's lines, without the journal's "[time] guest.sh[pid]: " before them
tr -d '\r' <"$work/serial.log" | sed -n 's/^.*imfuse-smoke: //p'
echo "make image $((t1 - t0)) s, boot and checks $((t2 - t1)) s (qemu exit $rc)"
if tr -d '\r' <"$work/serial.log" | grep -q 'imfuse-smoke: IMFUSE-SMOKE: PASS$'; then
    rm -f "$work/root.img"
    exit 0
fi
[ $rc = 124 ] && echo "FAIL - qemu timed out (600 s)"
echo "--- the end of the serial console ($work/serial.log)"
tr -d '\r' <"$work/serial.log" | tail -n 40
cat "$work/qemu.log"
rm -f "$work/root.img"
exit 1
