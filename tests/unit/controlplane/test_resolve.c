/*
 * test_resolve.c - the controlplane's resolver thread and cache
 * (controlplane/cp_resolve.c).  Only "localhost" is looked up, which
 * /etc/hosts answers: a unit test sends nothing to the network.  A name that
 * does not resolve is checked by tests/integration/xmpp/flow.sh, inside a
 * private network namespace.
 */
#include <poll.h>

#include "t.h"
#include "im_common.h"
#include "cp_resolve.h"

struct got {
    int calls, err;
    char first[64];
    unsigned n;
    bool has_v4;
};

static void
on_answer(void *ctx, int err, const char *why, const char *const *addrs, unsigned n)
{
    struct got *g = ctx;
    g->calls++;
    g->err = err;
    g->n = n;
    if (n)
        snprintf(g->first, sizeof(g->first), "%s", addrs[0]);
    for (unsigned i = 0; i < n; i++)
        if (!strcmp(addrs[i], "127.0.0.1"))
            g->has_v4 = true;
}

/* Dispatch until every counter reaches want (bounded). */
static void
wait_calls(struct cp_resolver *r, struct got *g, int n, int want)
{
    for (int spins = 0; spins < 100; spins++) {
        int done = 0;
        for (int i = 0; i < n; i++)
            done += g[i].calls >= want;
        if (done == n)
            return;
        struct pollfd p = { .fd = cp_resolver_fd(r), .events = POLLIN };
        (void)poll(&p, 1, 100);
        cp_resolver_dispatch(r);
    }
}

T_TEST(localhost_and_cache)
{
    struct cp_resolver *r = cp_resolver_new();
    T_ASSERT(r);
    struct got g[3] = { 0 };
    /* three requests for one name: one lookup, three answers */
    for (int i = 0; i < 3; i++)
        T_EQ_INT(cp_resolve(r, "localhost", on_answer, &g[i]), 0);
    T_EQ_INT(g[0].calls, 0);                    /* never from inside the call */
    wait_calls(r, g, 3, 1);
    for (int i = 0; i < 3; i++) {
        T_EQ_INT(g[i].calls, 1);
        T_EQ_INT(g[i].err, 0);
        T_ASSERT(g[i].has_v4);
    }
    struct cp_resolve_stats st;
    cp_resolver_stats(r, &st);
    T_EQ_UINT(st.lookups, 1);
    T_EQ_UINT(st.pending, 0);

    /* again: answered from the cache, still not from inside the call */
    struct got h = { 0 };
    T_EQ_INT(cp_resolve(r, "localhost", on_answer, &h), 0);
    T_EQ_INT(h.calls, 0);
    wait_calls(r, &h, 1, 1);
    T_EQ_INT(h.calls, 1);
    T_ASSERT(h.has_v4);
    cp_resolver_stats(r, &st);
    T_EQ_UINT(st.lookups, 1);
    T_EQ_UINT(st.cache_hits, 1);
    cp_resolver_free(r);
}

T_TEST(bad_names)
{
    struct cp_resolver *r = cp_resolver_new();
    struct got g = { 0 };
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    T_EQ_INT(cp_resolve(r, "", on_answer, &g), -IM_EINVAL);
    T_EQ_INT(cp_resolve(r, longname, on_answer, &g), -IM_EINVAL);
    cp_resolver_dispatch(r);
    T_EQ_INT(g.calls, 0);
    cp_resolver_free(r);
}

/* Freeing with requests in flight runs their callbacks once, to release them. */
T_TEST(free_cancels)
{
    struct cp_resolver *r = cp_resolver_new();
    struct got g = { 0 };
    T_EQ_INT(cp_resolve(r, "localhost", on_answer, &g), 0);
    cp_resolver_free(r);
    T_EQ_INT(g.calls, 1);
    T_ASSERT(g.err == 0 || g.err == -ECANCELED);
}

T_MAIN(T_RUN(localhost_and_cache), T_RUN(bad_names), T_RUN(free_cancels))
