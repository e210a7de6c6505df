#!/usr/bin/env bash
# Hostile clients against authentication (auth.py): pipelined guesses, login
# floods, registrations, lockouts behind one address, NUL, oversized unified
# lists.  Inside a private network namespace; needs root (unshare -n).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/testenv.sh"
testenv_enter "$0" "$@"
exec /usr/bin/python3 "$here/auth.py"
