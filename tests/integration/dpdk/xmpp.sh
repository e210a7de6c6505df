#!/usr/bin/env bash
# The XMPP flow with imfused on a DPDK port (--io dpdk, net_tap, lwIP at
# 198.18.0.2) and prosody, the users' XMPP clients and the imfuse clients on
# the kernel side of the TAP (198.18.0.1), in a private network namespace.
# Driver: xmpp.py.  Needs root.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
dpdk_enter "$0" "$@"
dpdk_tap imf0 198.18.0.1/24 || exit 1
export DPDK_ARGS='--dpdk-eal "--no-pci --no-huge -m 512 --no-shconf --no-telemetry --vdev=net_tap0,iface=imf0"
    --dpdk-port net_tap0 --dpdk-address 198.18.0.2/24 --dpdk-gateway 198.18.0.1 --dpdk-tap-kernel 198.18.0.1/24'
exec /usr/bin/python3 "$here/xmpp.py" net_tap
