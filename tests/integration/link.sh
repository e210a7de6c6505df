#!/usr/bin/env bash
# tests/integration/link.sh - run integration drivers with the appliance on the
# far side of a link, as it will be on a DPDK port: the IM servers, their real
# users and the test's own clients in one network namespace at 198.18.0.1,
# imfused (or xmpp_probe) in a second one at 198.18.0.2, the two joined by a
# veth pair.  Nothing crosses on loopback, so an address a driver or server
# library still hard-codes to 127.0.0.1 makes the run fail.
#
#   tests/integration/link.sh SCRIPT...    e.g. tests/integration/xmpp/flow.sh
#
# Each SCRIPT runs unchanged, in a pair of namespaces of its own; the exit
# status is the script's (with several: 0 when all passed, else 1, and a
# line per script).  Needs root (unshare -n -m, ip, nsenter).  What it sets
# (tests/integration/lib/testenv.sh says what each one means):
#   IMFUSE_TEST_SERVER_ADDR=198.18.0.1     on the veth end of the first namespace
#   IMFUSE_TEST_APPLIANCE_ADDR=198.18.0.2  on the other end, in the appliance's
#   IMFUSE_TEST_APPLIANCE_WRAP="nsenter --net=/proc/PID/ns/net"   PID: a sleep
#                                          holding the appliance's namespace
#   IMFUSE_TEST_SERVER_NAME=servers.test   in a private /etc/hosts (bind-mounted
#                                          in a private mount namespace)
#   IMFUSE_TEST_SOURCE_NET=198.19.0.0/16   local on the server side (a local
#                                          route, so any of it can be bound) and
#                                          routed there from the appliance
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/testenv.sh"
[ $# -gt 0 ] || { echo "usage: $0 SCRIPT..." >&2; exit 2; }
testenv_each "$0" "$@"
testenv_enter -m "$0" "$@"
testenv_need nsenter

server=198.18.0.1 appliance=198.18.0.2 srcnet=198.19.0.0/16
work=$(mktemp -d /tmp/imfuse-link.XXXXXX) || exit 1
testenv_holder=
cleanup() {
    [ -n "$testenv_holder" ] && proc_stop "$testenv_holder"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The appliance's namespace, held open by a sleep (stopped by PID at exit).
testenv_appliance_ns || exit 1
holder=$testenv_holder appns=$testenv_appns

ip link add imf-srv type veth peer name imf-app netns "$holder" \
    && ip addr add "$server/24" dev imf-srv && ip link set imf-srv up \
    && ip route add local "$srcnet" dev lo \
    || { echo "cannot set up the server side of the link" >&2; exit 1; }
nsenter --net="$appns" sh -c "ip link set lo up && ip addr add $appliance/24 dev imf-app \
    && ip link set imf-app up && ip route add $srcnet via $server" \
    || { echo "cannot set up the appliance side of the link" >&2; exit 1; }
printf '127.0.0.1 localhost\n%s servers.test\n' "$server" > "$work/hosts"
mount --bind "$work/hosts" /etc/hosts || { echo "cannot mount a private /etc/hosts" >&2; exit 1; }

export IMFUSE_TEST_SERVER_ADDR=$server IMFUSE_TEST_APPLIANCE_ADDR=$appliance \
    IMFUSE_TEST_SERVER_NAME=servers.test IMFUSE_TEST_SOURCE_NET=$srcnet \
    IMFUSE_TEST_APPLIANCE_WRAP="nsenter --net=$appns"
echo "# $1: servers at $server, the appliance at $appliance (net namespace of PID $holder)"
"$1"
