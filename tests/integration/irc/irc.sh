#!/usr/bin/env bash
# imfuse over IRC against real ngircd and inspircd (tests/integration/irc/irc.py),
# inside a private network namespace.  Needs root (unshare -n).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/testenv.sh"
testenv_enter "$0" "$@"
testenv_need ngircd inspircd
exec /usr/bin/python3 "$here/irc.py"
