#!/usr/bin/env bash
# One unified contact across XMPP, IRC and SIP (fusion.py), once with ngircd
# (ISON) and once with inspircd (MONITOR), in a private network namespace.
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
rc=0
for ircd in ${FUSION_IRCD:-ngircd inspircd}; do
    /usr/bin/python3 "$here/fusion.py" "$ircd" || rc=1
done
exit $rc
