/*
 * dp_chan.c - ring pair with overflow lists between the planes.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "im_common.h"
#include "dp_chan.h"
#include "dp_ring.h"
#include "dp_worker.h"

struct dp_ovf {
    struct dp_ovf *next;
    struct dp_msg m;
};

struct dp_side {
    struct dp_ring *ring;
    struct dp_ovf *head, *tail;     /* producer-private overflow */
    unsigned sent;                  /* pushed since the last wakeup */
};

struct dp_chan {
    struct dp_side down, up;
    struct dp_worker *w;
    int up_fd;
    atomic_bool cp_sleeping;        /* the controlplane waits, or is about to, in poll */
};

struct dp_chan *
dp_chan_new(unsigned cap)
{
    struct dp_chan *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return NULL;
    ch->up_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ch->down.ring = dp_ring_new(sizeof(struct dp_msg), cap);
    ch->up.ring = dp_ring_new(sizeof(struct dp_msg), cap);
    if (ch->up_fd < 0 || !ch->down.ring || !ch->up.ring) {
        dp_chan_free(ch);
        return NULL;
    }
    return ch;
}

static void
side_free(struct dp_side *s)
{
    struct dp_msg m;
    if (s->ring) {
        while (dp_ring_pop(s->ring, &m) == 0)
            dp_msg_release(&m);
        dp_ring_free(s->ring);
    }
    while (s->head) {
        struct dp_ovf *o = s->head;
        s->head = o->next;
        dp_msg_release(&o->m);
        free(o);
    }
}

void
dp_chan_free(struct dp_chan *ch)
{
    if (!ch)
        return;
    side_free(&ch->down);
    side_free(&ch->up);
    if (ch->up_fd >= 0)
        close(ch->up_fd);
    free(ch);
}

void
dp_chan_set_worker(struct dp_chan *ch, struct dp_worker *w)
{
    ch->w = w;
}

static void
side_send(struct dp_side *s, struct dp_msg *m)
{
    if (!s->head && dp_ring_push(s->ring, m) == 0) {
        s->sent++;
        dp_msg_forget(m);               /* the ring has it now */
    } else {
        struct dp_ovf *o = malloc(sizeof(*o));
        if (!o) {
            /* Losing a plane message would lose user data silently: stop
             * loudly instead; what was acknowledged is in the store. */
            IM_LOG(IM_LOG_ERROR, "dp", "out of memory queueing a plane message: stopping");
            abort();
        }
        o->next = NULL;
        dp_msg_move(&o->m, m);
        if (s->tail)
            s->tail->next = o;
        else
            s->head = o;
        s->tail = o;
    }
}

static bool
msg_secret(const void *elem)
{
    return dp_msg_secret(elem);
}

static void
side_flush(struct dp_side *s)
{
    while (s->head && dp_ring_push(s->ring, &s->head->m) == 0) {
        struct dp_ovf *o = s->head;
        s->head = o->next;
        if (!s->head)
            s->tail = NULL;
        dp_msg_forget(&o->m);
        free(o);
        s->sent++;
    }
}

void
dp_chan_send_up(struct dp_chan *ch, struct dp_msg *m)
{
    side_send(&ch->up, m);
}

void
dp_chan_flush_up(struct dp_chan *ch)
{
    side_flush(&ch->up);
    if (ch->up.sent) {
        uint64_t one = 1;
        ch->up.sent = 0;
        /* Only a controlplane that waits (or is about to) needs the
         * eventfd: a busy one drains the ring before it waits again. */
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&ch->cp_sleeping, memory_order_relaxed) &&
            write(ch->up_fd, &one, sizeof(one)) < 0) {
            /* EAGAIN: the counter is saturated, the reader is awake anyway */
        }
    }
}

int
dp_chan_recv_down(struct dp_chan *ch, struct dp_msg *m)
{
    return dp_ring_pop_wipe(ch->down.ring, m, msg_secret);
}

void
dp_chan_send_down(struct dp_chan *ch, struct dp_msg *m)
{
    side_send(&ch->down, m);
}

void
dp_chan_flush_down(struct dp_chan *ch)
{
    side_flush(&ch->down);
    if (ch->down.sent || ch->down.head) {
        ch->down.sent = 0;
        if (ch->w)
            dp_worker_wake_if_sleeping(ch->w);
    }
}

int
dp_chan_recv_up(struct dp_chan *ch, struct dp_msg *m)
{
    return dp_ring_pop_wipe(ch->up.ring, m, msg_secret);
}

int
dp_chan_up_fd(const struct dp_chan *ch)
{
    return ch->up_fd;
}

void
dp_chan_up_ack(struct dp_chan *ch)
{
    uint64_t v;
    if (read(ch->up_fd, &v, sizeof(v)) < 0) {
        /* EAGAIN: nothing pending */
    }
}

bool
dp_chan_down_pending(void *ch)
{
    struct dp_chan *c = ch;
    return c->down.ring && dp_ring_count(c->down.ring) > 0;
}

bool
dp_chan_cp_sleep(struct dp_chan *ch)
{
    atomic_store_explicit(&ch->cp_sleeping, true, memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst);
    if (dp_ring_count(ch->up.ring) > 0) {
        atomic_store_explicit(&ch->cp_sleeping, false, memory_order_relaxed);
        return false;
    }
    return true;
}

void
dp_chan_cp_awake(struct dp_chan *ch)
{
    atomic_store_explicit(&ch->cp_sleeping, false, memory_order_relaxed);
}
