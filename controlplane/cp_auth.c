/*
 * cp_auth.c - the Argon2id worker pool and the login rate limiter.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "im_common.h"
#include "cp_crypto.h"
#include "cp_auth.h"

struct cp_auth {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct cp_auth_job *todo, *todo_tail;
    struct cp_auth_job *done, *done_tail;
    pthread_t *threads;
    unsigned n_threads;
    unsigned pending;               /* controlplane thread only */
    bool stop;
    int fd;
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
}

static void
run_job(struct cp_auth_job *j)
{
    if (j->kind == CP_AUTH_HASH) {
        j->result = cp_password_hash(j->password, j->pwlen, j->newhash);
    } else if (!j->hash[0]) {
        pthread_once(&dummy_once, make_dummy);
        (void)cp_password_verify(dummy_hash, j->password, j->pwlen);
        j->result = -IM_EAUTH;
    } else {
        j->result = cp_password_verify(j->hash, j->password, j->pwlen);
    }
    if (j->password) {
        im_wipe(j->password, j->pwlen);
        free(j->password);
        j->password = NULL;
    }
}

static void *
worker(void *arg)
{
    struct cp_auth *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->todo && !a->stop)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->stop)
            break;
        struct cp_auth_job *j = a->todo;
        a->todo = j->next;
        if (!a->todo)
            a->todo_tail = NULL;
        pthread_mutex_unlock(&a->mu);

        run_job(j);

        pthread_mutex_lock(&a->mu);
        j->next = NULL;
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
cp_auth_new(unsigned threads)
{
    struct cp_auth *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
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
free_list(struct cp_auth_job *j)
{
    while (j) {
        struct cp_auth_job *n = j->next;
        if (j->password) {
            im_wipe(j->password, j->pwlen);
            free(j->password);
        }
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
    free_list(a->todo);
    free_list(a->done);
    free(a->threads);
    if (a->fd >= 0)
        close(a->fd);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
}

void
cp_auth_submit(struct cp_auth *a, struct cp_auth_job *job)
{
    job->next = NULL;
    a->pending++;
    pthread_mutex_lock(&a->mu);
    if (a->todo_tail)
        a->todo_tail->next = job;
    else
        a->todo = job;
    a->todo_tail = job;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
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
        if (j->done)
            j->done(j->ctx, j);
        im_wipe(j->newhash, sizeof(j->newhash));
        free(j);
        j = n;
    }
}

/* ------------------------------------------------------------------------ */

#define RL_BUCKETS 1024
#define RL_MAX_LOCK (15 * 60 * 1000)

struct rl_ent {
    struct rl_ent *next;
    unsigned failures;
    unsigned lockouts;
    uint64_t last_fail, locked_until;
    char key[];
};

struct cp_ratelim {
    struct rl_ent *b[RL_BUCKETS];
    unsigned max_failures;
    uint64_t base_lock;
    unsigned entries;
};

static unsigned
rl_hash(const char *s)
{
    unsigned h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h % RL_BUCKETS;
}

struct cp_ratelim *
cp_ratelim_new(unsigned max_failures, uint64_t base_lock_ms)
{
    struct cp_ratelim *rl = calloc(1, sizeof(*rl));
    if (rl) {
        rl->max_failures = max_failures;
        rl->base_lock = base_lock_ms;
    }
    return rl;
}

void
cp_ratelim_free(struct cp_ratelim *rl)
{
    if (!rl)
        return;
    for (unsigned i = 0; i < RL_BUCKETS; i++)
        while (rl->b[i]) {
            struct rl_ent *e = rl->b[i];
            rl->b[i] = e->next;
            free(e);
        }
    free(rl);
}

static struct rl_ent **
rl_find(struct cp_ratelim *rl, const char *key)
{
    struct rl_ent **pp = &rl->b[rl_hash(key)];
    while (*pp && strcmp((*pp)->key, key))
        pp = &(*pp)->next;
    return pp;
}

bool
cp_ratelim_locked(struct cp_ratelim *rl, const char *key, uint64_t now_ms)
{
    struct rl_ent *e = *rl_find(rl, key);
    return e && e->locked_until > now_ms;
}

void
cp_ratelim_fail(struct cp_ratelim *rl, const char *key, uint64_t now_ms)
{
    struct rl_ent **pp = rl_find(rl, key), *e = *pp;
    if (!e) {
        size_t n = strlen(key) + 1;
        e = calloc(1, sizeof(*e) + n);
        if (!e)
            return;
        memcpy(e->key, key, n);
        *pp = e;
        rl->entries++;
    }
    /* failures older than the last lockout window are forgotten */
    if (now_ms - e->last_fail > 10 * 60 * 1000)
        e->failures = 0;
    e->last_fail = now_ms;
    if (++e->failures >= rl->max_failures) {
        uint64_t lock = rl->base_lock << (e->lockouts < 10 ? e->lockouts : 10);
        e->locked_until = now_ms + (lock > RL_MAX_LOCK ? RL_MAX_LOCK : lock);
        e->lockouts++;
        e->failures = 0;
    }
}

void
cp_ratelim_ok(struct cp_ratelim *rl, const char *key)
{
    struct rl_ent **pp = rl_find(rl, key), *e = *pp;
    if (e) {
        *pp = e->next;
        free(e);
        rl->entries--;
    }
}
