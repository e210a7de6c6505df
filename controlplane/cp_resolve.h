/*
 * cp_resolve.h - host names resolved on the controlplane, off its loop.
 *
 * The dataplane never resolves a name (a DPDK port has no resolver, and a
 * blocking getaddrinfo() would stall every session of a core): before it
 * connects an account whose server is a name, it asks the controlplane
 * (CPM_RESOLVE) and connects to the IP literals it gets back (DPM_RESOLVED).
 * getaddrinfo() runs on a thread of its own; answers are cached for
 * CP_RESOLVE_TTL_MS (getaddrinfo gives no TTL), failures for
 * CP_RESOLVE_NEG_TTL_MS, so that reconnects cost a lookup in memory.
 *
 * Every call runs on the controlplane thread except the resolver's own.
 */
#ifndef CP_RESOLVE_H
#define CP_RESOLVE_H

#include <stdint.h>

#define CP_RESOLVE_TTL_MS       (60u * 1000)
#define CP_RESOLVE_NEG_TTL_MS   (10u * 1000)
#define CP_RESOLVE_MAX_ADDRS    8       /* addresses kept per name */
#define CP_RESOLVE_MAX_PENDING  1024    /* names waiting for the thread */
#define CP_RESOLVE_MAX_CACHE    4096    /* names cached */
#define CP_RESOLVE_HOST_MAX     255

struct cp_resolver;

/*
 * An answer.  err 0: addrs[0..n) are IP literals ("192.0.2.1", "2001:db8::1"),
 * in the resolver's order.  Else a negative code and why, the resolver's words
 * ("Name or service not known").  Views are valid during the call only.
 */
typedef void cp_resolve_fn(void *ctx, int err, const char *why, const char *const *addrs, unsigned n);

/* NULL on failure (thread or eventfd). */
struct cp_resolver *cp_resolver_new(void);
/* Stop the thread; the callback of every request not answered yet runs with
 * err -ECANCELED (only to release its ctx). */
void cp_resolver_free(struct cp_resolver *r);
/* eventfd, readable while answers wait for cp_resolver_dispatch(). */
int cp_resolver_fd(const struct cp_resolver *r);

/*
 * Resolve host.  fn(ctx, ...) runs later from cp_resolver_dispatch(), never
 * from inside this call, exactly once (a cache hit too).  Returns 0, or
 * -IM_ELIMIT when CP_RESOLVE_MAX_PENDING names wait already, -IM_EINVAL for
 * an empty or too long name, -ENOMEM; fn is then never called.
 */
int cp_resolve(struct cp_resolver *r, const char *host, cp_resolve_fn *fn, void *ctx);

/* Call the callbacks of every answer ready. */
void cp_resolver_dispatch(struct cp_resolver *r);

/* Counters for `imfusectl stats`. */
struct cp_resolve_stats {
    uint64_t lookups, cache_hits, failures, pending;
};
void cp_resolver_stats(const struct cp_resolver *r, struct cp_resolve_stats *st);

#endif
