/*
 * im_buf.h - the one growable byte buffer of the house.
 *
 * Used to build output (a stanza, a SIP request, a JSON text) and to hold
 * input until it is consumed (a framer, a socket reader, a send queue).
 * The live bytes are [head, len) of the storage; appends go at len, consume
 * advances head, and the storage is compacted (the live bytes moved to its
 * start) when an append needs the room.  The live bytes are always followed
 * by a NUL byte once anything was stored, so text can be used as a C string.
 *
 * Limits: at most `max` live bytes (IM_BUF_MAX_DEFAULT when max is 0); an
 * append beyond fails with -IM_ETOOBIG and changes nothing.  Out of memory
 * is -ENOMEM, never an abort.  Failures are sticky: the first one is kept in
 * `err` and every later append or reserve returns it without writing, so a
 * message built with many appends can be checked once, at the end, and is
 * never sent half-built.  im_buf_reset() clears it.
 *
 * A zero-filled struct im_buf is a valid empty buffer with the default cap.
 * Views into the storage (im_buf_data(), im_buf_space()) stay valid until the
 * next call that may grow or compact it (reserve, append, printf).
 */
#ifndef IM_BUF_H
#define IM_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "im_common.h"

#define IM_BUF_MAX_DEFAULT  (64u << 20)     /* live bytes when max is 0 */

struct im_buf {
    char *p;            /* storage (malloc'd, owned); NULL before the first append */
    size_t head;        /* first live byte */
    size_t len;         /* end of the live bytes; p[len] is NUL when p is set */
    size_t cap;         /* bytes allocated at p */
    size_t max;         /* most live bytes; 0 = IM_BUF_MAX_DEFAULT */
    int err;            /* first failure since the last reset (sticky), else 0 */
    bool secret;        /* wipe storage before it is freed or moved (key material) */
};

/* An empty buffer holding at most max live bytes (0: the default). */
void im_buf_init(struct im_buf *b, size_t max);

/* Free the storage (wiped first when b->secret); b is empty and reusable,
 * with its max and secret kept. */
void im_buf_free(struct im_buf *b);

/* Drop the contents and the sticky error; the storage is kept for reuse. */
void im_buf_reset(struct im_buf *b);

/* Zero the whole storage (not only the live bytes), then reset. */
void im_buf_wipe(struct im_buf *b);

/*
 * Make room for n more bytes after the live ones (compacting first, then
 * growing).  0, -IM_ETOOBIG (the live bytes would exceed max), -ENOMEM, or
 * the sticky error.
 */
int im_buf_reserve(struct im_buf *b, size_t n);

/* Append n bytes (p may be NULL when n is 0).  0 or as im_buf_reserve(). */
int im_buf_append(struct im_buf *b, const void *p, size_t n);

/* Append a NUL-terminated string (without its NUL). */
int im_buf_puts(struct im_buf *b, const char *z);

/* Append formatted text.  0, as im_buf_reserve(), or -IM_EINVAL when the
 * format fails; on failure nothing is appended. */
int im_buf_printf(struct im_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int im_buf_vprintf(struct im_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Drop the first n live bytes (n <= im_buf_len()).  Nothing moves, but
 * dropping the last live byte rewinds the buffer and writes the terminating
 * NUL at the start of the storage: finish with a view before consuming it. */
void im_buf_consume(struct im_buf *b, size_t n);

/*
 * Direct writes (a read(2) into the buffer): im_buf_space() gives where the
 * next byte goes and how many may be written there (after im_buf_reserve(),
 * at least the reserved count, never past max); im_buf_added() commits the
 * n bytes written.
 */
char *im_buf_space(struct im_buf *b, size_t *room);
void im_buf_added(struct im_buf *b, size_t n);

/*
 * Hand the storage to the caller: the live bytes, moved to the start of a
 * malloc'd NUL-terminated block that then belongs to the caller, with their
 * count in *len; b is left empty.  NULL when the sticky error is set (b->err
 * says which; b keeps its contents) or memory runs out (b->err = -ENOMEM).
 */
char *im_buf_steal(struct im_buf *b, size_t *len);

/* The live bytes (NUL-terminated; "" when none) and their count. */
char *im_buf_data(const struct im_buf *b);

static inline size_t
im_buf_len(const struct im_buf *b)
{
    return b->len - b->head;
}

#endif
