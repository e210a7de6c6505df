/*
 * dp_io_kernel.c - the kernel-socket I/O backend: epoll (level-triggered),
 * non-blocking sockets, TCP_NODELAY, accept4, eventfd for wake-ups.
 *
 * Reads go into the worker's single read buffer (one read per readiness
 * event, so one busy peer cannot starve the others); writes hand the
 * connection's buffer chain to sendmsg() as an iovec (MSG_NOSIGNAL: a dead
 * peer is -EPIPE, not SIGPIPE).  EPOLLOUT is asked for only while a backlog
 * exists.  No name resolution here: hosts are IP literals or "localhost".
 *
 * When accept fails for want of a file (EMFILE, ENFILE) or of kernel
 * memory, the listener leaves the epoll set for a while (100 ms, doubling to
 * 1.6 s while it keeps failing): level-triggered readiness would otherwise
 * report the waiting connection again at once and spin the loop.  The
 * connections wait in the kernel's backlog meanwhile.
 *
 * A graceful close sends FIN (shutdown) and keeps the socket, detached from
 * its connection, reading and discarding until the peer's FIN or
 * DP_LINGER_MS: closing with unread input would make the kernel send a
 * reset, which can destroy data the peer has not read yet.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dp_int.h"

#define KIO_EVENTS      128
#define KIO_ACCEPT_MAX  64      /* accepts per readiness event */
#define KIO_BACKOFF_MIN 100     /* ms: first accept pause after EMFILE/ENFILE */
#define KIO_BACKOFF_MAX 1600    /* ms: longest */

struct kio_linger {
    struct dp_io_slot io;
    uint64_t deadline_ms;
    struct kio_linger *next, *prev;
};

struct kio {
    int epfd;
    struct dp_io_slot wake;     /* eventfd */
    unsigned paused;            /* listeners whose accepting is paused (resume_ms) */
    struct kio_linger *lingers;
    struct epoll_event evs[KIO_EVENTS];
};

static uint64_t kio_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int kio_init(struct dp_worker *w, char *why, size_t whysz)
{
    struct kio *k = calloc(1, sizeof(*k));
    if (!k) {
        snprintf(why, whysz, "out of memory");
        return -ENOMEM;
    }
    k->epfd = epoll_create1(EPOLL_CLOEXEC);
    k->wake.kind = DP_IO_WAKE;
    k->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &k->wake };
    if (k->epfd < 0 || k->wake.fd < 0 || epoll_ctl(k->epfd, EPOLL_CTL_ADD, k->wake.fd, &ev) < 0) {
        int e = errno;
        snprintf(why, whysz, "epoll/eventfd: %s", strerror_r(e, (char[96]){0}, 96));
        if (k->epfd >= 0)
            close(k->epfd);
        if (k->wake.fd >= 0)
            close(k->wake.fd);
        free(k);
        return -e;
    }
    w->io = k;
    return 0;
}

static void linger_free(struct kio *k, struct kio_linger *g)
{
    if (g->prev)
        g->prev->next = g->next;
    else
        k->lingers = g->next;
    if (g->next)
        g->next->prev = g->prev;
    close(g->io.fd);    /* also leaves the epoll set */
    free(g);
}

static void kio_fini(struct dp_worker *w)
{
    struct kio *k = w->io;
    if (!k)
        return;
    while (k->lingers)
        linger_free(k, k->lingers);
    close(k->wake.fd);
    close(k->epfd);
    free(k);
    w->io = NULL;
}

static void kio_wake(struct dp_worker *w)
{
    struct kio *k = w->io;
    uint64_t one = 1;
    ssize_t n = write(k->wake.fd, &one, sizeof(one));
    (void)n;    /* EAGAIN: the counter is already non-zero, a wake-up is pending */
}

/* Set the epoll interest of slot to mask (0: out of the set). */
static void kio_set_mask(struct dp_worker *w, struct dp_io_slot *s, uint32_t mask)
{
    struct kio *k = w->io;
    if (s->fd < 0 || (s->registered && s->mask == mask))
        return;
    struct epoll_event ev = { .events = mask, .data.ptr = s };
    if (mask == 0) {
        if (s->registered)
            epoll_ctl(k->epfd, EPOLL_CTL_DEL, s->fd, NULL);
        s->registered = false;
    } else if (s->registered) {
        epoll_ctl(k->epfd, EPOLL_CTL_MOD, s->fd, &ev);
    } else {
        epoll_ctl(k->epfd, EPOLL_CTL_ADD, s->fd, &ev);
        s->registered = true;
    }
    s->mask = mask;
}

/* ---- addresses ---------------------------------------------------------------- */

/* Parse an IP literal ("127.0.0.1", "::1", "[::1]") or "localhost". */
static int kio_addr(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    char buf[64];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(buf)) {
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    if (!strcmp(host, "localhost"))
        host = "127.0.0.1";
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *len = sizeof(*a6);
        return 0;
    }
    return -EINVAL;
}

static void kio_addr_text(const struct sockaddr_storage *ss, char *out, size_t sz)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        snprintf(out, sz, "%s:%u", ip, ntohs(a->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        snprintf(out, sz, "[%s]:%u", ip, ntohs(a->sin6_port));
    } else {
        snprintf(out, sz, "?");
    }
}

static void kio_fill_names(struct dp_conn *c)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(c->io.fd, (struct sockaddr *)&ss, &len) == 0)
        kio_addr_text(&ss, c->peer, sizeof(c->peer));
    len = sizeof(ss);
    if (getsockname(c->io.fd, (struct sockaddr *)&ss, &len) == 0)
        kio_addr_text(&ss, c->local, sizeof(c->local));
}

static void kio_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- listeners ---------------------------------------------------------------- */

static int kio_listen(struct dp_listener *l, const char *host, uint16_t port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (kio_addr(host, port, &ss, &len) < 0)
        return -EINVAL;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 511) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    len = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &len);
    l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    l->io.fd = fd;
    kio_set_mask(l->w, &l->io, EPOLLIN);
    return 0;
}

static void kio_unlisten(struct dp_listener *l)
{
    if (l->io.fd < 0)
        return;
    if (l->resume_ms) {
        struct kio *k = l->w->io;
        k->paused--;
        l->resume_ms = 0;
    }
    close(l->io.fd);
    l->io.fd = -1;
    l->io.registered = false;
}

/* Out of files or kernel memory: stop polling the listener for a while. */
static void kio_accept_pause(struct dp_listener *l)
{
    struct kio *k = l->w->io;
    l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : KIO_BACKOFF_MIN;
    if (l->backoff_ms > KIO_BACKOFF_MAX)
        l->backoff_ms = KIO_BACKOFF_MAX;
    if (!l->resume_ms)
        k->paused++;
    l->resume_ms = kio_now() + l->backoff_ms;
    kio_set_mask(l->w, &l->io, 0);
    DP_STAT_ADD(l->w, accept_paused, 1);
}

/* Listen again on listeners whose pause is over; the poll timeout's bound. */
static int kio_accept_resume(struct dp_worker *w, int timeout_ms)
{
    struct kio *k = w->io;
    uint64_t now = kio_now();
    for (struct dp_listener *l = w->listeners; l && k->paused; l = l->next) {
        if (!l->resume_ms || l->dead)
            continue;
        if (now >= l->resume_ms) {
            l->resume_ms = 0;
            k->paused--;
            kio_set_mask(w, &l->io, EPOLLIN);
        } else if (timeout_ms < 0 || l->resume_ms - now < (uint64_t)timeout_ms) {
            timeout_ms = (int)(l->resume_ms - now);
        }
    }
    return timeout_ms;
}

static void kio_accept(struct dp_listener *l)
{
    for (int i = 0; i < KIO_ACCEPT_MAX && !l->dead; i++) {
        int fd = accept4(l->io.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                kio_accept_pause(l);
            return;     /* EAGAIN; or a peer gone before accept (ECONNABORTED): next event */
        }
        l->backoff_ms = 0;
        struct dp_conn *c = dp_conn_alloc(l->w);
        if (!c) {
            close(fd);
            return;
        }
        c->io.fd = fd;
        kio_nodelay(fd);
        kio_fill_names(c);
        dp_listener_io_accept(l, c);
    }
}

/* ---- connections -------------------------------------------------------------- */

static int kio_connect(struct dp_conn *c, const char *host, uint16_t port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (kio_addr(host, port, &ss, &len) < 0) {
        snprintf(c->detail, sizeof(c->detail), "not an IP address: %s", host);
        return -EINVAL;
    }
    kio_addr_text(&ss, c->peer, sizeof(c->peer));
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(c->detail, sizeof(c->detail), "socket: %s", strerror_r(e, (char[96]){0}, 96));
        return -e;
    }
    kio_nodelay(fd);
    if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        snprintf(c->detail, sizeof(c->detail), "connect to %s: %s", c->peer,
                 strerror_r(e, (char[96]){0}, 96));
        return -e;
    }
    c->io.fd = fd;
    /* Completion (or an immediate success) shows as writability. */
    kio_set_mask(c->w, &c->io, EPOLLOUT);
    return 0;
}

static ssize_t kio_write(struct dp_conn *c, const struct iovec *iov, int iovcnt)
{
    struct msghdr mh = { .msg_iov = (struct iovec *)(uintptr_t)iov, .msg_iovlen = (size_t)iovcnt };
    ssize_t n = sendmsg(c->io.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return -EAGAIN;
    return -errno;
}

static void kio_want(struct dp_conn *c, uint32_t bit, bool on)
{
    if (c->io.fd < 0 || c->state == DP_CS_CONNECTING)
        return;
    uint32_t mask = on ? (c->io.mask | bit) : (c->io.mask & ~bit);
    kio_set_mask(c->w, &c->io, mask);
}

static void kio_want_write(struct dp_conn *c, bool on)
{
    kio_want(c, EPOLLOUT, on);
}

static void kio_want_read(struct dp_conn *c, bool on)
{
    kio_want(c, EPOLLIN, on);
}

static int kio_keepalive(struct dp_conn *c, unsigned idle_s, unsigned intvl_s, unsigned cnt)
{
    int fd = c->io.fd, on = idle_s > 0;
    if (fd < 0)
        return -ENOTCONN;
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) < 0)
        return -errno;
    /* Unacknowledged output gives up after the same total as the probes. */
    unsigned total_ms = on ? (idle_s + intvl_s * cnt) * 1000u : 0;
    int idle = (int)idle_s, intvl = (int)intvl_s, n = (int)cnt;
    if (on && (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0 ||
               setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) < 0 ||
               setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &n, sizeof(n)) < 0))
        return -errno;
    if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &total_ms, sizeof(total_ms)) < 0)
        return -errno;
    return 0;
}

static void kio_close(struct dp_conn *c, bool graceful)
{
    struct dp_worker *w = c->w;
    struct kio *k = w->io;
    int fd = c->io.fd;
    if (fd < 0)
        return;
    kio_set_mask(w, &c->io, 0);
    c->io.fd = -1;
    struct kio_linger *g = graceful ? calloc(1, sizeof(*g)) : NULL;
    if (!g || shutdown(fd, SHUT_WR) < 0) {
        free(g);
        close(fd);
        return;
    }
    g->io.kind = DP_IO_LINGER;
    g->io.fd = fd;
    g->deadline_ms = kio_now() + DP_LINGER_MS;
    g->next = k->lingers;
    if (k->lingers)
        k->lingers->prev = g;
    k->lingers = g;
    kio_set_mask(w, &g->io, EPOLLIN | EPOLLRDHUP);
}

static void kio_conn_event(struct dp_conn *c, uint32_t ev)
{
    struct dp_worker *w = c->w;
    if (c->io.fd < 0)
        return;     /* closed earlier in this batch */
    if (c->state == DP_CS_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (!err && (ev & (EPOLLERR | EPOLLHUP)))
            err = ECONNREFUSED;
        kio_set_mask(w, &c->io, 0);
        if (err) {
            char d[160];
            snprintf(d, sizeof(d), "connect to %s: %s", c->peer, strerror_r(err, (char[96]){0}, 96));
            dp_conn_io_connected(c, -err, d);
            return;
        }
        kio_fill_names(c);
        dp_conn_io_connected(c, 0, NULL);
        return;
    }
    if (ev & EPOLLERR) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            dp_conn_io_eof(c, -err);
            return;
        }
    }
    if ((c->io.mask & EPOLLIN) && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        ssize_t n = recv(c->io.fd, w->rbuf, DP_RBUF_SIZE, MSG_DONTWAIT);
        if (n > 0)
            dp_conn_io_data(c, w->rbuf, (size_t)n);
        else if (n == 0)
            dp_conn_io_eof(c, 0);
        else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            dp_conn_io_eof(c, -errno);
    } else if ((ev & EPOLLHUP) && !(c->io.mask & EPOLLOUT)) {
        /* Hung up while we do not read (paused): stop polling it until resumed. */
        kio_set_mask(w, &c->io, 0);
        return;
    }
    if (c->io.fd >= 0 && c->state == DP_CS_OPEN && (ev & EPOLLOUT) && (c->io.mask & EPOLLOUT))
        dp_conn_io_writable(c);
}

static void kio_linger_event(struct kio *k, struct dp_worker *w, struct kio_linger *g)
{
    for (int i = 0; i < 4; i++) {
        ssize_t n = recv(g->io.fd, w->rbuf, DP_RBUF_SIZE, MSG_DONTWAIT);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        break;  /* FIN or error: done */
    }
    linger_free(k, g);
}

static int kio_poll(struct dp_worker *w, int timeout_ms)
{
    struct kio *k = w->io;
    if (k->lingers)
        timeout_ms = timeout_ms > 250 ? 250 : timeout_ms;
    if (k->paused)
        timeout_ms = kio_accept_resume(w, timeout_ms);
    int n = epoll_wait(k->epfd, k->evs, KIO_EVENTS, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        struct dp_io_slot *s = k->evs[i].data.ptr;
        uint32_t ev = k->evs[i].events;
        switch (s->kind) {
        case DP_IO_WAKE: {
            uint64_t v;
            ssize_t r = read(s->fd, &v, sizeof(v));
            (void)r;
            break;
        }
        case DP_IO_LISTENER: {
            struct dp_listener *l = dp_container_of(s, struct dp_listener, io);
            if (!l->dead)
                kio_accept(l);
            break;
        }
        case DP_IO_CONN:
            kio_conn_event(dp_container_of(s, struct dp_conn, io), ev);
            break;
        case DP_IO_LINGER:
            kio_linger_event(k, w, dp_container_of(s, struct kio_linger, io));
            break;
        }
    }
    if (k->lingers) {
        uint64_t now = kio_now();
        for (struct kio_linger *g = k->lingers, *nx; g; g = nx) {
            nx = g->next;
            if (now >= g->deadline_ms)
                linger_free(k, g);
        }
    }
    return n;
}

const struct dp_io_ops dp_io_kernel_ops = {
    .name = "kernel",
    .init = kio_init,
    .fini = kio_fini,
    .poll = kio_poll,
    .wake = kio_wake,
    .listen = kio_listen,
    .unlisten = kio_unlisten,
    .connect = kio_connect,
    .write = kio_write,
    .want_write = kio_want_write,
    .want_read = kio_want_read,
    .close = kio_close,
    .keepalive = kio_keepalive,
};
