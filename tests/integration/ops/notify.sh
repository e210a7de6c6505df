#!/usr/bin/env bash
# imfused's sd_notify(3) protocol without systemd (notify.py): READY=1 only
# once the listener and the control socket answer, WATCHDOG=1 pings, and
# STOPPING=1 at SIGTERM; started with the shipped default config.  The unit
# itself is tested under a real systemd in the appliance image
# (images/smoke.sh).  Runs in a private network namespace (root).
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
exec /usr/bin/python3 "$here/notify.py"
