#!/usr/bin/env bash
# tests/integration/dpdk/run.sh - run integration drivers a second time with
# the appliance on a DPDK port: imfused --io dpdk on net_tap (lwIP at
# 198.18.0.2), the IM servers, their real users and the test's own clients on
# the kernel side of the TAP (198.18.0.1), all inside a private network (and
# mount) namespace.  Every frame between a client or a server and imfused
# crosses the TAP and lwIP; nothing reaches imfused over the kernel's stack.
#
#   tests/integration/dpdk/run.sh SCRIPT...   e.g. tests/integration/xmpp/flow.sh
#
# Each SCRIPT runs unchanged, in a namespace of its own with a fresh TAP; the
# exit status is the script's (with several: 0 when all passed, else 1, and a
# line per script with its time).  Needs root (unshare -n -m, ip); skips (77)
# otherwise.  What it sets (tests/integration/lib/testenv.sh says what each
# one means):
#   IMFUSE_TEST_SERVER_ADDR=198.18.0.1     the TAP's kernel side (imf0), a
#                                          persistent TAP: it outlives imfused,
#                                          so kill -9 and a restart keep the
#                                          servers bound
#   IMFUSE_TEST_APPLIANCE_ADDR=198.18.0.2  lwIP's address on net_tap0
#   IMFUSE_TEST_APPLIANCE_ARGS="--config WORK/imfused-dpdk.conf"
#                                          io = dpdk and the dpdk-* keys (EAL
#                                          without hugepages, the gateway
#                                          198.18.0.1)
#   IMFUSE_TEST_SERVER_NAME=servers.test   in a private /etc/hosts (bind-mounted
#                                          in the private mount namespace); the
#                                          controlplane resolves it
#   IMFUSE_TEST_SOURCE_NET=198.19.0.0/16   local on the kernel side (a local
#                                          route, so any of it can be bound);
#                                          lwIP answers it through the gateway
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/testenv.sh"
. "$here/lib.sh"
[ $# -gt 0 ] || { echo "usage: $0 SCRIPT..." >&2; exit 2; }
[ "$(id -u)" = 0 ] || testenv_skip "the --io dpdk run of $* needs root (a private network namespace, a TAP, DPDK)"
testenv_each "$0" "$@"
testenv_enter -m "$0" "$@"

server=198.18.0.1 appliance=198.18.0.2 srcnet=198.19.0.0/16 tap=imf0
work=$(mktemp -d /tmp/imfuse-dpdk.XXXXXX) || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# A persistent TAP: DPDK's net_tap attaches to it (iface=), and it stays,
# with its address, when imfused is killed.
dpdk_tap "$tap" "$server/24" || exit 1
ip route add local "$srcnet" dev lo || { echo "cannot make $srcnet local" >&2; exit 1; }
printf '127.0.0.1 localhost\n%s servers.test\n' "$server" > "$work/hosts"
mount --bind "$work/hosts" /etc/hosts || { echo "cannot mount a private /etc/hosts" >&2; exit 1; }
cat > "$work/imfused-dpdk.conf" <<EOF
# written by tests/integration/dpdk/run.sh
io = dpdk
dpdk-eal = --no-pci --no-huge -m 512 --no-shconf --no-telemetry --vdev=net_tap0,iface=$tap
dpdk-port = net_tap0
dpdk-address = $appliance/24
dpdk-gateway = $server
dpdk-tap-kernel = $server/24
EOF

export IMFUSE_TEST_SERVER_ADDR=$server IMFUSE_TEST_APPLIANCE_ADDR=$appliance \
    IMFUSE_TEST_SERVER_NAME=servers.test IMFUSE_TEST_SOURCE_NET=$srcnet \
    IMFUSE_TEST_APPLIANCE_ARGS="--config $work/imfused-dpdk.conf" IMFUSE_TEST_APPLIANCE_WRAP=
echo "# $1: imfused --io dpdk on net_tap at $appliance (lwIP), servers and clients at $server ($tap)"
"$1"
