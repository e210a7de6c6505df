/*
 * dp_ring.h - a single-producer/single-consumer ring of fixed-size elements.
 *
 * The planes talk through these (STYLE 10): one thread pushes, one other
 * thread pops, no locks.  Elements are copied in and out by value, so the
 * message structs carried must be plain data (pointers inside them pass
 * ownership along with the element).
 *
 * Exactly one thread may call the push functions and exactly one (other)
 * thread the pop functions at any time; dp_ring_count() may be called from
 * any thread and is a snapshot.
 */
#ifndef DP_RING_H
#define DP_RING_H

#include <stdbool.h>
#include <stddef.h>

struct dp_ring;

/*
 * A ring of cap elements of elem_size bytes each; cap must be a power of two
 * (>= 2) and elem_size > 0.  Returns NULL (errno EINVAL or ENOMEM) on failure.
 */
struct dp_ring *dp_ring_new(size_t elem_size, size_t cap);
/* Free the ring; neither side may use it any more. */
void dp_ring_free(struct dp_ring *r);

/* Copy one element in: 0, or -ENOBUFS when the ring is full (nothing copied). */
int dp_ring_push(struct dp_ring *r, const void *elem);
/* Copy one element out into elem: 0, or -EAGAIN when the ring is empty. */
int dp_ring_pop(struct dp_ring *r, void *elem);
/* The same, and wipe the slot it left when wipe(elem) says it may hold a
 * secret (before the producer can reuse it). */
int dp_ring_pop_wipe(struct dp_ring *r, void *elem, bool (*wipe)(const void *elem));

/* Push up to n consecutive elements from elems; returns how many were pushed (0..n). */
size_t dp_ring_push_burst(struct dp_ring *r, const void *elems, size_t n);
/* Pop up to n elements into elems; returns how many were popped (0..n). */
size_t dp_ring_pop_burst(struct dp_ring *r, void *elems, size_t n);

/* Elements currently queued (a snapshot when called concurrently). */
size_t dp_ring_count(const struct dp_ring *r);
/* The capacity given at creation. */
size_t dp_ring_capacity(const struct dp_ring *r);

#endif
