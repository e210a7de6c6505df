#!/usr/bin/env bash
# Hostile clients against authentication (auth.py): pipelined guesses, login
# floods, registrations, lockouts behind one address, NUL, oversized unified
# lists.  Inside a private network namespace; needs root (unshare -n).
set -u
here=$(cd "$(dirname "$0")" && pwd)
if [ "${IMFUSE_IN_NETNS:-}" != 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "skipped: needs root for a private network namespace (unshare -n)" >&2
        exit 77
    fi
    exec env IMFUSE_IN_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
ulimit -c 0
exec /usr/bin/python3 "$here/auth.py"
