#!/usr/bin/env bash
# The whole flow over XMPP against a real prosody (tests/integration/xmpp/flow.py),
# inside a private network namespace.  Needs root (unshare -n).
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
exec /usr/bin/python3 "$here/flow.py"
