/*
 * cp_auth.c - the Argon2id worker pool (bounded, fair across sources) and
 * the login rate limiters.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "im_common.h"
#include "cp_crypto.h"
#include "cp_auth.h"
#include "cp_lru.h"

#define SRC_BUCKETS 1024

/* One source's jobs. */
struct auth_src {
    struct auth_src *hnext;             /* in a->srcs (controlplane thread) */
    struct auth_src *rnext;             /* in the ring of sources with waiting jobs (under mu) */
    struct cp_auth_job *head, *tail;    /* waiting, in submission order (under mu) */
    unsigned pending;                   /* submitted, not dispatched (controlplane thread) */
    bool in_ring;                       /* under mu */
    char key[CP_AUTH_SRC_MAX];
};

struct cp_auth {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct auth_src *ring, *ring_tail;  /* sources with waiting jobs, served in turn */
    struct cp_auth_job *done, *done_tail;
    pthread_t *threads;
    unsigned n_threads;
    bool stop;
    int fd;
    /* controlplane thread only */
    struct cp_auth_caps caps;
    unsigned pending;
    uint64_t submitted;
    struct auth_src *srcs[SRC_BUCKETS];
};

/* A hash of a random password, verified against when the user is unknown,
 * so that an unknown name costs the same time as a wrong password. */
static char dummy_hash[CP_HASH_MAX + 1];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

static void
make_dummy(void)
{
    char pw[33];
    uint8_t rnd[16];
    cp_random(rnd, sizeof(rnd));
    for (int i = 0; i < 16; i++)
        snprintf(pw + 2 * i, 3, "%02x", rnd[i]);
    cp_password_hash(pw, 32, dummy_hash);
    im_wipe(pw, sizeof(pw));
}

static void
job_wipe(struct cp_auth_job *j)
{
    if (j->password) {
        im_wipe(j->password, j->pwlen);
        free(j->password);
        j->password = NULL;
    }
}

static void
run_job(struct cp_auth_job *j)
{
    if (j->kind == CP_AUTH_KDF) {
        struct im_kdf_params p = { .hash = j->kdf.hash, .password = j->password, .password_len = j->pwlen,
                                   .salt = j->kdf.salt, .salt_len = j->kdf.salt_len,
                                   .iterations = j->kdf.iterations };
        j->kdf.key_len = im_kdf_keylen(j->kdf.hash);
        j->result = im_kdf_pbkdf2(&p, j->kdf.key, sizeof(j->kdf.key));
    } else if (j->kind == CP_AUTH_HASH) {
        j->result = cp_password_hash(j->password, j->pwlen, j->newhash);
    } else if (!j->hash[0]) {
        pthread_once(&dummy_once, make_dummy);
        (void)cp_password_verify(dummy_hash, j->password, j->pwlen);
        j->result = -IM_EAUTH;
    } else {
        j->result = cp_password_verify(j->hash, j->password, j->pwlen);
    }
    job_wipe(j);
}

/* The next job, one source after the other (under mu); NULL when none waits. */
static struct cp_auth_job *
take_job(struct cp_auth *a)
{
    struct auth_src *s = a->ring;
    if (!s)
        return NULL;
    struct cp_auth_job *j = s->head;
    s->head = j->next;
    if (!s->head)
        s->tail = NULL;
    a->ring = s->rnext;
    if (!a->ring)
        a->ring_tail = NULL;
    s->rnext = NULL;
    if (s->head) {                      /* more of this source: to the back of the ring */
        if (a->ring_tail)
            a->ring_tail->rnext = s;
        else
            a->ring = s;
        a->ring_tail = s;
    } else {
        s->in_ring = false;
    }
    j->next = NULL;
    return j;
}

static void *
worker(void *arg)
{
    struct cp_auth *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->ring && !a->stop)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->stop)
            break;
        struct cp_auth_job *j = take_job(a);
        pthread_mutex_unlock(&a->mu);

        run_job(j);

        pthread_mutex_lock(&a->mu);
        if (a->done_tail)
            a->done_tail->next = j;
        else
            a->done = j;
        a->done_tail = j;
        uint64_t one = 1;
        if (write(a->fd, &one, sizeof(one)) < 0) {
            /* saturated counter: the reader is awake anyway */
        }
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

struct cp_auth *
cp_auth_new(unsigned threads, const struct cp_auth_caps *caps)
{
    struct cp_auth *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    if (caps)
        a->caps = *caps;
    a->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    a->threads = calloc(threads ? threads : 1, sizeof(pthread_t));
    if (a->fd < 0 || !a->threads) {
        cp_auth_free(a);
        return NULL;
    }
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&a->threads[i], NULL, worker, a)) {
            cp_auth_free(a);
            return NULL;
        }
        a->n_threads++;
    }
    return a;
}

static void
free_jobs(struct cp_auth_job *j)
{
    while (j) {
        struct cp_auth_job *n = j->next;
        job_wipe(j);
        im_wipe(j->newhash, sizeof(j->newhash));
        im_wipe(j->kdf.key, sizeof(j->kdf.key));
        free(j);
        j = n;
    }
}

void
cp_auth_free(struct cp_auth *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    for (unsigned i = 0; i < a->n_threads; i++)
        pthread_join(a->threads[i], NULL);
    for (unsigned i = 0; i < SRC_BUCKETS; i++)
        while (a->srcs[i]) {
            struct auth_src *s = a->srcs[i];
            a->srcs[i] = s->hnext;
            free_jobs(s->head);
            free(s);
        }
    free_jobs(a->done);
    free(a->threads);
    if (a->fd >= 0)
        close(a->fd);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
}

static unsigned
str_hash(const char *s)
{
    unsigned h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

static struct auth_src *
src_find(const struct cp_auth *a, const char *key)
{
    for (struct auth_src *s = a->srcs[str_hash(key) % SRC_BUCKETS]; s; s = s->hnext)
        if (!strcmp(s->key, key))
            return s;
    return NULL;
}

int
cp_auth_submit(struct cp_auth *a, struct cp_auth_job *job, const char **which)
{
    struct auth_src *s = src_find(a, job->source);
    if (!job->uncapped && a->caps.per_source && s && s->pending >= a->caps.per_source) {
        if (which)
            *which = "per_source";
        return -IM_ELIMIT;
    }
    if (!job->uncapped && a->caps.total && a->pending >= a->caps.total) {
        if (which)
            *which = "total";
        return -IM_ELIMIT;
    }
    if (!s) {
        if (!(s = calloc(1, sizeof(*s))))
            return -ENOMEM;
        im_strlcpy(s->key, job->source, sizeof(s->key));
        unsigned h = str_hash(s->key) % SRC_BUCKETS;
        s->hnext = a->srcs[h];
        a->srcs[h] = s;
    }
    s->pending++;
    a->pending++;
    a->submitted++;
    job->src = s;
    job->next = NULL;
    pthread_mutex_lock(&a->mu);
    if (s->tail)
        s->tail->next = job;
    else
        s->head = job;
    s->tail = job;
    if (!s->in_ring) {
        s->in_ring = true;
        s->rnext = NULL;
        if (a->ring_tail)
            a->ring_tail->rnext = s;
        else
            a->ring = s;
        a->ring_tail = s;
    }
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return 0;
}

int
cp_auth_fd(const struct cp_auth *a)
{
    return a->fd;
}

unsigned
cp_auth_pending(const struct cp_auth *a)
{
    return a->pending;
}

uint64_t
cp_auth_submitted(const struct cp_auth *a)
{
    return a->submitted;
}

unsigned
cp_auth_pending_of(const struct cp_auth *a, const char *source)
{
    const struct auth_src *s = src_find(a, source);
    return s ? s->pending : 0;
}

/* A job of s was dispatched: forget s once nothing of it is left. */
static void
src_release(struct cp_auth *a, struct auth_src *s)
{
    if (--s->pending)
        return;
    /* Every job of s was dispatched: none waits, none runs. */
    pthread_mutex_lock(&a->mu);
    BUG_ON(s->in_ring || s->head);
    pthread_mutex_unlock(&a->mu);
    struct auth_src **pp = &a->srcs[str_hash(s->key) % SRC_BUCKETS];
    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    free(s);
}

void
cp_auth_dispatch(struct cp_auth *a)
{
    uint64_t v;
    if (read(a->fd, &v, sizeof(v)) < 0) {
        /* EAGAIN: nothing signalled */
    }
    pthread_mutex_lock(&a->mu);
    struct cp_auth_job *j = a->done;
    a->done = a->done_tail = NULL;
    pthread_mutex_unlock(&a->mu);
    while (j) {
        struct cp_auth_job *n = j->next;
        a->pending--;
        src_release(a, j->src);
        j->src = NULL;
        if (j->done)
            j->done(j->ctx, j);
        job_wipe(j);
        im_wipe(j->newhash, sizeof(j->newhash));
        im_wipe(j->kdf.key, sizeof(j->kdf.key));
        free(j);
        j = n;
    }
}

void
cp_auth_source(const char *peer, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN + 1];
    const char *p = peer, *end;
    if (*p == '[') {
        p++;
        end = strchr(p, ']');
    } else {
        end = strrchr(p, ':');
        if (end && memchr(p, ':', (size_t)(end - p)))
            end = NULL;             /* a bare IPv6 address without a port */
    }
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len >= sizeof(ip)) {
        snprintf(out, n, "%.*s", (int)(n ? n - 1 : 0), peer);
        return;
    }
    memcpy(ip, p, len);
    ip[len] = '\0';
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, ip, &a4) == 1) {
        inet_ntop(AF_INET, &a4, ip, sizeof(ip));
        snprintf(out, n, "%s", ip);
    } else if (inet_pton(AF_INET6, ip, &a6) == 1) {
        if (IN6_IS_ADDR_V4MAPPED(&a6)) {
            memcpy(&a4, a6.s6_addr + 12, 4);
            inet_ntop(AF_INET, &a4, ip, sizeof(ip));
            snprintf(out, n, "%s", ip);
        } else {
            const uint8_t *b = a6.s6_addr;
            snprintf(out, n, "v6:%02x%02x:%02x%02x:%02x%02x:%02x%02x::/64",
                     b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]);
        }
    } else {
        snprintf(out, n, "%s", ip);
    }
}

/* ------------------------------------------------------------------------ */
/* rate limits                                                               */

#define RL_BUCKETS      16384
#define RL_MAX_LOCK     (15 * 60 * 1000)
#define RL_WINDOW       (10 * 60 * 1000)    /* failures and lockouts are remembered this long */
#define RL_SWEEP        16                  /* entries looked at per sweep */

struct rl_ent {
    struct rl_ent *hnext;
    struct cp_lru_link lru;                 /* recency list */
    unsigned failures;                      /* lockout kind */
    unsigned inflight;
    unsigned lockouts;
    uint64_t last_fail, locked_until;
    uint64_t tat;                           /* rate kind: when the bucket is full again */
    char key[];
};

struct cp_ratelim {
    struct rl_ent *b[RL_BUCKETS];
    struct cp_lru lru;
    bool rate;
    unsigned max_failures;                  /* lockout: failures; rate: the burst */
    uint64_t base_lock;                     /* lockout: first lock; rate: ms per token */
    unsigned max_entries;
    unsigned entries;
};

static struct cp_ratelim *
rl_new(bool rate, unsigned max, uint64_t ms, unsigned max_entries)
{
    struct cp_ratelim *rl = calloc(1, sizeof(*rl));
    if (rl) {
        rl->rate = rate;
        rl->max_failures = max ? max : 1;
        rl->base_lock = ms;
        rl->max_entries = max_entries ? max_entries : 1;
    }
    return rl;
}

struct cp_ratelim *
cp_ratelim_new(unsigned max_failures, uint64_t base_lock_ms, unsigned max_entries)
{
    return rl_new(false, max_failures, base_lock_ms, max_entries);
}

struct cp_ratelim *
cp_ratelim_new_rate(unsigned burst, uint64_t refill_ms, unsigned max_entries)
{
    return rl_new(true, burst, refill_ms, max_entries);
}

void
cp_ratelim_free(struct cp_ratelim *rl)
{
    if (!rl)
        return;
    while (rl->lru.newest) {
        struct rl_ent *e = CP_LRU_ENTRY(rl->lru.newest, struct rl_ent, lru);
        rl->lru.newest = e->lru.older;
        free(e);
    }
    free(rl);
}

static struct rl_ent **
rl_find(struct cp_ratelim *rl, const char *key)
{
    struct rl_ent **pp = &rl->b[str_hash(key) % RL_BUCKETS];
    while (*pp && strcmp((*pp)->key, key))
        pp = &(*pp)->hnext;
    return pp;
}

static void
rl_remove(struct cp_ratelim *rl, struct rl_ent *e)
{
    struct rl_ent **pp = rl_find(rl, e->key);
    BUG_ON(*pp != e);
    *pp = e->hnext;
    cp_lru_unlink(&rl->lru, &e->lru);
    free(e);
    rl->entries--;
}

static bool
rl_idle(const struct cp_ratelim *rl, const struct rl_ent *e, uint64_t now)
{
    if (e->inflight)
        return false;
    if (rl->rate)
        return e->tat <= now;
    uint64_t last = e->last_fail > e->locked_until ? e->last_fail : e->locked_until;
    return now >= last + RL_WINDOW;
}

void
cp_ratelim_expire(struct cp_ratelim *rl, uint64_t now)
{
    struct cp_lru_link *l = rl->lru.oldest;
    for (unsigned i = 0; l && i < RL_SWEEP; i++) {
        struct cp_lru_link *next = l->newer;
        struct rl_ent *e = CP_LRU_ENTRY(l, struct rl_ent, lru);
        if (rl_idle(rl, e, now))
            rl_remove(rl, e);
        l = next;
    }
}

/* The entry of key, made if needed and marked most recent; NULL on ENOMEM. */
static struct rl_ent *
rl_get(struct cp_ratelim *rl, const char *key, uint64_t now)
{
    struct rl_ent **pp = rl_find(rl, key), *e = *pp;
    if (e) {
        cp_lru_touch(&rl->lru, &e->lru);
        return e;
    }
    cp_ratelim_expire(rl, now);
    if (rl->entries >= rl->max_entries && rl->lru.oldest) {
        /* full: the least recently used goes (one in flight only if all are) */
        struct cp_lru_link *v = rl->lru.oldest;
        for (unsigned i = 0; v && CP_LRU_ENTRY(v, struct rl_ent, lru)->inflight && i < RL_SWEEP; i++)
            v = v->newer;
        rl_remove(rl, CP_LRU_ENTRY(v ? v : rl->lru.oldest, struct rl_ent, lru));
    }
    pp = rl_find(rl, key);              /* the chain may have changed */
    size_t n = strlen(key) + 1;
    if (!(e = calloc(1, sizeof(*e) + n)))
        return NULL;
    memcpy(e->key, key, n);
    *pp = e;
    cp_lru_push(&rl->lru, &e->lru);
    rl->entries++;
    return e;
}

bool
cp_ratelim_locked(struct cp_ratelim *rl, const char *key, uint64_t now_ms)
{
    struct rl_ent *e = *rl_find(rl, key);
    return e && e->locked_until > now_ms;
}

bool
cp_ratelim_allows(struct cp_ratelim *rl, const char *key, uint64_t now_ms)
{
    struct rl_ent *e = *rl_find(rl, key);
    if (!e)
        return true;
    if (e->locked_until > now_ms)
        return false;
    unsigned failures = now_ms - e->last_fail > RL_WINDOW ? 0 : e->failures;
    return failures + e->inflight < rl->max_failures;
}

void
cp_ratelim_begin(struct cp_ratelim *rl, const char *key, uint64_t now_ms)
{
    struct rl_ent *e = rl_get(rl, key, now_ms);
    if (e)
        e->inflight++;
}

static void
rl_failure(struct cp_ratelim *rl, struct rl_ent *e, uint64_t now_ms)
{
    if (now_ms - e->last_fail > RL_WINDOW)
        e->failures = 0;            /* failures older than the window are forgotten */
    e->last_fail = now_ms;
    if (++e->failures >= rl->max_failures) {
        uint64_t lock = rl->base_lock << (e->lockouts < 10 ? e->lockouts : 10);
        e->locked_until = now_ms + (lock > RL_MAX_LOCK ? RL_MAX_LOCK : lock);
        e->lockouts++;
        e->failures = 0;
    }
}

void
cp_ratelim_end(struct cp_ratelim *rl, const char *key, uint64_t now_ms, bool ok, bool reset)
{
    struct rl_ent **pp = rl_find(rl, key), *e = *pp;
    if (!e && ok)
        return;                     /* evicted meanwhile: nothing to count */
    if (!e && !(e = rl_get(rl, key, now_ms)))
        return;
    if (e->inflight)
        e->inflight--;
    if (!ok) {
        cp_lru_touch(&rl->lru, &e->lru);
        rl_failure(rl, e, now_ms);
    } else if (reset) {
        e->failures = 0;
        if (!e->inflight && e->locked_until <= now_ms)
            rl_remove(rl, e);
    }
}

void
cp_ratelim_fail(struct cp_ratelim *rl, const char *key, uint64_t now_ms)
{
    struct rl_ent *e = rl_get(rl, key, now_ms);
    if (e)
        rl_failure(rl, e, now_ms);
}

void
cp_ratelim_ok(struct cp_ratelim *rl, const char *key)
{
    struct rl_ent *e = *rl_find(rl, key);
    if (e)
        rl_remove(rl, e);
}

int
cp_ratelim_take(struct cp_ratelim *rl, const char *key, uint64_t now_ms)
{
    struct rl_ent *e = *rl_find(rl, key);
    uint64_t tau = rl->base_lock * (rl->max_failures - 1);     /* the burst's tolerance */
    uint64_t tat = e && e->tat > now_ms ? e->tat : now_ms;
    if (tat - now_ms > tau)
        return -IM_ELIMIT;
    if (!(e = rl_get(rl, key, now_ms)))
        return 0;                   /* out of memory: let it pass rather than refuse everyone */
    e->tat = tat + rl->base_lock;
    return 0;
}

unsigned
cp_ratelim_entries(const struct cp_ratelim *rl)
{
    return rl->entries;
}
