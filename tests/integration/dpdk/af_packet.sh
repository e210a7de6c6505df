#!/usr/bin/env bash
# The XMPP flow with imfused --io dpdk on net_af_packet: one end of a veth
# pair (imf-app, 198.18.0.2/24, default route via 198.18.0.1) in a network
# namespace of the appliance's own; prosody and the clients in this one, on
# the other end (imf-srv, 198.18.0.1/24).  imfused takes the address and the
# gateway (dpdk-gateway auto) from imf-app and removes the kernel's copy of
# the address, so that kernel does not reset lwIP's connections.  After
# kill -9 the restart names them (the kernel no longer has them).
# Driver: xmpp.py.  Needs root, nsenter, ethtool.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
dpdk_enter "$0" "$@"
for t in nsenter ethtool; do
    command -v $t >/dev/null || { echo "skipped: $t is missing (make deps)" >&2; exit 77; }
done
holder=
cleanup() { [ -n "$holder" ] && proc_stop "$holder"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# The appliance's namespace, held open by a sleep (stopped by PID at exit).
unshare -n sleep 86400 &
holder=$!
for ((i = 0; i < 100; i++)); do
    [ "$(readlink "/proc/$holder/ns/net")" != "$(readlink /proc/self/ns/net)" ] && break
    sleep 0.02
done
appns=/proc/$holder/ns/net
[ "$(readlink "$appns")" != "$(readlink /proc/self/ns/net)" ] || { echo "no namespace for the appliance" >&2; exit 1; }
ip link add imf-srv type veth peer name imf-app netns "$holder" \
    && ip addr add 198.18.0.1/24 dev imf-srv && ip link set imf-srv up \
    || { echo "cannot set up the server side of the veth" >&2; exit 1; }
# lwIP checks every checksum: the kernel must not leave them to an offload.
ethtool -K imf-srv tx off >/dev/null || { echo "ethtool -K imf-srv tx off failed" >&2; exit 1; }
nsenter --net="$appns" sh -c "ip link set lo up && ip addr add 198.18.0.2/24 dev imf-app \
    && ip link set imf-app up && ip route add default via 198.18.0.1" \
    || { echo "cannot set up the appliance side of the veth" >&2; exit 1; }

eal='--no-pci --no-huge -m 512 --no-shconf --no-telemetry --vdev=net_af_packet0,iface=imf-app'
export DPDK_WRAP="nsenter --net=$appns" DPDK_CHECK_NS="nsenter --net=$appns"
export DPDK_ARGS="--dpdk-eal \"$eal\" --dpdk-port net_af_packet0 --dpdk-gateway auto"
export DPDK_RESTART="--dpdk-eal \"$eal\" --dpdk-port net_af_packet0 --dpdk-address 198.18.0.2/24 --dpdk-gateway 198.18.0.1"
/usr/bin/python3 "$here/xmpp.py" net_af_packet
