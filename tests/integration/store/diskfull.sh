#!/usr/bin/env bash
# A real full disk under the store (diskfull.py): the daemon's data directory
# is a small tmpfs in a private mount namespace, filled to the last byte while
# messages arrive from a real XMPP server.  Needs root (unshare -n -m, mount).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/testenv.sh"
testenv_enter -m "$0" "$@"
work=$(mktemp -d /tmp/imfuse-diskfull.XXXXXX)
mkdir "$work/var"
# 8 MiB: room for the store and the key, and little else.  The namespace
# dies with this script, so the mount cannot outlive the test.
mount -t tmpfs -o size=8m,mode=0700 imfuse-diskfull "$work/var" || { echo "cannot mount tmpfs" >&2; exit 1; }
/usr/bin/python3 "$here/diskfull.py" "$work"
rc=$?
umount "$work/var" 2>/dev/null
rm -rf "$work"
exit $rc
