#!/usr/bin/env bash
# tools/demo.sh (make demo) - a local prosody with two demo users, an echo
# bot as bob, and the appliance in the foreground with a user "me".  Prints
# the commands to try the whole flow with build/imfuse.  Ctrl-C stops it all.
#
# tools/demo.sh --dpdk (make demo-dpdk, as root) - the same with the appliance
# on a DPDK port: imfused --io dpdk on net_tap, lwIP at 198.18.0.2; imfused
# brings the TAP's kernel side (imf0) up at 198.18.0.1 with netlink, and
# prosody, bob and your commands live there, on the kernel side.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
dpdk=0
[ "${1:-}" = --dpdk ] && dpdk=1
server=127.0.0.1 appliance=127.0.0.1
[ $dpdk = 1 ] && server=198.18.0.1 appliance=198.18.0.2
export IMFUSE_TEST_SERVER_ADDR=$server      # prosody listens there (not where the tests put it)
. tests/integration/lib/prosody.sh
if [ $dpdk = 1 ] && [ "$(id -u)" != 0 ]; then
    echo "demo --dpdk needs root (a TAP device, DPDK)" >&2
    exit 1
fi

demo=$top/demo
xmpp_port=15222
rm -rf "$demo"
mkdir -p "$demo"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    prosody_stop "$demo/prosody" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# The certificates first: imfused trusts them; prosody starts after imfused,
# which (with --dpdk) brings up the TAP's kernel side that prosody binds.
testenv_cert "$demo/prosody/certs" demo.test
ca=$(prosody_cafile "$demo/prosody")
sflag=
io=(--listen 127.0.0.1:7700)
if [ $dpdk = 1 ]; then
    sflag="-S $appliance:7700 "
    io=(--io dpdk --dpdk-port net_tap0 --dpdk-address $appliance/24 --dpdk-tap-kernel $server/24
        --dpdk-eal "--no-pci --no-huge -m 512 --no-shconf --no-telemetry --vdev=net_tap0,iface=imf0")
fi
build/imfused --data "$demo/var" --control "$demo/var/imfused.sock" "${io[@]}" \
    --ca-file "$ca" 2>"$demo/imfused.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$demo/var/imfused.sock" ] && break; sleep 0.1; done
echo me-pass | build/imfusectl -s "$demo/var/imfused.sock" user add me >/dev/null

prosody_set_roster "$demo/prosody" alice demo.test '["bob@demo.test"] = {subscription="both"; groups={Friends=true}; name="Bob"};'
prosody_set_roster "$demo/prosody" bob demo.test '["alice@demo.test"] = {subscription="both"; groups={}; name="Alice"};'
prosody_start "$demo/prosody" $xmpp_port demo.test
prosody_adduser "$demo/prosody" alice demo.test alice-pass
prosody_adduser "$demo/prosody" bob demo.test bob-pass

/usr/bin/python3 tests/integration/lib/xmpp_peer.py bob@demo.test bob-pass $server $xmpp_port "$ca" --echo \
    >"$demo/bob.log" 2>&1 </dev/null &
pids+=($!)

cat <<TXT

imfuse demo is running: prosody on $server:$xmpp_port (alice@demo.test, bob@demo.test),
bob is an echo bot, the appliance listens on $appliance:7700 with a user "me" (password me-pass).
Logs: demo/imfused.log, demo/bob.log.  In another terminal, from $top:

  export IMFUSE_PASSWORD=me-pass
  IMFUSE_LINK_PASSWORD=alice-pass build/imfuse ${sflag}-u me link xmpp alice@demo.test $server:$xmpp_port --wait 15
  build/imfuse ${sflag}-u me contacts
  build/imfuse ${sflag}-u me merge Bob 1:bob@demo.test
  build/imfuse ${sflag}-u me send Bob "hello bob"
  build/imfuse ${sflag}-u me listen --count 1
  build/imfusectl -s demo/var/imfused.sock accounts me
  build/imfusectl -s demo/var/imfused.sock stats      # io_* and tcp_*: the DPDK port's counters

Ctrl-C here stops everything.
TXT
wait "${pids[0]}"
