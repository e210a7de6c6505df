/*
 * cp_auth.h - password work off the controlplane loop, and login rate limits.
 *
 * Argon2id costs tens of milliseconds and 64 MiB: it runs on a small pool of
 * threads.  Jobs are submitted by the controlplane thread and come back to it
 * through cp_auth_dispatch() when cp_auth_fd() is readable.
 *
 * The pool is bounded and fair.  Every job names its source (the client's
 * address, grouped by cp_auth_source(): an IPv4 address, an IPv6 /64); jobs
 * waiting and running are capped per source and in total (cp_auth_submit()
 * refuses past either, so the caller answers `limit` at once), and the
 * threads take jobs round-robin across sources, one per source in turn: a
 * source's backlog never queues another source's login behind it.
 */
#ifndef CP_AUTH_H
#define CP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "im_kdf.h"
#include "cp_store.h"

#define CP_AUTH_SRC_MAX 48          /* a source key and its NUL */

enum cp_auth_kind {
    CP_AUTH_VERIFY,         /* password against hash -> result 0 / -IM_EAUTH */
    CP_AUTH_HASH,           /* password -> newhash */
    CP_AUTH_KDF,            /* PBKDF2 of password with kdf.* -> kdf.key (an IM server's SCRAM) */
};

struct cp_auth_job {
    struct cp_auth_job *next;
    struct auth_src *src;           /* the pool's; set by cp_auth_submit() */
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
    char source[CP_AUTH_SRC_MAX];   /* the job's source (cp_auth_source()) */
    bool uncapped;                  /* never refused: the operator's, and key derivations
                                     * (at most one per account, the dataplane sees to it) */
    struct {                        /* CP_AUTH_KDF */
        enum im_kdf_hash hash;
        uint32_t iterations;
        uint8_t salt[255];
        size_t salt_len;
        uint8_t key[IM_KDF_MAX_KEY];    /* the result: wiped with the job */
        size_t key_len;
        uint64_t account, req;          /* who asked: the account's session sess, its request */
        uint32_t sess;
        uint8_t id[32];                 /* the submitter's name for it (cp_kdf.c's cache) */
    } kdf;
};

/* Caps of the pool: jobs waiting or running per source and in total. */
struct cp_auth_caps {
    unsigned per_source;            /* 0: no cap */
    unsigned total;                 /* 0: no cap */
};

struct cp_auth;

/* threads: pool size (>= 1).  NULL on failure. */
struct cp_auth *cp_auth_new(unsigned threads, const struct cp_auth_caps *caps);
/* Stop the threads; jobs not yet dispatched are freed without their done(). */
void cp_auth_free(struct cp_auth *a);
/*
 * Queue a job of job->source.  0: the job belongs to the pool until
 * cp_auth_dispatch() hands it to done().  -IM_ELIMIT: the source's cap (*which
 * = "per_source") or the total cap (*which = "total") is reached; the job is
 * not taken (the caller frees it).  Jobs marked uncapped are never refused.
 */
int cp_auth_submit(struct cp_auth *a, struct cp_auth_job *job, const char **which);
/* eventfd, readable while finished jobs wait. */
int cp_auth_fd(const struct cp_auth *a);
/* Run done() of every finished job on the calling thread, then wipe and free each job. */
void cp_auth_dispatch(struct cp_auth *a);
/* Jobs submitted and not yet dispatched. */
unsigned cp_auth_pending(const struct cp_auth *a);
/* Jobs ever taken (each one a password hashed or checked). */
uint64_t cp_auth_submitted(const struct cp_auth *a);
/* Jobs of one source submitted and not yet dispatched. */
unsigned cp_auth_pending_of(const struct cp_auth *a, const char *source);

/*
 * The source key of a peer "ip:port" or "[v6]:port": the IPv4 address, or
 * the IPv6 /64 as "v6:xxxx:xxxx:xxxx:xxxx" (an IPv4-mapped IPv6 address is
 * its IPv4 address).  Something that does not parse is taken as it is.
 */
void cp_auth_source(const char *peer, char *out, size_t n);

/* ---- rate limits -------------------------------------------------------- */

/*
 * A table of counters per key (a user, a (user, source) pair, a source).
 *
 * Lockout kind (cp_ratelim_new): an attempt counts from the moment it is
 * begun, so no number of attempts in flight gets past the limit: a key
 * allows a new attempt while failures + attempts in flight < max_failures and
 * it is not locked.  A failure that reaches max_failures locks the key for
 * base_lock_ms, doubling with each further lockout, at most 15 min.
 * Failures are forgotten 10 min after the last one.
 *
 * Rate kind (cp_ratelim_new_rate): a token bucket of max_failures tokens,
 * one back every base_lock_ms; cp_ratelim_take() spends one.
 *
 * Entries expire once idle: 10 min after their last failure or lockout
 * (rate kind: once the bucket is full again), swept a little at every
 * attempt; at most max_entries are kept, the least recently used goes first.
 * All functions run on the controlplane thread.
 */
struct cp_ratelim;
struct cp_ratelim *cp_ratelim_new(unsigned max_failures, uint64_t base_lock_ms, unsigned max_entries);
struct cp_ratelim *cp_ratelim_new_rate(unsigned burst, uint64_t refill_ms, unsigned max_entries);
void cp_ratelim_free(struct cp_ratelim *rl);
/* true while key is locked out at now_ms. */
bool cp_ratelim_locked(struct cp_ratelim *rl, const char *key, uint64_t now_ms);
/* true when key may begin an attempt now (not locked, failures + in flight < max). */
bool cp_ratelim_allows(struct cp_ratelim *rl, const char *key, uint64_t now_ms);
/* Count an attempt in flight for key (check cp_ratelim_allows() first). */
void cp_ratelim_begin(struct cp_ratelim *rl, const char *key, uint64_t now_ms);
/*
 * End an attempt begun with cp_ratelim_begin().  ok: reset clears the key's
 * failures (a user's own success), else only the attempt leaves (a source's
 * count is not reset by one user's success).  !ok: a failure is recorded
 * and may lock the key.
 */
void cp_ratelim_end(struct cp_ratelim *rl, const char *key, uint64_t now_ms, bool ok, bool reset);
/* Record a failure that was never begun (may lock the key). */
void cp_ratelim_fail(struct cp_ratelim *rl, const char *key, uint64_t now_ms);
/* Forget key. */
void cp_ratelim_ok(struct cp_ratelim *rl, const char *key);
/* Rate kind: spend a token of key.  0, or -IM_ELIMIT when none is left. */
int cp_ratelim_take(struct cp_ratelim *rl, const char *key, uint64_t now_ms);
/* Drop idle entries (also done a little at every begin and take). */
void cp_ratelim_expire(struct cp_ratelim *rl, uint64_t now_ms);
/* Entries held now. */
unsigned cp_ratelim_entries(const struct cp_ratelim *rl);

#endif
