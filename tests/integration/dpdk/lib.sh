# tests/integration/dpdk/lib.sh - the DPDK tests' own set-up (source it from bash).
#
#   dpdk_enter "$0" "$@"      re-run the calling script as root in a private network
#                             namespace (skips with 77 when not root; a skip fails CI)
#   dpdk_tap NAME ADDR/PREFIX a persistent multi-queue TAP, the kernel side of a
#                             net_tap port, at ADDR, up.  Persistent: it outlives
#                             imfused (kill -9 and restart keep the servers bound)
#   dpdk_prosody_on WORKDIR ADDR PORT
#                             after prosody_start (prosody.sh, which binds 127.0.0.1),
#                             restart that prosody listening on ADDR instead; waits
#                             until ADDR:PORT accepts (10 s)
#
# The integration helpers take the servers' address as a parameter on another
# branch (testenv.sh); until they do, dpdk_prosody_on moves a prosody started by
# prosody.sh to the kernel side of the TAP.

. "$(dirname "${BASH_SOURCE[0]}")/../lib/proc.sh"
. "$(dirname "${BASH_SOURCE[0]}")/../lib/prosody.sh"

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

dpdk_prosody_on() {
    local w=$1 addr=$2 port=$3 i
    prosody_stop "$w" || return 1
    sed -i "s/^interfaces = .*/interfaces = { \"$addr\" }/" "$w/prosody.cfg.lua" || return 1
    prosody --config "$w/prosody.cfg.lua" -F >> "$w/prosody.out" 2>&1 &
    echo $! > "$w/prosody.bgpid"
    for ((i = 0; i < 200; i++)); do
        (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null && return 0
        kill -0 "$(cat "$w/prosody.bgpid")" 2>/dev/null || break
        sleep 0.05
    done
    echo "dpdk_prosody_on: prosody does not listen on $addr:$port" >&2
    tail -n 20 "$w/prosody.out" >&2
    return 1
}
