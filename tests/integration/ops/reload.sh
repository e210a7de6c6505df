#!/usr/bin/env bash
# SIGHUP and imfusectl reload: the log level, open registration, the TLS
# listener's certificate and key (a live TLS client keeps its session), the
# CA file (an XMPP account on prosody comes online), and bad material
# refused with the old certificate serving (reload.py says what).  Runs in a
# private network namespace (root).
set -u
here=$(cd "$(dirname "$0")" && pwd)
if [ "${IMFUSE_IN_NETNS:-}" != 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "skipped: needs root for a private network namespace (unshare -n)" >&2
        exit 77
    fi
    command -v prosody >/dev/null || { echo "skipped: prosody missing (make deps)" >&2; exit 77; }
    exec env IMFUSE_IN_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
ulimit -c 0
exec /usr/bin/python3 "$here/reload.py"
