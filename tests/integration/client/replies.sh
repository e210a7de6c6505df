#!/usr/bin/env bash
# No silent drops (issue 9): a 20,000-message backlog replayed to a slow
# reader, complete and in order, with live messages arriving meanwhile and
# another device acknowledging it all; `contacts` and `accounts` past the
# 1 MiB frame limit answered (`limit`, or in pages); a unified list that would
# pass the frame refused with `limit`, and the user still able to log in.
# Against build/asan/imfused (or IMFUSE_BUILD) and a real prosody, inside a
# private network namespace.  Driver: replies.py.  Needs root (unshare -n).
#
#   bash tests/integration/client/replies.sh        KEEP=1 keeps the work directory
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
. "$root/tests/integration/lib/netns.sh"
netns_enter "$0" "$@"

if ! command -v prosody >/dev/null; then
    echo "skipped: prosody is not installed" >&2
    exit 77
fi
build=${IMFUSE_BUILD:-build/asan}
if [ ! -x "$root/$build/imfused" ] || [ ! -x "$root/$build/imfusectl" ]; then
    (cd "$root" && make asan) || exit 1
fi
W=$(mktemp -d /tmp/imfuse-replies.XXXXXX) || exit 1
. "$root/tests/integration/lib/prosody.sh"
trap 'prosody_stop "$W/prosody"; netns_cleanup "$W"' EXIT
trap 'exit 130' INT TERM
netns_run "$W" /usr/bin/python3 "$here/replies.py" --work "$W"
