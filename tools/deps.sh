#!/bin/sh
# tools/deps.sh - install every Debian package imfuse needs to build, run and
# test.  Quick and quiet when everything is present already.
set -eu
# bitlbee: the relay imfuse-bench compares with (tests/bench/smoke.sh runs it too;
# `make bench` adds linux-perf for its profile).
PKGS="build-essential pkg-config clang libclang-rt-14-dev
      liblmdb-dev lmdb-utils libmbedtls-dev libmsgpack-dev libexpat1-dev libargon2-dev
      ca-certificates iproute2 openssl util-linux procps
      dpkg-dev libdpdk-dev dpdk libnl-3-dev libnl-route-3-dev ethtool
      prosody ejabberd python3-msgpack python3-slixmpp
      ngircd inspircd atheme-services python3-irc kamailio kamailio-presence-modules jabberd2
      libsystemd-dev bitlbee"
# Packaging, man pages and the appliance image (make deb, make image,
# images/smoke.sh), installed without their recommendations (qemu's would
# bring a desktop's worth).
OPS_PKGS="debhelper dpkg-dev fakeroot lintian mandoc man-db mmdebstrap eatmydata e2fsprogs systemd
      qemu-system-x86"
is_missing() {
    st=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)
    [ "$st" != installed ]
}
missing= ops_missing=
for p in $PKGS; do
    is_missing "$p" && missing="$missing $p"
done
for p in $OPS_PKGS; do
    is_missing "$p" && ops_missing="$ops_missing $p"
done
# An expat from before Debian's security update (CVE-2023-52425, reparse
# deferral) builds, but the update is wanted: upgrade it with the rest.
if [ -r /usr/include/expat.h ] && ! grep -q XML_SetReparseDeferralEnabled /usr/include/expat.h; then
    missing="$missing libexpat1-dev libexpat1"
fi
if [ -n "$missing$ops_missing" ]; then
    echo "make deps: installing:$missing$ops_missing"
    if [ "$(id -u)" != 0 ]; then
        echo "make deps: these packages are missing and installing them needs root:$missing$ops_missing" >&2
        exit 1
    fi
    apt-get update -q >/dev/null
    [ -z "$missing" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null
    [ -z "$ops_missing" ] ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $ops_missing >/dev/null
fi
# lwIP is compiled with the project's own options from Debian's source
# package, fetched with apt into the build directory (never committed).
exec "$(dirname "$0")/lwip-src.sh" "${LWIP_DIR:-build/deps/lwip}"
