#!/usr/bin/env bash
# imfuse over IRC against real ngircd and inspircd (tests/integration/irc/irc.py),
# inside a private network namespace.  Needs root (unshare -n).
set -u
here=$(cd "$(dirname "$0")" && pwd)
if [ "${IMFUSE_IN_NETNS:-}" != 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "skipped: needs root for a private network namespace (unshare -n)" >&2
        exit 77
    fi
    for b in ngircd inspircd; do
        if ! command -v "$b" >/dev/null; then
            echo "skipped: $b is not installed (make deps)" >&2
            exit 77
        fi
    done
    exec env IMFUSE_IN_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
ulimit -c 0
exec /usr/bin/python3 "$here/irc.py"
