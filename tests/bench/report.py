#!/usr/bin/python3
"""tests/bench/report.py OUT DOC - write docs/BENCHMARKS.md from a `make bench` run.

OUT is the run's directory (tests/bench/run.sh): machine.txt (key=value),
results.jsonl (one imfuse-bench --json object per run, in run order),
perf-self.txt and perf-children.txt (perf report --stdio, optional).
Only the standard library; no figure is typed in by hand.
"""
import json
import os
import re
import statistics
import sys


def load(out):
    machine = {}
    with open(os.path.join(out, "machine.txt")) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                machine[k] = v
    runs = []
    with open(os.path.join(out, "results.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
    return machine, runs


def perf_table(path, children):
    """[(children%, self%, symbol)] or [(self%, symbol)] from perf report --stdio."""
    rows = []
    if not os.path.exists(path):
        return rows
    pat = (re.compile(r"^\s+([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.*?)\s*$") if children
           else re.compile(r"^\s+([\d.]+)%\s+\[([.k])\]\s+(.*?)\s*$"))
    with open(path) as f:
        for line in f:
            m = pat.match(line)
            if not m:
                continue
            if children:
                rows.append((float(m.group(1)), float(m.group(2)), m.group(3)))
            else:
                rows.append((float(m.group(1)), m.group(2), m.group(3)))
    return rows


def samples_of(out):
    """Exact sample count in the window (perf report -n --sort comm), else perf's rounded one."""
    path = os.path.join(out, "perf-comm.txt")
    if os.path.exists(path):
        n = 0
        with open(path) as f:
            for line in f:
                m = re.match(r"^\s+[\d.]+%\s+(\d+)\s+\S", line)
                if m:
                    n += int(m.group(1))
        if n:
            return str(n)
    path = os.path.join(out, "perf-self.txt")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                m = re.match(r"# Samples: (\S+)", line)
                if m:
                    return m.group(1)
    return None


# ---- figures ---------------------------------------------------------------

def lost_all(r):
    return r["lost"] + r["unsent"]


FIGURES = [
    # (title, getter, format, shown for)
    ("messages/s", lambda r: r["msgs_per_s"], "{:.0f}", "all"),
    ("relay CPU per message (µs, utime+stime)", lambda r: r.get("cpu_us_per_msg"), "{:.2f}", "all"),
    ("latency p50 (ms)", lambda r: r["latency_us"]["p50"] / 1000, "{:.2f}", "all"),
    ("latency p90 (ms)", lambda r: r["latency_us"]["p90"] / 1000, "{:.2f}", "all"),
    ("latency p99 (ms)", lambda r: r["latency_us"]["p99"] / 1000, "{:.2f}", "all"),
    ("latency p99.9 (ms)", lambda r: r["latency_us"]["p999"] / 1000, "{:.2f}", "all"),
    ("lost (handed to the relay, never received)", lambda r: r["lost"], "{:.0f}", "all"),
    ("never sent (window stalled by losses)", lambda r: r["unsent"], "{:.0f}", "all"),
    ("duplicated", lambda r: r["duplicated"], "{:.0f}", "all"),
    ("refused by the relay", lambda r: r["send_errors"], "{:.0f}", "all"),
    ("relay peak RSS during the window (MiB)", lambda r: r.get("rss_peak_kib", 0) / 1024 if "rss_peak_kib" in r else None, "{:.1f}", "all"),
    ("store commits per message", lambda r: r.get("commits_per_msg"), "{:.4f}", "imfuse"),
    ("messages per commit", lambda r: r.get("msgs_per_commit"), "{:.1f}", "imfuse"),
    ("store pages written per commit (LMDB's, as imfused wrote them)", lambda r: r.get("pages_per_commit"), "{:.1f}", "imfuse"),
    ("... and what the kernel charged imfused per commit, the file system's blocks included (pages)", lambda r: r.get("kernel_pages_per_commit"), "{:.1f}", "imfuse"),
    ("store CPU per message: imfused's CPU time inside its commits (µs)", lambda r: r.get("store_cpu_us_per_msg"), "{:.2f}", "imfuse"),
    ("XMPP server (prosody) CPU per message (µs)", lambda r: r.get("xmpp_cpu_us_per_msg"), "{:.1f}", "all"),
    ("bench's own CPU per message (µs)", lambda r: r.get("bench_cpu_us_per_msg"), "{:.1f}", "all"),
]


def values(runs, getter):
    out = []
    for r in runs:
        try:
            v = getter(r)
        except (KeyError, TypeError):
            v = None
        if v is not None:
            out.append(float(v))
    return out


def mmm(vals, fmt):
    if not vals:
        return "–"
    return "{} / **{}** / {}".format(fmt.format(min(vals)), fmt.format(statistics.median(vals)),
                                    fmt.format(max(vals)))


def ratio_text(a, b):
    if not a or not b:
        return "–"
    ma, mb = statistics.median(a), statistics.median(b)
    if mb == 0:
        return "–" if ma == 0 else "∞"
    return "{:.2f}×".format(ma / mb)


def paired_ratios(ra, rb, getter):
    """imfuse/BitlBee for run i of each (runs alternate, so pair them in order)."""
    out = []
    for a, b in zip(ra, rb):
        va, vb = values([a], getter), values([b], getter)
        if va and vb and vb[0] != 0:
            out.append(va[0] / vb[0])
    return out


def suite_table(runs, label, relays=("imfuse", "bitlbee")):
    rs = {rel: [r for r in runs if r["label"] == label and r["relay"] == rel] for rel in relays}
    names = {"imfuse": "imfuse", "bitlbee": "BitlBee", "direct": "direct XMPP client"}
    head = "| figure | " + " | ".join("{} (min / **median** / max)".format(names[x]) for x in relays)
    if relays == ("imfuse", "bitlbee"):
        head += " | imfuse ÷ BitlBee (medians) | paired runs, min–max |"
        sep = "|---|---|---|---|---|"
    else:
        head += " |"
        sep = "|---" * (len(relays) + 1) + "|"
    lines = [head, sep]
    for title, getter, fmt, who in FIGURES:
        if who == "imfuse" and "bitlbee" in relays and not values(rs["imfuse"], getter):
            continue
        cells = []
        for rel in relays:
            v = values(rs[rel], getter)
            cells.append(mmm(v, fmt) if (who == "all" or rel == who) else "–")
        line = "| {} | {}".format(title, " | ".join(cells))
        if relays == ("imfuse", "bitlbee"):
            if who == "all":
                a, b = values(rs["imfuse"], getter), values(rs["bitlbee"], getter)
                pr = paired_ratios(rs["imfuse"], rs["bitlbee"], getter)
                line += " | {} | {}".format(
                    ratio_text(a, b),
                    "{:.2f}–{:.2f}".format(min(pr), max(pr)) if pr else "–")
            else:
                line += " | – | –"
        lines.append(line + " |")
    n = {rel: len(rs[rel]) for rel in relays}
    failed = [r for rel in relays for r in rs[rel] if not r["ok"]]
    note = "Runs: " + ", ".join("{} {}".format(names[k], v) for k, v in n.items()) + "."
    if failed:
        note += " Failed runs (not hidden, counted above where they measured anything): " + "; ".join(
            "{}: {}".format(r["relay"], r.get("error", "")) for r in failed) + "."
    return "\n".join(lines) + "\n\n" + note + "\n"


def med(runs, label, relay, getter):
    v = values([r for r in runs if r["label"] == label and r["relay"] == relay], getter)
    return statistics.median(v) if v else None


def added_latency(runs, relay, q):
    """relay - direct latency percentile q (ms) of neighbouring open-loop runs."""
    d = [r for r in runs if r["label"] == "open loop" and r["relay"] == "direct"]
    x = [r for r in runs if r["label"] == "open loop" and r["relay"] == relay]
    return [(b["latency_us"][q] - a["latency_us"][q]) / 1000 for a, b in zip(d, x)]


def added_text(v):
    if not v:
        return "–"
    return "{:+.2f} ms ({:+.2f} to {:+.2f})".format(statistics.median(v), min(v), max(v))


def fmt_or(v, fmt, dash="–"):
    return dash if v is None else fmt.format(v)


TMPFS_LABEL = "send W=50, store on tmpfs"


def durability_section(w, runs):
    """imfuse with its store on disk and on a tmpfs, beside BitlBee (send W=50)."""
    groups = (("imfuse, store on disk (durable)", [r for r in runs if r["label"] == "send W=50" and r["relay"] == "imfuse"]),
              ("imfuse, store on tmpfs (not durable)", [r for r in runs if r["label"] == TMPFS_LABEL]),
              ("BitlBee (stores nothing)", [r for r in runs if r["label"] == "send W=50" and r["relay"] == "bitlbee"]))
    if not groups[1][1]:
        return
    w.append("## What durability costs (send, W = 50)\n")
    w.append("Each round of the W = 50 suite also ran a second imfused, identical but for its store, which "
             "lives on a tmpfs (`/dev/shm`): its `fdatasync` and synchronous meta-page write cost almost "
             "nothing, so the difference from the durable imfused is what the durable commits cost on this "
             "machine's disk. The tmpfs store keeps nothing across a power cut: it is a yardstick, never a "
             "configuration.\n")
    figs = (("CPU per message (µs)", lambda r: r.get("cpu_us_per_msg"), "{:.1f}"),
            ("of which inside the store's commits (µs)", lambda r: r.get("store_cpu_us_per_msg"), "{:.2f}"),
            ("messages per second", lambda r: r["msgs_per_s"], "{:.0f}"),
            ("messages per commit", lambda r: r.get("msgs_per_commit"), "{:.1f}"))
    w.append("| figure | " + " | ".join("{} (min / **median** / max)".format(n) for n, _ in groups) + " |")
    w.append("|---" * (len(groups) + 1) + "|")
    for title, getter, fmt in figs:
        w.append("| {} | {} |".format(title, " | ".join(mmm(values(g, getter), fmt) for _, g in groups)))
    cpu = lambda r: r.get("cpu_us_per_msg")
    bee = values(groups[2][1], cpu)
    w.append("\nimfuse ÷ BitlBee, CPU per message (medians): durable {}, store on tmpfs {}.\n".format(
        ratio_text(values(groups[0][1], cpu), bee), ratio_text(values(groups[1][1], cpu), bee)))


# ---- the dataplane backends (kernel vs DPDK) --------------------------------

BACKENDS = ("kernel", "net_tap", "net_af_packet")


def dp_work(r):
    """The dataplane's work per message (µs): with DPDK the TSC time of the
    loop turns that did work, with the kernel backend its thread's CPU time."""
    if r.get("backend") == "kernel":
        return r.get("dp_thread_us_per_msg")
    return r.get("io_busy_us_per_msg")


BACKEND_FIGURES = [
    ("messages/s", lambda r: r["msgs_per_s"], "{:.0f}"),
    ("**dataplane work per message (µs)**: DPDK busy loop turns (TSC); kernel: the thread's CPU time",
     dp_work, "{:.2f}"),
    ("dataplane thread's CPU time per message (µs, schedstat), every backend", lambda r: r.get("dp_thread_us_per_msg"), "{:.2f}"),
    ("busy loop turns per message (DPDK)", lambda r: r.get("io_busy_turns_per_msg"), "{:.3f}"),
    ("dataplane thread preempted, per 1000 messages", lambda r: 1000 * r["dp_preempted"] / r["received"]
     if r.get("dp_preempted") is not None and r.get("received") else None, "{:.1f}"),
    ("imfused CPU per message (µs, every thread)", lambda r: r.get("cpu_us_per_msg"), "{:.2f}"),
    ("latency p99 (ms)", lambda r: r["latency_us"]["p99"] / 1000, "{:.2f}"),
    ("lost, never sent, duplicated", lambda r: r["lost"] + r["unsent"] + r["duplicated"], "{:.0f}"),
    ("prosody CPU per message (µs)", lambda r: r.get("xmpp_cpu_us_per_msg"), "{:.1f}"),
    ("cores kept busy at that rate: imfused, every thread", lambda r: core_use(r, "cpu_us_per_msg"), "{:.2f}"),
    ("… its dataplane thread", lambda r: core_use(r, "dp_thread_us_per_msg"), "{:.2f}"),
    ("… prosody", lambda r: core_use(r, "xmpp_cpu_us_per_msg"), "{:.2f}"),
    ("… the bench (imfuse-bench)", lambda r: core_use(r, "bench_cpu_us_per_msg"), "{:.2f}"),
]


def core_use(r, key):
    """Cores a process kept busy during a run: its CPU per message × messages/s."""
    v = r.get(key)
    return None if v is None else v * r["msgs_per_s"] / 1e6


def backend_runs(runs, label, name):
    return [r for r in runs if r["label"] == label and r.get("backend") == name]


def backend_table(runs, label):
    rs = {b: backend_runs(runs, label, b) for b in BACKENDS}
    lines = ["| figure | kernel | DPDK net_tap | DPDK net_af_packet | net_tap ÷ kernel | net_af_packet ÷ kernel |",
             "|---|---|---|---|---|---|"]
    for title, getter, fmt in BACKEND_FIGURES:
        cells = [mmm(values(rs[b], getter), fmt) for b in BACKENDS]
        ratios = [ratio_text(values(rs[b], getter), values(rs["kernel"], getter)) for b in BACKENDS[1:]]
        lines.append("| {} | {} | {} |".format(title, " | ".join(cells), " | ".join(ratios)))
    failed = [r for b in BACKENDS for r in rs[b] if not r["ok"]]
    note = "Runs: " + ", ".join("{} {}".format(b, len(rs[b])) for b in BACKENDS) + "."
    if failed:
        note += " Failed runs: " + "; ".join("{}: {}".format(r["backend"], r.get("error", "")) for r in failed) + "."
    return "\n".join(lines) + "\n\n" + note + "\n"


def perf_backend(out, name):
    """(self rows [(pct, dso, kind, sym)], children {sym: pct}) of a backend's profile."""
    rows, ch = [], {}
    path = os.path.join(out, "perf-%s-self.txt" % name)
    if os.path.exists(path):
        pat = re.compile(r"^\s+([\d.]+)%\s+(\S+)\s+\[([.k])\]\s+(.*?)\s*$")
        with open(path) as f:
            for line in f:
                m = pat.match(line)
                if m:
                    rows.append((float(m.group(1)), m.group(2), m.group(3), m.group(4)))
    for c, _s, sym in perf_table(os.path.join(out, "perf-%s-children.txt" % name), True):
        ch.setdefault(sym, c)
    return rows, ch


PROFILE_PARTS = [
    # (what, symbols whose inclusive share counts; the largest is shown)
    ("TAP frames written (`writev`: the kernel side's receive path runs here too)", ("__GI___writev", "writev")),
    ("TAP frames read (`readv`)", ("__GI___readv", "readv")),
    ("af_packet frames sent (`sendto`, veth and the peer's receive path)", ("__libc_sendto", "sendto")),
    ("socket writes (`sendmsg`: the kernel's TCP, and the peer's receive path)", ("__libc_sendmsg", "sendmsg")),
    ("socket reads (`read`, `recv`)", ("__libc_read", "read", "__libc_recv", "recv")),
    ("waiting (`epoll_wait`, sleeps and naps)", ("epoll_wait",)),
    ("lwIP's TCP input (`tcp_input`)", ("tcp_input",)),
    ("TLS (`mbedtls_ssl_write`)", ("mbedtls_ssl_write",)),
    ("TLS (`mbedtls_ssl_read`)", ("mbedtls_ssl_read",)),
    ("the relay (`relay_poll`: the controlplane's messages)", ("relay_poll",)),
    ("client frames (`client_process`)", ("client_process",)),
    ("clock reads (`clock_gettime`)", ("clock_gettime@@GLIBC_2.17", "clock_gettime", "__clock_gettime")),
]


def bound_text(runs, label):
    """What bounds messages/s in a suite, from the cores each process kept busy."""
    parts = []
    for b in BACKENDS:
        rs = backend_runs(runs, label, b)
        use = {k: values(rs, lambda r, k=k: core_use(r, k)) for k in
               ("cpu_us_per_msg", "dp_thread_us_per_msg", "xmpp_cpu_us_per_msg", "bench_cpu_us_per_msg")}
        if not all(use.values()):
            continue
        m = {k: statistics.median(v) for k, v in use.items()}
        total = m["cpu_us_per_msg"] + m["xmpp_cpu_us_per_msg"] + m["bench_cpu_us_per_msg"]
        parts.append((b, m, total))
    if not parts:
        return ""
    dp_max = max(m["dp_thread_us_per_msg"] for _b, m, _t in parts)
    text = ("**What bounds messages/s** ({}, medians): the dataplane thread kept {} of a core busy, "
            "prosody {}, the three processes together {} of the machine's {} cores. ".format(
                label.replace("backends ", ""),
                ", ".join("{:.2f} ({})".format(m["dp_thread_us_per_msg"], b) for b, m, _t in parts),
                ", ".join("{:.2f} ({})".format(m["xmpp_cpu_us_per_msg"], b) for b, m, _t in parts),
                ", ".join("{:.2f} ({})".format(t, b) for b, _m, t in parts), 2))
    if dp_max < 0.8:
        text += ("No dataplane thread was saturated, so neither the virtual link nor the backend bounds "
                 "messages/s here: a closed loop waits on round trips through imfused's two planes (the "
                 "controlplane commits every message to LMDB before its `ok`), prosody and the bench, all "
                 "on two cores shared with other work. The link shows in the dataplane's work per message "
                 "and in latency, not in the rate.\n")
    else:
        text += ("A dataplane thread near a full core is what bounds messages/s for that backend.\n")
    return text


def kernel_share(out, name):
    """The share (0-1) of a backend's profile samples in the kernel, or None."""
    path = os.path.join(out, "perf-%s-dso.txt" % name)
    if not os.path.exists(path):
        return None
    total = kern = 0.0
    with open(path) as f:
        for line in f:
            m = re.match(r"^\s+([\d.]+)%\s+(\S+)", line)
            if m:
                total += float(m.group(1))
                if m.group(2) == "[kernel.kallsyms]":
                    kern += float(m.group(1))
    return kern / total if total else None


def backends_section(w, out, runs):
    label_s, label_r = "backends send W=1000", "backends recv W=50"
    if not any(r["label"] in (label_s, label_r) for r in runs):
        w.append("## Kernel vs DPDK: the dataplane backends\n")
        w.append("Not measured in this run (BENCH_BACKENDS=0).\n")
        return
    w.append("## Kernel vs DPDK: the dataplane backends\n")
    w.append("""The same work for three imfused, each with its own account on the same prosody and the same messages: one with kernel sockets (`--io kernel`), one with DPDK and lwIP on `net_tap`, one with DPDK and lwIP on `net_af_packet`. Each sits across a software link of its own to the namespace of prosody and the bench (tests/bench/env.sh): the kernel backend in a network namespace at 198.18.2.2 on a veth; `net_tap` at 198.18.0.2 on a TAP whose kernel side is prosody's address, 198.18.0.1; `net_af_packet` in a network namespace at 198.18.1.2 on a veth (Tx checksum offload off on the kernel's end, as lwIP checks every checksum). DPDK runs without hugepages (`--no-huge -m 512`) and with `dpdk-idle adaptive`, the default. Runs alternate kernel, net_tap, net_af_packet, {runs} of each per suite, after one unrecorded warm-up run of each, in the same `make bench` as the tables above.

**Dataplane work per message**: for DPDK, `io_busy_cycles` ÷ messages: the TSC cycles of the loop turns that did work (a turn that moved frames, or whose flushes and controlplane messages queued frames), idle polls and sleeps excluded, converted to µs at the TSC rate imfuse-bench measures over the window against CLOCK_MONOTONIC; for the kernel backend, the CPU time of its dataplane thread (`imfused-dp0`, /proc/PID/task/TID/schedstat) ÷ messages. Both over the bench's window (see Method). The TSC counts wall time: a busy turn during which the thread was preempted (this machine has 2 shared cores, see the preemptions row) counts the time it waited, so the DPDK figure is an upper bound on its CPU time; the dataplane thread's CPU time is shown for every backend too. Work done for the dataplane in the kernel runs on the dataplane's thread in each case and is counted: with kernel sockets the TCP stack in `sendmsg` and `read`, with `net_tap` the TAP's `writev` and `readv` (one system call per frame), with `net_af_packet` the `sendto` that kicks the Tx ring. Both kinds of link also run the receiving side's kernel path (the veth's or the TAP's receive, IP, TCP, up to prosody's socket) on the sender's thread.
""".format(runs=sum(1 for r in runs if r["label"] == label_s and r.get("backend") == "kernel")))

    w.append("### Target (shown, not asserted)\n")
    w.append("| target | measured | met |\n|---|---|---|")
    for label in (label_s, label_r):
        kv = values(backend_runs(runs, label, "kernel"), dp_work)
        for b in BACKENDS[1:]:
            dv = values(backend_runs(runs, label, b), dp_work)
            if kv and dv and statistics.median(kv) > 0:
                ratio = statistics.median(dv) / statistics.median(kv)
                w.append("| {}: DPDK {} dataplane work/msg ≤ 1/3 of the kernel backend's | {:.2f}× ({:.2f} vs {:.2f} µs){} | {} |".format(
                    label.replace("backends ", ""), b, ratio, statistics.median(dv), statistics.median(kv),
                    "; {:.1f}× too much".format(ratio * 3) if ratio > 1 / 3 else "",
                    "yes" if ratio <= 1 / 3 else "**no**"))
            else:
                w.append("| {}: DPDK {} dataplane work/msg ≤ 1/3 of the kernel backend's | not measured | – |".format(
                    label.replace("backends ", ""), b))
    w.append("")
    for label, title in ((label_s, "Send, closed loop, W = 1000"),
                         (label_r, "Receive (peer → user, with acks), closed loop, W = 50")):
        w.append("### {}\n".format(title))
        w.append(backend_table(runs, label))

    w.append(bound_text(runs, label_s))
    w.append("### Where each dataplane thread's time goes (profile, send W = 1000)\n")
    profs = {b: perf_backend(out, b) for b in BACKENDS}
    if not any(rows for rows, _ in profs.values()):
        w.append("No profile in this run (perf missing, or BENCH_PERF=0).\n")
        return
    prun = {r.get("backend"): r for r in runs if r["label"] == "backends profile"}
    w.append("One more run of each under `perf record --call-graph dwarf -t TID` of its dataplane thread only (1999 Hz), "
             "reported over the bench's window; not in the tables above. Inclusive shares of the thread's "
             "samples (a function and everything it calls; the rows overlap where one calls another):\n")
    w.append("| | kernel | DPDK net_tap | DPDK net_af_packet |\n|---|---|---|---|")
    w.append("| messages/s under perf | {} |".format(" | ".join(
        "{:.0f}".format(prun[b]["msgs_per_s"]) if b in prun else "–" for b in BACKENDS)))
    share = {b: kernel_share(out, b) for b in BACKENDS}
    w.append("| samples in the kernel (system calls, the links, the peers' receive paths, interrupts) | {} |".format(
        " | ".join("{:.1f} %".format(100 * share[b]) if share[b] is not None else "–" for b in BACKENDS)))
    for what, syms in PROFILE_PARTS:
        cells = []
        for b in BACKENDS:
            ch = profs[b][1]
            v = max([ch.get(x, 0.0) for x in syms])
            cells.append("{:.1f} %".format(v) if ch and v > 0 else "–")
        if any(c != "–" for c in cells):
            w.append("| {} | {} |".format(what, " | ".join(cells)))
    w.append("")
    # The dataplane thread's CPU split by the profile's shares: what stays in
    # user space is the work a free link (a poll-mode driver with no system
    # call) would leave.
    cpu = {b: values(backend_runs(runs, label_s, b), lambda r: r.get("dp_thread_us_per_msg")) for b in BACKENDS}
    user = {b: statistics.median(cpu[b]) * (1 - share[b]) for b in BACKENDS if cpu[b] and share[b] is not None}
    kwork = values(backend_runs(runs, label_s, "kernel"), dp_work)
    if "kernel" in user and kwork:
        k_all = statistics.median(kwork)
        w.append("The dataplane thread's CPU time per message (median of the send W = 1000 runs) split by "
                 "these shares:\n")
        w.append("| µs per message | kernel | DPDK net_tap | DPDK net_af_packet |\n|---|---|---|---|")
        w.append("| dataplane thread, all | {} |".format(" | ".join(
            "{:.2f}".format(statistics.median(cpu[b])) if cpu[b] else "–" for b in BACKENDS)))
        w.append("| … in user space (protocols, TLS, relay; with DPDK also lwIP and the driver) | {} |".format(
            " | ".join("{:.2f}".format(user[b]) if b in user else "–" for b in BACKENDS)))
        w.append("| … in the kernel | {} |".format(" | ".join(
            "{:.2f}".format(statistics.median(cpu[b]) - user[b]) if b in user else "–" for b in BACKENDS)))
        w.append("")
        d_user = [user[b] for b in BACKENDS[1:] if b in user]
        w.append("**Reading it.** The target asks the DPDK dataplane for at most {:.2f} µs per message here "
                 "(1/3 of the kernel backend's {:.2f}). The kernel backend itself spends {:.2f} µs of its "
                 "{:.2f} in user space: the client protocol, XMPP, TLS and the relay, work that every backend "
                 "does alike. {}On this machine both DPDK ports are kernel devices: every frame `net_tap` "
                 "sends is a `writev` on the TAP, which runs the kernel side's receive path (IP, TCP, "
                 "prosody's socket) on the dataplane's thread, every received frame a `readv`; `net_af_packet` "
                 "sends with a `sendto` per burst into the veth, whose peer's receive path runs there too, "
                 "and, without an Rx interrupt, naps 1 ms at a time when idle. That kernel time is the "
                 "virtual link's, not lwIP's; with a poll-mode driver on a real NIC (or a memif peer) it "
                 "would be gone, and what is left is the user-space row.\n".format(
                     k_all / 3, k_all, user["kernel"], statistics.median(cpu["kernel"]),
                     "So even with a free link the target cannot be met by changing the I/O layer alone "
                     "(the DPDK backends' user-space part is {} µs). ".format(
                         " and ".join("{:.2f}".format(x) for x in d_user)) if d_user and min(d_user) > k_all / 3
                     else ""))
    for b in BACKENDS:
        rows = profs[b][0]
        if not rows:
            continue
        w.append("<details><summary>{}: self time, top entries (<code>perf report --no-children --sort dso,sym</code>)"
                 "</summary>\n".format(b))
        w.append("| self | where | symbol |\n|---|---|---|")
        for pct, dso, kind, sym in rows[:20]:
            w.append("| {:.1f} % | {} | `{}`{} |".format(pct, dso, sym, " (kernel)" if kind == "k" else ""))
        w.append("\n</details>\n")


def main():
    out, doc = sys.argv[1], sys.argv[2]
    machine, runs = load(out)
    runs = [r for r in runs if r.get("label") not in ("warmup",)]
    self_rows = perf_table(os.path.join(out, "perf-self.txt"), False)
    ch_rows = perf_table(os.path.join(out, "perf-children.txt"), True)
    ch = {}
    for c, s, sym in ch_rows:
        ch.setdefault(sym, c)
    prof = [r for r in runs if r["label"] == "profile"]
    prof = prof[0] if prof else None

    def children(*names):
        return max([ch.get(n, 0.0) for n in names] or [0.0])

    cpu = lambda r: r.get("cpu_us_per_msg")
    mps = lambda r: r["msgs_per_s"]
    p99 = lambda r: r["latency_us"]["p99"] / 1000
    w = []
    w.append("# imfuse benchmarks\n")
    w.append("Written by `make bench` (tests/bench/run.sh, tests/bench/report.py) on {} at commit {}; "
             "every figure below comes from that run. Do not edit by hand: run `make bench` again.\n"
             .format(machine.get("date", "?"), machine.get("commit", "?")))
    w.append("imfuse is compared side by side with BitlBee {} (Debian's `bitlbee`), the existing IRC "
             "gateway to the same networks, on identical work in the same run.\n".format(machine.get("bitlbee", "")))

    w.append("## Machine\n")
    w.append("| | |\n|---|---|")
    w.append("| CPUs | {} × {} |".format(machine.get("nproc", "?"), machine.get("cpu", "?")))
    w.append("| memory | {} |".format(machine.get("mem", "?")))
    w.append("| kernel | {} |".format(machine.get("kernel", "?")))
    w.append("| imfused's store | {} (LMDB, fully durable: fdatasync per commit) |".format(machine.get("fs", "?")))
    w.append("| XMPP server | prosody {} |".format(machine.get("prosody", "?")))
    if machine.get("dpdk"):
        w.append("| DPDK (the backends' comparison) | {} (Debian's), with lwIP built from Debian's source |".format(
            machine["dpdk"]))
    w.append("| load average (1, 5, 15 min) | before {}; after {} |".format(
        machine.get("load_before", "?"), machine.get("load_after", "?")))
    w.append("| duration of `make bench` | {} s |".format(machine.get("seconds", "?")))
    w.append("")
    try:
        load1 = float(machine.get("load_before", "").split()[0])
    except (ValueError, IndexError):
        load1 = None
    when = ("the run started when the load average was low ({:.2f}), but single runs still scatter "
            "(see min and max)".format(load1) if load1 is not None and load1 < 2.5 else
            "**this run started under a load average of {}: its figures are indicative only**".format(
                fmt_or(load1, "{:.2f}", "?")))
    w.append("**This machine is shared and noisy.** Other engineers compile and run test suites on the "
             "same 2 cores; " + when + ". Compare medians and ratios measured side by side in one run, "
             "never figures from different runs or machines. It is a VM: perf has only the `cpu-clock` "
             "software event, and kernel time spent with interrupts off is charged to "
             "`pvm_irq_enable`.\n")

    w.append("## Method\n")
    w.append("""- `make bench` starts prosody (STARTTLS required; SCRAM and PLAIN offered: imfuse logs in with SCRAM, BitlBee can only do PLAIN), imfused (release build of `make all`) and BitlBee (`RunMode=Daemon`, so one process serves every user) in a private network namespace: imfused and BitlBee on 127.0.0.1, prosody at {xmpp} (with the backends' comparison, the kernel side of a TAP, reached from imfused and BitlBee on the local path as over loopback). Each relay has its own XMPP account (`imf1@a.test`, `bee1@a.test`); the other end is the bench's own XMPP client `peer@a.test`.
- `build/imfuse-bench` (tools/imfuse-bench.c) starts nothing: it is pointed at the running servers. It drives imfuse over its client protocol (`login`, `link`, `send` with a `cid`, `message` events acknowledged with `ack`) and BitlBee over IRC (`account add jabber ...`, `PRIVMSG peer :...`), the way a user of each does. Its XMPP clients are the project's own XMPP adapter (`protocols/xmpp`) on the dataplane's connection API (epoll, mbedTLS).
- The same {m} messages of 50 bytes per run, one user. **send**: user → relay → prosody → peer. **recv**: peer → prosody → relay → user (imfuse: committed to its queue, pushed as a `message` event, acknowledged). **Closed loop** W: W messages in flight, a new one sent as each arrives. **Open loop**: a fixed rate, whatever arrives.
- Each message carries the run's nonce and a sequence number; the receiving side checks that every one arrives exactly once. A message that never arrives is **lost**; when losses fill a closed-loop window the run stalls (nothing arrives for 3 s), ends, and the messages it could not send are counted as **never sent**. Nothing is hidden.
- **Latency** is from the bench's send to the receiving side's read, in a log-linear histogram (1/128 relative precision, tools/bench_hist.c); percentiles are the upper edge of their bucket. **messages/s** is messages received ÷ time from the first send to the last receipt.
- **Relay CPU per message** is the daemon's utime+stime (all threads, /proc/PID/stat, 10 ms ticks: ≥ 1 % resolution for these runs) over the measured window, ÷ messages received. The window opens 0.5 s after set-up (logins, links and imfuse's Argon2id password check are outside it) and closes when the last message is in, imfuse's acks and replies are answered, and the daemon's CPU time has stopped moving for 0.2 s, so work a relay defers is counted. **Peak RSS** is VmHWM, reset at the start of the window (`/proc/PID/clear_refs`). **Store commits** come from imfused's control socket (`stats`, as `imfusectl stats`), **pages written per commit** from the same `stats` (`store_bytes_written`: what imfused's committing thread passed to its write calls, LMDB's pages and meta page, from /proc/thread-self/io `wchar`) ÷ page size ÷ commits, beside what the kernel charged imfused for them (/proc/PID/io `write_bytes`, which counts the file system's own blocks that a commit dirties too, metadata such as the inode), **store CPU per message** from the same `stats` (`store_commit_cpu_us`: the committing thread's CPU time around each `mdb_txn_commit`, from `CLOCK_THREAD_CPUTIME_ID`) ÷ messages received.
- Runs alternate imfuse, BitlBee, imfuse, BitlBee… ({runs} each per suite), after one unrecorded warm-up run of each. Every figure is shown as min / **median** / max over the runs; ratios are imfuse ÷ BitlBee of the medians, and of each pair of neighbouring runs (min–max).
- The bench runs on the same 2 cores as the relay and prosody, so it competes with them. Its own CPU per message is reported with each suite: it does the same work for both relays (BitlBee's IRC lines are cheaper for it to parse than imfuse's msgpack frames). prosody's CPU per message is reported too: at these rates it is the busiest process, and a difference between the relays there is work the relay causes the server (imfuse's XMPP session asks for a XEP-0198 acknowledgement, `<r/>`, with every message and prosody answers each; BitlBee 3.6 has no XEP-0198). prosody logs only warnings: at its test default (debug) logging would cost more than routing.
- The profile is one extra imfuse run (send, W=1000) under `perf record --call-graph dwarf` (1999 Hz), reported only over the bench's window (`perf report --time`); it is not in the tables, because perf slows the daemon.
""".format(m=machine.get("messages", "?"), runs=machine.get("runs", "?"),
           xmpp=machine.get("xmpp", "127.0.0.1:5222")))

    w.append("## Targets (shown, not asserted)\n")
    w.append("From issue 8; the later optimisation is measured against these.\n")
    w.append("| target | measured | met |\n|---|---|---|")

    def row(name, measured, ok):
        w.append("| {} | {} | {} |".format(name, measured, "–" if ok is None else ("yes" if ok else "**no**")))

    def rmed(label, getter):
        a, b = med(runs, label, "imfuse", getter), med(runs, label, "bitlbee", getter)
        return (a / b) if a is not None and b else None

    r = rmed("send W=50", cpu)
    row("W=50: imfuse CPU/msg ≤ 0.5× BitlBee's", fmt_or(r, "{:.2f}×") + " ({} vs {} µs)".format(
        fmt_or(med(runs, "send W=50", "imfuse", cpu), "{:.1f}"), fmt_or(med(runs, "send W=50", "bitlbee", cpu), "{:.1f}")),
        None if r is None else r <= 0.5)
    tm, bee50 = med(runs, TMPFS_LABEL, "imfuse", cpu), med(runs, "send W=50", "bitlbee", cpu)
    if tm is not None and bee50:
        row("W=50, for comparison: imfuse with its store on tmpfs (not durable) ÷ BitlBee, CPU/msg",
            "{:.2f}× ({:.1f} µs): the rest of the gap is the durable commits (see below)".format(
                tm / bee50, tm), None)
    r = rmed("send W=50", mps)
    row("W=50: imfuse msgs/s ≥ 1.0× BitlBee's", fmt_or(r, "{:.2f}×"), None if r is None else r >= 1.0)
    imf50 = [x for x in runs if x["label"] == "send W=50" and x["relay"] == "imfuse"]
    bad = sum(lost_all(x) + x["duplicated"] for x in imf50)
    row("W=50: imfuse 0 lost, 0 duplicated", "{} lost or duplicated over {} runs".format(bad, len(imf50)),
        None if not imf50 else bad == 0)
    r = rmed("send W=1000", cpu)
    row("W=1000: imfuse CPU/msg ≤ 0.25× BitlBee's", fmt_or(r, "{:.2f}×") + " ({} vs {} µs)".format(
        fmt_or(med(runs, "send W=1000", "imfuse", cpu), "{:.1f}"), fmt_or(med(runs, "send W=1000", "bitlbee", cpu), "{:.1f}")),
        None if r is None else r <= 0.25)
    imf1k = [x for x in runs if x["label"] == "send W=1000" and x["relay"] == "imfuse"]
    bee1k = [x for x in runs if x["label"] == "send W=1000" and x["relay"] == "bitlbee"]
    bad = sum(lost_all(x) + x["duplicated"] for x in imf1k)
    row("W=1000: imfuse 0 lost (BitlBee's losses reported)",
        "imfuse {} over {} runs; BitlBee lost {} (never sent {}) per run".format(
            bad, len(imf1k), "/".join(str(x["lost"]) for x in bee1k) or "–",
            "/".join(str(x["unsent"]) for x in bee1k) or "–"),
        None if not imf1k else bad == 0)
    commit_share = children("mdb_txn_commit")
    cpu1k = med(runs, "send W=1000", "imfuse", cpu)
    # Measured by imfused itself: its committing thread's CPU time around
    # each commit (store_commit_cpu_us).  The profile's share of
    # mdb_txn_commit times the median CPU/msg is shown beside it as a check.
    store_us = med(runs, "send W=1000", "imfuse", lambda x: x.get("store_cpu_us_per_msg"))
    if store_us is not None:
        check = ""
        if ch and cpu1k is not None:
            check = "; the profile: {:.1f} % in `mdb_txn_commit` × {:.1f} µs = {:.2f} µs".format(
                commit_share, cpu1k, commit_share / 100 * cpu1k)
        row("W=1000: store CPU/msg (the commits' CPU time) ≤ 2 µs",
            "{:.2f} µs (median, measured by imfused around each commit{})".format(store_us, check),
            store_us <= 2)
    else:
        row("W=1000: store CPU/msg (the commits' CPU time) ≤ 2 µs", "not measured", None)
    ppc = med(runs, "send W=1000", "imfuse", lambda x: x.get("pages_per_commit"))
    mpc = med(runs, "send W=1000", "imfuse", lambda x: x.get("msgs_per_commit"))
    row("W=1000: pages written per commit reported", "{} pages per commit, {} messages per commit".format(
        fmt_or(ppc, "{:.1f}"), fmt_or(mpc, "{:.1f}")), None)
    if ch:
        mad = children("__madvise", "madvise", "__x64_sys_madvise", "do_madvise")
        row("no madvise in the hot path's profile", "madvise: {:.1f} % of samples".format(mad), mad < 0.1)
    else:
        row("no madvise in the hot path's profile", "no profile", None)
    rate = next((x["rate"] for x in runs if x["label"] == "open loop"), None)
    added = {rel: added_latency(runs, rel, "p99") for rel in ("imfuse", "bitlbee")}
    if added["imfuse"] or added["bitlbee"]:
        row("p99 added latency at half of imfuse's peak rate (relay p99 − direct p99, open loop)",
            "{} msgs/s: imfuse {}, BitlBee {} (median of neighbouring runs' differences, min–max)".format(
                fmt_or(rate, "{:.0f}"), added_text(added["imfuse"]), added_text(added["bitlbee"])), None)
    else:
        row("p99 added latency at half of imfuse's peak rate", "not measured", None)
    w.append("")

    for label, title in (("send W=50", "Send, closed loop, W = 50"),
                         ("send W=1000", "Send, closed loop, W = 1000"),
                         ("recv W=50", "Receive (peer → user, with acks), closed loop, W = 50")):
        w.append("## {}\n".format(title))
        w.append(suite_table(runs, label))
        if label == "send W=50":
            durability_section(w, runs)

    if any(x["label"] == "open loop" for x in runs):
        w.append("## Open loop at half of imfuse's peak rate ({} msgs/s)\n".format(fmt_or(rate, "{:.0f}")))
        w.append("Peak = imfuse's median messages/s at W = 1000. The direct XMPP client sends the same "
                 "messages to the same peer through prosody alone; a relay's added latency is its "
                 "latency minus the direct one. At a fixed rate below capacity, CPU per message also "
                 "carries the relay's idle work (timers, keepalives) over the window.\n")
        w.append(suite_table(runs, "open loop", ("direct", "imfuse", "bitlbee")))
        w.append("Added latency: for each percentile, relay − direct of neighbouring runs (direct, imfuse, "
                 "BitlBee were run in turn), median and min–max over the runs. A negative figure means the "
                 "relay's latency was below the direct client's in those runs: noise, or a relay writing "
                 "several messages to prosody at once where the direct client writes one at a time.\n")
        w.append("| percentile | imfuse | BitlBee |\n|---|---|---|")
        for q, name in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9")):
            w.append("| {} | {} | {} |".format(name, added_text(added_latency(runs, "imfuse", q)),
                                                added_text(added_latency(runs, "bitlbee", q))))
        w.append("")

    w.append("## Where imfused's CPU goes (profile, send W = 1000)\n")
    if prof and self_rows:
        w.append("One run of {} messages: {:.0f} msgs/s, {:.1f} µs of CPU per message under perf, "
                 "{} samples in the window. `perf report --no-children` (self time), top entries:\n".format(
                     prof["messages"], prof["msgs_per_s"], prof.get("cpu_us_per_msg") or 0,
                     samples_of(out) or "?"))
        w.append("| self | symbol |\n|---|---|")
        for pct, kind, sym in self_rows[:25]:
            w.append("| {:.1f} % | `{}`{} |".format(pct, sym, " (kernel)" if kind == "k" else ""))
        w.append("")
        alloc = sum(p for p, k, s in self_rows if re.search(
            r"(^|_)(malloc|free|cfree|realloc|calloc|sysmalloc|systrim|malloc_consolidate|unlink_chunk|"
            r"tcache\w*|int_malloc|int_free)(@|\b|$)", s))
        w.append("Inclusive shares (`perf report --children`: the function and everything it calls):\n")
        w.append("| what | share of samples |\n|---|---|")
        for name, syms in (
                ("dataplane thread (`dp_thread`)", ("dp_thread", "dp_worker_run")),
                ("controlplane loop (`cp_core_run`)", ("cp_core_run",)),
                ("group commit (`commit_turn`)", ("commit_turn",)),
                ("LMDB commit (`mdb_txn_commit`)", ("mdb_txn_commit",)),
                ("of which: fdatasync", ("__GI_fdatasync (inlined)", "fdatasync", "__x64_sys_fdatasync")),
                ("of which: pwrite", ("__libc_pwrite64 (inlined)", "__x64_sys_pwrite64", "__libc_pwrite64")),
                ("malloc (`malloc` and below, page faults included)", ("__GI___libc_malloc (inlined)", "malloc")),
                ("free (`free` and below)", ("__GI___libc_free (inlined)", "free", "cfree@GLIBC_2.2.5")),
                ("madvise (heap trimming)", ("__madvise", "madvise", "__x64_sys_madvise")),
                ("page faults", ("asm_exc_page_fault",)),
                ("epoll_wait", ("epoll_wait", "__x64_sys_epoll_wait")),
                ("TLS (mbedTLS `mbedtls_ssl_*`)", ("mbedtls_ssl_read", "mbedtls_ssl_write")),
                ("XML parsing (expat `XML_Parse`)", ("XML_Parse",)),
                ("Argon2id (must be 0: logins are outside the window)", ("argon2_verify", "argon2_ctx"))):
            w.append("| {} | {:.1f} % |".format(name, children(*syms)))
        w.append("| allocator internals, self time (malloc/free family) | {:.1f} % |".format(alloc))
        w.append("")
        tree = os.path.join(out, "perf-tree.txt")
        if os.path.exists(tree):
            with open(tree) as f:
                lines = [l.rstrip() for l in f if not l.startswith("#") and l.strip(" |\n")]
            if lines:
                w.append("<details><summary>Call tree of the same samples (callers first, branches of "
                         "3 % or more; <code>perf report --children -g graph,3,caller</code>)</summary>\n")
                w.append("```text")
                w.extend(lines)
                w.append("```\n</details>\n")
    else:
        w.append("No profile in this run (perf missing, or BENCH_PERF=0).\n")

    backends_section(w, out, runs)

    w.append("## Every run, in the order run\n")
    w.append("| # | suite | relay | msgs/s | CPU µs/msg | p99 ms | lost | never sent | dup | ok |\n"
             "|---|---|---|---|---|---|---|---|---|---|")
    for i, x in enumerate(runs, 1):
        w.append("| {} | {} | {} | {:.0f} | {} | {:.2f} | {} | {} | {} | {} |".format(
            i, x["label"], x["relay"] + (" ({})".format(x["backend"]) if x.get("backend") else ""),
            x["msgs_per_s"], fmt_or(x.get("cpu_us_per_msg"), "{:.2f}"),
            x["latency_us"]["p99"] / 1000, x["lost"], x["unsent"], x["duplicated"],
            "yes" if x["ok"] else "no: " + x.get("error", "")))
    w.append("")
    w.append("Reproduce: `make bench` (root; about {} s here). Knobs: `BENCH_RUNS`, `BENCH_MESSAGES`, "
             "`BENCH_OPEN_SECONDS`, `BENCH_PERF=0`. One run by hand: `build/imfuse-bench --help`.\n".format(
                 machine.get("seconds", "?")))
    with open(doc, "w") as f:
        f.write("\n".join(w))
    return 0


if __name__ == "__main__":
    sys.exit(main())
