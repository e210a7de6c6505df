#!/usr/bin/env bash
# imfused's AgentX subagent under a real snmpd, notifications to a real
# snmptrapd, IMFUSE-MIB checked with smilint and against imfusectl stats
# (snmp.py says what).  Runs in a private network namespace (root).
set -u
here=$(cd "$(dirname "$0")" && pwd)
if [ "${IMFUSE_IN_NETNS:-}" != 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "skipped: needs root for a private network namespace (unshare -n)" >&2
        exit 77
    fi
    for t in snmpd snmpwalk snmptrapd smilint ngircd; do
        command -v $t >/dev/null || { echo "skipped: $t missing (make deps)" >&2; exit 77; }
    done
    ls -d /usr/lib/erlang/lib/snmp-*/mibs >/dev/null 2>&1 ||
        { echo "skipped: erlang-snmp's base MIB modules missing (make deps)" >&2; exit 77; }
    exec env IMFUSE_IN_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
ulimit -c 0
exec /usr/bin/python3 "$here/snmp.py"
