#!/usr/bin/env bash
# Quotas (quota.py): accounts per user and in total, contacts per account on
# every network, queued messages per user against a real prosody; CTCP answers
# bounded against a hostile IRC server (the test itself).  Inside a
# private network namespace; needs root (unshare -n).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/testenv.sh"
testenv_enter "$0" "$@"
testenv_need prosody
exec /usr/bin/python3 "$here/quota.py"
