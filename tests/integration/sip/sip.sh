#!/usr/bin/env bash
# SIP/SIMPLE through the real daemon against a real kamailio (tests/integration/sip/sip.py),
# messages and presence, inside a private network namespace, once with MD5 and once with
# SHA-256 digest challenges.  Needs root (unshare -n), kamailio and its presence modules.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/testenv.sh"
testenv_enter "$0" "$@"
testenv_need kamailio
found=
for m in /usr/lib/*/kamailio/modules/presence_xml.so /usr/lib/kamailio/modules/presence_xml.so; do
    [ -f "$m" ] && found=1
done
[ -n "$found" ] || testenv_skip "kamailio's presence modules are not installed (make deps)"
# The whole scenario once per digest algorithm the registrar challenges with.
for alg in MD5 SHA-256; do
    echo "# kamailio challenges with $alg"
    KAMAILIO_ALG=$alg /usr/bin/python3 "$here/sip.py" || exit 1
done
