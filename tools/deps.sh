#!/bin/sh
# tools/deps.sh - install every Debian package imfuse needs to build, run and
# test.  Quick and quiet when everything is present already.
set -eu
# bitlbee: the relay imfuse-bench compares with (tests/bench/smoke.sh runs it too;
# `make bench` adds linux-perf for its profile).
PKGS="build-essential pkg-config clang libclang-rt-14-dev
      liblmdb-dev lmdb-utils libmbedtls-dev libmsgpack-dev libexpat1-dev libargon2-dev
      ca-certificates iproute2 openssl util-linux procps
      prosody ejabberd python3-msgpack python3-slixmpp
      ngircd inspircd atheme-services python3-irc kamailio kamailio-presence-modules jabberd2
      bitlbee"
missing=
for p in $PKGS; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || missing="$missing $p"
done
# An expat from before Debian's security update (CVE-2023-52425, reparse
# deferral) builds, but the update is wanted: upgrade it with the rest.
if [ -r /usr/include/expat.h ] && ! grep -q XML_SetReparseDeferralEnabled /usr/include/expat.h; then
    missing="$missing libexpat1-dev libexpat1"
fi
[ -z "$missing" ] && exit 0
echo "make deps: installing:$missing"
if [ "$(id -u)" != 0 ]; then
    echo "make deps: these packages are missing and installing them needs root:$missing" >&2
    exit 1
fi
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null
