# tests/integration/dpdk/lib.sh - the DPDK tests' own set-up (source it from bash).
#
#   dpdk_enter "$0" "$@"      re-run the calling script as root in a private network
#                             namespace (skips with 77 when not root; a skip fails CI)
#   dpdk_tap NAME ADDR/PREFIX a persistent multi-queue TAP, the kernel side of a
#                             net_tap port, at ADDR, up.  Persistent: it outlives
#                             imfused (kill -9 and restart keep the servers bound)

. "$(dirname "${BASH_SOURCE[0]}")/../lib/proc.sh"

dpdk_enter() {
    if [ "${IMFUSE_IN_NETNS:-}" != 1 ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "skipped: needs root (a private network namespace, a TAP device, DPDK)" >&2
            exit 77
        fi
        exec env IMFUSE_IN_NETNS=1 unshare -n "$@"
    fi
    ip link set lo up
    ulimit -c 0
}

dpdk_tap() {
    local name=$1 addr=$2
    ip tuntap add dev "$name" mode tap multi_queue \
        && ip addr add "$addr" dev "$name" && ip link set "$name" up \
        || { echo "dpdk_tap: cannot make TAP $name at $addr" >&2; return 1; }
}
