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
    T_EQ_INT(cp_auth_submit(a, j, NULL), 0);
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
    struct cp_auth *a = cp_auth_new(2, NULL);
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
    T_EQ_INT(cp_auth_submit(a, job(CP_AUTH_HASH, "x", NULL, hash), NULL), 0);
    cp_auth_free(a);
}

static char order[64][CP_AUTH_SRC_MAX];
static int n_order;

static void
on_order(void *ctx, struct cp_auth_job *j)
{
    im_strlcpy(order[n_order++], j->source, CP_AUTH_SRC_MAX);
}

static struct cp_auth_job *
src_job(const char *source)
{
    struct cp_auth_job *j = job(CP_AUTH_VERIFY, "pw", "", NULL);
    j->done = on_order;
    im_strlcpy(j->source, source, sizeof(j->source));
    return j;
}

static void
drain(struct cp_auth *a)
{
    while (cp_auth_pending(a)) {
        struct pollfd p = { .fd = cp_auth_fd(a), .events = POLLIN };
        T_ASSERT(poll(&p, 1, 10000) == 1);
        cp_auth_dispatch(a);
    }
}

/* One source's backlog does not queue another source's job behind it. */
T_TEST(pool_fair_across_sources)
{
    cp_argon2_params.m_cost_kib = 1024;
    struct cp_auth *a = cp_auth_new(1, NULL);
    n_order = 0;
    for (int i = 0; i < 12; i++)
        T_EQ_INT(cp_auth_submit(a, src_job("192.0.2.1"), NULL), 0);
    T_EQ_INT(cp_auth_submit(a, src_job("198.51.100.7"), NULL), 0);
    T_EQ_UINT(cp_auth_pending_of(a, "192.0.2.1"), 12);
    T_EQ_UINT(cp_auth_pending_of(a, "198.51.100.7"), 1);
    drain(a);
    T_EQ_INT(n_order, 13);
    int pos = -1;
    for (int i = 0; i < n_order; i++)
        if (!strcmp(order[i], "198.51.100.7"))
            pos = i;
    /* at most the job running and the one next in turn come first */
    T_ASSERT(pos >= 0 && pos <= 2);
    T_EQ_UINT(cp_auth_pending_of(a, "192.0.2.1"), 0);
    cp_auth_free(a);
}

T_TEST(pool_caps)
{
    cp_argon2_params.m_cost_kib = 1024;
    struct cp_auth_caps caps = { .per_source = 3, .total = 5 };
    struct cp_auth *a = cp_auth_new(1, &caps);
    const char *which = NULL;
    n_order = 0;
    for (int i = 0; i < 3; i++)
        T_EQ_INT(cp_auth_submit(a, src_job("a"), &which), 0);
    struct cp_auth_job *j = src_job("a");
    T_EQ_INT(cp_auth_submit(a, j, &which), -IM_ELIMIT);
    T_EQ_STR(which, "per_source");
    free(j->password);
    free(j);
    T_EQ_INT(cp_auth_submit(a, src_job("b"), &which), 0);
    T_EQ_INT(cp_auth_submit(a, src_job("c"), &which), 0);
    j = src_job("d");
    T_EQ_INT(cp_auth_submit(a, j, &which), -IM_ELIMIT);
    T_EQ_STR(which, "total");
    free(j->password);
    free(j);
    /* the operator's jobs are never refused */
    j = src_job("");
    j->uncapped = true;
    T_EQ_INT(cp_auth_submit(a, j, &which), 0);
    T_EQ_UINT(cp_auth_pending(a), 6);
    drain(a);
    T_EQ_INT(n_order, 6);
    /* room again once answered */
    T_EQ_INT(cp_auth_submit(a, src_job("a"), &which), 0);
    drain(a);
    cp_auth_free(a);
}

T_TEST(source_keys)
{
    char k[CP_AUTH_SRC_MAX];
    cp_auth_source("192.0.2.1:5555", k, sizeof(k));
    T_EQ_STR(k, "192.0.2.1");
    cp_auth_source("[2001:db8:1:2:3:4:5:6]:80", k, sizeof(k));
    T_EQ_STR(k, "v6:2001:0db8:0001:0002::/64");
    cp_auth_source("[2001:db8:1:2::9]:1", k, sizeof(k));
    T_EQ_STR(k, "v6:2001:0db8:0001:0002::/64");       /* the same /64 */
    cp_auth_source("[2001:db8:1:3::9]:1", k, sizeof(k));
    T_EQ_STR(k, "v6:2001:0db8:0001:0003::/64");
    cp_auth_source("[::ffff:192.0.2.1]:7", k, sizeof(k));
    T_EQ_STR(k, "192.0.2.1");
    cp_auth_source("127.0.0.1", k, sizeof(k));
    T_EQ_STR(k, "127.0.0.1");
    cp_auth_source("?", k, sizeof(k));
    T_EQ_STR(k, "?");
}

T_TEST(ratelimit)
{
    struct cp_ratelim *rl = cp_ratelim_new(3, 1000, 1000);
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

/* An attempt counts from the moment it begins: parallel attempts cannot get past the limit. */
T_TEST(ratelimit_counts_in_flight)
{
    struct cp_ratelim *rl = cp_ratelim_new(5, 1000, 1000);
    uint64_t t = 100000;
    int begun = 0;
    for (int i = 0; i < 30; i++)
        if (cp_ratelim_allows(rl, "u:alice", t)) {
            cp_ratelim_begin(rl, "u:alice", t);
            begun++;
        }
    T_EQ_INT(begun, 5);
    for (int i = 0; i < 5; i++)
        cp_ratelim_end(rl, "u:alice", t + 10, false, true);
    T_ASSERT(cp_ratelim_locked(rl, "u:alice", t + 11));
    T_ASSERT(!cp_ratelim_allows(rl, "u:alice", t + 11));
    /* a success ends its own attempt and (reset) clears the user's failures */
    T_ASSERT(cp_ratelim_allows(rl, "u:alice", t + 2000));
    cp_ratelim_begin(rl, "u:bob", t);
    cp_ratelim_end(rl, "u:bob", t, false, true);
    cp_ratelim_begin(rl, "u:bob", t);
    cp_ratelim_end(rl, "u:bob", t, true, true);
    T_EQ_UINT(cp_ratelim_entries(rl), 1);            /* bob's entry went with the success */
    cp_ratelim_free(rl);
}

/* A source's count is not reset by one user's success there. */
T_TEST(ratelimit_source_not_reset)
{
    struct cp_ratelim *rl = cp_ratelim_new(3, 1000, 1000);
    uint64_t t = 100000;
    cp_ratelim_begin(rl, "a:192.0.2.1", t);
    cp_ratelim_end(rl, "a:192.0.2.1", t, false, false);
    cp_ratelim_begin(rl, "a:192.0.2.1", t);
    cp_ratelim_end(rl, "a:192.0.2.1", t, false, false);
    cp_ratelim_begin(rl, "a:192.0.2.1", t);
    cp_ratelim_end(rl, "a:192.0.2.1", t, true, false);  /* mallory logs in to her own account */
    T_ASSERT(cp_ratelim_allows(rl, "a:192.0.2.1", t));
    cp_ratelim_begin(rl, "a:192.0.2.1", t);
    cp_ratelim_end(rl, "a:192.0.2.1", t, false, false);
    T_ASSERT(cp_ratelim_locked(rl, "a:192.0.2.1", t + 1));
    cp_ratelim_free(rl);
}

T_TEST(ratelimit_expires)
{
    struct cp_ratelim *rl = cp_ratelim_new(3, 1000, 8);
    uint64_t t = 100000;
    char key[32];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "u:%d", i);
        cp_ratelim_fail(rl, key, t);
    }
    T_EQ_UINT(cp_ratelim_entries(rl), 8);            /* the least recently used went */
    for (int i = 0; i < 3; i++)
        cp_ratelim_fail(rl, "u:19", t);               /* locked: 1 s */
    cp_ratelim_begin(rl, "u:18", t);                  /* in flight */
    t += 10 * 60 * 1000;
    cp_ratelim_expire(rl, t);
    T_EQ_UINT(cp_ratelim_entries(rl), 2);            /* idle ones expired */
    cp_ratelim_end(rl, "u:18", t, true, true);
    t += 10 * 60 * 1000 + 1000;
    cp_ratelim_expire(rl, t);
    T_EQ_UINT(cp_ratelim_entries(rl), 0);
    cp_ratelim_free(rl);
}

T_TEST(ratelimit_rate)
{
    struct cp_ratelim *rl = cp_ratelim_new_rate(3, 1000, 100);
    uint64_t t = 100000;
    T_EQ_INT(cp_ratelim_take(rl, "r:a", t), 0);
    T_EQ_INT(cp_ratelim_take(rl, "r:a", t), 0);
    T_EQ_INT(cp_ratelim_take(rl, "r:a", t), 0);
    T_EQ_INT(cp_ratelim_take(rl, "r:a", t), -IM_ELIMIT);
    T_EQ_INT(cp_ratelim_take(rl, "r:b", t), 0);      /* per key */
    T_EQ_INT(cp_ratelim_take(rl, "r:a", t + 999), -IM_ELIMIT);
    T_EQ_INT(cp_ratelim_take(rl, "r:a", t + 1000), 0);
    T_EQ_INT(cp_ratelim_take(rl, "r:a", t + 1000), -IM_ELIMIT);
    cp_ratelim_expire(rl, t + 4000);                  /* buckets full again: gone */
    T_EQ_UINT(cp_ratelim_entries(rl), 0);
    cp_ratelim_free(rl);
}

T_MAIN(T_RUN(pool_hash_and_verify), T_RUN(pool_fair_across_sources), T_RUN(pool_caps),
       T_RUN(source_keys), T_RUN(ratelimit), T_RUN(ratelimit_counts_in_flight),
       T_RUN(ratelimit_source_not_reset), T_RUN(ratelimit_expires), T_RUN(ratelimit_rate))
