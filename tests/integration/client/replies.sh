#!/usr/bin/env bash
# No silent drops (issue 9): a 20,000-message backlog replayed to a slow
# reader, complete and in order, with live messages arriving meanwhile;
# `contacts` and `accounts` past the 1 MiB frame limit answered (`limit`, or
# in pages); a unified list that would pass the frame refused with `limit`,
# and the user still able to log in.  Against build/asan/imfused (or
# IMFUSE_BUILD) and a real prosody, inside a private network namespace.
# Needs root (unshare -n).
#
#   bash tests/integration/client/replies.sh        KEEP=1 keeps the work directory
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

if ! command -v prosody >/dev/null; then
    echo "skipped: prosody is not installed" >&2
    exit 77
fi
build=${IMFUSE_BUILD:-build/asan}
if [ ! -x "$root/$build/imfused" ] || [ ! -x "$root/$build/imfusectl" ]; then
    (cd "$root" && make asan) || exit 1
fi

W=$(mktemp -d /tmp/imfuse-replies.XXXXXX) || exit 1
. "$root/tests/integration/lib/proc.sh"

cleanup() {
    local pid
    if [ -f "$W/pids" ]; then
        while read -r pid; do
            [ -n "$pid" ] && proc_stop "$pid"
        done < "$W/pids"
    fi
    [ -n "${py_pid:-}" ] && proc_stop "$py_pid"
    . "$root/tests/integration/lib/prosody.sh"
    prosody_stop "$W/prosody"
    if [ "${KEEP:-0}" = 1 ]; then
        echo "# work directory kept: $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

/usr/bin/python3 "$here/replies.py" --work "$W" &
py_pid=$!
wait "$py_pid"
rc=$?
py_pid=
exit "$rc"
