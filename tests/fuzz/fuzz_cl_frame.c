/*
 * fuzz_cl_frame.c - libFuzzer target for the client protocol codec.
 *
 * Input starting with a 0x00 byte (every valid frame does: L <= 1 MiB) is a
 * client byte stream: each frame found by cl_frame_split() is decoded, every
 * getter is called on every key (recursively into nested maps and arrays;
 * cl_get_text() must refuse exactly the strings with a NUL),
 * and the message is written as JSON, which must parse back and re-write to
 * the same text.  Any other input is JSON text for cl_json_parse(), whose
 * output must unpack, write as JSON and parse again to the same bytes.
 */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "im_common.h"
#include "client/cl_frame.h"
#include "client/cl_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static void exercise_map(const msgpack_object *map, int depth);

static void
exercise_value(const msgpack_object *o, int depth)
{
    if (depth > 40)
        return;
    if (o->type == MSGPACK_OBJECT_MAP) {
        exercise_map(o, depth + 1);
    } else if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++)
            exercise_value(&o->via.array.ptr[i], depth + 1);
    }
}

static void
exercise_key(const msgpack_object *map, const char *key, int depth)
{
    struct im_str s;
    uint64_t u;
    bool b;
    const msgpack_object *o;
    const char *why;
    int rc;

    why = NULL;
    rc = cl_get_str(map, key, 0, UINT32_MAX, &s, &why);
    CHECK(rc == 0 || rc == -IM_EINVAL || rc == -IM_ENOTFOUND);
    CHECK(rc != -IM_EINVAL || why);
    if (rc == 0) {
        CHECK(s.p != NULL);
        CHECK(s.len == 0 || im_utf8_valid(s.p, s.len));
        char *d = cl_strdup(s);
        CHECK(d && strlen(d) <= s.len);
        free(d);
        /* text for a network: refused exactly when it holds a NUL */
        bool nul = s.len && memchr(s.p, 0, s.len);
        struct im_str t;
        rc = cl_get_text(map, key, 0, UINT32_MAX, &t, &why);
        CHECK(nul ? rc == -IM_EINVAL && why : rc == 0 && t.len == s.len);
        rc = cl_get_str(map, key, 1, 64, &s, &why);
        CHECK(rc == 0 ? s.len >= 1 && s.len <= 64 : rc == -IM_EINVAL);
    }
    rc = cl_get_uint(map, key, &u, &why);
    CHECK(rc == 0 || rc == -IM_EINVAL || rc == -IM_ENOTFOUND);
    rc = cl_get_bool(map, key, &b, &why);
    CHECK(rc == 0 || rc == -IM_EINVAL || rc == -IM_ENOTFOUND);
    rc = cl_get_array(map, key, &o, &why);
    if (rc == 0) {
        CHECK(o->type == MSGPACK_OBJECT_ARRAY);
        exercise_value(o, depth);
    }
    rc = cl_get_map(map, key, &o, &why);
    CHECK(rc == 0 || rc == -IM_EINVAL || rc == -IM_ENOTFOUND);
    if (rc == 0) {
        CHECK(o->type == MSGPACK_OBJECT_MAP);
        exercise_map(o, depth + 1);
    }
}

static void
exercise_map(const msgpack_object *map, int depth)
{
    if (depth > 40 || map->type != MSGPACK_OBJECT_MAP)
        return;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            continue;
        /* getters take a C string: a key with a NUL is looked up truncated */
        char *key = cl_strdup((struct im_str){ k->via.str.size ? k->via.str.ptr : "", k->via.str.size });
        CHECK(key);
        exercise_key(map, key, depth);
        free(key);
        CHECK(!cl_str_eq(k, "") || k->via.str.size == 0);
    }
}

/* JSON text -> msgpack bytes (malloc'd), or NULL with *rc. */
static uint8_t *
json_pack(const char *text, size_t len, size_t *n, int *rc)
{
    struct cl_enc e;

    cl_enc_init(&e);
    *rc = cl_json_parse(text, len, &e);
    uint8_t *out = NULL;
    if (*rc == 0) {
        *n = e.buf.size - 4;
        out = malloc(*n);
        CHECK(out);
        memcpy(out, e.buf.data + 4, *n);
    } else {
        CHECK(e.buf.size == 4);
    }
    cl_enc_free(&e);
    return out;
}

/* msgpack bytes produced by cl_json_parse -> JSON text (malloc'd). */
static char *
mp_json(const uint8_t *mp, size_t n, size_t *len)
{
    msgpack_zone z;
    msgpack_object o;
    size_t off = 0;
    char *json = NULL;

    CHECK(msgpack_zone_init(&z, 4096));
    CHECK(msgpack_unpack((const char *)mp, n, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS);
    CHECK(off == n);
    CHECK(cl_json_write(&o, &json, len) == 0);
    msgpack_zone_destroy(&z);
    return json;
}

static void
fuzz_stream(const uint8_t *p, size_t n)
{
    for (;;) {
        const uint8_t *body;
        uint32_t blen;
        long r = cl_frame_split(p, n, &body, &blen);
        if (r < 0) {
            CHECK(r == -EAGAIN || r == -IM_EINVAL || r == -IM_ETOOBIG);
            return;
        }
        CHECK((size_t)r == 4 + (size_t)blen && (size_t)r <= n && blen >= 1 && blen <= CL_FRAME_MAX);
        p += r;
        n -= (size_t)r;

        struct cl_msg m;
        int rc = cl_msg_decode(&m, body, blen);
        CHECK(rc == 0 || rc == -IM_EINVAL);
        if (rc)
            continue;
        CHECK(m.root.type == MSGPACK_OBJECT_MAP);
        uint64_t id;
        const char *why;
        rc = cl_get_uint(&m.root, "id", &id, &why);
        CHECK(m.has_id == (rc == 0) && (!m.has_id || id == m.id));
        struct im_str op;
        rc = cl_get_str(&m.root, "op", 0, UINT32_MAX, &op, &why);
        CHECK(rc == 0 ? op.len == m.op.len : m.op.len == 0);
        exercise_map(&m.root, 0);

        char *json;
        size_t jlen;
        rc = cl_json_write(&m.root, &json, &jlen);
        CHECK(rc == 0 || rc == -IM_EINVAL || rc == -IM_EUTF8);
        if (rc == 0) {
            CHECK(strlen(json) == jlen);
            size_t mn;
            uint8_t *mp = json_pack(json, jlen, &mn, &rc);
            /* only a repeated name in a nested map keeps it from parsing */
            CHECK(rc == 0 || rc == -IM_EINVAL);
            if (mp) {
                size_t j2len;
                char *j2 = mp_json(mp, mn, &j2len);
                CHECK(j2len == jlen && !memcmp(j2, json, jlen));
                free(j2);
                free(mp);
            }
            free(json);
        }
        cl_msg_free(&m);
    }
}

static void
fuzz_json(const uint8_t *data, size_t size)
{
    size_t n1, n2, jlen;
    int rc;
    uint8_t *mp1 = json_pack((const char *)data, size, &n1, &rc);
    CHECK(rc == 0 || rc == -IM_EINVAL || rc == -IM_EUTF8);
    if (!mp1)
        return;
    char *json = mp_json(mp1, n1, &jlen);
    uint8_t *mp2 = json_pack(json, jlen, &n2, &rc);
    CHECK(rc == 0 && n1 == n2 && !memcmp(mp1, mp2, n1));
    free(mp2);
    free(json);
    free(mp1);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 0 && data[0] == 0)
        fuzz_stream(data, size);
    else
        fuzz_json(data, size);
    return 0;
}
