#!/usr/bin/env bash
# The XMPP flow with imfused --io dpdk on net_af_packet: one end of a veth
# pair (imf-app, 198.18.0.2/24, default route via 198.18.0.1) in a network
# namespace of the appliance's own; prosody and the clients in this one, on
# the other end (imf-srv, 198.18.0.1/24).  imfused takes the address and the
# gateway (dpdk-gateway auto) from imf-app and removes the kernel's copy of
# the address, so that kernel does not reset lwIP's connections.  After
# kill -9 the restart names them (the kernel no longer has them).
# Driver: xmpp.py, with the addresses of tests/integration/lib/testenv.sh.
# Needs root, nsenter, ethtool; skips (77) otherwise.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/testenv.sh"
[ "$(id -u)" = 0 ] || testenv_skip "the net_af_packet flow needs root (network namespaces, a veth, DPDK)"
testenv_enter "$0" "$@"
testenv_need nsenter ethtool

server=198.18.0.1 appliance=198.18.0.2
work=$(mktemp -d /tmp/imfuse-afp.XXXXXX) || exit 1
testenv_holder=
cleanup() {
    [ -n "$testenv_holder" ] && proc_stop "$testenv_holder"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The appliance's namespace, held open by a sleep (stopped by PID at exit).
testenv_appliance_ns || exit 1
ip link add imf-srv type veth peer name imf-app netns "$testenv_holder" \
    && ip addr add "$server/24" dev imf-srv && ip link set imf-srv up \
    || { echo "cannot set up the server side of the veth" >&2; exit 1; }
# lwIP checks every checksum: the kernel must not leave them to an offload.
ethtool -K imf-srv tx off >/dev/null || { echo "ethtool -K imf-srv tx off failed" >&2; exit 1; }
nsenter --net="$testenv_appns" sh -c "ip link set lo up && ip addr add $appliance/24 dev imf-app \
    && ip link set imf-app up && ip route add default via $server" \
    || { echo "cannot set up the appliance side of the veth" >&2; exit 1; }

cat > "$work/imfused-dpdk.conf" <<EOF
# written by tests/integration/dpdk/af_packet.sh: the address and the gateway from imf-app
io = dpdk
dpdk-eal = --no-pci --no-huge -m 512 --no-shconf --no-telemetry --vdev=net_af_packet0,iface=imf-app
dpdk-port = net_af_packet0
dpdk-gateway = auto
EOF
export IMFUSE_TEST_SERVER_ADDR=$server IMFUSE_TEST_APPLIANCE_ADDR=$appliance \
    IMFUSE_TEST_APPLIANCE_WRAP="nsenter --net=$testenv_appns" \
    IMFUSE_TEST_APPLIANCE_ARGS="--config $work/imfused-dpdk.conf" \
    DPDK_RESTART_ARGS="--dpdk-address $appliance/24 --dpdk-gateway $server"
/usr/bin/python3 "$here/xmpp.py"
