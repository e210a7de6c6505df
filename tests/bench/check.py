#!/usr/bin/python3
"""tests/bench/check.py JSON CHECKS - check one imfuse-bench --json result
for tests/bench/smoke.sh.  CHECKS is a comma list:

  exact      ran to the end, every message received exactly once, nothing
             lost, unsent or refused, a full and ordered set of percentiles
  cpu        the relay daemon was measured: CPU, RSS (window-scoped)
  store      imfused's store counters: commits and pages per commit
  open       an open-loop run (rate, pacing lag reported)
  dataplane  imfused's dataplane thread was measured: on-CPU time per message,
             the share of it in user space, preemptions
  busy       --io dpdk's busy loop turns: cycles, turns and microseconds per
             message, and the TSC rate they were converted at
  nobusy     no busy-turn figures (the kernel backend has none)
  failed:W   the run failed, and its error mentions W (case-insensitive)

Timings are never compared with anything.  Exit 0 when all hold; else each
failed check is printed.
"""
import json
import sys

NUM = (int, float)


def main():
    path, checks = sys.argv[1], sys.argv[2].split(",")
    bad = []

    def need(cond, what):
        if not cond:
            bad.append(what)

    try:
        with open(path) as f:
            text = f.read()
        lines = [l for l in text.splitlines() if l.strip()]
        need(len(lines) == 1, "exactly one JSON line on stdout, got %d" % len(lines))
        r = json.loads(lines[0])
    except (OSError, ValueError, IndexError) as e:
        print("  not JSON: %s" % e)
        return 1
    for k, t in (("relay", str), ("direction", str), ("mode", str), ("messages", int), ("ok", bool),
                 ("sent", int), ("received", int), ("lost", int), ("duplicated", int), ("unsent", int),
                 ("send_errors", int), ("stray", int), ("msgs_per_s", NUM), ("elapsed_s", NUM),
                 ("latency_us", dict), ("bench_cpu_us_per_msg", NUM), ("window_mono_s", list)):
        need(isinstance(r.get(k), t), "key %s of type %s" % (k, t))
    if bad:
        print("\n".join("  " + b for b in bad))
        return 1
    lat = r["latency_us"]
    for c in checks:
        if c == "exact":
            m = r["messages"]
            need(r["ok"], "ok is true (error: %s)" % r.get("error"))
            need(r["sent"] == m, "sent %d == messages %d" % (r["sent"], m))
            need(r["received"] == m, "received %d == messages %d" % (r["received"], m))
            for k in ("lost", "duplicated", "unsent", "send_errors"):
                need(r[k] == 0, "%s == 0 (is %d)" % (k, r[k]))
            need(lat.get("n") == m, "latency n %s == messages %d" % (lat.get("n"), m))
            order = [lat.get(k) for k in ("min", "p50", "p90", "p99", "p999", "max")]
            need(all(isinstance(v, NUM) for v in order), "every percentile is a number")
            if all(isinstance(v, NUM) for v in order):
                need(order[0] >= 0 and order == sorted(order), "min <= p50 <= ... <= max: %s" % order)
            need(r["msgs_per_s"] > 0 and r["elapsed_s"] > 0, "a rate and a duration")
            need(r["window_mono_s"][1] >= r["window_mono_s"][0] > 0, "a window on the monotonic clock")
        elif c == "cpu":
            need(isinstance(r.get("pid"), int) and r["pid"] > 0, "the daemon's pid")
            for k in ("cpu_s", "cpu_us_per_msg", "cpu_sched_us_per_msg"):
                need(isinstance(r.get(k), NUM) and r[k] >= 0, "%s >= 0" % k)
            need(isinstance(r.get("rss_peak_kib"), int) and r["rss_peak_kib"] > 0, "peak RSS > 0")
            need(r.get("rss_peak_scope") == "window", "peak RSS reset for the window (root)")
        elif c == "store":
            need(isinstance(r.get("store_commits"), NUM) and r["store_commits"] >= 1,
                 "at least one store commit")
            need(isinstance(r.get("commits_per_msg"), NUM) and r["commits_per_msg"] > 0, "commits per message")
            need(isinstance(r.get("pages_per_commit"), NUM) and r["pages_per_commit"] > 0,
                 "pages written per commit > 0 (imfused's store_bytes_written)")
            need(isinstance(r.get("store_cpu_us_per_msg"), NUM) and r["store_cpu_us_per_msg"] > 0,
                 "CPU time in commits per message > 0 (imfused's store_commit_cpu_us)")
        elif c == "open":
            need(r["mode"] == "open" and r.get("rate", 0) > 0, "open loop with a rate")
            need(isinstance(r.get("send_lag_max_us"), NUM), "pacing lag reported")
        elif c == "dataplane":
            need(isinstance(r.get("dp_thread_us_per_msg"), NUM) and r["dp_thread_us_per_msg"] > 0,
                 "dataplane thread CPU per message > 0")
            need(isinstance(r.get("dp_user_share"), NUM) and r["dp_user_share"] <= 1,
                 "dataplane user-space share (-1: no tick in the window)")
            need(isinstance(r.get("dp_preempted"), NUM) and r["dp_preempted"] >= 0, "dataplane preemptions")
        elif c == "busy":
            for k in ("io_busy_us_per_msg", "io_busy_cycles_per_msg", "io_busy_turns_per_msg"):
                need(isinstance(r.get(k), NUM) and r[k] > 0, "%s > 0" % k)
            need(isinstance(r.get("tsc_hz"), NUM) and 1e8 < r["tsc_hz"] < 1e10, "a TSC rate (%s)" % r.get("tsc_hz"))
        elif c == "nobusy":
            need("io_busy_us_per_msg" not in r, "no busy-turn figures")
        elif c.startswith("failed:"):
            word = c.split(":", 1)[1].lower()
            need(r["ok"] is False, "ok is false")
            need(word in str(r.get("error", "")).lower(), "error mentions %r: %r" % (word, r.get("error")))
        else:
            bad.append("unknown check %s" % c)
    if bad:
        print("\n".join("  " + b for b in bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
