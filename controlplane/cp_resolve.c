/*
 * cp_resolve.c - the resolver thread and its cache (cp_resolve.h).
 *
 * One name, one entry: the entry is the cache line and, while a lookup runs,
 * the list of requests waiting for it, so concurrent requests for a name
 * cost one getaddrinfo().  The thread only ever touches an entry's name and
 * answer fields while the entry is on the todo list (under the mutex); the
 * controlplane owns everything else.
 */
#include <netdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include "im_clock.h"
#include "im_common.h"
#include "cp_resolve.h"

#define CP_RESOLVE_BUCKETS  1024

struct waiter {
    struct waiter *next;
    cp_resolve_fn *fn;
    void *ctx;
};

struct entry {
    struct entry *hnext;            /* hash chain */
    struct entry *qnext;            /* todo or done list */
    char host[CP_RESOLVE_HOST_MAX + 1];
    /* the answer (written by the thread while the entry is in flight) */
    int err;
    char why[128];
    char addrs[CP_RESOLVE_MAX_ADDRS][INET6_ADDRSTRLEN];
    unsigned n;
    /* controlplane side */
    bool in_flight;
    bool answered;                  /* answer valid until expires */
    uint64_t expires;               /* mono ms */
    struct waiter *waiters;
};

struct cp_resolver {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool thread_ok, stop;
    int fd;
    struct entry *todo, *todo_tail;     /* to look up (thread) */
    struct entry *done, *done_tail;     /* looked up (controlplane) */
    struct entry *ready;                /* cache hits to answer at the next dispatch */
    struct entry *b[CP_RESOLVE_BUCKETS];
    unsigned n_entries, pending;
    uint64_t lookups, hits, failures;
};

static unsigned
host_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h % CP_RESOLVE_BUCKETS;
}

static void
wake(struct cp_resolver *r)
{
    uint64_t one = 1;
    if (write(r->fd, &one, sizeof(one)) < 0) {
        /* a saturated counter wakes the reader all the same */
    }
}

static void
lookup(struct entry *e)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(e->host, NULL, &hints, &res);
    e->n = 0;
    if (rc != 0) {
        e->err = rc == EAI_SYSTEM ? -errno : -IM_ENOTFOUND;
        snprintf(e->why, sizeof(e->why), "%s", rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return;
    }
    for (struct addrinfo *ai = res; ai && e->n < CP_RESOLVE_MAX_ADDRS; ai = ai->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        const void *a = ai->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                      : ai->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                      : NULL;
        if (!a || !inet_ntop(ai->ai_family, a, ip, sizeof(ip)))
            continue;
        bool dup = false;
        for (unsigned i = 0; i < e->n && !dup; i++)
            dup = !strcmp(e->addrs[i], ip);
        if (!dup)
            memcpy(e->addrs[e->n++], ip, sizeof(ip));
    }
    freeaddrinfo(res);
    if (e->n == 0) {
        e->err = -IM_ENOTFOUND;
        snprintf(e->why, sizeof(e->why), "no IPv4 or IPv6 address");
    } else {
        e->err = 0;
        e->why[0] = '\0';
    }
}

static void *
resolver_thread(void *arg)
{
    struct cp_resolver *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->todo && !r->stop)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->stop)
            break;
        struct entry *e = r->todo;
        r->todo = e->qnext;
        if (!r->todo)
            r->todo_tail = NULL;
        pthread_mutex_unlock(&r->mu);

        lookup(e);

        pthread_mutex_lock(&r->mu);
        e->qnext = NULL;
        if (r->done_tail)
            r->done_tail->qnext = e;
        else
            r->done = e;
        r->done_tail = e;
        wake(r);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

struct cp_resolver *
cp_resolver_new(void)
{
    struct cp_resolver *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->fd < 0 || pthread_create(&r->thread, NULL, resolver_thread, r)) {
        cp_resolver_free(r);
        return NULL;
    }
    r->thread_ok = true;
    return r;
}

static void
waiters_cancel(struct entry *e)
{
    while (e->waiters) {
        struct waiter *w = e->waiters;
        e->waiters = w->next;
        w->fn(w->ctx, -ECANCELED, "shutting down", NULL, 0);
        free(w);
    }
}

void
cp_resolver_free(struct cp_resolver *r)
{
    if (!r)
        return;
    if (r->thread_ok) {
        pthread_mutex_lock(&r->mu);
        r->stop = true;
        pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    for (unsigned i = 0; i < CP_RESOLVE_BUCKETS; i++)
        while (r->b[i]) {
            struct entry *e = r->b[i];
            r->b[i] = e->hnext;
            waiters_cancel(e);
            free(e);
        }
    if (r->fd >= 0)
        close(r->fd);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

int
cp_resolver_fd(const struct cp_resolver *r)
{
    return r->fd;
}

static void
entry_unlink(struct cp_resolver *r, struct entry *e)
{
    struct entry **pp = &r->b[host_hash(e->host)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    r->n_entries--;
}

/* Make room: drop answered entries that expired, else the oldest answered one. */
static void
cache_trim(struct cp_resolver *r, uint64_t now)
{
    struct entry *oldest = NULL;
    for (unsigned i = 0; i < CP_RESOLVE_BUCKETS; i++)
        for (struct entry *e = r->b[i], *next; e; e = next) {
            next = e->hnext;
            if (e->in_flight || e->waiters)
                continue;
            if (e->expires <= now) {
                entry_unlink(r, e);
                free(e);
            } else if (!oldest || e->expires < oldest->expires) {
                oldest = e;
            }
        }
    if (r->n_entries >= CP_RESOLVE_MAX_CACHE && oldest) {
        entry_unlink(r, oldest);
        free(oldest);
    }
}

int
cp_resolve(struct cp_resolver *r, const char *host, cp_resolve_fn *fn, void *ctx)
{
    size_t hl = strlen(host);
    uint64_t now = im_mono_ms();
    if (hl == 0 || hl > CP_RESOLVE_HOST_MAX)
        return -IM_EINVAL;

    unsigned h = host_hash(host);
    struct entry *e;
    for (e = r->b[h]; e && strcmp(e->host, host); e = e->hnext)
        ;
    if (e && !e->in_flight && !e->waiters && e->answered && e->expires <= now) {
        entry_unlink(r, e);
        free(e);
        e = NULL;
    }
    if (!e && r->pending >= CP_RESOLVE_MAX_PENDING)
        return -IM_ELIMIT;
    struct waiter *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->fn = fn;
    w->ctx = ctx;
    if (!e) {
        if (r->n_entries >= CP_RESOLVE_MAX_CACHE)
            cache_trim(r, now);
        e = calloc(1, sizeof(*e));
        if (!e) {
            free(w);
            return -ENOMEM;
        }
        memcpy(e->host, host, hl + 1);
        e->hnext = r->b[h];
        r->b[h] = e;
        r->n_entries++;
    }
    bool idle = !e->waiters;
    w->next = e->waiters;
    e->waiters = w;
    if (!idle || e->in_flight)
        return 0;                       /* answered with the others */
    if (e->answered) {
        r->hits++;
        e->qnext = r->ready;            /* a hit: answered at the next dispatch */
        r->ready = e;
        wake(r);
        return 0;
    }
    r->lookups++;
    r->pending++;
    e->in_flight = true;
    pthread_mutex_lock(&r->mu);
    e->qnext = NULL;
    if (r->todo_tail)
        r->todo_tail->qnext = e;
    else
        r->todo = e;
    r->todo_tail = e;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* Answer every waiter of e (in request order) from its answer. */
static void
answer(struct entry *e)
{
    const char *addrs[CP_RESOLVE_MAX_ADDRS];
    for (unsigned i = 0; i < e->n; i++)
        addrs[i] = e->addrs[i];
    /* waiters were pushed at the head: reverse to keep request order */
    struct waiter *list = NULL;
    while (e->waiters) {
        struct waiter *w = e->waiters;
        e->waiters = w->next;
        w->next = list;
        list = w;
    }
    while (list) {
        struct waiter *w = list;
        list = w->next;
        w->fn(w->ctx, e->err, e->why, addrs, e->err ? 0 : e->n);
        free(w);
    }
}

void
cp_resolver_dispatch(struct cp_resolver *r)
{
    uint64_t v;
    if (read(r->fd, &v, sizeof(v)) < 0) {
        /* nothing counted: fine, look anyway */
    }
    pthread_mutex_lock(&r->mu);
    struct entry *done = r->done;
    r->done = r->done_tail = NULL;
    pthread_mutex_unlock(&r->mu);

    uint64_t now = im_mono_ms();
    while (done) {
        struct entry *e = done;
        done = e->qnext;
        e->in_flight = false;
        e->answered = true;
        e->expires = now + (e->err ? CP_RESOLVE_NEG_TTL_MS : CP_RESOLVE_TTL_MS);
        r->pending--;
        if (e->err)
            r->failures++;
        answer(e);
    }
    while (r->ready) {
        struct entry *e = r->ready;
        r->ready = e->qnext;
        answer(e);
    }
}

void
cp_resolver_stats(const struct cp_resolver *r, struct cp_resolve_stats *st)
{
    st->lookups = r->lookups;
    st->cache_hits = r->hits;
    st->failures = r->failures;
    st->pending = r->pending;
}
