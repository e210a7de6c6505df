#!/usr/bin/env bash
# Hostile clients against the connection limits (issue 9, docs/OPERATIONS.md
# "Client connections"): an idle unauthenticated connection, 200 partial
# 1 MiB frames, 1,200 connections against a 1,024-file limit and accept
# failing with EMFILE, caps per address and in total, a client that never
# reads its replies, an idle logged-in client, a dead peer found by TCP
# keepalive (over a veth into a second namespace), and the TLS listener's
# suites.  Each attack is run against build/asan/imfused (IMFUSE_BUILD to
# change it) and the fixed behaviour asserted; no timed assertions.
# Needs root (unshare -n, veth, prlimit).
#
#   bash tests/integration/client/limits.sh        KEEP=1 keeps the work directory
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
if [ "${IMFUSE_IN_NETNS:-}" != 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "skipped: needs root for a private network namespace (unshare -n)" >&2
        exit 77
    fi
    exec env IMFUSE_IN_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up || exit 1
ulimit -c 0
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"   # the test's own clients (the daemon gets less where it matters)

build=${IMFUSE_BUILD:-build/asan}
if [ ! -x "$root/$build/imfused" ] || [ ! -x "$root/$build/imfusectl" ]; then
    (cd "$root" && make asan) || exit 1
fi

W=$(mktemp -d /tmp/imfuse-limits.XXXXXX) || exit 1
. "$root/tests/integration/lib/proc.sh"

cleanup() {
    local pid
    if [ -f "$W/pids" ]; then
        while read -r pid; do
            [ -n "$pid" ] && proc_stop "$pid"
        done < "$W/pids"
    fi
    [ -n "${py_pid:-}" ] && proc_stop "$py_pid"
    if [ "${KEEP:-0}" = 1 ]; then
        echo "# work directory kept: $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

/usr/bin/python3 "$here/limits.py" --work "$W" --root "$root" &
py_pid=$!
wait "$py_pid"
rc=$?
py_pid=
exit "$rc"
