#!/usr/bin/env bash
# Quotas (quota.py): accounts per user and in total, contacts per account on
# every network, queued messages per user against a real prosody.  Inside a
# private network namespace; needs root (unshare -n).
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
if ! command -v prosody >/dev/null; then
    echo "skipped: prosody is not installed" >&2
    exit 77
fi
exec /usr/bin/python3 "$here/quota.py"
