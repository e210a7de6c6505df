# tests/integration/dpdk/lib.sh - the DPDK tests' own set-up (source it from bash).
#
#   dpdk_enter "$0" "$@"      re-run the calling script as root in a private network
#                             namespace (skips with 77 when not root; a skip fails CI)
#   dpdk_tap NAME ADDR/PREFIX a persistent multi-queue TAP, the kernel side of a
#                             net_tap port, at ADDR, up.  Persistent: it outlives
#                             imfused (kill -9 and restart keep the servers bound)

. "$(dirname "${BASH_SOURCE[0]}")/../lib/netns.sh"

dpdk_enter() {
    NETNS_NEEDS="a TAP device, DPDK" netns_enter "$@"
}

dpdk_tap() {
    local name=$1 addr=$2
    ip tuntap add dev "$name" mode tap multi_queue \
        && ip addr add "$addr" dev "$name" && ip link set "$name" up \
        || { echo "dpdk_tap: cannot make TAP $name at $addr" >&2; return 1; }
}
