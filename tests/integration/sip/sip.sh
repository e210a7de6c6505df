#!/usr/bin/env bash
# SIP/SIMPLE through the real daemon against a real kamailio (tests/integration/sip/sip.py),
# messages and presence, inside a private network namespace, once with MD5 and once with
# SHA-256 digest challenges.  Needs root (unshare -n), kamailio and its presence modules.
set -u
here=$(cd "$(dirname "$0")" && pwd)
if [ "${IMFUSE_IN_NETNS:-}" != 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "skipped: needs root for a private network namespace (unshare -n)" >&2
        exit 77
    fi
    if ! command -v kamailio >/dev/null; then
        echo "skipped: kamailio is not installed (apt-get install kamailio)" >&2
        exit 77
    fi
    found=
    for m in /usr/lib/*/kamailio/modules/presence_xml.so /usr/lib/kamailio/modules/presence_xml.so; do
        [ -f "$m" ] && found=1
    done
    if [ -z "$found" ]; then
        echo "skipped: kamailio's presence modules are not installed (make deps)" >&2
        exit 77
    fi
    exec env IMFUSE_IN_NETNS=1 unshare -n "$0" "$@"
fi
ip link set lo up
ulimit -c 0
# The whole scenario once per digest algorithm the registrar challenges with.
for alg in MD5 SHA-256; do
    echo "# kamailio challenges with $alg"
    KAMAILIO_ALG=$alg /usr/bin/python3 "$here/sip.py" || exit 1
done
