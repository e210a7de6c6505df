/*
 * cl_json.c - msgpack object -> JSON text and JSON text -> msgpack, for the
 * CLI tools (see cl_json.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "im_common.h"
#include "im_buf.h"
#include "cl_json.h"

#define WRITE_MAX_DEPTH 64

/* ---- writer ------------------------------------------------------------- */

/* The text is built in a struct im_buf: its errors are sticky, so the
 * writers append freely and cl_json_write() checks once. */

static int
write_str(struct im_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    if (n == 0) {                       /* msgpack-c: s may be NULL */
        im_buf_append(b, "\"\"", 2);
        return 0;
    }
    if (!im_utf8_valid(s, n))
        return -IM_EUTF8;
    im_buf_append(b, "\"", 1);
    size_t run = 0;                     /* start of the pending raw run */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        im_buf_append(b, s + run, i - run);
        run = i + 1;
        if (c == '"') {
            im_buf_append(b, "\\\"", 2);
        } else if (c == '\\') {
            im_buf_append(b, "\\\\", 2);
        } else {
            char u[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
            im_buf_append(b, u, sizeof(u));
        }
    }
    im_buf_append(b, s + run, n - run);
    im_buf_append(b, "\"", 1);
    return 0;
}

static void
write_base64(struct im_buf *b, const uint8_t *p, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    im_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char q[4] = { tab[v >> 18], tab[(v >> 12) & 63],
                      i + 1 < n ? tab[(v >> 6) & 63] : '=',
                      i + 2 < n ? tab[v & 63] : '=' };
        im_buf_append(b, q, sizeof(q));
    }
    im_buf_append(b, "\"", 1);
}

/* Shortest %g form that reads back as the same value (as float when f32). */
static int
write_float(struct im_buf *b, double d, bool f32)
{
    char s[40];

    if (!isfinite(d))
        return -IM_EINVAL;
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(s, sizeof(s), "%.*g", prec, d);
        double r = strtod(s, NULL);
        if (f32 ? (float)r == (float)d : r == d)
            break;
    }
    im_buf_puts(b, s);
    if (!strpbrk(s, ".eE"))
        im_buf_puts(b, ".0");               /* keep it a float when read back */
    return 0;
}

static int
write_obj(struct im_buf *b, const msgpack_object *o, int depth)
{
    char num[24];
    int rc;

    if (depth > WRITE_MAX_DEPTH)
        return -IM_EINVAL;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        im_buf_puts(b, "null");
        return 0;
    case MSGPACK_OBJECT_BOOLEAN:
        im_buf_puts(b, o->via.boolean ? "true" : "false");
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(num, sizeof(num), "%" PRIu64, o->via.u64);
        im_buf_puts(b, num);
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(num, sizeof(num), "%" PRId64, o->via.i64);
        im_buf_puts(b, num);
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return write_float(b, o->via.f64, o->type == MSGPACK_OBJECT_FLOAT32);
    case MSGPACK_OBJECT_STR:
        return write_str(b, o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        write_base64(b, (const uint8_t *)o->via.bin.ptr, o->via.bin.size);
        return 0;
    case MSGPACK_OBJECT_ARRAY:
        im_buf_append(b, "[", 1);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                im_buf_append(b, ",", 1);
            rc = write_obj(b, &o->via.array.ptr[i], depth + 1);
            if (rc)
                return rc;
        }
        im_buf_append(b, "]", 1);
        return 0;
    case MSGPACK_OBJECT_MAP:
        im_buf_append(b, "{", 1);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                return -IM_EINVAL;
            if (i)
                im_buf_append(b, ",", 1);
            rc = write_str(b, kv->key.via.str.ptr, kv->key.via.str.size);
            if (rc)
                return rc;
            im_buf_append(b, ":", 1);
            rc = write_obj(b, &kv->val, depth + 1);
            if (rc)
                return rc;
        }
        im_buf_append(b, "}", 1);
        return 0;
    default:                            /* ext */
        return -IM_EINVAL;
    }
}

int
cl_json_write(const msgpack_object *o, char **out, size_t *len)
{
    struct im_buf b;

    im_buf_init(&b, 0);
    *out = NULL;
    int rc = write_obj(&b, o, 0);
    if (!rc && !(*out = im_buf_steal(&b, len)))
        rc = b.err;
    im_buf_free(&b);
    return rc;
}

/* ---- parser ------------------------------------------------------------- */

struct key_span {
    size_t off;                 /* key bytes in e->buf */
    uint32_t len;
};

struct jparse {
    const char *p, *end;
    struct cl_enc *e;
    struct im_buf tmp;          /* decoded string / number scratch */
    struct key_span *keys;      /* names of the objects being parsed */
    size_t n_keys, keys_cap;
    int depth;
};

static int parse_value(struct jparse *j);

static void
skip_ws(struct jparse *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

/* n bytes of scratch (the previous contents are dropped), or NULL on OOM. */
static char *
tmp_room(struct jparse *j, size_t n)
{
    im_buf_reset(&j->tmp);
    return im_buf_reserve(&j->tmp, n) ? NULL : im_buf_data(&j->tmp);
}

static void
raw_write(struct cl_enc *e, const void *p, size_t n)
{
    e->pk.callback(e->pk.data, p, n);   /* aborts on OOM, as the packer does */
}

static int
hex4(const char *p, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (uint32_t)(c - 'A' + 10);
        else
            return -IM_EINVAL;
        *v = *v << 4 | d;
    }
    return 0;
}

static size_t
put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/*
 * Parse a string at j->p (the opening quote) and pack it as str.  The
 * decoded form is never longer than the source, so the scratch buffer is
 * sized to the rest of the text up to the closing quote.
 */
static int
parse_string(struct jparse *j)
{
    const char *s = ++j->p, *q = s;

    while (q < j->end && *q != '"') {
        if (*q == '\\' && q + 1 < j->end)
            q++;
        q++;
    }
    if (q >= j->end)
        return -IM_EINVAL;
    char *t = tmp_room(j, (size_t)(q - s) + 1);
    if (!t)
        return -ENOMEM;

    size_t n = 0;
    const char *p = s;
    while (p < q) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20)
            return -IM_EINVAL;
        if (c != '\\') {
            t[n++] = (char)c;
            p++;
            continue;
        }
        c = (unsigned char)p[1];
        p += 2;
        switch (c) {
        case '"':  t[n++] = '"'; break;
        case '\\': t[n++] = '\\'; break;
        case '/':  t[n++] = '/'; break;
        case 'b':  t[n++] = '\b'; break;
        case 'f':  t[n++] = '\f'; break;
        case 'n':  t[n++] = '\n'; break;
        case 'r':  t[n++] = '\r'; break;
        case 't':  t[n++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (q - p < 4 || hex4(p, &cp))
                return -IM_EINVAL;
            p += 4;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return -IM_EINVAL;      /* lone low surrogate */
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (q - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) ||
                    lo < 0xdc00 || lo > 0xdfff)
                    return -IM_EINVAL;  /* high surrogate without its pair */
                p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            n += put_utf8(t + n, cp);
            break;
        }
        default:
            return -IM_EINVAL;
        }
    }
    if (n && !im_utf8_valid(t, n))
        return -IM_EUTF8;
    j->p = q + 1;
    cl_pack_strn(j->e, t, n);
    return 0;
}

static int
parse_number(struct jparse *j)
{
    const char *s = j->p, *p = s;
    bool neg = false, is_int = true;

    if (p < j->end && *p == '-') {
        neg = true;
        p++;
    }
    if (p >= j->end || *p < '0' || *p > '9')
        return -IM_EINVAL;
    if (*p == '0') {
        p++;
    } else {
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    }
    const char *int_end = p;
    if (p < j->end && *p == '.') {
        is_int = false;
        p++;
        if (p >= j->end || *p < '0' || *p > '9')
            return -IM_EINVAL;
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < j->end && (*p == 'e' || *p == 'E')) {
        is_int = false;
        p++;
        if (p < j->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= j->end || *p < '0' || *p > '9')
            return -IM_EINVAL;
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    }
    j->p = p;

    if (is_int) {
        uint64_t v = 0;
        for (const char *d = s + neg; d < int_end; d++) {
            unsigned dig = (unsigned)(*d - '0');
            if (v > (UINT64_MAX - dig) / 10)
                return -IM_EINVAL;
            v = v * 10 + dig;
        }
        if (!neg) {
            msgpack_pack_uint64(&j->e->pk, v);
        } else {
            if (v > (uint64_t)INT64_MAX + 1)
                return -IM_EINVAL;
            msgpack_pack_int64(&j->e->pk, v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v);
        }
        return 0;
    }
    size_t n = (size_t)(p - s);
    char *t = tmp_room(j, n + 1);
    if (!t)
        return -ENOMEM;
    memcpy(t, s, n);
    t[n] = '\0';
    double d = strtod(t, NULL);
    if (!isfinite(d))
        return -IM_EINVAL;
    msgpack_pack_double(&j->e->pk, d);
    return 0;
}

static int
parse_literal(struct jparse *j, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n))
        return -IM_EINVAL;
    j->p += n;
    return 0;
}

/* Rewrite the 5-byte placeholder header at off as the shortest header for
 * count elements, sliding what follows down. */
static void
fix_header(struct cl_enc *e, size_t off, bool map, uint32_t count)
{
    uint8_t h[5];
    size_t hl;

    if (count < 16) {
        h[0] = (uint8_t)((map ? 0x80 : 0x90) | count);
        hl = 1;
    } else if (count < 65536) {
        h[0] = map ? 0xde : 0xdc;
        h[1] = (uint8_t)(count >> 8);
        h[2] = (uint8_t)count;
        hl = 3;
    } else {
        h[0] = map ? 0xdf : 0xdd;
        h[1] = (uint8_t)(count >> 24);
        h[2] = (uint8_t)(count >> 16);
        h[3] = (uint8_t)(count >> 8);
        h[4] = (uint8_t)count;
        hl = 5;
    }
    char *base = e->buf.data + off;
    if (hl < 5)
        memmove(base + hl, base + 5, e->buf.size - off - 5);
    memcpy(base, h, hl);
    e->buf.size -= 5 - hl;
}

static int
span_cmp(const void *a, const void *b, void *arg)
{
    const struct key_span *x = a, *y = b;
    const char *base = arg;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(base + x->off, base + y->off, x->len);
}

static int
push_key(struct jparse *j, size_t off, uint32_t len)
{
    if (j->n_keys == j->keys_cap) {
        size_t cap = j->keys_cap ? 2 * j->keys_cap : 32;
        struct key_span *k = realloc(j->keys, cap * sizeof(*k));
        if (!k)
            return -ENOMEM;
        j->keys = k;
        j->keys_cap = cap;
    }
    j->keys[j->n_keys++] = (struct key_span){ off, len };
    return 0;
}

/* Parse an array or object at j->p ('[' or '{'). */
static int
parse_container(struct jparse *j, bool map)
{
    static const uint8_t placeholder[5];
    const char close = map ? '}' : ']';
    size_t off = j->e->buf.size, mark = j->n_keys;
    uint32_t count = 0;
    int rc;

    if (++j->depth > CL_JSON_MAX_DEPTH)
        return -IM_EINVAL;
    j->p++;
    raw_write(j->e, placeholder, sizeof(placeholder));
    skip_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
    } else {
        for (;;) {
            skip_ws(j);
            if (map) {
                if (j->p >= j->end || *j->p != '"')
                    return -IM_EINVAL;
                size_t before = j->e->buf.size;
                rc = parse_string(j);
                if (rc)
                    return rc;
                /* the str header is 1..5 bytes; the name's bytes end the buffer */
                size_t klen = j->e->buf.size - before;
                uint8_t h = (uint8_t)j->e->buf.data[before];
                klen -= h <= 0xbf ? 1 : h == 0xd9 ? 2 : h == 0xda ? 3 : 5;
                rc = push_key(j, j->e->buf.size - klen, (uint32_t)klen);
                if (rc)
                    return rc;
                skip_ws(j);
                if (j->p >= j->end || *j->p != ':')
                    return -IM_EINVAL;
                j->p++;
                skip_ws(j);
            }
            rc = parse_value(j);
            if (rc)
                return rc;
            if (count == UINT32_MAX)
                return -IM_EINVAL;
            count++;
            skip_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->end && *j->p == close) {
                j->p++;
                break;
            }
            return -IM_EINVAL;
        }
    }
    if (map && j->n_keys - mark > 1) {
        struct key_span *k = j->keys + mark;
        size_t n = j->n_keys - mark;
        qsort_r(k, n, sizeof(*k), span_cmp, j->e->buf.data);
        for (size_t i = 1; i < n; i++)
            if (!span_cmp(&k[i - 1], &k[i], j->e->buf.data))
                return -IM_EINVAL;
    }
    j->n_keys = mark;
    fix_header(j->e, off, map, count);
    j->depth--;
    return 0;
}

static int
parse_value(struct jparse *j)
{
    skip_ws(j);
    if (j->p >= j->end)
        return -IM_EINVAL;
    switch (*j->p) {
    case '{':
        return parse_container(j, true);
    case '[':
        return parse_container(j, false);
    case '"':
        return parse_string(j);
    case 't':
        if (parse_literal(j, "true"))
            return -IM_EINVAL;
        msgpack_pack_true(&j->e->pk);
        return 0;
    case 'f':
        if (parse_literal(j, "false"))
            return -IM_EINVAL;
        msgpack_pack_false(&j->e->pk);
        return 0;
    case 'n':
        if (parse_literal(j, "null"))
            return -IM_EINVAL;
        msgpack_pack_nil(&j->e->pk);
        return 0;
    default:
        return parse_number(j);
    }
}

int
cl_json_parse(const char *text, size_t len, struct cl_enc *e)
{
    struct jparse j = { .p = text, .end = text + len, .e = e };
    size_t saved = e->buf.size;

    int rc = parse_value(&j);
    if (!rc) {
        skip_ws(&j);
        if (j.p != j.end)
            rc = -IM_EINVAL;
    }
    if (rc)
        e->buf.size = saved;
    im_buf_free(&j.tmp);
    free(j.keys);
    return rc;
}
