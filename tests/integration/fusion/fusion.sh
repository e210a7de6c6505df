#!/usr/bin/env bash
# One unified contact across XMPP, IRC and SIP (fusion.py), once with ngircd
# (ISON) and once with inspircd (MONITOR), in a private network namespace.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/testenv.sh"
testenv_enter "$0" "$@"
rc=0
for ircd in ${FUSION_IRCD:-ngircd inspircd}; do
    /usr/bin/python3 "$here/fusion.py" "$ircd" || rc=1
done
exit $rc
