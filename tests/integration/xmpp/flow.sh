#!/usr/bin/env bash
# The whole flow over XMPP against a real prosody (tests/integration/xmpp/flow.py),
# inside a private network namespace.  Needs root (unshare -n).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/testenv.sh"
testenv_enter "$0" "$@"
exec /usr/bin/python3 "$here/flow.py"
