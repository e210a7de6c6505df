/* The Argon2id pool and the login rate limiter (cp_auth.c). */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "im_common.h"
#include "cp_crypto.h"
#include "cp_auth.h"

static int done_count;
static int last_result;

static void
on_done(void *ctx, struct cp_auth_job *j)
{
    done_count++;
    last_result = j->result;
    if (j->kind == CP_AUTH_HASH)
        strcpy(ctx, j->newhash);
}

static void
run_one(struct cp_auth *a, struct cp_auth_job *j)
{
    int before = done_count;
    cp_auth_submit(a, j);
    while (done_count == before) {
        struct pollfd p = { .fd = cp_auth_fd(a), .events = POLLIN };
        T_ASSERT(poll(&p, 1, 10000) == 1);
        cp_auth_dispatch(a);
    }
}

static struct cp_auth_job *
job(enum cp_auth_kind kind, const char *pw, const char *hash, void *ctx)
{
    struct cp_auth_job *j = calloc(1, sizeof(*j));
    j->kind = kind;
    j->password = strdup(pw);
    j->pwlen = strlen(pw);
    if (hash)
        strcpy(j->hash, hash);
    j->done = on_done;
    j->ctx = ctx;
    return j;
}

T_TEST(pool_hash_and_verify)
{
    cp_argon2_params.m_cost_kib = 1024;     /* fast for the test */
    struct cp_auth *a = cp_auth_new(2);
    char hash[CP_HASH_MAX + 1] = "";
    T_ASSERT(a);
    run_one(a, job(CP_AUTH_HASH, "s3cret", NULL, hash));
    T_EQ_INT(last_result, 0);
    T_ASSERT(!strncmp(hash, "$argon2id$", 10));
    run_one(a, job(CP_AUTH_VERIFY, "s3cret", hash, NULL));
    T_EQ_INT(last_result, 0);
    run_one(a, job(CP_AUTH_VERIFY, "s3cret!", hash, NULL));
    T_EQ_INT(last_result, -IM_EAUTH);
    /* unknown user: a dummy hash is checked, the answer is always "no" */
    run_one(a, job(CP_AUTH_VERIFY, "s3cret", "", NULL));
    T_EQ_INT(last_result, -IM_EAUTH);
    T_EQ_INT(cp_auth_pending(a), 0);
    /* jobs left at shutdown are freed without their callback */
    cp_auth_submit(a, job(CP_AUTH_HASH, "x", NULL, hash));
    cp_auth_free(a);
}

T_TEST(ratelimit)
{
    struct cp_ratelim *rl = cp_ratelim_new(3, 1000);
    uint64_t t = 100000;
    T_ASSERT(!cp_ratelim_locked(rl, "u:alice", t));
    cp_ratelim_fail(rl, "u:alice", t);
    cp_ratelim_fail(rl, "u:alice", t + 1);
    T_ASSERT(!cp_ratelim_locked(rl, "u:alice", t + 2));
    cp_ratelim_fail(rl, "u:alice", t + 2);
    T_ASSERT(cp_ratelim_locked(rl, "u:alice", t + 3));
    T_ASSERT(!cp_ratelim_locked(rl, "u:bob", t + 3));
    T_ASSERT(!cp_ratelim_locked(rl, "u:alice", t + 2 + 1000));
    /* a second lockout lasts twice as long */
    for (int i = 0; i < 3; i++)
        cp_ratelim_fail(rl, "u:alice", t + 5000);
    T_ASSERT(cp_ratelim_locked(rl, "u:alice", t + 5000 + 1500));
    T_ASSERT(!cp_ratelim_locked(rl, "u:alice", t + 5000 + 2000));
    /* success forgets */
    cp_ratelim_fail(rl, "u:alice", t + 9000);
    cp_ratelim_ok(rl, "u:alice");
    cp_ratelim_fail(rl, "u:alice", t + 9001);
    cp_ratelim_fail(rl, "u:alice", t + 9002);
    T_ASSERT(!cp_ratelim_locked(rl, "u:alice", t + 9003));
    cp_ratelim_free(rl);
}

T_MAIN(T_RUN(pool_hash_and_verify), T_RUN(ratelimit))
