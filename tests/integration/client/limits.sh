#!/usr/bin/env bash
# Hostile clients against the connection limits (issue 9, docs/OPERATIONS.md
# "Client connections"): an idle unauthenticated connection, 200 partial
# 1 MiB frames, 1,200 connections against a 1,024-file limit and accept
# failing with EMFILE, caps per address and in total, a client that never
# reads its replies, an idle logged-in client, a dead peer found by TCP
# keepalive (over a veth into a second namespace), and the TLS listener's
# suites.  Each attack is run against build/asan/imfused (IMFUSE_BUILD to
# change it) and the fixed behaviour asserted; no timed assertions.
# Driver: limits.py.  Needs root (unshare -n, veth, prlimit).
#
#   bash tests/integration/client/limits.sh        KEEP=1 keeps the work directory
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
. "$root/tests/integration/lib/netns.sh"
netns_enter "$0" "$@"
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"   # the test's own clients (the daemon gets less where it matters)

build=${IMFUSE_BUILD:-build/asan}
if [ ! -x "$root/$build/imfused" ] || [ ! -x "$root/$build/imfusectl" ]; then
    (cd "$root" && make asan) || exit 1
fi
W=$(mktemp -d /tmp/imfuse-limits.XXXXXX) || exit 1
trap 'netns_cleanup "$W"' EXIT
trap 'exit 130' INT TERM
netns_run "$W" /usr/bin/python3 "$here/limits.py" --work "$W" --root "$root"
