/*
 * test_cl_frame.c - client protocol v1 framing, decoding, getters, encoding.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "im_common.h"
#include "client/cl_frame.h"

/* Decode a payload given as a byte array literal. */
#define DECODE(m, ...) ({ static const uint8_t b_[] = { __VA_ARGS__ }; \
    cl_msg_decode((m), b_, sizeof(b_)); })

static void
put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

T_TEST(split_every_prefix)
{
    /* two frames back to back: {"op":"ok","id":7} then {"op":"ping","id":8} */
    static const uint8_t s[] = {
        0, 0, 0, 11, 0x82, 0xa2, 'o', 'p', 0xa2, 'o', 'k', 0xa2, 'i', 'd', 7,
        0, 0, 0, 13, 0x82, 0xa2, 'o', 'p', 0xa4, 'p', 'i', 'n', 'g', 0xa2, 'i', 'd', 8,
    };
    const uint8_t *body;
    uint32_t blen;

    for (size_t n = 0; n < 15; n++)
        T_EQ_INT(cl_frame_split(s, n, &body, &blen), -EAGAIN);
    for (size_t n = 15; n <= sizeof(s); n++) {
        body = NULL;
        T_EQ_INT(cl_frame_split(s, n, &body, &blen), 15);
        T_ASSERT(body == s + 4);
        T_EQ_UINT(blen, 11);
    }
    for (size_t n = 0; n < 17; n++)
        T_EQ_INT(cl_frame_split(s + 15, n, &body, &blen), -EAGAIN);
    T_EQ_INT(cl_frame_split(s + 15, 17, &body, &blen), 17);
    T_EQ_UINT(blen, 13);
}

T_TEST(split_length_limits)
{
    uint8_t h[4];
    const uint8_t *body;
    uint32_t blen;

    put_be32(h, 0);
    T_EQ_INT(cl_frame_split(h, 4, &body, &blen), -IM_EINVAL);
    put_be32(h, CL_FRAME_MAX + 1);
    T_EQ_INT(cl_frame_split(h, 4, &body, &blen), -IM_ETOOBIG);
    put_be32(h, 0xffffffffu);
    T_EQ_INT(cl_frame_split(h, 4, &body, &blen), -IM_ETOOBIG);
    put_be32(h, 0x80000000u);
    T_EQ_INT(cl_frame_split(h, 4, &body, &blen), -IM_ETOOBIG);
    /* a length error is reported as soon as the 4 bytes are there */
    put_be32(h, 0);
    T_EQ_INT(cl_frame_split(h, 3, &body, &blen), -EAGAIN);

    uint8_t *big = calloc(1, 4 + CL_FRAME_MAX + 1);
    T_ASSERT(big);
    put_be32(big, CL_FRAME_MAX);
    long r1 = cl_frame_split(big, 4, &body, &blen);
    long r2 = cl_frame_split(big, 4 + CL_FRAME_MAX - 1, &body, &blen);
    long r3 = cl_frame_split(big, 4 + CL_FRAME_MAX + 1, &body, &blen);
    free(big);
    T_EQ_INT(r1, -EAGAIN);
    T_EQ_INT(r2, -EAGAIN);
    T_EQ_INT(r3, 4 + CL_FRAME_MAX);
    T_EQ_UINT(blen, CL_FRAME_MAX);

    put_be32(h, 1);
    T_EQ_INT(cl_frame_split(h, 4, &body, &blen), -EAGAIN);
}

T_TEST(decode_rejects)
{
    struct cl_msg m;

    T_EQ_INT(cl_msg_decode(&m, (const uint8_t *)"", 0), -IM_EINVAL);
    /* not a map: array, str, int, nil */
    T_EQ_INT(DECODE(&m, 0x91, 0x01), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0xa2, 'o', 'p'), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0x05), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0xc0), -IM_EINVAL);
    /* trailing bytes after a good map */
    T_EQ_INT(DECODE(&m, 0x80, 0xc0), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0x81, 0xa1, 'a', 0x01, 0x80), -IM_EINVAL);
    /* two maps */
    T_EQ_INT(DECODE(&m, 0x80, 0x80), -IM_EINVAL);
    /* truncated */
    T_EQ_INT(DECODE(&m, 0x81, 0xa1, 'a'), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0x81, 0xa2, 'a'), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0x81, 0xa1, 'a', 0xcd, 0x01), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0xde, 0x00), -IM_EINVAL);
    /* non-str keys: int, bin, nil */
    T_EQ_INT(DECODE(&m, 0x81, 0x01, 0x01), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0x81, 0xc4, 0x01, 'a', 0x01), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0x82, 0xa1, 'a', 0x01, 0xc0, 0x01), -IM_EINVAL);
    /* key not UTF-8 */
    T_EQ_INT(DECODE(&m, 0x81, 0xa1, 0xff, 0x01), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0x81, 0xa2, 0xc0, 0x80, 0x01), -IM_EINVAL);
    /* duplicate key (small map and a sorted-path map of 9 keys) */
    T_EQ_INT(DECODE(&m, 0x82, 0xa2, 'o', 'p', 0x01, 0xa2, 'o', 'p', 0x02), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0x89, 0xa1, 'a', 1, 0xa1, 'b', 1, 0xa1, 'c', 1, 0xa1, 'd', 1, 0xa1, 'e', 1,
                    0xa1, 'f', 1, 0xa1, 'g', 1, 0xa1, 'h', 1, 0xa1, 'c', 1), -IM_EINVAL);
    /* the never-used byte */
    T_EQ_INT(DECODE(&m, 0x81, 0xa1, 'a', 0xc1), -IM_EINVAL);
    /* counts far beyond the bytes present (must not allocate for them) */
    T_EQ_INT(DECODE(&m, 0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff, 0xff), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0xdf, 0x7f, 0xff, 0xff, 0xff, 0xa1, 'a', 0x01), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0x81, 0xa1, 'a', 0xdb, 0xff, 0xff, 0xff, 0xff), -IM_EINVAL);
    T_EQ_INT(DECODE(&m, 0x81, 0xa1, 'a', 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01), -IM_EINVAL);

    /* nesting beyond what msgpack-c unpacks */
    uint8_t deep[400];
    size_t n = 0;
    deep[n++] = 0x81;
    deep[n++] = 0xa1;
    deep[n++] = 'a';
    for (int i = 0; i < 300; i++)
        deep[n++] = 0x91;
    deep[n++] = 0x01;
    T_EQ_INT(cl_msg_decode(&m, deep, (uint32_t)n), -IM_EINVAL);

    /* 32 levels (root map + 31 arrays) decode; 33 do not, even empty */
    for (int k = 31; k <= 32; k++) {
        for (int last = 0; last < 2; last++) {
            n = 3;
            for (int i = 0; i < k; i++)
                deep[n++] = (i == k - 1 && last) ? 0x90 : 0x91;
            if (!last)
                deep[n++] = 0x01;
            int rc = cl_msg_decode(&m, deep, (uint32_t)n);
            T_EQ_INT(rc, k == 31 ? 0 : -IM_EINVAL);
            if (!rc)
                cl_msg_free(&m);
        }
    }
}

T_TEST(decode_op_id)
{
    struct cl_msg m;

    /* {"op":"ping","id":42} */
    T_EQ_INT(DECODE(&m, 0x82, 0xa2, 'o', 'p', 0xa4, 'p', 'i', 'n', 'g', 0xa2, 'i', 'd', 42), 0);
    T_ASSERT(cl_view_eq(m.op, "ping"));
    T_ASSERT(m.has_id);
    T_EQ_UINT(m.id, 42);
    T_EQ_INT(m.root.type, MSGPACK_OBJECT_MAP);
    cl_msg_free(&m);

    /* id as uint64 max, key order swapped, unknown key ignored */
    T_EQ_INT(DECODE(&m, 0x83, 0xa1, 'x', 0xc0, 0xa2, 'i', 'd', 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff,
                    0xff, 0xff, 0xff, 0xa2, 'o', 'p', 0xa1, 'q'), 0);
    T_ASSERT(m.has_id);
    T_EQ_UINT(m.id, UINT64_MAX);
    T_ASSERT(cl_view_eq(m.op, "q"));
    cl_msg_free(&m);

    /* negative id, float id, str id: has_id false */
    T_EQ_INT(DECODE(&m, 0x82, 0xa2, 'o', 'p', 0xa1, 'q', 0xa2, 'i', 'd', 0xff), 0);
    T_ASSERT(!m.has_id);
    cl_msg_free(&m);
    T_EQ_INT(DECODE(&m, 0x82, 0xa2, 'o', 'p', 0xa1, 'q', 0xa2, 'i', 'd',
                    0xcb, 0x40, 0x14, 0, 0, 0, 0, 0, 0), 0);
    T_ASSERT(!m.has_id);
    cl_msg_free(&m);
    T_EQ_INT(DECODE(&m, 0x82, 0xa2, 'o', 'p', 0xa1, 'q', 0xa2, 'i', 'd', 0xa1, '1'), 0);
    T_ASSERT(!m.has_id);
    cl_msg_free(&m);

    /* op missing, op bin, op not UTF-8: op.len 0 */
    T_EQ_INT(DECODE(&m, 0x81, 0xa2, 'i', 'd', 0x01), 0);
    T_EQ_INT(m.op.len, 0);
    T_ASSERT(m.has_id);
    cl_msg_free(&m);
    T_EQ_INT(DECODE(&m, 0x81, 0xa2, 'o', 'p', 0xc4, 0x02, 'o', 'k'), 0);
    T_EQ_INT(m.op.len, 0);
    cl_msg_free(&m);
    T_EQ_INT(DECODE(&m, 0x81, 0xa2, 'o', 'p', 0xa1, 0xfe), 0);
    T_EQ_INT(m.op.len, 0);
    cl_msg_free(&m);

    /* empty map decodes */
    T_EQ_INT(DECODE(&m, 0x80), 0);
    T_EQ_INT(m.op.len, 0);
    T_ASSERT(!m.has_id);
    cl_msg_free(&m);
}

T_TEST(views_outlive_input)
{
    static const uint8_t src[] = { 0x81, 0xa4, 'b', 'o', 'd', 'y', 0xa5, 'h', 'e', 'l', 'l', 'o' };
    uint8_t *copy = malloc(sizeof(src));
    struct cl_msg m;
    struct im_str s;
    const char *why;

    T_ASSERT(copy);
    memcpy(copy, src, sizeof(src));
    int rc = cl_msg_decode(&m, copy, sizeof(src));
    memset(copy, 'X', sizeof(src));
    free(copy);
    T_EQ_INT(rc, 0);
    T_EQ_INT(cl_get_str(&m.root, "body", 1, 10, &s, &why), 0);
    T_ASSERT(cl_view_eq(s, "hello"));
    cl_msg_free(&m);
}

/* {"s":"héllo","e":"","b":bin"ab","bad":"\xff","i":5,"n":-1,"f":1.5,
 *  "t":true,"m":{"k":1},"a":[1,2],"z":nil} */
static const uint8_t getter_msg[] = {
    0x8b,
    0xa1, 's', 0xa6, 'h', 0xc3, 0xa9, 'l', 'l', 'o',
    0xa1, 'e', 0xa0,
    0xa1, 'b', 0xc4, 0x02, 'a', 'b',
    0xa3, 'b', 'a', 'd', 0xa1, 0xff,
    0xa1, 'i', 0x05,
    0xa1, 'n', 0xff,
    0xa1, 'f', 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0,
    0xa1, 't', 0xc3,
    0xa1, 'm', 0x81, 0xa1, 'k', 0x01,
    0xa1, 'a', 0x92, 0x01, 0x02,
    0xa1, 'z', 0xc0,
};

T_TEST(getters)
{
    struct cl_msg m;
    struct im_str s;
    uint64_t u;
    bool b;
    const msgpack_object *o;
    const char *why;

    T_EQ_INT(cl_msg_decode(&m, getter_msg, sizeof(getter_msg)), 0);
    const msgpack_object *r = &m.root;

    T_EQ_INT(cl_get_str(r, "s", 1, 64, &s, &why), 0);
    T_EQ_INT(s.len, 6);
    T_EQ_MEM(s.p, "h\xc3\xa9llo", 6);
    T_EQ_INT(cl_get_str(r, "e", 0, 64, &s, &why), 0);
    T_EQ_INT(s.len, 0);
    T_ASSERT(s.p != NULL);              /* never NULL, even when empty */
    why = NULL;
    T_EQ_INT(cl_get_str(r, "e", 1, 64, &s, &why), -IM_EINVAL);
    T_EQ_STR(why, "must not be empty");
    T_EQ_INT(cl_get_str(r, "s", 1, 5, &s, &why), -IM_EINVAL);
    T_EQ_STR(why, "too long");
    T_EQ_INT(cl_get_str(r, "s", 7, 64, &s, &why), -IM_EINVAL);
    T_EQ_INT(cl_get_str(r, "s", 6, 6, &s, &why), 0);
    T_EQ_INT(cl_get_str(r, "b", 0, 64, &s, &why), -IM_EINVAL);
    T_EQ_STR(why, "must be a string");
    T_EQ_INT(cl_get_str(r, "bad", 0, 64, &s, &why), -IM_EINVAL);
    T_EQ_STR(why, "must be valid UTF-8");
    T_EQ_INT(cl_get_str(r, "i", 0, 64, &s, &why), -IM_EINVAL);
    T_EQ_INT(cl_get_str(r, "z", 0, 64, &s, &why), -IM_EINVAL);
    T_EQ_INT(cl_get_str(r, "missing", 0, 64, &s, &why), -IM_ENOTFOUND);
    T_EQ_INT(cl_get_str(r, "S", 0, 64, &s, &why), -IM_ENOTFOUND);

    T_EQ_INT(cl_get_uint(r, "i", &u, &why), 0);
    T_EQ_UINT(u, 5);
    T_EQ_INT(cl_get_uint(r, "n", &u, &why), -IM_EINVAL);
    T_EQ_STR(why, "must be an unsigned integer");
    T_EQ_INT(cl_get_uint(r, "f", &u, &why), -IM_EINVAL);
    T_EQ_INT(cl_get_uint(r, "s", &u, &why), -IM_EINVAL);
    T_EQ_INT(cl_get_uint(r, "t", &u, &why), -IM_EINVAL);
    T_EQ_INT(cl_get_uint(r, "nope", &u, &why), -IM_ENOTFOUND);

    T_EQ_INT(cl_get_bool(r, "t", &b, &why), 0);
    T_ASSERT(b);
    T_EQ_INT(cl_get_bool(r, "i", &b, &why), -IM_EINVAL);
    T_EQ_STR(why, "must be a boolean");
    T_EQ_INT(cl_get_bool(r, "nope", &b, &why), -IM_ENOTFOUND);

    T_EQ_INT(cl_get_map(r, "m", &o, &why), 0);
    T_EQ_INT(cl_get_uint(o, "k", &u, &why), 0);
    T_EQ_UINT(u, 1);
    T_EQ_INT(cl_get_map(r, "a", &o, &why), -IM_EINVAL);
    T_EQ_STR(why, "must be a map");
    T_EQ_INT(cl_get_map(r, "nope", &o, &why), -IM_ENOTFOUND);

    T_EQ_INT(cl_get_array(r, "a", &o, &why), 0);
    T_EQ_INT(o->via.array.size, 2);
    /* a getter on something that is not a map */
    T_EQ_INT(cl_get_uint(o, "k", &u, &why), -IM_EINVAL);
    T_EQ_STR(why, "must be a map");
    T_EQ_INT(cl_get_array(r, "m", &o, &why), -IM_EINVAL);
    T_EQ_STR(why, "must be an array");

    cl_msg_free(&m);
}

T_TEST(getter_phrases_and_limits)
{
    struct cl_enc e;
    struct cl_msg m;
    struct im_str s;
    const char *why;
    size_t len;
    char buf[1100];

    memset(buf, 'a', sizeof(buf));
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 5);
    cl_pack_kstrn(&e, "l64", buf, 64);
    cl_pack_kstrn(&e, "l65", buf, 65);
    cl_pack_kstrn(&e, "l256", buf, 256);
    cl_pack_kstrn(&e, "l1025", buf, 1025);
    cl_pack_kstrn(&e, "l2", buf, 2);
    const uint8_t *f = cl_enc_finish(&e, &len);
    T_ASSERT(f);
    T_EQ_INT(cl_msg_decode(&m, f + 4, (uint32_t)(len - 4)), 0);
    cl_enc_free(&e);

    T_EQ_INT(cl_get_str(&m.root, "l64", 1, 64, &s, &why), 0);
    T_EQ_INT(s.len, 64);
    T_EQ_INT(cl_get_str(&m.root, "l65", 1, 64, &s, &why), -IM_EINVAL);
    T_EQ_STR(why, "longer than 64 bytes");
    T_EQ_INT(cl_get_str(&m.root, "l256", 1, 255, &s, &why), -IM_EINVAL);
    T_EQ_STR(why, "longer than 255 bytes");
    T_EQ_INT(cl_get_str(&m.root, "l1025", 1, 1024, &s, &why), -IM_EINVAL);
    T_EQ_STR(why, "longer than 1024 bytes");
    T_EQ_INT(cl_get_str(&m.root, "l1025", 0, 1025, &s, &why), 0);
    T_EQ_INT(cl_get_str(&m.root, "l2", 3, 261, &s, &why), -IM_EINVAL);
    T_EQ_STR(why, "shorter than 3 bytes");
    cl_msg_free(&m);
}

T_TEST(nested_map_checks)
{
    struct cl_msg m;
    const msgpack_object *o;
    const char *why;

    /* {"o":{1:2}} decodes (only the root's keys are checked) ... */
    T_EQ_INT(DECODE(&m, 0x81, 0xa1, 'o', 0x81, 0x01, 0x02), 0);
    /* ... but the nested map is an invalid field */
    T_EQ_INT(cl_get_map(&m.root, "o", &o, &why), -IM_EINVAL);
    T_EQ_STR(why, "keys must be strings");
    cl_msg_free(&m);

    /* {"o":{"k":1,"k":2}} */
    T_EQ_INT(DECODE(&m, 0x81, 0xa1, 'o', 0x82, 0xa1, 'k', 0x01, 0xa1, 'k', 0x02), 0);
    T_EQ_INT(cl_get_map(&m.root, "o", &o, &why), -IM_EINVAL);
    T_EQ_STR(why, "duplicate key");
    cl_msg_free(&m);

    /* nested map with a key that is not UTF-8 */
    T_EQ_INT(DECODE(&m, 0x81, 0xa1, 'o', 0x81, 0xa1, 0x80, 0x01), 0);
    T_EQ_INT(cl_get_map(&m.root, "o", &o, &why), -IM_EINVAL);
    cl_msg_free(&m);
}

T_TEST(large_map_no_duplicates)
{
    struct cl_enc e;
    struct cl_msg m;
    size_t len;
    char key[16];

    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 5000);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        cl_pack_kuint(&e, key, (uint64_t)i);
    }
    const uint8_t *f = cl_enc_finish(&e, &len);
    T_ASSERT(f);
    T_EQ_INT(cl_msg_decode(&m, f + 4, (uint32_t)(len - 4)), 0);
    uint64_t u;
    const char *why;
    T_EQ_INT(cl_get_uint(&m.root, "k4999", &u, &why), 0);
    T_EQ_UINT(u, 4999);
    cl_msg_free(&m);
    cl_enc_free(&e);

    /* same with one duplicate at the far end */
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 5000);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i == 4999 ? 17 : i);
        cl_pack_kuint(&e, key, (uint64_t)i);
    }
    f = cl_enc_finish(&e, &len);
    T_ASSERT(f);
    T_EQ_INT(cl_msg_decode(&m, f + 4, (uint32_t)(len - 4)), -IM_EINVAL);
    cl_enc_free(&e);
}

T_TEST(encode_decode_round_trip)
{
    struct cl_enc e;
    struct cl_msg m;
    struct im_str s;
    uint64_t u;
    bool b;
    const msgpack_object *o;
    const char *why;
    size_t len;

    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 8);
    cl_pack_kstr(&e, "op", "message");
    cl_pack_kuint(&e, "seq", 1ull << 40);
    cl_pack_kuint(&e, "account", 3);
    cl_pack_kstrn(&e, "from", "bob@a.testXXX", 10);
    cl_pack_kstr(&e, "body", "h\xc3\xa9 \xf0\x9f\x98\x80");
    cl_pack_kbool(&e, "flag", false);
    cl_pack_key(&e, "to");
    msgpack_pack_map(&e.pk, 1);
    cl_pack_kuint(&e, "contact", 0);
    cl_pack_key(&e, "groups");
    msgpack_pack_array(&e.pk, 2);
    cl_pack_str(&e, "");
    cl_pack_str(&e, "Friends");

    const uint8_t *f = cl_enc_finish(&e, &len);
    T_ASSERT(f);
    const uint8_t *body;
    uint32_t blen;
    T_EQ_INT(cl_frame_split(f, len, &body, &blen), (long)len);
    T_EQ_INT(cl_msg_decode(&m, body, blen), 0);
    T_ASSERT(cl_view_eq(m.op, "message"));
    T_ASSERT(!m.has_id);
    T_EQ_INT(cl_get_uint(&m.root, "seq", &u, &why), 0);
    T_EQ_UINT(u, 1ull << 40);
    T_EQ_INT(cl_get_str(&m.root, "from", 1, 255, &s, &why), 0);
    T_ASSERT(cl_view_eq(s, "bob@a.test"));
    char *dup = cl_strdup(s);
    T_EQ_STR(dup, "bob@a.test");
    free(dup);
    T_EQ_INT(cl_get_str(&m.root, "body", 1, 65536, &s, &why), 0);
    T_ASSERT(cl_view_eq(s, "h\xc3\xa9 \xf0\x9f\x98\x80"));
    T_EQ_INT(cl_get_bool(&m.root, "flag", &b, &why), 0);
    T_ASSERT(!b);
    T_EQ_INT(cl_get_map(&m.root, "to", &o, &why), 0);
    T_EQ_INT(cl_get_uint(o, "contact", &u, &why), 0);
    T_EQ_UINT(u, 0);
    T_EQ_INT(cl_get_array(&m.root, "groups", &o, &why), 0);
    T_EQ_INT(o->via.array.size, 2);
    T_ASSERT(cl_str_eq(&o->via.array.ptr[0], ""));
    T_ASSERT(cl_str_eq(&o->via.array.ptr[1], "Friends"));
    T_ASSERT(!cl_str_eq(&o->via.array.ptr[1], "Friend"));
    cl_msg_free(&m);

    /* release hands the buffer over; the encoder can then be freed */
    size_t rlen;
    uint8_t *rel = cl_enc_release(&e, &rlen);
    T_ASSERT(rel);
    T_EQ_UINT(rlen, len);
    cl_enc_free(&e);
    T_EQ_INT(cl_frame_split(rel, rlen, &body, &blen), (long)rlen);
    free(rel);
}

T_TEST(encode_frame_limit)
{
    struct cl_enc e;
    size_t len;
    char *big = malloc(CL_FRAME_MAX);
    T_ASSERT(big);
    memset(big, 'x', CL_FRAME_MAX);

    /* payload exactly 1 MiB: fixmap(1) + fixstr "b" + str32 header + body */
    size_t body = CL_FRAME_MAX - 1 - 2 - 5;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 1);
    cl_pack_kstrn(&e, "b", big, body);
    const uint8_t *f = cl_enc_finish(&e, &len);
    T_ASSERT(f);
    T_EQ_UINT(len, 4 + CL_FRAME_MAX);
    struct cl_msg m;
    T_EQ_INT(cl_msg_decode(&m, f + 4, CL_FRAME_MAX), 0);
    cl_msg_free(&m);
    cl_enc_free(&e);

    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 1);
    cl_pack_kstrn(&e, "b", big, body + 1);
    T_ASSERT(cl_enc_finish(&e, &len) == NULL);
    T_ASSERT(cl_enc_release(&e, &len) == NULL);
    cl_enc_free(&e);

    /* writing on and on past the limit never holds more than the limit */
    cl_enc_init(&e);
    msgpack_pack_array(&e.pk, 8);
    for (int i = 0; i < 8; i++)
        cl_pack_strn(&e, big, CL_FRAME_MAX / 2);
    T_ASSERT(e.failed);
    T_ASSERT(e.buf.size <= 4 + CL_FRAME_MAX + 1);
    T_ASSERT(cl_enc_finish(&e, &len) == NULL);
    cl_enc_free(&e);
    free(big);
}

T_TEST(build_ok_exact)
{
    uint8_t *f;
    size_t len;
    static const uint8_t ok7[] = {
        0, 0, 0, 11, 0x82, 0xa2, 'o', 'p', 0xa2, 'o', 'k', 0xa2, 'i', 'd', 0x07,
    };
    static const uint8_t ok300[] = {
        0, 0, 0, 13, 0x82, 0xa2, 'o', 'p', 0xa2, 'o', 'k', 0xa2, 'i', 'd', 0xcd, 0x01, 0x2c,
    };
    static const uint8_t okmax[] = {
        0, 0, 0, 19, 0x82, 0xa2, 'o', 'p', 0xa2, 'o', 'k', 0xa2, 'i', 'd',
        0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    };

    T_EQ_INT(cl_build_ok(7, &f, &len), 0);
    T_EQ_UINT(len, sizeof(ok7));
    T_EQ_MEM(f, ok7, sizeof(ok7));
    free(f);
    T_EQ_INT(cl_build_ok(300, &f, &len), 0);
    T_EQ_UINT(len, sizeof(ok300));
    T_EQ_MEM(f, ok300, sizeof(ok300));
    free(f);
    T_EQ_INT(cl_build_ok(UINT64_MAX, &f, &len), 0);
    T_EQ_UINT(len, sizeof(okmax));
    T_EQ_MEM(f, okmax, sizeof(okmax));
    free(f);
}

T_TEST(build_error_exact)
{
    uint8_t *f;
    size_t len;
    /* {"op":"error","id":5,"code":"not_found","message":"no such account"} */
    static const uint8_t with_id[] = {
        0, 0, 0, 53, 0x84,
        0xa2, 'o', 'p', 0xa5, 'e', 'r', 'r', 'o', 'r',
        0xa2, 'i', 'd', 0x05,
        0xa4, 'c', 'o', 'd', 'e', 0xa9, 'n', 'o', 't', '_', 'f', 'o', 'u', 'n', 'd',
        0xa7, 'm', 'e', 's', 's', 'a', 'g', 'e',
        0xaf, 'n', 'o', ' ', 's', 'u', 'c', 'h', ' ', 'a', 'c', 'c', 'o', 'u', 'n', 't',
    };
    /* {"op":"error","code":"bad_request","message":""} */
    static const uint8_t no_id[] = {
        0, 0, 0, 36, 0x83,
        0xa2, 'o', 'p', 0xa5, 'e', 'r', 'r', 'o', 'r',
        0xa4, 'c', 'o', 'd', 'e', 0xab, 'b', 'a', 'd', '_', 'r', 'e', 'q', 'u', 'e', 's', 't',
        0xa7, 'm', 'e', 's', 's', 'a', 'g', 'e', 0xa0,
    };

    T_EQ_INT(cl_build_error(true, 5, CL_ERR_NOT_FOUND, "no such account", &f, &len), 0);
    T_EQ_UINT(len, sizeof(with_id));
    T_EQ_MEM(f, with_id, sizeof(with_id));
    free(f);
    T_EQ_INT(cl_build_error(false, 99, CL_ERR_BAD_REQUEST, "", &f, &len), 0);
    T_EQ_UINT(len, sizeof(no_id));
    T_EQ_MEM(f, no_id, sizeof(no_id));
    free(f);
}

T_TEST(str_encodings)
{
    /* str8/str16/str32 headers all decode as str; 31/32-byte boundary */
    struct cl_enc e;
    struct cl_msg m;
    struct im_str s;
    const char *why;
    size_t len;
    char buf[70000];

    memset(buf, 'q', sizeof(buf));
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 4);
    cl_pack_kstrn(&e, "a", buf, 31);
    cl_pack_kstrn(&e, "b", buf, 32);
    cl_pack_kstrn(&e, "c", buf, 300);
    cl_pack_kstrn(&e, "d", buf, 65537);
    const uint8_t *f = cl_enc_finish(&e, &len);
    T_ASSERT(f);
    T_EQ_UINT(f[7], 0xbf);              /* fixstr 31 */
    T_EQ_UINT(f[41], 0xd9);     /* str8 */
    T_EQ_INT(cl_msg_decode(&m, f + 4, (uint32_t)(len - 4)), 0);
    T_EQ_INT(cl_get_str(&m.root, "a", 1, 64, &s, &why), 0);
    T_EQ_INT(s.len, 31);
    T_EQ_INT(cl_get_str(&m.root, "b", 1, 64, &s, &why), 0);
    T_EQ_INT(s.len, 32);
    T_EQ_INT(cl_get_str(&m.root, "c", 1, 300, &s, &why), 0);
    T_EQ_INT(s.len, 300);
    T_EQ_INT(cl_get_str(&m.root, "d", 1, 65536, &s, &why), -IM_EINVAL);
    T_EQ_STR(why, "longer than 65536 bytes");
    T_EQ_INT(cl_get_str(&m.root, "d", 1, 65537, &s, &why), 0);
    cl_msg_free(&m);
    cl_enc_free(&e);
}

T_MAIN(T_RUN(split_every_prefix), T_RUN(split_length_limits), T_RUN(decode_rejects),
       T_RUN(decode_op_id), T_RUN(views_outlive_input), T_RUN(getters),
       T_RUN(getter_phrases_and_limits), T_RUN(nested_map_checks), T_RUN(large_map_no_duplicates),
       T_RUN(encode_decode_round_trip), T_RUN(encode_frame_limit), T_RUN(build_ok_exact),
       T_RUN(build_error_exact), T_RUN(str_encodings))
