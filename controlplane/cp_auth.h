/*
 * cp_auth.h - password work off the controlplane loop, and login rate limits.
 *
 * Argon2id costs tens of milliseconds and 64 MiB: it runs on a small pool of
 * threads.  Jobs are submitted by the controlplane thread and come back to it
 * through cp_auth_take() when cp_auth_fd() is readable.
 */
#ifndef CP_AUTH_H
#define CP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cp_store.h"

enum cp_auth_kind {
    CP_AUTH_VERIFY,         /* password against hash -> result 0 / -IM_EAUTH */
    CP_AUTH_HASH,           /* password -> newhash */
};

struct cp_auth_job {
    struct cp_auth_job *next;
    enum cp_auth_kind kind;
    char hash[CP_HASH_MAX + 1];     /* VERIFY: the stored hash ("" = unknown user) */
    char *password;                 /* malloc'd; wiped and freed by the pool */
    size_t pwlen;
    int result;                     /* 0 or negative */
    char newhash[CP_HASH_MAX + 1];  /* HASH: the result */
    /* the submitter's context */
    void (*done)(void *ctx, struct cp_auth_job *job);
    void *ctx;
    uint32_t conn, gen;
    uint64_t req_id, uid;
    char user[CP_NAME_MAX + 1];
    char peer[64];
    char device[65];
};

struct cp_auth;

/* threads: pool size (>= 1).  NULL on failure. */
struct cp_auth *cp_auth_new(unsigned threads);
/* Stop the threads; jobs not yet taken are freed without their done(). */
void cp_auth_free(struct cp_auth *a);
/* Queue a job; on return it belongs to the pool until cp_auth_take() returns it. */
void cp_auth_submit(struct cp_auth *a, struct cp_auth_job *job);
/* eventfd, readable while finished jobs wait. */
int cp_auth_fd(const struct cp_auth *a);
/* Run done() of every finished job on the calling thread, then free each job. */
void cp_auth_dispatch(struct cp_auth *a);
/* Jobs submitted and not yet dispatched. */
unsigned cp_auth_pending(const struct cp_auth *a);

/* ---- rate limits: per user name and per source address ---- */

struct cp_ratelim;
struct cp_ratelim *cp_ratelim_new(unsigned max_failures, uint64_t base_lock_ms);
void cp_ratelim_free(struct cp_ratelim *rl);
/* true while key is locked out at now_ms. */
bool cp_ratelim_locked(struct cp_ratelim *rl, const char *key, uint64_t now_ms);
/* Record a failure (may start a lockout: base doubling per lockout, max 15 min). */
void cp_ratelim_fail(struct cp_ratelim *rl, const char *key, uint64_t now_ms);
/* Forget key (after a success). */
void cp_ratelim_ok(struct cp_ratelim *rl, const char *key);

#endif
