/*
 * dp_ring.c - SPSC ring (see dp_ring.h).
 *
 * head and tail are free-running counters (wrap-around of size_t is fine:
 * only their difference is used).  The producer owns head and a cached copy
 * of tail, the consumer owns tail and a cached copy of head; each pair sits on
 * its own cache line so the two sides do not false-share.  A side re-reads
 * the other side's counter (acquire) only when its cached copy says the ring
 * is full / empty; publishing uses release so the element copy is visible
 * before the counter moves.
 */
#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "im_common.h"
#include "dp_ring.h"

#define DP_CACHELINE 64

struct dp_ring {
    /* producer side */
    alignas(DP_CACHELINE) _Atomic size_t head;
    size_t tail_cache;
    /* consumer side */
    alignas(DP_CACHELINE) _Atomic size_t tail;
    size_t head_cache;
    /* read-only after creation */
    alignas(DP_CACHELINE) size_t mask;
    size_t elem_size;
    unsigned char *slots;
};

struct dp_ring *dp_ring_new(size_t elem_size, size_t cap)
{
    if (elem_size == 0 || cap < 2 || (cap & (cap - 1)) != 0 || cap > SIZE_MAX / elem_size) {
        errno = EINVAL;
        return NULL;
    }
    size_t sz = (sizeof(struct dp_ring) + DP_CACHELINE - 1) / DP_CACHELINE * DP_CACHELINE;
    struct dp_ring *r = aligned_alloc(DP_CACHELINE, sz);
    if (!r)
        return NULL;
    memset(r, 0, sizeof(*r));
    r->slots = malloc(elem_size * cap);
    if (!r->slots) {
        free(r);
        errno = ENOMEM;
        return NULL;
    }
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    r->mask = cap - 1;
    r->elem_size = elem_size;
    return r;
}

void dp_ring_free(struct dp_ring *r)
{
    if (!r)
        return;
    free(r->slots);
    free(r);
}

/* Room the producer may fill, refreshing its view of tail only when needed. */
static size_t ring_room(struct dp_ring *r, size_t head, size_t want)
{
    size_t cap = r->mask + 1;
    size_t room = cap - (head - r->tail_cache);
    if (room < want) {
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        room = cap - (head - r->tail_cache);
    }
    return room;
}

/* Elements the consumer may take, refreshing its view of head only when needed. */
static size_t ring_avail(struct dp_ring *r, size_t tail, size_t want)
{
    size_t avail = r->head_cache - tail;
    if (avail < want) {
        r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
        avail = r->head_cache - tail;
    }
    return avail;
}

/* Copy n elements between the flat buffer buf and the slots from index idx, wrapping. */
static void ring_copy(struct dp_ring *r, size_t idx, void *buf, size_t n, int in)
{
    size_t cap = r->mask + 1, pos = idx & r->mask;
    size_t first = n < cap - pos ? n : cap - pos;
    unsigned char *slot = r->slots + pos * r->elem_size, *b = buf;
    if (in) {
        memcpy(slot, b, first * r->elem_size);
        memcpy(r->slots, b + first * r->elem_size, (n - first) * r->elem_size);
    } else {
        memcpy(b, slot, first * r->elem_size);
        memcpy(b + first * r->elem_size, r->slots, (n - first) * r->elem_size);
    }
}

int dp_ring_push(struct dp_ring *r, const void *elem)
{
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (ring_room(r, head, 1) == 0)
        return -ENOBUFS;
    memcpy(r->slots + (head & r->mask) * r->elem_size, elem, r->elem_size);
    atomic_store_explicit(&r->head, head + 1, memory_order_release);
    return 0;
}

int dp_ring_pop(struct dp_ring *r, void *elem)
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    if (ring_avail(r, tail, 1) == 0)
        return -EAGAIN;
    memcpy(elem, r->slots + (tail & r->mask) * r->elem_size, r->elem_size);
    atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
    return 0;
}

int dp_ring_pop_wipe(struct dp_ring *r, void *elem, bool (*wipe)(const void *elem))
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    if (ring_avail(r, tail, 1) == 0)
        return -EAGAIN;
    unsigned char *slot = r->slots + (tail & r->mask) * r->elem_size;
    memcpy(elem, slot, r->elem_size);
    if (wipe(elem))
        im_wipe(slot, r->elem_size);    /* before the producer may reuse it */
    atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
    return 0;
}

size_t dp_ring_push_burst(struct dp_ring *r, const void *elems, size_t n)
{
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t room = ring_room(r, head, n);
    if (n > room)
        n = room;
    if (n == 0)
        return 0;
    ring_copy(r, head, (void *)(uintptr_t)elems, n, 1);
    atomic_store_explicit(&r->head, head + n, memory_order_release);
    return n;
}

size_t dp_ring_pop_burst(struct dp_ring *r, void *elems, size_t n)
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t avail = ring_avail(r, tail, n);
    if (n > avail)
        n = avail;
    if (n == 0)
        return 0;
    ring_copy(r, tail, elems, n, 0);
    atomic_store_explicit(&r->tail, tail + n, memory_order_release);
    return n;
}

size_t dp_ring_count(const struct dp_ring *r)
{
    size_t tail = atomic_load_explicit(&((struct dp_ring *)(uintptr_t)r)->tail, memory_order_acquire);
    size_t head = atomic_load_explicit(&((struct dp_ring *)(uintptr_t)r)->head, memory_order_acquire);
    size_t n = head - tail;
    /* Read in this order, a concurrent pop can only make n smaller than real, never wrap. */
    return n > r->mask + 1 ? r->mask + 1 : n;
}

size_t dp_ring_capacity(const struct dp_ring *r)
{
    return r->mask + 1;
}
