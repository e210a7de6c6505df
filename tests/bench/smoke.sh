#!/usr/bin/env bash
# tests/bench/smoke.sh - imfuse-bench must keep working: a few tiny runs
# against real servers (prosody, imfused, BitlBee) in a private network
# namespace, both directions, closed and open loop, each relay, and imfused
# on each dataplane backend (kernel, DPDK on net_tap and on net_af_packet,
# env.sh's links).  Checks the JSON and that every message arrived exactly
# once; never looks at a timing.
# Also: a set-up failure is reported as such (exit 2, error in words).
#
# Uses the ASan build (BUILD, default build/asan: imfused and imfuse-bench).
# Needs root, prosody, bitlbee, openssl, ethtool, nsenter and /usr/bin/python3;
# exits 77 with a reason when one is missing.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
self="$top/tests/bench/smoke.sh"
if [ "${IMFUSE_IN_NETNS:-}" != 1 ]; then
    [ "$(id -u)" = 0 ] || { echo "skip: needs root for unshare -n" >&2; exit 77; }
    for c in prosody bitlbee openssl ethtool nsenter; do
        command -v $c >/dev/null || { echo "skip: $c is not installed" >&2; exit 77; }
    done
    [ -x /usr/bin/python3 ] || { echo "skip: /usr/bin/python3 missing" >&2; exit 77; }
    exec env IMFUSE_IN_NETNS=1 unshare -n "$self" "$@"
fi
ip link set lo up || exit 1
ulimit -c 0
cd "$top" || exit 1

BUILD=${BUILD:-${IMFUSE_BUILD:-build/asan}}
export BENV_BUILD=$top/$BUILD
for b in imfused imfuse-bench; do
    [ -x "$BUILD/$b" ] || { echo "$BUILD/$b is missing (make asan)" >&2; exit 1; }
done
. "$top/tests/bench/env.sh"
work=$(mktemp -d /tmp/imfuse-bench-smoke.XXXXXX)
cleanup() {
    local rc=$?
    benv_stop || rc=1
    [ $rc = 0 ] && rm -rf "$work" || echo "kept $work" >&2
    exit $rc
}
trap cleanup EXIT
BENV_PREFIXES="imf bee dir ims imk imt ima"
benv_links || exit 1
benv_start "$work" 2 bitlbee || exit 1
benv_tmpfs_start || exit 1
benv_backends_start || exit 1

fail=0
common=(--xmpp "$BENV_XMPP" --ca-file "$BENV_CA" --password "$BENV_PASSWORD" --xmpp-pid "$BENV_XMPP_PID"
        --setup-timeout 60 --idle-timeout 10)
imf=(--relay imfuse --prefix imf --imfuse "$BENV_IMFUSE" --control "$BENV_CTL")
bee=(--relay bitlbee --prefix bee --irc "$BENV_IRC" --pid "$BENV_BITLBEE_PID")
dir=(--relay direct --prefix dir)

# run NAME EXPECTED-EXIT CHECKS ARGS... : CHECKS is a comma list for check.py
run() {
    local name=$1 want=$2 checks=$3; shift 3
    timeout 120 "$BUILD/imfuse-bench" --json "${common[@]}" "$@" > "$work/$name.json" 2> "$work/$name.err"
    local rc=$?
    if [ $rc != "$want" ]; then
        echo "FAIL $name: exit $rc, expected $want"; cat "$work/$name.err" "$work/$name.json"; fail=1; return
    fi
    if /usr/bin/python3 "$top/tests/bench/check.py" "$work/$name.json" "$checks" "$@"; then
        echo "ok   $name"
    else
        echo "FAIL $name"; cat "$work/$name.err"; fail=1
    fi
}

M=200
run imfuse-send 0 exact,cpu,store,dataplane,nobusy "${imf[@]}" --messages $M --window 20 --users 2
run imfuse-recv 0 exact,cpu,store "${imf[@]}" --messages $M --window 20 --users 2 --direction recv
run imfuse-open 0 exact,cpu,store,open "${imf[@]}" --messages 100 --rate 200
run imfuse-tmpfs 0 exact,cpu,store --relay imfuse --prefix ims --imfuse "$BENV_TMPFS_IMFUSE" \
    --control "$BENV_TMPFS_CTL" --messages $M --window 20
run bitlbee-send 0 exact,cpu "${bee[@]}" --messages $M --window 20 --users 2
run bitlbee-recv 0 exact,cpu "${bee[@]}" --messages $M --window 20 --direction recv
run direct-send 0 exact "${dir[@]}" --messages $M --window 20
run direct-open 0 exact,open "${dir[@]}" --messages 100 --rate 200 --direction recv
# imfused on each dataplane backend; with DPDK, the busy loop turns.
while read -r name prefix addr ctl pid; do
    [ -n "$name" ] || continue
    [ "$name" = kernel ] && busy=nobusy || busy=busy
    run "backend-$name" 0 "exact,cpu,store,dataplane,$busy" --relay imfuse --prefix "$prefix" --imfuse "$addr" \
        --control "$ctl" --messages $M --window 20
done <<< "$BENV_BACKENDS"
# The peer cannot log in: the run fails at set-up and says why (exit 2).
run bad-password 2 failed:auth "${imf[@]}" --messages 10 --peer-password wrong-pw
# No daemon behind the address: a clear failure too.
run no-relay 2 failed:connect --relay bitlbee --prefix bee --irc 127.0.0.1:1 --messages 10

[ $fail = 0 ] && echo "imfuse-bench smoke test passed"
exit $fail
