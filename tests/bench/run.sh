#!/usr/bin/env bash
# tests/bench/run.sh - `make bench`: imfuse side by side with BitlBee 3.6 on the
# same prosody, the same messages and the same window, runs alternating
# imfuse, BitlBee, imfuse, BitlBee...; then docs/BENCHMARKS.md.
#
# Needs root (a private network namespace).  Installs what only the bench
# needs (bitlbee, linux-perf).  Expects `make all` done (the Makefile's
# bench target does it).  Every process started here is stopped by PID.
#
# Suites (RUNS runs of each relay, M messages of 50 bytes, 1 user):
#   send W=50     user -> peer, closed loop, 50 in flight; each round also runs
#                 imfuse with its store on a tmpfs (benv_tmpfs_start: not
#                 durable), which shows what the durable commits cost
#   send W=1000   the same with 1000 in flight
#   recv W=50     peer -> user (imfuse: message events, acknowledged)
#   open loop     R = half of imfuse's median msgs/s at W=1000; direct XMPP
#                 client, imfuse, BitlBee: the latency each relay adds
#   profile       one more imfuse run at W=1000 under perf (not in the tables)
#   backends      imfused on each dataplane backend, on identical work (same
#                 prosody, same messages): kernel sockets, DPDK on net_tap and
#                 DPDK on net_af_packet, each across a software link of its own
#                 (env.sh); send W=1000 and recv W=50, runs alternating kernel,
#                 net_tap, net_af_packet; then one more send W=1000 run of each
#                 with its dataplane thread under perf
#
# Knobs: BENCH_RUNS (3), BENCH_MESSAGES (20000), BENCH_OPEN_SECONDS (4),
#        BENCH_PERF (1: profile), BENCH_BACKENDS (1: the backends' comparison),
#        BENCH_DOC (docs/BENCHMARKS.md),
#        BENCH_OUT (build/bench: raw results, logs, perf data).
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
self="$top/tests/bench/run.sh"
cd "$top" || exit 2

if [ "${IMFUSE_IN_NETNS:-}" != 1 ]; then
    [ "$(id -u)" = 0 ] || { echo "make bench: needs root (private network namespace, apt-get)" >&2; exit 2; }
    missing=
    for p in bitlbee linux-perf; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "make bench: installing:$missing"
        apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null \
            || { echo "make bench: cannot install$missing" >&2; exit 2; }
    fi
    if [ "${BENCH_BACKENDS:-1}" = 1 ]; then
        for c in ethtool nsenter; do
            command -v $c >/dev/null || { echo "make bench: $c is missing (make deps), or BENCH_BACKENDS=0" >&2; exit 2; }
        done
    fi
    for b in build/imfused build/imfuse-bench; do
        [ -x "$b" ] || { echo "make bench: $b is missing: run make all first" >&2; exit 2; }
    done
    exec env IMFUSE_IN_NETNS=1 unshare -n "$self" "$@"
fi

ip link set lo up || { echo "cannot bring lo up" >&2; exit 2; }
ulimit -c 0

RUNS=${BENCH_RUNS:-3}
M=${BENCH_MESSAGES:-20000}
OPEN_S=${BENCH_OPEN_SECONDS:-4}
out=${BENCH_OUT:-build/bench}
doc=${BENCH_DOC:-docs/BENCHMARKS.md}
rm -rf "$out"
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
results=$out/results.jsonl
: > "$results"
t_start=$SECONDS

# The machine, before.
{
    echo "nproc=$(nproc)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "kernel=$(uname -r)"
    echo "mem=$(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
    echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "fs=$(df -T "$out" | awk 'NR==2 {print $2 " on " $1}')"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+changes')"
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "bitlbee=$(dpkg-query -W -f='${Version}' bitlbee 2>/dev/null)"
    echo "prosody=$(dpkg-query -W -f='${Version}' prosody 2>/dev/null)"
    echo "runs=$RUNS"
    echo "messages=$M"
    echo "dpdk=$(dpkg-query -W -f='${Version}' libdpdk-dev 2>/dev/null)"
} > "$out/machine.txt"

. "$top/tests/bench/env.sh"
perf_pid=
backends=${BENCH_BACKENDS:-1}
cleanup() {
    local rc=$?
    [ -n "$perf_pid" ] && proc_stop "$perf_pid"
    benv_stop || rc=1
    exit $rc
}
trap cleanup EXIT

echo "make bench: starting prosody, imfused and bitlbee in a private network namespace"
if [ "$backends" = 1 ]; then
    BENV_PREFIXES="imf bee dir ims imk imt ima"
    benv_links || exit 2
else
    BENV_PREFIXES="imf bee dir ims"
fi
benv_start "$out/work" 1 bitlbee || exit 2
benv_tmpfs_start || exit 2
echo "xmpp=$BENV_XMPP" >> "$out/machine.txt"
if [ "$backends" = 1 ]; then
    echo "make bench: imfused on each dataplane backend (kernel, net_tap, net_af_packet)"
    benv_backends_start || exit 2
fi

common=(--xmpp "$BENV_XMPP" --ca-file "$BENV_CA" --password "$BENV_PASSWORD" --xmpp-pid "$BENV_XMPP_PID"
        --idle-timeout 3)
imf=(--relay imfuse --prefix imf --imfuse "$BENV_IMFUSE" --control "$BENV_CTL")
bee=(--relay bitlbee --prefix bee --irc "$BENV_IRC" --pid "$BENV_BITLBEE_PID")
dir=(--relay direct --prefix dir)
tmpfs=(--relay imfuse --prefix ims --imfuse "$BENV_TMPFS_IMFUSE" --control "$BENV_TMPFS_CTL")

# bench LABEL ARGS...: one run, its JSON appended to the results, one line shown.
# With $backend set, the JSON gets "backend": $backend.
bench() {
    local label=$1; shift
    local line rc
    line=$(build/imfuse-bench --json --label "$label" "${common[@]}" "$@" 2>>"$out/bench.err")
    rc=$?
    if [ -z "$line" ]; then
        echo "  $label: imfuse-bench printed nothing (exit $rc); see $out/bench.err" >&2
        return 1
    fi
    /usr/bin/python3 -c '
import json, sys
r = json.loads(sys.argv[1])
if sys.argv[2]:
    r["backend"] = sys.argv[2]
with open(sys.argv[3], "a") as f:
    f.write(json.dumps(r) + "\n")
cpu, dp, busy = r.get("cpu_us_per_msg"), r.get("dp_thread_us_per_msg"), r.get("io_busy_us_per_msg")
extra = ""
if sys.argv[2]:
    extra = "  dataplane %s us/msg%s" % ("%6.2f" % dp if dp is not None else "-",
                                          "  busy %6.2f" % busy if busy is not None else "")
print("  %-21s %-13s %7.0f msgs/s  cpu %s us/msg  p99 %7.2f ms  lost %d dup %d%s%s" % (
    r["label"], sys.argv[2] or r["relay"], r["msgs_per_s"], "%6.2f" % cpu if cpu is not None else "     -",
    r["latency_us"]["p99"] / 1000, r["lost"] + r["unsent"], r["duplicated"], extra,
    "" if r["ok"] else "  FAILED: " + r.get("error", "")))' "$line" "${backend:-}" "$results"
    return 0
}
backend=

echo "make bench: warm-up (not recorded in the tables)"
bench warmup "${imf[@]}" --messages 2000
bench warmup "${bee[@]}" --messages 2000
bench warmup "${dir[@]}" --messages 2000
bench warmup "${tmpfs[@]}" --messages 2000

suite() {   # suite LABEL ARGS... : RUNS pairs, imfuse then BitlBee (then
            # imfuse with its store on tmpfs, labelled "LABEL, store on tmpfs", if TMPFS=1)
    local label=$1; shift
    echo "make bench: $label ($RUNS runs each, alternating)"
    for ((i = 1; i <= RUNS; i++)); do
        bench "$label" "${imf[@]}" --messages "$M" "$@"
        bench "$label" "${bee[@]}" --messages "$M" "$@"
        [ "${TMPFS:-0}" = 1 ] && bench "$label, store on tmpfs" "${tmpfs[@]}" --messages "$M" "$@"
    done
}
TMPFS=1 suite "send W=50" --window 50
suite "send W=1000" --window 1000
suite "recv W=50" --window 50 --direction recv

# Open loop at half of imfuse's peak (its median at W=1000).
peak=$(/usr/bin/python3 -c '
import json, sys, statistics
v = [json.loads(l) for l in open(sys.argv[1])]
v = [r["msgs_per_s"] for r in v if r["label"] == "send W=1000" and r["relay"] == "imfuse" and r["ok"]]
print(int(statistics.median(v)) if v else 0)' "$results")
if [ "${peak:-0}" -gt 0 ]; then
    rate=$((peak / 2))
    n_open=$((rate * OPEN_S))
    [ $n_open -gt "$M" ] && n_open=$M
    echo "make bench: open loop at $rate msgs/s (half of imfuse's $peak), $n_open messages ($RUNS runs each)"
    for ((i = 1; i <= RUNS; i++)); do
        bench "open loop" "${dir[@]}" --rate "$rate" --messages "$n_open"
        bench "open loop" "${imf[@]}" --rate "$rate" --messages "$n_open"
        bench "open loop" "${bee[@]}" --rate "$rate" --messages "$n_open"
    done
else
    echo "make bench: no imfuse W=1000 figure: open loop skipped" >&2
fi

# Where imfuse's CPU goes: one more W=1000 run under perf (DWARF call graphs,
# the monotonic clock so that only the bench's window is reported).
if [ "${BENCH_PERF:-1}" = 1 ] && command -v perf >/dev/null; then
    echo "make bench: profile of imfused (one more send W=1000 run, under perf)"
    perf record -q -k CLOCK_MONOTONIC -F 1999 --call-graph dwarf,8192 -p "$BENV_IMFUSED_PID" \
        -o "$out/perf.data" > "$out/perf-record.log" 2>&1 &
    perf_pid=$!
    sleep 1
    bench profile "${imf[@]}" --messages "$M" --window 1000
    kill -INT "$perf_pid" 2>/dev/null
    wait "$perf_pid" 2>/dev/null
    perf_pid=
    win=$(tail -n 1 "$results" | /usr/bin/python3 -c '
import json, sys
r = json.loads(sys.stdin.read()); a, b = r["window_mono_s"]
print("%.6f,%.6f" % (a, b) if r["label"] == "profile" else "")')
    if [ -n "$win" ]; then
        perf report -i "$out/perf.data" --time "$win" --no-children --stdio --sort sym -g none \
            --percent-limit 0.3 > "$out/perf-self.txt" 2>"$out/perf-report.err"
        perf report -i "$out/perf.data" --time "$win" --children --stdio --sort sym -g none \
            --percent-limit 0.3 > "$out/perf-children.txt" 2>>"$out/perf-report.err"
        perf report -i "$out/perf.data" --time "$win" --no-children --stdio -n --sort comm -g none \
            > "$out/perf-comm.txt" 2>>"$out/perf-report.err"
        perf report -i "$out/perf.data" --time "$win" --children --stdio --sort comm \
            -g graph,3,caller,function,percent > "$out/perf-tree.txt" 2>>"$out/perf-report.err"
    fi
fi

# The dataplane backends on identical work: runs alternate kernel, net_tap,
# net_af_packet; then each once more with its dataplane thread under perf.
if [ "$backends" = 1 ]; then
    warm=1
    backend_suite() {   # backend_suite LABEL ARGS...
        local label=$1 name prefix addr ctl pid; shift
        echo "make bench: backends, $label ($RUNS runs each, alternating)"
        for ((i = 1; i <= RUNS; i++)); do
            while read -r name prefix addr ctl pid; do
                [ -n "$name" ] || continue
                if [ $warm = 1 ]; then
                    backend=$name bench warmup --relay imfuse --prefix "$prefix" --imfuse "$addr" --control "$ctl" \
                        --messages 2000
                fi
                backend=$name bench "$label" --relay imfuse --prefix "$prefix" --imfuse "$addr" --control "$ctl" \
                    --messages "$M" "$@"
            done <<< "$BENV_BACKENDS"
            warm=0
        done
    }
    backend_suite "backends send W=1000" --window 1000
    backend_suite "backends recv W=50" --window 50 --direction recv
    if [ "${BENCH_PERF:-1}" = 1 ] && command -v perf >/dev/null; then
        echo "make bench: backends, profile of each dataplane thread (one more send W=1000 run each, under perf)"
        while read -r name prefix addr ctl pid; do
            [ -n "$name" ] || continue
            tid=$(grep -lx imfused-dp0 /proc/"$pid"/task/*/comm 2>/dev/null | head -n 1 | cut -d/ -f5)
            [ -n "$tid" ] || { echo "  $name: no imfused-dp0 thread in $pid" >&2; continue; }
            perf record -q -k CLOCK_MONOTONIC -F 1999 --call-graph dwarf,8192 -t "$tid" -o "$out/perf-$name.data" \
                > "$out/perf-record-$name.log" 2>&1 &
            perf_pid=$!
            sleep 1
            backend=$name bench "backends profile" --relay imfuse --prefix "$prefix" --imfuse "$addr" \
                --control "$ctl" --messages "$M" --window 1000
            kill -INT "$perf_pid" 2>/dev/null
            wait "$perf_pid" 2>/dev/null
            perf_pid=
            win=$(tail -n 1 "$results" | /usr/bin/python3 -c '
import json, sys
r = json.loads(sys.stdin.read()); a, b = r["window_mono_s"]
print("%.6f,%.6f" % (a, b) if r["label"] == "backends profile" else "")')
            [ -n "$win" ] || continue
            perf report -i "$out/perf-$name.data" --time "$win" --no-children --stdio --sort dso,sym -g none \
                --percent-limit 1 > "$out/perf-$name-self.txt" 2>>"$out/perf-report.err"
            perf report -i "$out/perf-$name.data" --time "$win" --children --stdio --sort sym -g none \
                --percent-limit 0.5 > "$out/perf-$name-children.txt" 2>>"$out/perf-report.err"
            perf report -i "$out/perf-$name.data" --time "$win" --no-children --stdio --sort dso -g none \
                > "$out/perf-$name-dso.txt" 2>>"$out/perf-report.err"
        done <<< "$BENV_BACKENDS"
    fi
fi

echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/machine.txt"
echo "seconds=$((SECONDS - t_start))" >> "$out/machine.txt"
/usr/bin/python3 "$top/tests/bench/report.py" "$out" "$doc" || exit 1
echo "make bench: done in $((SECONDS - t_start)) s; wrote $doc (raw results: $results)"
