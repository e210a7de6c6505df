/*
 * imfuse-bench - the load generator of `make bench` (docs/BENCHMARKS.md).
 *
 * It starts nothing itself: it is pointed at a running relay (imfused, or
 * BitlBee for comparison, or none: "direct") and a running XMPP server.  It
 * logs in U users through the relay, links their XMPP accounts, runs its own
 * XMPP client as the peer, and drives M messages user -> peer ("send") or
 * peer -> user ("recv"), W in flight (closed loop) or R per second (open
 * loop).  Every body carries the run's nonce and a sequence number, and the
 * receiving side checks that each arrives exactly once.
 *
 * It reports messages/s, latency percentiles (send -> receipt, from a
 * log-linear histogram, bench_hist.h), lost / duplicated messages, the relay
 * daemon's CPU time per message and peak RSS from /proc, and for imfused the
 * store commits per message (its control socket's `stats`) and its
 * dataplane's work per message: the on-CPU time of its dataplane thread
 * (imfused-dp0), and with --io dpdk the TSC cycles of the loop turns that did
 * work (`io_busy_cycles`; in microseconds at the TSC rate this run measures).
 *
 * Files: this one (options, the run, the report), bench_imfuse.c,
 * bench_irc.c and bench_direct.c (the relays), bench_xmpp.c (the XMPP client:
 * the project's adapter on a dataplane connection), bench_proc.c (/proc and
 * the control socket), bench_hist.c (the histogram).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define HAVE_TSC 1
#endif

#include "bench_hist.h"
#include "bench_int.h"
#include "bench_proc.h"
#include "bench_xmpp.h"
#include "cli_common.h"
#include "dp_conn.h"
#include "dp_worker.h"
#include "im_common.h"

#define NS_PER_S        1000000000ull
#define MAX_MESSAGES    10000000ull     /* two arrays of M entries: 9 bytes each */
#define MAX_USERS       1000u
#define MIN_SIZE        32u
#define MAX_SIZE        4096u
#define QUIET_NS        (500ull * 1000000)      /* between set-up and the window */
#define SETTLE_MAX_NS   (3ull * NS_PER_S)
#define FINISH_MAX_NS   (10ull * NS_PER_S)
#define CLOSE_MAX_NS    (2ull * NS_PER_S)
#define PACE_MIN_NS     100000ull               /* the open-loop pacer wakes at most every 100 us */
#define DP_THREAD       "imfused-dp0"           /* the name of imfused's dataplane thread */

enum phase {
    PH_SETUP = 0,   /* connecting, logging in, linking */
    PH_QUIET,       /* everyone ready; let the relay go idle before measuring */
    PH_RUN,         /* the measured window: messages flow */
    PH_FINISH,      /* last message in; the relay finishes acks and replies */
    PH_SETTLE,      /* waiting until the daemon's CPU time stops moving */
    PH_DONE,        /* figures taken */
    PH_CLOSING,     /* saying goodbye */
};

/* Per message flags. */
#define M_SENT      1u
#define M_GOT       2u
#define M_FAILED    4u

struct bench {
    struct bench_opts o;
    const struct bench_relay_ops *relay;
    void *relay_st;
    struct dp_worker *w;
    char peer_jid[320];
    struct bench_xmpp *peer;
    bool peer_online, peer_gone;
    enum phase ph;
    uint32_t ready;                     /* users set up */
    char nonce[9];

    uint64_t next, sent, got, dup, stray, failed;
    uint64_t *t_send;                   /* ns, monotonic */
    uint8_t *mflags;
    struct bench_hist *hist;
    uint64_t lag_max_ns;                /* open loop: worst lateness of a send */

    uint64_t t_setup0, t_quiet_end, t0, t_last_rx, t_progress, t_phase, t_win_end;
    const char *end_reason;

    /* readings before (0) and after (1) the window */
    bool have_cpu, have_xcpu, have_stats, peak_window, have_dp;
    struct bench_proc_snap cpu0, cpu1, xcpu0, xcpu1;
    struct bench_thread_snap dp0, dp1;  /* imfused's dataplane thread */
    uint64_t tsc0, tsc1, tsc_ns0, tsc_ns1;  /* the TSC against CLOCK_MONOTONIC, for its rate */
    struct bench_ctl_stats st0, st1;
    struct rusage ru0, ru1;
    uint64_t rss_peak_kib, rss_end_kib;
    uint64_t settle_ticks;
    int settle_same;

    char note[300];                     /* last thing a relay said during set-up */
    char first_send_error[300];
    char why[600];
    bool failed_run;

    pthread_t pacer;
    atomic_bool pacer_stop;
    bool pacer_on;
};

static const char *prog = "imfuse-bench";

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* ---- what relays call ------------------------------------------------------ */

const struct bench_opts *bench_opts(const struct bench *b) { return &b->o; }
struct dp_worker *bench_worker(const struct bench *b) { return b->w; }
void *bench_relay_state(const struct bench *b) { return b->relay_st; }
void bench_set_relay_state(struct bench *b, void *st) { b->relay_st = st; }
const char *bench_peer_jid(const struct bench *b) { return b->peer_jid; }

void
bench_user_name(const struct bench *b, uint32_t i, char *buf, size_t sz)
{
    snprintf(buf, sz, "%s%u", b->o.prefix, i + 1);
}

void
bench_user_jid(const struct bench *b, uint32_t i, char *buf, size_t sz)
{
    snprintf(buf, sz, "%s%u@%s", b->o.prefix, i + 1, b->o.domain);
}

int
bench_split_addr(const char *s, char *host, size_t hostsz, uint16_t *port)
{
    char *h = NULL;
    unsigned p = 0;
    int rc = im_split_hostport(s, &h, &p);
    if (rc)
        return rc;
    rc = strlen(h) < hostsz ? 0 : -IM_EINVAL;
    if (!rc) {
        strcpy(host, h);
        *port = (uint16_t)p;
    }
    free(h);
    return rc;
}

struct dp_conn *
bench_connect(struct bench *b, const char *relay, const char *opt, const char *opt_val,
              const struct dp_conn_cb *cb, void *ud, int *err)
{
    char host[64];
    uint16_t port;
    *err = 0;
    if (bench_split_addr(opt_val, host, sizeof(host), &port)) {
        bench_fail(b, "%s: %s must be IP:PORT, not %s", relay, opt, opt_val);
        *err = -IM_EINVAL;
        return NULL;
    }
    struct dp_conn *c = dp_conn_connect(b->w, host, port, NULL, cb, ud, err);
    if (!c)
        bench_fail(b, "%s: cannot connect to %s: %s", relay, opt_val, im_strerror(*err));
    return c;
}

static void end_run(struct bench *b, const char *reason);

void
bench_fail(struct bench *b, const char *fmt, ...)
{
    if (b->ph >= PH_CLOSING)
        return;
    if (!b->failed_run) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->why, sizeof(b->why), fmt, ap);
        va_end(ap);
        b->failed_run = true;
    }
    if (b->ph < PH_DONE) {
        b->ph = PH_DONE;
        if (b->w)
            dp_worker_stop(b->w);
    }
}

void
bench_note(struct bench *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->note, sizeof(b->note), fmt, ap);
    va_end(ap);
}

void
bench_user_ready(struct bench *b)
{
    b->ready++;
}

void
bench_finished(struct bench *b)
{
    if (b->ph != PH_FINISH)
        return;
    b->ph = PH_SETTLE;
    b->t_phase = now_ns();
    b->settle_same = 0;
    struct bench_proc_snap s;
    b->settle_ticks = b->o.pid && !bench_proc_read(b->o.pid, &s) ? s.cpu_ticks : 0;
}

void
bench_receipt(struct bench *b, const char *body, size_t len)
{
    uint64_t t = now_ns();
    if (b->ph >= PH_DONE)
        return;
    const char *p = memmem(body, len, "bench ", 6);
    size_t left = p ? len - (size_t)(p - body) : 0;
    if (!p || left < 6 + 8 + 2 || memcmp(p + 6, b->nonce, 8) || p[14] != ' ') {
        b->stray++;
        return;
    }
    uint64_t seq = 0;
    size_t i = 15, digits = 0;
    while (i < left && p[i] >= '0' && p[i] <= '9' && digits < 19) {
        seq = seq * 10 + (uint64_t)(p[i] - '0');
        i++;
        digits++;
    }
    if (!digits || seq >= b->o.messages || !(b->mflags[seq] & M_SENT)) {
        b->stray++;
        return;
    }
    if (b->mflags[seq] & M_GOT) {
        b->dup++;
        return;
    }
    if (b->mflags[seq] & M_FAILED)
        b->failed--;                    /* refused, yet it arrived: count it as delivered */
    b->mflags[seq] |= M_GOT;
    b->got++;
    bench_hist_add(b->hist, t - b->t_send[seq]);
    b->t_last_rx = t;
    b->t_progress = t;
}

void
bench_send_failed(struct bench *b, uint64_t seq, const char *why)
{
    if (seq >= b->o.messages || (b->mflags[seq] & (M_GOT | M_FAILED)))
        return;
    b->mflags[seq] |= M_FAILED;
    b->failed++;
    b->t_progress = now_ns();
    if (!b->first_send_error[0])
        snprintf(b->first_send_error, sizeof(b->first_send_error), "%s", why);
}

/* ---- the peer ---------------------------------------------------------------- */

static void
peer_online(void *ud)
{
    struct bench *b = ud;
    b->peer_online = true;
}

static void
peer_message(void *ud, const char *body, size_t len)
{
    struct bench *b = ud;
    if (!b->o.recv)
        bench_receipt(b, body, len);
}

static void
peer_down(void *ud, const char *why)
{
    struct bench *b = ud;
    b->peer_online = false;
    if (!why) {
        b->peer_gone = true;
        b->peer = NULL;
        return;
    }
    bench_fail(b, "the peer %s: %s", b->peer_jid, why);
}

static const struct bench_xmpp_cb peer_cb = {
    .online = peer_online, .message = peer_message, .down = peer_down,
};

/* ---- the run ----------------------------------------------------------------- */

static const char filler[] =
    "The quick brown fox jumps over the lazy dog while the relay keeps every message safe. ";

/* The body of message seq: "bench NONCE SEQ " and filler up to the size. */
static size_t
make_body(const struct bench *b, uint64_t seq, char *buf, size_t sz)
{
    int n = snprintf(buf, sz, "bench %s %" PRIu64 " ", b->nonce, seq);
    size_t len = (size_t)n;
    size_t want = b->o.size < sz ? b->o.size : sz - 1;
    for (size_t i = 0; len < want; i++, len++)
        buf[len] = filler[i % (sizeof(filler) - 1)];
    buf[len] = '\0';
    return len;
}

static void *
pacer_main(void *arg)
{
    struct bench *b = arg;
    uint64_t q = (uint64_t)((double)NS_PER_S / b->o.rate);
    if (q < PACE_MIN_NS)
        q = PACE_MIN_NS;
    uint64_t next = now_ns();
    while (!atomic_load_explicit(&b->pacer_stop, memory_order_acquire)) {
        next += q;
        struct timespec ts = { (time_t)(next / NS_PER_S), (long)(next % NS_PER_S) };
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        dp_worker_wake(b->w);
    }
    return NULL;
}

static uint64_t
read_tsc(void)
{
#ifdef HAVE_TSC
    return __rdtsc();
#else
    return 0;
#endif
}

static void
read_before(struct bench *b)
{
    if (b->o.control && !bench_ctl_stats(b->o.control, &b->st0))
        b->have_stats = true;
    if (b->o.xmpp_pid && !bench_proc_read(b->o.xmpp_pid, &b->xcpu0))
        b->have_xcpu = true;
    if (b->o.pid) {
        b->peak_window = bench_proc_reset_peak(b->o.pid) == 0;
        b->have_cpu = bench_proc_read(b->o.pid, &b->cpu0) == 0;
        b->have_dp = !strcmp(b->o.relay, "imfuse") && bench_proc_thread(b->o.pid, DP_THREAD, &b->dp0) == 0;
    }
    b->tsc0 = read_tsc();
    b->tsc_ns0 = now_ns();
    getrusage(RUSAGE_SELF, &b->ru0);
}

static void
read_after(struct bench *b)
{
    getrusage(RUSAGE_SELF, &b->ru1);
    b->tsc1 = read_tsc();
    b->tsc_ns1 = now_ns();
    if (b->have_dp)
        b->have_dp = bench_proc_thread(b->o.pid, DP_THREAD, &b->dp1) == 0;
    if (b->have_cpu) {
        b->have_cpu = bench_proc_read(b->o.pid, &b->cpu1) == 0;
        (void)bench_proc_status_kib(b->o.pid, "VmHWM", &b->rss_peak_kib);
        (void)bench_proc_status_kib(b->o.pid, "VmRSS", &b->rss_end_kib);
    }
    if (b->have_xcpu)
        b->have_xcpu = bench_proc_read(b->o.xmpp_pid, &b->xcpu1) == 0;
    if (b->have_stats)
        b->have_stats = bench_ctl_stats(b->o.control, &b->st1) == 0;
}

static void
begin_run(struct bench *b)
{
    read_before(b);
    b->t0 = b->t_progress = now_ns();
    b->ph = PH_RUN;
    if (b->o.rate > 0) {
        atomic_store(&b->pacer_stop, false);
        if (pthread_create(&b->pacer, NULL, pacer_main, b) == 0)
            b->pacer_on = true;
        else
            bench_fail(b, "cannot start the pacer thread");
    }
}

static void
stop_pacer(struct bench *b)
{
    if (!b->pacer_on)
        return;
    atomic_store_explicit(&b->pacer_stop, true, memory_order_release);
    pthread_join(b->pacer, NULL);
    b->pacer_on = false;
}

static void
end_run(struct bench *b, const char *reason)
{
    if (b->ph != PH_RUN)
        return;
    b->end_reason = reason;
    b->ph = PH_FINISH;
    b->t_phase = now_ns();
    if (b->relay->finish)
        b->relay->finish(b);
    else
        bench_finished(b);
}

/* Send what the window or the rate allows. */
static void
pump(struct bench *b)
{
    char body[MAX_SIZE + 64];
    uint64_t m = b->o.messages;
    uint64_t due = m;
    uint64_t t = now_ns();

    if (b->o.rate > 0) {
        double d = (double)(t - b->t0) / (double)NS_PER_S * b->o.rate;
        due = (uint64_t)d + 1;
        if (due > m)
            due = m;
    }
    while (b->next < due && b->ph == PH_RUN) {
        if (b->o.rate <= 0 && b->sent - b->got - b->failed >= b->o.window)
            break;
        uint64_t seq = b->next;
        size_t len = make_body(b, seq, body, sizeof(body));
        uint32_t user = (uint32_t)(seq % b->o.users);
        int rc;
        t = now_ns();
        b->t_send[seq] = t;
        if (b->o.recv) {
            if (bench_xmpp_busy(b->peer))
                break;
            char to[320];
            bench_user_jid(b, user, to, sizeof(to));
            rc = bench_xmpp_send(b->peer, to, body, len);
            if (rc < 0)
                bench_fail(b, "the peer could not send: %s", im_strerror(rc));
        } else {
            rc = b->relay->send(b, user, seq, body, len);
        }
        if (rc != 0)
            break;
        b->mflags[seq] |= M_SENT;
        b->next++;
        b->sent++;
        if (b->o.rate > 0) {
            uint64_t sched = b->t0 + (uint64_t)((double)seq * (double)NS_PER_S / b->o.rate);
            if (t > sched && t - sched > b->lag_max_ns)
                b->lag_max_ns = t - sched;
        }
    }
    if (b->ph == PH_RUN && b->sent == m && b->got + b->failed >= m)
        end_run(b, "all delivered");
}

static void
on_poll(void *ud)
{
    struct bench *b = ud;

    switch (b->ph) {
    case PH_SETUP:
        if (b->ready >= b->o.users && b->peer_online) {
            b->ph = PH_QUIET;
            b->t_quiet_end = now_ns() + QUIET_NS;
        }
        break;
    case PH_RUN:
        pump(b);
        break;
    case PH_CLOSING:
        if (b->peer_gone && b->relay->closed(b))
            dp_worker_stop(b->w);
        break;
    default:
        break;
    }
}

static void
on_tick(void *ud, uint64_t now_ms)
{
    struct bench *b = ud;
    uint64_t t = now_ns();

    if (b->ph < PH_DONE) {
        if (b->relay->tick)
            b->relay->tick(b);
        if (b->peer)
            bench_xmpp_tick(b->peer);
    }
    switch (b->ph) {
    case PH_SETUP:
        if (t - b->t_setup0 > (uint64_t)(b->o.setup_timeout * NS_PER_S))
            bench_fail(b, "set-up did not finish within %.0f s: %u of %u users ready, peer %s%s%s",
                       b->o.setup_timeout, b->ready, b->o.users,
                       b->peer_online ? "online" : "not online",
                       b->note[0] ? "; last: " : "", b->note);
        break;
    case PH_QUIET:
        if (t >= b->t_quiet_end)
            begin_run(b);
        break;
    case PH_RUN:
        if (t - b->t_progress > (uint64_t)(b->o.idle_timeout * NS_PER_S))
            end_run(b, "stalled: nothing arrived within the idle timeout");
        else if (t - b->t0 > (uint64_t)(b->o.timeout * NS_PER_S))
            end_run(b, "timed out");
        break;
    case PH_FINISH:
        if (t - b->t_phase > FINISH_MAX_NS)
            bench_fail(b, "the relay did not finish (acks or replies missing) within %llu s",
                       (unsigned long long)(FINISH_MAX_NS / NS_PER_S));
        break;
    case PH_SETTLE: {
        struct bench_proc_snap s;
        bool still = true;
        if (b->o.pid && !bench_proc_read(b->o.pid, &s)) {
            still = s.cpu_ticks == b->settle_ticks;
            b->settle_ticks = s.cpu_ticks;
        }
        b->settle_same = still ? b->settle_same + 1 : 0;
        if (b->settle_same >= 2 || t - b->t_phase > SETTLE_MAX_NS) {
            b->t_win_end = now_ns();
            read_after(b);
            b->ph = PH_DONE;
            dp_worker_stop(b->w);
        }
        break;
    }
    case PH_CLOSING:
        if (t - b->t_phase > CLOSE_MAX_NS)
            dp_worker_stop(b->w);
        break;
    default:
        break;
    }
}

/* ---- report ------------------------------------------------------------------ */

static void
json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

struct figures {
    double elapsed_s, msgs_per_s;
    uint64_t lost, unsent;
    double cpu_s, cpu_us_per_msg, sched_us_per_msg;
    double xmpp_cpu_us_per_msg, bench_cpu_us_per_msg;
    double commits, commits_per_msg, pages_per_commit, kernel_write_bytes, kernel_pages_per_commit;
    double store_us_per_msg;    /* imfused's CPU time in its commits, per message */
    bool have_pages, have_kernel_pages;
    /* imfused's dataplane: its thread's on-CPU time; with --io dpdk the TSC
     * cycles of its busy loop turns, in us at the TSC's rate over the window */
    double dp_us_per_msg, dp_preempted, dp_user_share;
    bool have_busy;
    double busy_cycles_per_msg, busy_turns_per_msg, busy_us_per_msg, tsc_hz;
};

static double
tv_s(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static void
compute(const struct bench *b, struct figures *f)
{
    memset(f, 0, sizeof(*f));
    double n = (double)b->got;
    f->elapsed_s = b->got ? (double)(b->t_last_rx - b->t0) / 1e9 : 0;
    f->msgs_per_s = f->elapsed_s > 0 ? n / f->elapsed_s : 0;
    f->lost = b->sent - b->got - b->failed;
    f->unsent = b->o.messages - b->sent;
    if (b->have_cpu) {
        f->cpu_s = (double)(b->cpu1.cpu_ticks - b->cpu0.cpu_ticks) / (double)bench_proc_hz();
        f->cpu_us_per_msg = n > 0 ? f->cpu_s * 1e6 / n : 0;
        if (b->cpu0.sched_ns && b->cpu1.sched_ns > b->cpu0.sched_ns && n > 0)
            f->sched_us_per_msg = (double)(b->cpu1.sched_ns - b->cpu0.sched_ns) / 1e3 / n;
        if (b->cpu0.have_io && b->cpu1.have_io)
            f->kernel_write_bytes = (double)(b->cpu1.write_bytes - b->cpu0.write_bytes);
    }
    if (b->have_xcpu && n > 0)
        f->xmpp_cpu_us_per_msg = (double)(b->xcpu1.cpu_ticks - b->xcpu0.cpu_ticks) /
                                 (double)bench_proc_hz() * 1e6 / n;
    if (n > 0)
        f->bench_cpu_us_per_msg = (tv_s(&b->ru1.ru_utime) + tv_s(&b->ru1.ru_stime) -
                                   tv_s(&b->ru0.ru_utime) - tv_s(&b->ru0.ru_stime)) * 1e6 / n;
    if (b->have_dp && n > 0) {
        f->dp_us_per_msg = (double)(b->dp1.run_ns - b->dp0.run_ns) / 1e3 / n;
        f->dp_preempted = (double)(b->dp1.preempted - b->dp0.preempted);
        uint64_t u = b->dp1.utime - b->dp0.utime, k = b->dp1.stime - b->dp0.stime;
        f->dp_user_share = u + k ? (double)u / (double)(u + k) : -1;
    }
    if (b->tsc1 > b->tsc0 && b->tsc_ns1 > b->tsc_ns0)
        f->tsc_hz = (double)(b->tsc1 - b->tsc0) * 1e9 / (double)(b->tsc_ns1 - b->tsc_ns0);
    if (b->have_stats && b->st1.io_busy_turns > b->st0.io_busy_turns && n > 0) {
        f->have_busy = true;
        f->busy_cycles_per_msg = (double)(b->st1.io_busy_cycles - b->st0.io_busy_cycles) / n;
        f->busy_turns_per_msg = (double)(b->st1.io_busy_turns - b->st0.io_busy_turns) / n;
        f->busy_us_per_msg = f->tsc_hz > 0 ? f->busy_cycles_per_msg / f->tsc_hz * 1e6 : 0;
    }
    if (b->have_stats) {
        f->commits = (double)(b->st1.store_commits - b->st0.store_commits);
        f->commits_per_msg = n > 0 ? f->commits / n : 0;
        f->store_us_per_msg = n > 0 ? (double)(b->st1.store_commit_cpu_us - b->st0.store_commit_cpu_us) / n : 0;
        /* LMDB's pages: what imfused's committing thread handed to the
         * kernel.  The kernel charges more (write_bytes): the file
         * system's own blocks too, reported beside it. */
        if (f->commits > 0 && b->st1.store_page_size) {
            double page = (double)b->st1.store_page_size;
            f->pages_per_commit = (double)(b->st1.store_bytes_written - b->st0.store_bytes_written) /
                                  page / f->commits;
            f->have_pages = true;
            if (b->cpu0.have_io && b->cpu1.have_io) {
                f->kernel_pages_per_commit = f->kernel_write_bytes / page / f->commits;
                f->have_kernel_pages = true;
            }
        }
    }
}

static const char *
mode_name(const struct bench *b)
{
    return b->o.rate > 0 ? "open" : "closed";
}

static void
report_json(const struct bench *b, const struct figures *f)
{
    FILE *o = stdout;
    const struct bench_hist *h = b->hist;
    fputs("{\"relay\":", o);
    json_str(o, b->o.relay);
    fputs(",\"label\":", o);
    json_str(o, b->o.label ? b->o.label : "");
    fprintf(o, ",\"direction\":\"%s\",\"mode\":\"%s\",\"window\":%u,\"rate\":%.1f,\"users\":%u,"
            "\"messages\":%" PRIu64 ",\"size\":%u,\"pid\":%d",
            b->o.recv ? "recv" : "send", mode_name(b), b->o.rate > 0 ? 0 : b->o.window, b->o.rate,
            b->o.users, b->o.messages, b->o.size, (int)b->o.pid);
    fprintf(o, ",\"ok\":%s", b->failed_run ? "false" : "true");
    if (b->failed_run) {
        fputs(",\"error\":", o);
        json_str(o, b->why);
    }
    fprintf(o, ",\"sent\":%" PRIu64 ",\"received\":%" PRIu64 ",\"lost\":%" PRIu64
            ",\"duplicated\":%" PRIu64 ",\"unsent\":%" PRIu64 ",\"send_errors\":%" PRIu64
            ",\"stray\":%" PRIu64,
            b->sent, b->got, f->lost, b->dup, f->unsent, b->failed, b->stray);
    if (b->first_send_error[0]) {
        fputs(",\"first_send_error\":", o);
        json_str(o, b->first_send_error);
    }
    fputs(",\"end\":", o);
    json_str(o, b->end_reason ? b->end_reason : "");
    fprintf(o, ",\"elapsed_s\":%.4f,\"msgs_per_s\":%.1f", f->elapsed_s, f->msgs_per_s);
    /* the window on CLOCK_MONOTONIC, for `perf record -k CLOCK_MONOTONIC` + `perf report --time` */
    fprintf(o, ",\"window_mono_s\":[%.6f,%.6f]", (double)b->t0 / 1e9,
            (double)(b->t_win_end ? b->t_win_end : b->t0) / 1e9);
    fprintf(o, ",\"latency_us\":{\"n\":%" PRIu64 ",\"min\":%.1f,\"p50\":%.1f,\"p90\":%.1f,"
            "\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,\"mean\":%.1f}",
            h->n, h->n ? (double)h->min / 1e3 : 0.0,
            (double)bench_hist_quantile(h, 0.50) / 1e3, (double)bench_hist_quantile(h, 0.90) / 1e3,
            (double)bench_hist_quantile(h, 0.99) / 1e3, (double)bench_hist_quantile(h, 0.999) / 1e3,
            (double)h->max / 1e3, bench_hist_mean(h) / 1e3);
    if (b->o.rate > 0)
        fprintf(o, ",\"send_lag_max_us\":%.1f", (double)b->lag_max_ns / 1e3);
    if (b->have_cpu) {
        fprintf(o, ",\"cpu_s\":%.3f,\"cpu_us_per_msg\":%.2f,\"cpu_sched_us_per_msg\":%.2f"
                ",\"rss_peak_kib\":%" PRIu64 ",\"rss_end_kib\":%" PRIu64 ",\"rss_peak_scope\":\"%s\"",
                f->cpu_s, f->cpu_us_per_msg, f->sched_us_per_msg, b->rss_peak_kib, b->rss_end_kib,
                b->peak_window ? "window" : "process");
        if (b->cpu0.have_io)
            fprintf(o, ",\"kernel_write_bytes\":%.0f", f->kernel_write_bytes);
    }
    if (b->have_stats) {
        fprintf(o, ",\"store_commits\":%.0f,\"commits_per_msg\":%.4f,\"msgs_per_commit\":%.2f",
                f->commits, f->commits_per_msg, f->commits > 0 ? (double)b->got / f->commits : 0.0);
        if (f->have_pages)
            fprintf(o, ",\"pages_per_commit\":%.2f", f->pages_per_commit);
        if (f->have_kernel_pages)
            fprintf(o, ",\"kernel_pages_per_commit\":%.2f", f->kernel_pages_per_commit);
        fprintf(o, ",\"store_cpu_us_per_msg\":%.2f", f->store_us_per_msg);
    }
    if (b->have_dp)
        fprintf(o, ",\"dp_thread_us_per_msg\":%.3f,\"dp_user_share\":%.3f,\"dp_preempted\":%.0f",
                f->dp_us_per_msg, f->dp_user_share, f->dp_preempted);
    if (f->have_busy)
        fprintf(o, ",\"io_busy_us_per_msg\":%.3f,\"io_busy_cycles_per_msg\":%.0f,"
                "\"io_busy_turns_per_msg\":%.3f,\"tsc_hz\":%.0f", f->busy_us_per_msg,
                f->busy_cycles_per_msg, f->busy_turns_per_msg, f->tsc_hz);
    if (b->have_xcpu)
        fprintf(o, ",\"xmpp_cpu_us_per_msg\":%.2f", f->xmpp_cpu_us_per_msg);
    fprintf(o, ",\"bench_cpu_us_per_msg\":%.2f}\n", f->bench_cpu_us_per_msg);
    fflush(o);
}

static void
report_text(const struct bench *b, const struct figures *f)
{
    FILE *o = stdout;
    const struct bench_hist *h = b->hist;
    fprintf(o, "%s: relay %s", prog, b->o.relay);
    if (b->o.pid)
        fprintf(o, " (pid %d)", (int)b->o.pid);
    fprintf(o, ", %s direction, ", b->o.recv ? "recv (peer -> user)" : "send (user -> peer)");
    if (b->o.rate > 0)
        fprintf(o, "open loop at %.0f msgs/s", b->o.rate);
    else
        fprintf(o, "closed loop W=%u", b->o.window);
    fprintf(o, ", %u user%s, %" PRIu64 " messages of %u bytes\n", b->o.users,
            b->o.users == 1 ? "" : "s", b->o.messages, b->o.size);
    if (b->failed_run)
        fprintf(o, "  FAILED: %s\n", b->why);
    fprintf(o, "  delivered %" PRIu64 "/%" PRIu64 " in %.3f s: %.0f msgs/s (%s)\n", b->got,
            b->o.messages, f->elapsed_s, f->msgs_per_s, b->end_reason ? b->end_reason : "-");
    fprintf(o, "  lost %" PRIu64 ", duplicated %" PRIu64 ", never sent %" PRIu64
            ", refused by the relay %" PRIu64 ", stray %" PRIu64 "\n",
            f->lost, b->dup, f->unsent, b->failed, b->stray);
    if (b->first_send_error[0])
        fprintf(o, "  first refusal: %s\n", b->first_send_error);
    fprintf(o, "  latency (%s): p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms\n",
            b->o.recv ? "peer send -> user's message event" : "user send -> peer's receipt",
            (double)bench_hist_quantile(h, 0.50) / 1e6, (double)bench_hist_quantile(h, 0.90) / 1e6,
            (double)bench_hist_quantile(h, 0.99) / 1e6, (double)bench_hist_quantile(h, 0.999) / 1e6,
            (double)h->max / 1e6);
    if (b->o.rate > 0)
        fprintf(o, "  pacing: worst send lateness %.3f ms\n", (double)b->lag_max_ns / 1e6);
    if (b->have_cpu) {
        fprintf(o, "  relay CPU: %.2f s = %.2f us/msg (per-thread schedstat: %.2f us/msg)\n",
                f->cpu_s, f->cpu_us_per_msg, f->sched_us_per_msg);
        fprintf(o, "  relay memory: peak RSS %.1f MiB (%s), RSS at the end %.1f MiB\n",
                (double)b->rss_peak_kib / 1024, b->peak_window ? "during the window" : "process lifetime",
                (double)b->rss_end_kib / 1024);
    } else {
        fprintf(o, "  relay CPU: not measured (give --pid%s)\n",
                strcmp(b->o.relay, "imfuse") ? "" : " or --control");
    }
    if (b->have_stats) {
        fprintf(o, "  store: %.0f commits = %.4f per message (%.1f messages per commit)",
                f->commits, f->commits_per_msg, f->commits > 0 ? (double)b->got / f->commits : 0.0);
        if (f->have_pages)
            fprintf(o, ", %.2f pages written per commit", f->pages_per_commit);
        if (f->have_kernel_pages)
            fprintf(o, " (the kernel charged %.2f: the file system's blocks too)", f->kernel_pages_per_commit);
        fprintf(o, "\n  store CPU: %.2f us/msg in commits\n", f->store_us_per_msg);
    }
    if (b->have_dp)
        fprintf(o, "  dataplane thread (%s): %.3f us/msg on the CPU (%.0f %% of its ticks in user "
                "space), preempted %.0f times\n", DP_THREAD, f->dp_us_per_msg, f->dp_user_share * 100,
                f->dp_preempted);
    if (f->have_busy)
        fprintf(o, "  dataplane busy loop turns (--io dpdk): %.0f TSC cycles = %.3f us/msg at %.0f MHz, "
                "%.3f turns/msg\n", f->busy_cycles_per_msg, f->busy_us_per_msg, f->tsc_hz / 1e6,
                f->busy_turns_per_msg);
    if (b->have_xcpu)
        fprintf(o, "  XMPP server CPU: %.2f us/msg\n", f->xmpp_cpu_us_per_msg);
    fprintf(o, "  bench CPU: %.2f us/msg\n", f->bench_cpu_us_per_msg);
    fflush(o);
}

/* ---- command line ------------------------------------------------------------ */

static void
usage(FILE *f)
{
    fprintf(f,
        "usage: imfuse-bench --relay imfuse|bitlbee|direct [options]\n"
        "Drives messages through a running relay and a running XMPP server; starts nothing.\n"
        "  --relay R            imfuse (client protocol), bitlbee (IRC), or direct (the users\n"
        "                       are XMPP clients of the server: the baseline for added latency)\n"
        "  --imfuse HOST:PORT   imfused's client listener (default 127.0.0.1:7700)\n"
        "  --control PATH       imfused's control socket: creates the users, reads `stats`\n"
        "                       (store commits, --io dpdk's busy cycles) and finds the daemon's PID\n"
        "  --irc HOST:PORT      BitlBee (default 127.0.0.1:6667)\n"
        "  --xmpp IP:PORT       the XMPP server, STARTTLS (default 127.0.0.1:5222)\n"
        "  --ca-file PEM        CA of the XMPP server's certificate (default: system bundle)\n"
        "  --domain D           XMPP domain of every account (default a.test)\n"
        "  --prefix P           user i is P<i>, with XMPP account P<i>@D (default bench)\n"
        "  --password PW        password of every user and XMPP account (default bench-pw)\n"
        "  --peer NAME          the peer's local part: NAME@D (default peer)\n"
        "  --peer-password PW   (default: --password)\n"
        "  --users U            users (default 1); message i belongs to user i mod U\n"
        "  --messages M         messages (default 20000, at most 10000000)\n"
        "  --window W           closed loop: messages in flight (default 50)\n"
        "  --rate R             open loop: R messages per second instead of a window\n"
        "  --size B             body bytes (default 50, %u-%u)\n"
        "  --direction D        send (user -> peer, default) or recv (peer -> user)\n"
        "  --no-cid             imfuse: send without a cid\n"
        "  --pid PID            the relay daemon's PID (CPU, RSS); imfuse: else from --control\n"
        "  --xmpp-pid PID       also report the XMPP server's CPU per message\n"
        "  --setup-timeout S    (default 60)  --idle-timeout S (default 5)  --timeout S (default 600)\n"
        "  --label TEXT         copied into the JSON output\n"
        "  --json               one JSON object on standard output\n"
        "Exit: 0 every message arrived exactly once; 1 lost, duplicated, refused or unsent\n"
        "messages (all reported); 2 the run failed (set-up, a connection lost); 64 usage.\n",
        MIN_SIZE, MAX_SIZE);
}

static const struct cli_optspec bench_optspec[] = {
    { "--relay", true }, { "--imfuse", true }, { "--control", true }, { "--irc", true },
    { "--xmpp", true }, { "--ca-file", true }, { "--domain", true }, { "--prefix", true },
    { "--password", true }, { "--peer", true }, { "--peer-password", true }, { "--users", true },
    { "--messages", true }, { "--window", true }, { "--rate", true }, { "--size", true },
    { "--direction", true }, { "--no-cid", false }, { "--pid", true }, { "--xmpp-pid", true },
    { "--setup-timeout", true }, { "--idle-timeout", true }, { "--timeout", true },
    { "--label", true }, { "--json", false }, { "-h", false }, { "--help", false },
    { NULL, false },
};

static int
opt_uint(const struct cli_args *a, const char *name, uint64_t lo, uint64_t hi, uint64_t *v)
{
    const char *s = cli_opt(a, name);
    if (!s)
        return 0;
    if (cli_parse_uint(s, v) || *v < lo || *v > hi) {
        fprintf(stderr, "%s: %s must be an integer from %" PRIu64 " to %" PRIu64 "\n", prog, name,
                lo, hi);
        return -1;
    }
    return 0;
}

static int
opt_double(const struct cli_args *a, const char *name, double lo, double hi, double *v)
{
    const char *s = cli_opt(a, name);
    if (!s)
        return 0;
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || end == s || *end || !(d >= lo && d <= hi)) {
        fprintf(stderr, "%s: %s must be a number from %g to %g\n", prog, name, lo, hi);
        return -1;
    }
    *v = d;
    return 0;
}

static bool
name_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (!n || n > max)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '.' || *s == '-' ||
              *s == '_'))
            return false;
    return true;
}

/* 0, or an exit code after saying why. */
static int
parse_opts(struct bench_opts *o, int argc, char **argv)
{
    struct cli_args a;
    char why[200];
    uint64_t v;

    if (cli_args_parse(&a, argc, argv, bench_optspec, NULL, why, sizeof(why))) {
        fprintf(stderr, "%s: %s\n", prog, why);
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    int rc = CLI_EXIT_USAGE;
    if (cli_opt(&a, "-h") || cli_opt(&a, "--help")) {
        usage(stdout);
        rc = -1;
        goto out;
    }
    if (a.npos) {
        fprintf(stderr, "%s: unexpected argument %s\n", prog, a.pos[0]);
        goto out;
    }
    const char *s;
#define STR_OPT(field, name, def) o->field = (s = cli_opt(&a, name)) ? s : (def)
    STR_OPT(relay, "--relay", NULL);
    STR_OPT(imfuse, "--imfuse", "127.0.0.1:7700");
    STR_OPT(control, "--control", NULL);
    STR_OPT(irc, "--irc", "127.0.0.1:6667");
    STR_OPT(ca_file, "--ca-file", NULL);
    STR_OPT(domain, "--domain", "a.test");
    STR_OPT(prefix, "--prefix", "bench");
    STR_OPT(password, "--password", "bench-pw");
    STR_OPT(peer, "--peer", "peer");
    STR_OPT(peer_password, "--peer-password", o->password);
    STR_OPT(label, "--label", NULL);
#undef STR_OPT
    if (!o->relay || (strcmp(o->relay, "imfuse") && strcmp(o->relay, "bitlbee") &&
                      strcmp(o->relay, "direct"))) {
        fprintf(stderr, "%s: --relay imfuse, bitlbee or direct is required\n", prog);
        goto out;
    }
    s = cli_opt(&a, "--xmpp");
    if (bench_split_addr(s ? s : "127.0.0.1:5222", o->xmpp_host, sizeof(o->xmpp_host),
                         &o->xmpp_port)) {
        fprintf(stderr, "%s: --xmpp must be IP:PORT\n", prog);
        goto out;
    }
    if (!name_ok(o->prefix, 40) || !name_ok(o->peer, 64) || !name_ok(o->domain, 200)) {
        fprintf(stderr, "%s: --prefix, --peer and --domain take [a-z0-9._-] only\n", prog);
        goto out;
    }
    if (!*o->password || !*o->peer_password) {
        fprintf(stderr, "%s: passwords must not be empty\n", prog);
        goto out;
    }
    o->users = 1;
    o->messages = 20000;
    o->window = 50;
    o->size = 50;
    o->setup_timeout = 60;
    o->idle_timeout = 5;
    o->timeout = 600;
    if ((v = o->users, opt_uint(&a, "--users", 1, MAX_USERS, &v)))
        goto out;
    o->users = (uint32_t)v;
    if ((v = o->messages, opt_uint(&a, "--messages", 1, MAX_MESSAGES, &v)))
        goto out;
    o->messages = v;
    if ((v = o->window, opt_uint(&a, "--window", 1, 1000000, &v)))
        goto out;
    o->window = (uint32_t)v;
    if ((v = o->size, opt_uint(&a, "--size", MIN_SIZE, MAX_SIZE, &v)))
        goto out;
    o->size = (uint32_t)v;
    if ((v = 0, opt_uint(&a, "--pid", 1, INT32_MAX, &v)))
        goto out;
    o->pid = (pid_t)v;
    if ((v = 0, opt_uint(&a, "--xmpp-pid", 1, INT32_MAX, &v)))
        goto out;
    o->xmpp_pid = (pid_t)v;
    if (opt_double(&a, "--rate", 1, 1e7, &o->rate) ||
        opt_double(&a, "--setup-timeout", 1, 3600, &o->setup_timeout) ||
        opt_double(&a, "--idle-timeout", 0.1, 3600, &o->idle_timeout) ||
        opt_double(&a, "--timeout", 1, 86400, &o->timeout))
        goto out;
    s = cli_opt(&a, "--direction");
    if (s && strcmp(s, "send") && strcmp(s, "recv")) {
        fprintf(stderr, "%s: --direction is send or recv\n", prog);
        goto out;
    }
    o->recv = s && !strcmp(s, "recv");
    o->cid = !cli_opt(&a, "--no-cid");
    o->json = cli_opt(&a, "--json") != NULL;
    rc = 0;
out:
    cli_args_free(&a);
    return rc;
}

/* ---- main -------------------------------------------------------------------- */

static void
make_nonce(char out[9])
{
    uint8_t r[4];
    if (im_random(r, sizeof(r)))
        memset(r, 0x5a, sizeof(r));
    for (int i = 0; i < 4; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
}

/* Before the loop: find the daemon, create imfuse users (Argon2id is slow:
 * it is done here, outside every measure).  0, or -1 after bench_fail(). */
static int
prepare(struct bench *b)
{
    struct bench_opts *o = &b->o;
    if (!strcmp(o->relay, "imfuse") && o->control) {
        if (!o->pid) {
            pid_t pid;
            int rc = bench_ctl_pid(o->control, &pid);
            if (rc) {
                bench_fail(b, "control socket %s: %s", o->control, im_strerror(rc));
                return -1;
            }
            o->pid = pid;
        }
        for (uint32_t i = 0; i < o->users; i++) {
            char name[64], why[300];
            bench_user_name(b, i, name, sizeof(name));
            if (bench_ctl_user_add(o->control, name, o->password, why, sizeof(why))) {
                bench_fail(b, "cannot create user %s: %s", name, why);
                return -1;
            }
        }
    }
    struct bench_proc_snap s;
    if (o->pid && bench_proc_read(o->pid, &s)) {
        bench_fail(b, "no process %d to measure (--pid)", (int)o->pid);
        return -1;
    }
    if (o->xmpp_pid && bench_proc_read(o->xmpp_pid, &s)) {
        bench_fail(b, "no process %d to measure (--xmpp-pid)", (int)o->xmpp_pid);
        return -1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    static struct bench bench;
    struct bench *b = &bench;
    int rc = parse_opts(&b->o, argc, argv);
    if (rc)
        return rc < 0 ? 0 : rc;

    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(b->o.relay, "imfuse"))
        b->relay = &bench_imfuse_ops;
    else if (!strcmp(b->o.relay, "bitlbee"))
        b->relay = &bench_irc_ops;
    else
        b->relay = &bench_direct_ops;
    make_nonce(b->nonce);
    snprintf(b->peer_jid, sizeof(b->peer_jid), "%s@%s", b->o.peer, b->o.domain);
    b->t_send = calloc(b->o.messages, sizeof(*b->t_send));
    b->mflags = calloc(b->o.messages, 1);
    b->hist = malloc(sizeof(*b->hist));
    if (!b->t_send || !b->mflags || !b->hist) {
        fprintf(stderr, "%s: out of memory for %" PRIu64 " messages\n", prog, b->o.messages);
        return 2;
    }
    bench_hist_init(b->hist);

    char why[300];
    struct dp_worker_cfg wc = { .id = 0, .io = "kernel", .ca_file = b->o.ca_file };
    if (prepare(b) == 0) {
        b->w = dp_worker_new(&wc, why, sizeof(why));
        if (!b->w)
            bench_fail(b, "%s", why);
    }
    if (b->w) {
        dp_worker_set_hooks(b->w, on_poll, on_tick, b);
        b->t_setup0 = now_ns();
        int err = 0;
        struct bench_xmpp_cfg pc = {
            .jid = b->peer_jid, .password = b->o.peer_password, .host = b->o.xmpp_host,
            .port = b->o.xmpp_port, .resource = "peer",
        };
        b->peer = bench_xmpp_open(b->w, &pc, &peer_cb, b, &err);
        if (!b->peer)
            bench_fail(b, "cannot connect the peer: %s", im_strerror(err));
        else if ((rc = b->relay->start(b)) < 0)
            bench_fail(b, "cannot start the %s relay: %s", b->o.relay, im_strerror(rc));
        if (!b->failed_run)
            dp_worker_run(b->w);
        stop_pacer(b);
    }

    struct figures f;
    compute(b, &f);
    if (b->o.json)
        report_json(b, &f);
    else
        report_text(b, &f);
    if (b->failed_run)
        fprintf(stderr, "%s: %s\n", prog, b->why);

    if (b->w) {
        /* Goodbyes: QUIT, </stream>, closed connections. */
        b->ph = PH_CLOSING;
        b->t_phase = now_ns();
        b->relay->close(b);
        if (b->peer)
            bench_xmpp_close(b->peer);
        else
            b->peer_gone = true;
        dp_worker_run(b->w);
        dp_worker_free(b->w);
    }
    if (b->relay->free)
        b->relay->free(b);
    free(b->t_send);
    free(b->mflags);
    free(b->hist);
    if (b->failed_run)
        return 2;
    return f.lost || f.unsent || b->dup || b->failed ? 1 : 0;
}
