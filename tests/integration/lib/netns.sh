# tests/integration/lib/netns.sh - the frame of a test script that runs a
# Python driver in a private network namespace (source it from bash).
#
#   netns_enter "$0" "$@"     re-run the calling script as root in a private network
#                             namespace with lo up and no core files (77 when not root;
#                             NETNS_NEEDS, if set, says what else root is needed for)
#   netns_run WORKDIR CMD...  run the driver in the background and wait for it; its exit
#                             status is the function's.  The driver lists every process it
#                             starts in WORKDIR/pids (tests/integration/lib/daemon.py)
#   netns_cleanup WORKDIR     stop the driver and what WORKDIR/pids lists, by PID; remove
#                             WORKDIR unless KEEP=1 (call it from the script's EXIT trap)

. "$(dirname "${BASH_SOURCE[0]}")/proc.sh"

netns_enter() {
    if [ "${IMFUSE_IN_NETNS:-}" != 1 ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "skipped: needs root (a private network namespace${NETNS_NEEDS:+, $NETNS_NEEDS})" >&2
            exit 77
        fi
        exec env IMFUSE_IN_NETNS=1 unshare -n "$@"
    fi
    ip link set lo up || exit 1
    ulimit -c 0
}

netns_run() {
    local w=$1 rc
    shift
    "$@" &
    netns__driver=$!
    wait "$netns__driver"
    rc=$?
    netns__driver=
    return "$rc"
}

netns_cleanup() {
    local w=$1 pid
    [ -n "${netns__driver:-}" ] && proc_stop "$netns__driver"
    if [ -f "$w/pids" ]; then
        while read -r pid; do
            [ -n "$pid" ] && proc_stop "$pid"
        done < "$w/pids"
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        echo "# work directory kept: $w" >&2
    else
        rm -rf "$w"
    fi
}
