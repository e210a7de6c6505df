/*
 * cp_lru.h - an intrusive recency list for the controlplane's bounded tables
 * (cp_auth.c's rate limiters, cp_kdf.c's cache of derived keys): the most
 * recently used entry first, the least recently used last, to be evicted or
 * expired.  An entry embeds a struct cp_lru_link; the list owns nothing.
 * Controlplane thread only.
 */
#ifndef CP_LRU_H
#define CP_LRU_H

#include <stddef.h>

struct cp_lru_link {
    struct cp_lru_link *newer, *older;
};

struct cp_lru {
    struct cp_lru_link *newest, *oldest;
};

/* The entry of type that holds link as its member. */
#define CP_LRU_ENTRY(link, type, member) ((type *)(void *)((char *)(link) - offsetof(type, member)))

static inline void
cp_lru_unlink(struct cp_lru *l, struct cp_lru_link *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        l->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        l->oldest = e->newer;
    e->newer = e->older = NULL;
}

/* Insert e as the most recent. */
static inline void
cp_lru_push(struct cp_lru *l, struct cp_lru_link *e)
{
    e->older = l->newest;
    e->newer = NULL;
    if (l->newest)
        l->newest->newer = e;
    else
        l->oldest = e;
    l->newest = e;
}

/* e was used now. */
static inline void
cp_lru_touch(struct cp_lru *l, struct cp_lru_link *e)
{
    cp_lru_unlink(l, e);
    cp_lru_push(l, e);
}

#endif
