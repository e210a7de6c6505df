/*
 * test_im_buf.c - the kit's growable buffer: appends and formatted appends
 * across growth, consumption and compaction, the size cap, sticky errors,
 * direct writes, handing the storage over, and out of memory as -ENOMEM.
 */
#include <stdint.h>

#include "t.h"
#include "im_buf.h"

/* Huge allocations fail with NULL here instead of aborting the test, so that
 * -ENOMEM can be seen (the sanitizers read these before their *_OPTIONS). */
const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}
const char *__tsan_default_options(void);
const char *
__tsan_default_options(void)
{
    return "allocator_may_return_null=1";
}

T_TEST(append_and_grow)
{
    struct im_buf b = { 0 };            /* zero-filled: valid, default cap */

    T_EQ_STR(im_buf_data(&b), "");
    T_EQ_UINT(im_buf_len(&b), 0);
    for (int i = 0; i < 1000; i++)
        T_EQ_INT(im_buf_append(&b, "0123456789", 10), 0);
    T_EQ_UINT(im_buf_len(&b), 10000);
    T_EQ_UINT(strlen(im_buf_data(&b)), 10000);          /* NUL-terminated */
    T_EQ_MEM(im_buf_data(&b) + 9990, "0123456789", 10);
    T_EQ_INT(im_buf_append(&b, NULL, 0), 0);
    T_EQ_INT(im_buf_puts(&b, "!"), 0);
    T_EQ_UINT(im_buf_len(&b), 10001);
    im_buf_reset(&b);
    T_EQ_STR(im_buf_data(&b), "");
    T_ASSERT(b.cap >= 10002);                           /* storage kept for reuse */
    im_buf_free(&b);
    T_ASSERT(b.p == NULL && b.cap == 0);
}

T_TEST(printf_small_and_large)
{
    struct im_buf b;
    char big[5000];

    im_buf_init(&b, 0);
    T_EQ_INT(im_buf_printf(&b, "%d-%s", 42, "x"), 0);
    T_EQ_STR(im_buf_data(&b), "42-x");
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    /* longer than the room there is: formatted again after growing */
    T_EQ_INT(im_buf_printf(&b, "[%s]", big), 0);
    T_EQ_UINT(im_buf_len(&b), 4 + 2 + sizeof(big) - 1);
    T_ASSERT(!memcmp(im_buf_data(&b), "42-x[aaa", 8));
    T_EQ_INT(im_buf_data(&b)[im_buf_len(&b) - 1], ']');
    im_buf_free(&b);
}

T_TEST(cap_refuses_cleanly)
{
    struct im_buf b;

    im_buf_init(&b, 16);
    T_EQ_INT(im_buf_append(&b, "0123456789", 10), 0);
    T_EQ_INT(im_buf_append(&b, "abcdefg", 7), -IM_ETOOBIG);     /* 17 > 16: nothing written */
    T_EQ_STR(im_buf_data(&b), "0123456789");
    /* sticky: a later append that would fit is refused too, until reset */
    T_EQ_INT(im_buf_append(&b, "x", 1), -IM_ETOOBIG);
    T_EQ_INT(im_buf_printf(&b, "%d", 1), -IM_ETOOBIG);
    T_EQ_INT(b.err, -IM_ETOOBIG);
    size_t n;
    T_ASSERT(im_buf_steal(&b, &n) == NULL);
    im_buf_reset(&b);
    T_EQ_INT(im_buf_append(&b, "0123456789abcdef", 16), 0);    /* exactly the cap */
    T_EQ_INT(im_buf_printf(&b, "%s", "x"), -IM_ETOOBIG);         /* fits the storage, not the cap */
    T_EQ_STR(im_buf_data(&b), "0123456789abcdef");
    im_buf_reset(&b);
    T_EQ_INT(im_buf_printf(&b, "%s", "0123456789abcdefg"), -IM_ETOOBIG);
    T_EQ_STR(im_buf_data(&b), "");
    im_buf_free(&b);
}

T_TEST(consume_and_compact)
{
    struct im_buf b;

    im_buf_init(&b, 100);
    T_EQ_INT(im_buf_append(&b, "hello world", 11), 0);
    im_buf_consume(&b, 6);
    T_EQ_STR(im_buf_data(&b), "world");
    T_EQ_UINT(im_buf_len(&b), 5);
    /* the cap counts live bytes: 95 more fit once the consumed ones go */
    char fill[95];
    memset(fill, 'z', sizeof(fill));
    T_EQ_INT(im_buf_append(&b, fill, sizeof(fill)), 0);
    T_EQ_UINT(im_buf_len(&b), 100);
    T_ASSERT(!memcmp(im_buf_data(&b), "worldzzz", 8));
    T_EQ_UINT(b.head, 0);                               /* compacted */
    T_EQ_INT(im_buf_append(&b, "!", 1), -IM_ETOOBIG);
    im_buf_reset(&b);
    /* consuming everything empties the buffer */
    T_EQ_INT(im_buf_append(&b, "abc", 3), 0);
    im_buf_consume(&b, 3);
    T_EQ_UINT(im_buf_len(&b), 0);
    T_EQ_STR(im_buf_data(&b), "");
    T_EQ_UINT(b.head, 0);
    im_buf_free(&b);
}

T_TEST(direct_writes)
{
    struct im_buf b;
    size_t room;

    im_buf_init(&b, 10);
    char *at = im_buf_space(&b, &room);
    T_EQ_UINT(room, 0);                                 /* nothing reserved yet */
    T_ASSERT(at != NULL);
    T_EQ_INT(im_buf_reserve(&b, 4), 0);
    at = im_buf_space(&b, &room);
    T_ASSERT(room >= 4 && room <= 10);                  /* never past the cap */
    memcpy(at, "abcd", 4);
    im_buf_added(&b, 4);
    T_EQ_STR(im_buf_data(&b), "abcd");
    T_EQ_INT(im_buf_reserve(&b, 6), 0);
    at = im_buf_space(&b, &room);
    T_EQ_UINT(room, 6);
    T_EQ_INT(im_buf_reserve(&b, 7), -IM_ETOOBIG);
    im_buf_free(&b);
}

T_TEST(steal)
{
    struct im_buf b;
    size_t n = 99;

    im_buf_init(&b, 0);
    char *s = im_buf_steal(&b, &n);                     /* never stored: "" */
    T_ASSERT(s != NULL);
    T_EQ_STR(s, "");
    T_EQ_UINT(n, 0);
    free(s);
    T_EQ_INT(im_buf_puts(&b, "xxhello"), 0);
    im_buf_consume(&b, 2);
    s = im_buf_steal(&b, &n);
    T_EQ_STR(s, "hello");
    T_EQ_UINT(n, 5);
    T_ASSERT(b.p == NULL && im_buf_len(&b) == 0);
    free(s);
    im_buf_free(&b);
}

T_TEST(secret_storage)
{
    struct im_buf b;

    im_buf_init(&b, 0);
    b.secret = true;                    /* growth copies and wipes instead of realloc */
    for (int i = 0; i < 200; i++)
        T_EQ_INT(im_buf_puts(&b, "password"), 0);
    T_EQ_UINT(im_buf_len(&b), 1600);
    T_ASSERT(!memcmp(im_buf_data(&b) + 1592, "password", 8));
    im_buf_wipe(&b);
    T_EQ_UINT(im_buf_len(&b), 0);
    for (size_t i = 0; i < b.cap; i++)
        if (b.p[i])
            T_FAIL("byte %zu not wiped", i);
    im_buf_free(&b);
}

T_TEST(out_of_memory)
{
    struct im_buf b;

    im_buf_init(&b, SIZE_MAX / 2);
    T_EQ_INT(im_buf_append(&b, "a", 1), 0);
    T_EQ_INT(im_buf_reserve(&b, SIZE_MAX / 4), -ENOMEM);
    T_EQ_STR(im_buf_data(&b), "a");                     /* contents intact */
    T_EQ_INT(im_buf_append(&b, "b", 1), -ENOMEM);       /* sticky */
    im_buf_reset(&b);
    T_EQ_INT(im_buf_append(&b, "b", 1), 0);
    im_buf_free(&b);
}

T_MAIN(T_RUN(append_and_grow), T_RUN(printf_small_and_large), T_RUN(cap_refuses_cleanly),
       T_RUN(consume_and_compact), T_RUN(direct_writes), T_RUN(steal), T_RUN(secret_storage),
       T_RUN(out_of_memory))
