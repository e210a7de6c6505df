/*
 * test_conn.c - dataplane connections over the kernel backend on loopback:
 * echo in arbitrary pieces, back-pressure, close-after-flush, failed
 * connects, and TLS (direct, name mismatch, STARTTLS, untrusted CA) with
 * certificates made by the openssl CLI in a temp dir.  One worker is driven
 * from the test thread with dp_worker_run_once(); one test runs it in its
 * own thread.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "t.h"
#include "dp_int.h"
#include "dp_stats.h"
#include "im_clock.h"
#include "im_common.h"

/* Turn the loop until cond holds or ms pass; then assert cond. */
#define RUN_UNTIL(w, cond, ms) do { \
    uint64_t t_dl_ = im_mono_ms() + (ms); \
    while (!(cond) && im_mono_ms() < t_dl_) dp_worker_run_once((w), 5); \
    if (!(cond)) T_FAIL("timed out waiting for %s", #cond); } while (0)

/* Turn the loop for ms. */
static void run_for(struct dp_worker *w, int ms)
{
    uint64_t dl = im_mono_ms() + (uint64_t)ms;
    while (im_mono_ms() < dl)
        dp_worker_run_once(w, 5);
}

/* Byte i of the test stream. */
static uint8_t pat(size_t i)
{
    return (uint8_t)((i * 2654435761u) >> 13);
}

/* ---- one side of a connection -------------------------------------------- */

struct side {
    struct dp_conn *c;
    uint8_t *rx;
    size_t rxlen, rxcap;
    bool rx_check;          /* check rx against pat() as it comes instead of storing */
    size_t rx_bad;
    int opens, open_status;
    int closes, close_reason;
    int tls_calls, tls_status;
    int drains;
    bool echo;              /* write back what arrives, pausing at HIWAT until on_drain */
    bool opened_before_close;
    char detail[320];
    /* producer: writes pat() bytes up to tx_total, in pieces, obeying HIWAT */
    size_t tx_total, tx_done;
    unsigned seed;
    bool close_when_sent;
    /* STARTTLS script */
    int starttls_role;      /* 1 client, 2 server */
    bool starttls_started;
};

static struct side sides[8];
static int n_sides;
static struct dp_worker *g_w;

static struct side *new_side(void)
{
    struct side *s = &sides[n_sides++];
    memset(s, 0, sizeof(*s));
    s->seed = 12345u + (unsigned)n_sides;
    return s;
}

static void reset_sides(void)
{
    for (int i = 0; i < n_sides; i++)
        free(sides[i].rx);
    n_sides = 0;
}

static void keep(struct side *s, const uint8_t *p, size_t n)
{
    if (s->rx_check) {
        for (size_t i = 0; i < n; i++)
            if (p[i] != pat(s->rxlen + i))
                s->rx_bad++;
        s->rxlen += n;
        return;
    }
    if (s->rxlen + n > s->rxcap) {
        s->rxcap = (s->rxlen + n) * 2;
        s->rx = realloc(s->rx, s->rxcap);
    }
    memcpy(s->rx + s->rxlen, p, n);
    s->rxlen += n;
}

/* Write the next pieces (1..9000 bytes) until done or the connection says HIWAT. */
static void pump(struct side *s)
{
    static uint8_t buf[9000];
    while (s->tx_done < s->tx_total) {
        s->seed = s->seed * 1103515245u + 12345u;
        size_t n = 1 + (s->seed >> 8) % sizeof(buf);
        if (n > s->tx_total - s->tx_done)
            n = s->tx_total - s->tx_done;
        for (size_t i = 0; i < n; i++)
            buf[i] = pat(s->tx_done + i);
        int rc = dp_conn_write(s->c, buf, n);
        if (rc < 0)
            return;
        s->tx_done += n;
        if (rc == 1)
            return;     /* on_drain resumes */
    }
    if (s->close_when_sent)
        dp_conn_close(s->c);
}

static void on_open(struct dp_conn *c, int status, const char *detail)
{
    struct side *s = dp_conn_ud(c);
    s->opens++;
    s->open_status = status;
    snprintf(s->detail, sizeof(s->detail), "%s", detail ? detail : "");
    if (status == 0)
        pump(s);
}

static void on_data(struct dp_conn *c, const uint8_t *p, size_t n)
{
    struct side *s = dp_conn_ud(c);
    keep(s, p, n);
    if (s->echo && dp_conn_write(c, p, n) == 1)
        dp_conn_pause(c, true);
    if (s->starttls_role == 2 && !s->starttls_started && s->rxlen && memchr(s->rx, '\n', s->rxlen)) {
        s->starttls_started = true;
        dp_conn_write(c, "PROCEED\n", 8);
        T_ASSERT(dp_conn_start_tls_server(c) == 0);
        s->rxlen = 0;
    }
    if (s->starttls_role == 1 && !s->starttls_started && s->rxlen && memchr(s->rx, '\n', s->rxlen)) {
        s->starttls_started = true;
        T_ASSERT(s->rxlen == 8 && !memcmp(s->rx, "PROCEED\n", 8));
        s->rxlen = 0;
        T_ASSERT(dp_conn_start_tls_client(c, "a.test") == 0);
    }
}

static void on_drain(struct dp_conn *c)
{
    struct side *s = dp_conn_ud(c);
    s->drains++;
    if (s->echo)
        dp_conn_pause(c, false);
    pump(s);
}

static void on_tls(struct dp_conn *c, int status, const char *detail)
{
    struct side *s = dp_conn_ud(c);
    s->tls_calls++;
    s->tls_status = status;
    snprintf(s->detail, sizeof(s->detail), "%s", detail ? detail : "");
    if (status == 0 && s->starttls_role == 1) {
        s->rx_check = true;
        s->rxlen = 0;
        pump(s);
    }
}

static void on_close(struct dp_conn *c, int reason)
{
    struct side *s = dp_conn_ud(c);
    s->closes++;
    s->close_reason = reason;
    s->opened_before_close = s->opens > 0;
    s->c = NULL;
}

static const struct dp_conn_cb side_cb = {
    .on_open = on_open, .on_data = on_data, .on_drain = on_drain, .on_tls = on_tls,
    .on_close = on_close,
};

/* What an accepted connection starts as (set by each test). */
static struct side accept_tmpl;
static struct side *accepted;

static void on_accept(void *ud, struct dp_conn *c)
{
    struct side *s = new_side();
    unsigned seed = s->seed;
    *s = accept_tmpl;
    s->seed = seed;
    s->c = c;
    accepted = s;
    dp_conn_set_cb(c, &side_cb, s);
    pump(s);
}

static struct dp_worker *mkworker(const char *ca, const char *cert, const char *key)
{
    struct dp_worker_cfg cfg = { .id = 0, .io = "kernel", .ca_file = ca, .tls_cert = cert,
                                 .tls_key = key };
    char why[256] = "";
    struct dp_worker *w = dp_worker_new(&cfg, why, sizeof(why));
    if (!w)
        fprintf(stderr, "  dp_worker_new: %s\n", why);
    n_sides = 0;
    memset(&accept_tmpl, 0, sizeof(accept_tmpl));
    accepted = NULL;
    g_w = w;
    return w;
}

static void endworker(struct dp_worker *w)
{
    dp_worker_free(w);
    reset_sides();
}

static struct dp_listener *listen_any(struct dp_worker *w, bool tls, uint16_t *port)
{
    int err = 0;
    struct dp_listener *l = dp_listen(w, "127.0.0.1", 0, tls, on_accept, NULL, &err);
    if (l)
        *port = dp_listener_port(l);
    return l;
}

/* ---- plain ------------------------------------------------------------------ */

T_TEST(worker_backends)
{
    struct dp_worker_cfg cfg = { .io = "dpdk" };
    char why[128] = "";
    /* Built in, but refused until the process set the port up (dp_dpdk_setup). */
    T_ASSERT(dp_worker_new(&cfg, why, sizeof(why)) == NULL);
    T_EQ_STR(why, "the dpdk port is not set up (dp_dpdk_setup first)");
    cfg.io = "carrier-pigeon";
    T_ASSERT(dp_worker_new(&cfg, why, sizeof(why)) == NULL);
    T_ASSERT(strstr(why, "carrier-pigeon") != NULL);
    cfg.io = NULL;
    cfg.ca_file = "/nonexistent/ca.pem";
    T_ASSERT(dp_worker_new(&cfg, why, sizeof(why)) == NULL);
    T_ASSERT(strstr(why, "/nonexistent/ca.pem") != NULL);
}

/* A clock the test turns by hand. */
static uint64_t fake_t[2] = { 500000, 1700000000000ull };   /* mono, wall */
static uint64_t fake_mono(void *ud) { return fake_t[0]; }
static uint64_t fake_wall(void *ud) { return fake_t[1]; }
static int n_ticks;
static uint64_t tick_at;
static void count_tick(void *ud, uint64_t now) { n_ticks++; tick_at = now; }

/* The loop's time comes from the injected clock: the relay hands both
 * readings to the adapters, and ticks follow the monotonic one only. */
T_TEST(worker_clock)
{
    static const struct im_clock fake = { .mono_ms = fake_mono, .wall_ms = fake_wall };
    struct dp_worker_cfg cfg = { .io = "kernel", .clock = &fake };
    char why[128] = "";
    struct dp_worker *w = dp_worker_new(&cfg, why, sizeof(why));

    T_ASSERT(w != NULL);
    dp_worker_set_hooks(w, NULL, count_tick, NULL);
    n_ticks = 0;
    dp_worker_run_once(w, 0);
    T_EQ_UINT(dp_worker_now(w), 500000);
    T_EQ_UINT(dp_worker_time(w).mono_ms, 500000);
    T_EQ_UINT(dp_worker_time(w).wall_ms, 1700000000000ull);
    T_EQ_INT(n_ticks, 0);
    fake_t[0] += DP_TICK_MS - 1;
    fake_t[1] += 3600000;                   /* the wall clock jumps an hour: no tick for that */
    dp_worker_run_once(w, 0);
    T_EQ_INT(n_ticks, 0);
    T_EQ_UINT(dp_worker_time(w).wall_ms, 1700003600000ull);
    T_EQ_UINT(dp_worker_time(w).mono_ms, 500000 + DP_TICK_MS - 1);   /* read when asked */
    fake_t[0] += 1;
    dp_worker_run_once(w, 0);
    T_EQ_INT(n_ticks, 1);
    T_EQ_UINT(tick_at, 500000 + DP_TICK_MS);
    dp_worker_free(w);
}

T_TEST(echo_1mib_in_pieces)
{
    struct dp_worker *w = mkworker(NULL, NULL, NULL);
    T_ASSERT(w != NULL);
    uint16_t port = 0;
    T_ASSERT(listen_any(w, false, &port) != NULL);
    T_ASSERT(port != 0);
    accept_tmpl.echo = true;
    struct side *cl = new_side();
    cl->tx_total = 1u << 20;
    cl->rx_check = true;
    int err = 0;
    cl->c = dp_conn_connect(w, "127.0.0.1", port, NULL, &side_cb, cl, &err);
    T_ASSERT(cl->c != NULL);
    RUN_UNTIL(w, cl->rxlen == cl->tx_total, 10000);
    T_EQ_INT(cl->opens, 1);
    T_EQ_INT(cl->open_status, 0);
    T_EQ_UINT(cl->rx_bad, 0);
    T_ASSERT(accepted != NULL);
    T_EQ_UINT(accepted->rxlen, 1u << 20);
    T_ASSERT(strncmp(dp_conn_peer(accepted->c), "127.0.0.1:", 10) == 0);
    T_ASSERT(strcmp(dp_conn_peer(cl->c), dp_conn_local(accepted->c)) == 0);
    T_ASSERT(!dp_conn_is_tls(cl->c));
    dp_conn_close(cl->c);
    RUN_UNTIL(w, cl->closes == 1 && accepted->closes == 1, 3000);
    T_EQ_INT(cl->close_reason, 0);
    T_EQ_INT(accepted->close_reason, 0);
    struct dp_stats st;
    dp_worker_stats(w, &st);
    T_EQ_UINT(st.conn_opened, 2);
    T_EQ_UINT(st.conn_closed, 2);
    T_EQ_UINT(st.bytes_in, 2u << 20);
    T_EQ_UINT(st.bytes_out, 2u << 20);
    endworker(w);
}

T_TEST(back_pressure)
{
    struct dp_worker *w = mkworker(NULL, NULL, NULL);
    T_ASSERT(w != NULL);
    uint16_t port = 0;
    T_ASSERT(listen_any(w, false, &port) != NULL);
    struct side *cl = new_side();
    cl->rx_check = true;
    int err = 0;
    cl->c = dp_conn_connect(w, "127.0.0.1", port, NULL, &side_cb, cl, &err);
    T_ASSERT(cl->c != NULL);
    RUN_UNTIL(w, cl->opens == 1 && accepted != NULL, 3000);
    dp_conn_pause(cl->c, true);
    /* Up to HIWAT a write says 0, past it 1. */
    static uint8_t buf[DP_CONN_HIWAT + 1];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = pat(i);
    T_EQ_INT(dp_conn_write(accepted->c, buf, DP_CONN_HIWAT), 0);
    T_EQ_INT(dp_conn_write(accepted->c, buf + DP_CONN_HIWAT, 1), 1);
    T_EQ_UINT(dp_conn_backlog(accepted->c), DP_CONN_HIWAT + 1);
    /* Then a producer that obeys on_drain, far past what loopback buffers hold. */
    accepted->tx_done = DP_CONN_HIWAT + 1;
    accepted->tx_total = 64u << 20;
    /* With the reader paused the kernel buffers fill and on_drain stops coming. */
    size_t stalled_at = 0;
    for (int i = 0; i < 40; i++) {
        size_t before = accepted->tx_done;
        run_for(w, 50);
        if (accepted->tx_done == before) {
            stalled_at = before;
            break;
        }
    }
    T_ASSERT(stalled_at > 0);
    T_ASSERT(stalled_at < accepted->tx_total);
    T_ASSERT(dp_conn_backlog(accepted->c) > DP_CONN_LOWAT);
    run_for(w, 100);
    T_EQ_UINT(accepted->tx_done, stalled_at);
    size_t got = cl->rxlen;
    /* Beyond DP_CONN_MAXBUF a write fails whole. */
    static uint8_t big[DP_CONN_MAXBUF];
    size_t before = dp_conn_backlog(accepted->c);
    T_EQ_INT(dp_conn_write(accepted->c, big, sizeof(big)), -ENOBUFS);
    T_EQ_UINT(dp_conn_backlog(accepted->c), before);
    /* A paused reader reads nothing. */
    T_EQ_UINT(cl->rxlen, got);
    /* Resume: everything arrives in order, the producer was drained many times. */
    dp_conn_pause(cl->c, false);
    RUN_UNTIL(w, cl->rxlen == accepted->tx_total, 30000);
    T_EQ_UINT(cl->rx_bad, 0);
    T_ASSERT(accepted->drains > 10);
    endworker(w);
}

T_TEST(close_after_flush)
{
    struct dp_worker *w = mkworker(NULL, NULL, NULL);
    T_ASSERT(w != NULL);
    uint16_t port = 0;
    T_ASSERT(listen_any(w, false, &port) != NULL);
    /* The server writes 3 MiB (past HIWAT, no waiting for on_drain) and closes at once. */
    accept_tmpl.tx_total = 3u << 20;
    accept_tmpl.close_when_sent = true;
    struct side *cl = new_side();
    cl->rx_check = true;
    int err = 0;
    cl->c = dp_conn_connect(w, "127.0.0.1", port, NULL, &side_cb, cl, &err);
    T_ASSERT(cl->c != NULL);
    RUN_UNTIL(w, accepted != NULL, 3000);
    /* pump() stopped at HIWAT: push the rest in one go, then close. */
    static uint8_t rest[3u << 20];
    size_t left = accepted->tx_total - accepted->tx_done;
    for (size_t i = 0; i < left; i++)
        rest[i] = pat(accepted->tx_done + i);
    T_EQ_INT(dp_conn_write(accepted->c, rest, left), 1);
    accepted->tx_done = accepted->tx_total;
    struct dp_conn *sc = accepted->c;
    dp_conn_close(sc);
    T_EQ_INT(dp_conn_write(sc, "x", 1), -ENOTCONN);
    T_EQ_INT(accepted->closes, 0);      /* never synchronous */
    RUN_UNTIL(w, cl->closes == 1 && accepted->closes == 1, 10000);
    T_EQ_UINT(cl->rxlen, 3u << 20);
    T_EQ_UINT(cl->rx_bad, 0);
    T_EQ_INT(cl->close_reason, 0);
    T_EQ_INT(accepted->close_reason, 0);
    endworker(w);
}

T_TEST(connect_failures)
{
    struct dp_worker *w = mkworker(NULL, NULL, NULL);
    T_ASSERT(w != NULL);
    /* A port nobody listens on: bind one, learn it, close it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    T_ASSERT(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    T_ASSERT(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    struct side *s1 = new_side(), *s2 = new_side();
    int err = 0;
    s1->c = dp_conn_connect(w, "127.0.0.1", ntohs(a.sin_port), NULL, &side_cb, s1, &err);
    T_ASSERT(s1->c != NULL);
    s2->c = dp_conn_connect(w, "xmpp.example.test", 5222, NULL, &side_cb, s2, &err);
    T_ASSERT(s2->c != NULL);
    T_EQ_INT(s1->opens + s1->closes + s2->opens + s2->closes, 0);   /* nothing synchronous */
    RUN_UNTIL(w, s1->closes == 1 && s2->closes == 1, 3000);
    T_EQ_INT(s1->opens, 1);
    T_EQ_INT(s1->open_status, -ECONNREFUSED);
    T_ASSERT(s1->opened_before_close);
    T_ASSERT(s1->close_reason < 0);
    T_EQ_INT(s2->opens, 1);
    T_EQ_INT(s2->open_status, -EINVAL);
    T_ASSERT(strstr(s2->detail, "not an IP address") != NULL);
    T_ASSERT(s2->opened_before_close);
    struct dp_stats st;
    dp_worker_stats(w, &st);
    T_EQ_UINT(st.connect_failed, 2);
    T_EQ_UINT(st.conn_closed, 2);
    endworker(w);
}

/* Runs in its own thread: hooks, stop from another thread, counters read concurrently. */
static atomic_int polls, ticks;
static void hook_poll(void *ud) { (void)ud; atomic_fetch_add(&polls, 1); }
static void hook_tick(void *ud, uint64_t now) { (void)ud; (void)now; atomic_fetch_add(&ticks, 1); }
static void *run_thread(void *p)
{
    dp_worker_run(p);
    return NULL;
}

T_TEST(worker_thread_stop_and_hooks)
{
    struct dp_worker *w = mkworker(NULL, NULL, NULL);
    T_ASSERT(w != NULL);
    atomic_store(&polls, 0);
    atomic_store(&ticks, 0);
    dp_worker_set_hooks(w, hook_poll, hook_tick, NULL);
    pthread_t th;
    T_EQ_INT(pthread_create(&th, NULL, run_thread, w), 0);
    usleep(350 * 1000);
    int p0 = atomic_load(&polls);
    for (int i = 0; i < 20; i++) {
        dp_worker_wake(w);
        usleep(2000);
    }
    int p1 = atomic_load(&polls);
    struct dp_stats st;
    dp_worker_stats(w, &st);
    uint64_t t0 = im_mono_ms();
    dp_worker_stop(w);
    pthread_join(th, NULL);
    T_ASSERT(im_mono_ms() - t0 < 1000);
    T_ASSERT(atomic_load(&ticks) >= 2);
    T_ASSERT(p1 - p0 >= 10);        /* wakes turn the loop well before the 100 ms tick */
    endworker(w);
}

/* ---- TLS -------------------------------------------------------------------- */

static char tmpdir[64];
static char ca1[128], ca2[128], srv1_crt[128], srv1_key[128], srv2_crt[128], srv2_key[128];
static int certs_ok = -1;

static int make_certs(void)
{
    if (certs_ok >= 0)
        return certs_ok;
    certs_ok = 0;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/imfuse-test-conn-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 0;
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
        "set -e; cd %s; "
        "printf 'subjectAltName=DNS:a.test\\nbasicConstraints=CA:FALSE\\n' > ext.cnf; "
        "for n in 1 2; do "
        "  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
        "    -keyout ca$n.key -out ca$n.pem -subj /CN=imfuse-test-ca-$n 2>/dev/null; "
        "  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        "    -keyout srv$n.key -out srv$n.csr -subj /CN=a.test 2>/dev/null; "
        "  openssl x509 -req -in srv$n.csr -CA ca$n.pem -CAkey ca$n.key -CAcreateserial"
        "    -days 2 -extfile ext.cnf -out srv$n.pem 2>/dev/null; "
        "done", tmpdir);
    if (system(cmd) != 0)
        return 0;
    snprintf(ca1, sizeof(ca1), "%s/ca1.pem", tmpdir);
    snprintf(ca2, sizeof(ca2), "%s/ca2.pem", tmpdir);
    snprintf(srv1_crt, sizeof(srv1_crt), "%s/srv1.pem", tmpdir);
    snprintf(srv1_key, sizeof(srv1_key), "%s/srv1.key", tmpdir);
    snprintf(srv2_crt, sizeof(srv2_crt), "%s/srv2.pem", tmpdir);
    snprintf(srv2_key, sizeof(srv2_key), "%s/srv2.key", tmpdir);
    certs_ok = 1;
    return 1;
}

static void remove_certs(void)
{
    if (tmpdir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    }
}

T_TEST(tls_echo)
{
    T_ASSERT(make_certs());
    struct dp_worker *w = mkworker(ca1, srv1_crt, srv1_key);
    T_ASSERT(w != NULL);
    uint16_t port = 0;
    T_ASSERT(listen_any(w, true, &port) != NULL);
    accept_tmpl.echo = true;
    struct side *cl = new_side();
    cl->tx_total = 1u << 20;
    cl->rx_check = true;
    int err = 0;
    cl->c = dp_conn_connect(w, "127.0.0.1", port, "a.test", &side_cb, cl, &err);
    T_ASSERT(cl->c != NULL);
    RUN_UNTIL(w, cl->rxlen == cl->tx_total || cl->closes, 20000);
    T_EQ_STR(cl->detail, "");
    T_EQ_INT(cl->open_status, 0);
    T_EQ_UINT(cl->rx_bad, 0);
    T_ASSERT(dp_conn_is_tls(cl->c) && dp_conn_is_tls(accepted->c));
    T_EQ_UINT(accepted->rxlen, 1u << 20);
    dp_conn_close(cl->c);
    RUN_UNTIL(w, cl->closes == 1 && accepted->closes == 1, 3000);
    T_EQ_INT(cl->close_reason, 0);
    T_EQ_INT(accepted->close_reason, 0);
    struct dp_stats st;
    dp_worker_stats(w, &st);
    T_EQ_UINT(st.tls_ok, 2);
    T_EQ_UINT(st.tls_failed, 0);
    T_ASSERT(st.bytes_out > 2u << 20);      /* records cost bytes */
    endworker(w);
}

T_TEST(tls_name_mismatch)
{
    T_ASSERT(make_certs());
    struct dp_worker *w = mkworker(ca1, srv1_crt, srv1_key);
    T_ASSERT(w != NULL);
    uint16_t port = 0;
    T_ASSERT(listen_any(w, true, &port) != NULL);
    struct side *cl = new_side();
    cl->tx_total = 100;
    int err = 0;
    cl->c = dp_conn_connect(w, "127.0.0.1", port, "b.test", &side_cb, cl, &err);
    T_ASSERT(cl->c != NULL);
    RUN_UNTIL(w, cl->closes == 1 && accepted && accepted->closes == 1, 5000);
    T_EQ_INT(cl->opens, 1);
    T_EQ_INT(cl->open_status, -IM_ETLS);
    fprintf(stderr, "    detail: %s\n", cl->detail);
    T_ASSERT(strstr(cl->detail, "name mismatch") != NULL);
    T_ASSERT(strstr(cl->detail, "b.test") != NULL);
    T_ASSERT(strstr(cl->detail, "not trusted") == NULL);
    T_ASSERT(accepted->close_reason < 0);
    T_EQ_UINT(accepted->rxlen, 0);
    struct dp_stats st;
    dp_worker_stats(w, &st);
    T_EQ_UINT(st.tls_ok, 0);
    T_EQ_UINT(st.tls_failed, 2);
    endworker(w);
}

T_TEST(tls_untrusted_ca)
{
    T_ASSERT(make_certs());
    /* Trusts CA 1, serves a certificate from CA 2 (right name, wrong issuer). */
    struct dp_worker *w = mkworker(ca1, srv2_crt, srv2_key);
    T_ASSERT(w != NULL);
    uint16_t port = 0;
    T_ASSERT(listen_any(w, true, &port) != NULL);
    struct side *cl = new_side();
    int err = 0;
    cl->c = dp_conn_connect(w, "127.0.0.1", port, "a.test", &side_cb, cl, &err);
    T_ASSERT(cl->c != NULL);
    RUN_UNTIL(w, cl->closes == 1, 5000);
    T_EQ_INT(cl->open_status, -IM_ETLS);
    fprintf(stderr, "    detail: %s\n", cl->detail);
    T_ASSERT(strstr(cl->detail, "certificate verification failed") != NULL);
    T_ASSERT(strstr(cl->detail, "not trusted") != NULL);
    T_ASSERT(strstr(cl->detail, "name mismatch") == NULL);
    endworker(w);
}

T_TEST(starttls)
{
    T_ASSERT(make_certs());
    struct dp_worker *w = mkworker(ca1, srv1_crt, srv1_key);
    T_ASSERT(w != NULL);
    uint16_t port = 0;
    T_ASSERT(listen_any(w, false, &port) != NULL);     /* plain listener */
    accept_tmpl.starttls_role = 2;
    accept_tmpl.echo = false;
    struct side *cl = new_side();
    cl->starttls_role = 1;
    int err = 0;
    cl->c = dp_conn_connect(w, "127.0.0.1", port, NULL, &side_cb, cl, &err);
    T_ASSERT(cl->c != NULL);
    RUN_UNTIL(w, cl->opens == 1, 3000);
    T_EQ_INT(dp_conn_write(cl->c, "HELLO\n", 6), 0);
    RUN_UNTIL(w, accepted && accepted->starttls_started, 3000);
    /* From here the server echoes; the client streams 256 KiB once on_tls(0) came. */
    accepted->echo = true;
    cl->tx_total = 256u << 10;
    RUN_UNTIL(w, cl->tls_calls == 1 && accepted->tls_calls == 1, 5000);
    T_EQ_INT(cl->tls_status, 0);
    T_EQ_INT(accepted->tls_status, 0);
    T_ASSERT(dp_conn_is_tls(cl->c) && dp_conn_is_tls(accepted->c));
    RUN_UNTIL(w, cl->rxlen == cl->tx_total, 10000);
    T_EQ_UINT(cl->rx_bad, 0);
    /* A second STARTTLS is refused. */
    T_EQ_INT(dp_conn_start_tls_client(cl->c, "a.test"), -EALREADY);
    dp_conn_close(cl->c);
    RUN_UNTIL(w, cl->closes == 1 && accepted->closes == 1, 3000);
    T_EQ_INT(cl->close_reason, 0);
    endworker(w);
}

T_TEST(starttls_wrong_name)
{
    T_ASSERT(make_certs());
    struct dp_worker *w = mkworker(ca1, srv1_crt, srv1_key);
    T_ASSERT(w != NULL);
    uint16_t port = 0;
    T_ASSERT(listen_any(w, false, &port) != NULL);
    struct side *cl = new_side();
    int err = 0;
    cl->c = dp_conn_connect(w, "127.0.0.1", port, NULL, &side_cb, cl, &err);
    RUN_UNTIL(w, cl->opens == 1 && accepted, 3000);
    T_EQ_INT(dp_conn_start_tls_server(accepted->c), 0);
    T_EQ_INT(dp_conn_start_tls_client(cl->c, "c.test"), 0);
    RUN_UNTIL(w, cl->closes == 1, 5000);
    T_EQ_INT(cl->tls_calls, 1);
    T_EQ_INT(cl->tls_status, -IM_ETLS);
    T_ASSERT(strstr(cl->detail, "name mismatch (expected c.test)") != NULL);
    endworker(w);
}

T_TEST(cleanup)
{
    remove_certs();
}

T_MAIN(T_RUN(worker_backends), T_RUN(worker_clock), T_RUN(echo_1mib_in_pieces), T_RUN(back_pressure),
       T_RUN(close_after_flush), T_RUN(connect_failures), T_RUN(worker_thread_stop_and_hooks),
       T_RUN(tls_echo), T_RUN(tls_name_mismatch), T_RUN(tls_untrusted_ca), T_RUN(starttls),
       T_RUN(starttls_wrong_name), T_RUN(cleanup))
