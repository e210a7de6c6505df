#!/usr/bin/env bash
# imfusectl's operator commands (accounts --state across users, config,
# log-level, reload, top, backup while messages flow, errors) against the
# real daemon, prosody and real XMPP users (ctl.py says what).  Runs in a
# private network namespace (root).
set -u
here=$(cd "$(dirname "$0")" && pwd)
if [ "${IMFUSE_IN_NETNS:-}" != 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "skipped: needs root for a private network namespace (unshare -n)" >&2
        exit 77
    fi
    for t in prosody mdb_stat; do
        command -v $t >/dev/null || { echo "skipped: $t missing (make deps)" >&2; exit 77; }
    done
    exec env IMFUSE_IN_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
ulimit -c 0
exec /usr/bin/python3 "$here/ctl.py"
