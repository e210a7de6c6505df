#!/usr/bin/env bash
# tests/fuzz/run.sh - the long fuzz runs behind `make fuzz-run`.
#
#   tests/fuzz/run.sh [NAME...]       every build/fuzz/fuzz_* (or the NAMEs)
#
# Each fuzzer runs until FUZZ_RUNS executions (default 10,000,000) or
# FUZZ_TIME seconds (default 1200), whichever comes first, growing its corpus
# in tests/fuzz/corpus/NAME.  The corpus is then minimised with libFuzzer's
# -merge=1 over edges (-use_counters=0: one input per new edge, not per hit
# count): hand-written seeds (named files) always stay, the fuzzer's own
# finds (40-hex-digit names) are kept only when they add coverage, so the
# committed corpus stays small.  A finding stops that fuzzer, leaves the
# input in build/fuzz/run/ and makes the script exit 1.
#
# One line per fuzzer goes to build/fuzz/run/summary.txt and stdout:
#   NAME execs N time S exec/s R cov C ft F corpus K (+NEW) rss M MB
# (cov: edges covered, ft: libFuzzer's features, from its final report).
# Run it niced in the background: it takes FUZZ_TIME per fuzzer at most.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 2
runs=${FUZZ_RUNS:-10000000}
secs=${FUZZ_TIME:-1200}
out=build/fuzz/run
mkdir -p "$out"
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for f in build/fuzz/fuzz_*; do
        [ -x "$f" ] && [ -f "$f" ] && names+=("$(basename "$f")")
    done
fi
[ ${#names[@]} -gt 0 ] || { echo "run.sh: no fuzzers in build/fuzz (make fuzz)" >&2; exit 2; }

is_found() { [[ $1 =~ ^[0-9a-f]{40}$ ]]; }

status=0
for n in "${names[@]}"; do
    bin=build/fuzz/$n corpus=tests/fuzz/corpus/$n log=$out/$n.log new=$out/$n.new
    [ -x "$bin" ] || { echo "run.sh: $bin is missing (make fuzz)" >&2; status=1; continue; }
    mkdir -p "$corpus"
    rm -rf "$new" && mkdir -p "$new"
    before=$(ls "$corpus" | wc -l)
    start=$(date +%s)
    "$bin" -runs="$runs" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -error_exitcode=1 -artifact_prefix="$out/$n-" "$new" "$corpus" >"$log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    if [ $rc -ne 0 ]; then
        echo "$n: FAILED (rc $rc) after ${took}s, see $log" | tee -a "$out/summary.txt"
        status=1
        continue
    fi
    # Minimise: merge every input into an empty directory; the merge keeps
    # one input per new coverage.  Seeds with names are kept whatever it says.
    min=$out/$n.min
    rm -rf "$min" && mkdir -p "$min"
    "$bin" -merge=1 -use_counters=0 -timeout=10 -rss_limit_mb=2048 "$min" "$corpus" "$new" >>"$log" 2>&1 || {
        echo "$n: merge failed, corpus left as it was, see $log" >&2; status=1; continue; }
    declare -A named=()
    for f in "$corpus"/*; do
        [ -f "$f" ] || continue
        b=$(basename "$f")
        if is_found "$b"; then
            rm -f "$f"
        else
            named[$(sha1sum <"$f" | cut -c1-40)]=1
        fi
    done
    for f in "$min"/*; do
        [ -f "$f" ] || continue
        [ -n "${named[$(basename "$f")]:-}" ] || cp "$f" "$corpus/"
    done
    unset named
    after=$(ls "$corpus" | wc -l)
    line="$n execs ${execs:-?} time ${took}s exec/s ${rate:-?} cov ${cov:-?} ft ${ft:-?} corpus $after (was $before) rss ${rss:-?} MB"
    echo "$line" | tee -a "$out/summary.txt"
    rm -rf "$new" "$min"
done
exit $status
