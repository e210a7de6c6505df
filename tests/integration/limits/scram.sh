#!/usr/bin/env bash
# Server-chosen work bounded (scram.py): a real prosody asking for 1,000,000
# SCRAM iterations, and 30 accounts at the cap (100,000) derived off the
# dataplane and cached.  Inside a private network namespace; needs root.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/testenv.sh"
testenv_enter "$0" "$@"
testenv_need prosody
exec /usr/bin/python3 "$here/scram.py"
