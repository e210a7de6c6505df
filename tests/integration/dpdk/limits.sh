#!/usr/bin/env bash
# The connection limits on the DPDK backend (--io dpdk, net_tap, lwIP at
# 198.18.0.2; the clients on the TAP's kernel side, 198.18.0.1): the
# pre-login timeout, the cap per address, the pre-login memory budget, and a
# dead peer found by lwIP's TCP keepalive.  The policy is the dataplane's,
# above the backend seam (dataplane/dp_admit.c); this checks the mechanism
# under it.  Driver: limits.py.  Needs root.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/../lib/netns.sh"
dpdk_enter "$0" "$@"
dpdk_tap imf0 198.18.0.1/24 || exit 1
W=$(mktemp -d /tmp/imfuse-dpdk-limits.XXXXXX) || exit 1
trap 'netns_cleanup "$W"; ip link del imf0 2>/dev/null' EXIT
trap 'exit 130' INT TERM
netns_run "$W" /usr/bin/python3 "$here/limits.py" --work "$W"
