/*
 * cl_frame.c - client protocol v1 framing, decoding and encoding on
 * msgpack-c (see cl_frame.h and docs/CLIENT-PROTOCOL.md).
 *
 * Decoding is two steps: a structural pre-scan of the payload (well formed,
 * exactly one object, every container count plausible for the bytes left),
 * then msgpack_unpack() into the cl_msg's zone.  The pre-scan bounds what
 * msgpack-c allocates: it sizes arrays and maps from their header counts, so
 * a 5-byte "array of 2^32 elements" would otherwise ask for ~100 GB.
 *
 * Duplicate keys: a root map with a repeated key does not decode (the frame
 * is then answered with bad_request without id and the connection closed);
 * cl_get_map() rejects a nested map with a repeated key as an invalid field.
 */
#include <errno.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>

#include "im_common.h"
#include "cl_frame.h"

long
cl_frame_split(const uint8_t *p, size_t n, const uint8_t **body, uint32_t *body_len)
{
    if (n < 4)
        return -EAGAIN;
    uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    if (len == 0)
        return -IM_EINVAL;
    if (len > CL_FRAME_MAX)
        return -IM_ETOOBIG;
    if (n - 4 < len)
        return -EAGAIN;
    *body = p + 4;
    *body_len = len;
    return (long)len + 4;
}

/* ---- decoding ---------------------------------------------------------- */

static uint32_t
be_n(const uint8_t *p, unsigned n)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* msgpack-c unpacks at most 32 nested containers (MSGPACK_EMBED_STACK_SIZE)
 * and reports more as an out-of-memory error: refuse them here instead. */
#define CL_MSG_MAX_DEPTH 32

/*
 * Check that [p, p+n) is exactly one well-formed msgpack object, nested at
 * most CL_MSG_MAX_DEPTH containers deep, and that no container claims more
 * elements than there are bytes left (each element takes at least one
 * byte).  Returns 0 or -IM_EINVAL.
 */
static int
mp_scan(const uint8_t *p, size_t n)
{
    size_t pos = 0, rem[CL_MSG_MAX_DEPTH + 1];     /* objects left per open level */
    unsigned top = 0;

    rem[0] = 1;
    while (top > 0 || rem[0] > 0) {
        if (pos >= n)
            return -IM_EINVAL;
        uint8_t c = p[pos++];
        size_t skip = 0, items = 0;     /* payload bytes; child objects */
        unsigned lenb = 0;              /* size of a length field that follows */
        int kind = 0;                   /* 0 scalar/str, 1 array, 2 map, 3 ext */

        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            /* fixint, nil, bool */
        } else if (c <= 0x8f) {
            items = 2u * (c & 0x0f);
        } else if (c <= 0x9f) {
            items = c & 0x0f;
        } else if (c <= 0xbf) {
            skip = c & 0x1f;
        } else {
            switch (c) {
            case 0xc4: lenb = 1; break;                         /* bin 8/16/32 */
            case 0xc5: lenb = 2; break;
            case 0xc6: lenb = 4; break;
            case 0xc7: lenb = 1; kind = 3; break;               /* ext 8/16/32 */
            case 0xc8: lenb = 2; kind = 3; break;
            case 0xc9: lenb = 4; kind = 3; break;
            case 0xca: skip = 4; break;                         /* float 32/64 */
            case 0xcb: skip = 8; break;
            case 0xcc: case 0xd0: skip = 1; break;              /* (u)int 8..64 */
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;                         /* fixext 1..16 */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xd9: lenb = 1; break;                         /* str 8/16/32 */
            case 0xda: lenb = 2; break;
            case 0xdb: lenb = 4; break;
            case 0xdc: lenb = 2; kind = 1; break;               /* array 16/32 */
            case 0xdd: lenb = 4; kind = 1; break;
            case 0xde: lenb = 2; kind = 2; break;               /* map 16/32 */
            case 0xdf: lenb = 4; kind = 2; break;
            default: return -IM_EINVAL;                         /* 0xc1 */
            }
        }
        if (lenb) {
            if (n - pos < lenb)
                return -IM_EINVAL;
            size_t v = be_n(p + pos, lenb);
            pos += lenb;
            if (kind == 1)
                items = v;
            else if (kind == 2)
                items = 2 * v;
            else
                skip = v + (kind == 3);         /* ext: type byte + data */
        }
        if (n - pos < skip || n - pos - skip < items)
            return -IM_EINVAL;
        pos += skip;
        rem[top]--;
        if (kind == 1 || kind == 2 || (c >= 0x80 && c <= 0x9f)) {
            if (top == CL_MSG_MAX_DEPTH)
                return -IM_EINVAL;
            rem[++top] = items;
        }
        while (top > 0 && rem[top] == 0)
            top--;
    }
    return pos == n ? 0 : -IM_EINVAL;
}

static const char why_oom[] = "out of memory";

/* msgpack-c gives an empty str a NULL pointer: never hand that on. */
static bool
utf8_ok(const char *p, size_t n)
{
    return n == 0 || im_utf8_valid(p, n);
}

static int
key_cmp(const msgpack_object_kv *x, const msgpack_object_kv *y)
{
    uint32_t lx = x->key.via.str.size, ly = y->key.via.str.size;
    if (lx != ly)
        return lx < ly ? -1 : 1;
    return lx ? memcmp(x->key.via.str.ptr, y->key.via.str.ptr, lx) : 0;
}

static int
kv_cmp(const void *a, const void *b)
{
    return key_cmp(*(const msgpack_object_kv *const *)a, *(const msgpack_object_kv *const *)b);
}

/*
 * Is o a map whose keys are all valid UTF-8 str, none repeated?  Returns
 * NULL when it is, else the phrase saying why not (why_oom on OOM).
 */
static const char *
map_check(const msgpack_object *o)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return "must be a map";
    uint32_t n = o->via.map.size;
    const msgpack_object_kv *kv = o->via.map.ptr;
    for (uint32_t i = 0; i < n; i++) {
        if (kv[i].key.type != MSGPACK_OBJECT_STR)
            return "keys must be strings";
        if (!utf8_ok(kv[i].key.via.str.ptr, kv[i].key.via.str.size))
            return "keys must be valid UTF-8";
    }
    if (n < 2)
        return NULL;
    if (n <= 8) {
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = i + 1; j < n; j++)
                if (!key_cmp(&kv[i], &kv[j]))
                    return "duplicate key";
        return NULL;
    }
    const msgpack_object_kv **idx = malloc(n * sizeof(*idx));
    if (!idx)
        return why_oom;
    for (uint32_t i = 0; i < n; i++)
        idx[i] = &kv[i];
    qsort(idx, n, sizeof(*idx), kv_cmp);
    const char *why = NULL;
    for (uint32_t i = 1; i < n && !why; i++)
        if (!kv_cmp(&idx[i - 1], &idx[i]))
            why = "duplicate key";
    free(idx);
    return why;
}

static const msgpack_object *
map_find(const msgpack_object *map, const char *key)
{
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            (klen == 0 || !memcmp(k->via.str.ptr, key, klen)))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/*
 * Each thread keeps one cleared zone (and one encoder buffer, below) for the
 * next frame, so decoding and encoding a small frame allocates nothing.  A
 * thread's spares are freed when it exits (pthread key destructor).
 */
struct cl_spares {
    msgpack_zone zone;
    bool have_zone;
    char *buf;                      /* an sbuffer's storage, size 0 */
    size_t buf_alloc;
    bool have_buf;
};

#define CL_SPARE_BUF_MAX    (64u * 1024)    /* larger encoder buffers are not kept */

static pthread_key_t spares_key;
static pthread_once_t spares_once = PTHREAD_ONCE_INIT;

static void
spares_free(void *p)
{
    struct cl_spares *sp = p;
    if (sp->have_zone)
        msgpack_zone_destroy(&sp->zone);
    free(sp->buf);
    free(sp);
}

static void
spares_key_make(void)
{
    (void)pthread_key_create(&spares_key, spares_free);
}

/* The calling thread's spares, or NULL (then nothing is kept). */
static struct cl_spares *
spares(void)
{
    (void)pthread_once(&spares_once, spares_key_make);
    struct cl_spares *sp = pthread_getspecific(spares_key);
    if (!sp && (sp = calloc(1, sizeof(*sp))) && pthread_setspecific(spares_key, sp)) {
        free(sp);
        sp = NULL;
    }
    return sp;
}

static bool
zone_take(msgpack_zone *z)
{
    struct cl_spares *sp = spares();
    if (sp && sp->have_zone) {
        *z = sp->zone;
        sp->have_zone = false;
        return true;
    }
    return msgpack_zone_init(z, MSGPACK_ZONE_CHUNK_SIZE);
}

static void
zone_give(msgpack_zone *z)
{
    struct cl_spares *sp = spares();
    if (sp && !sp->have_zone) {
        msgpack_zone_clear(z);
        sp->zone = *z;
        sp->have_zone = true;
        return;
    }
    msgpack_zone_destroy(z);
}

int
cl_msg_decode(struct cl_msg *m, const uint8_t *body, uint32_t len)
{
    int rc = -IM_EINVAL;

    memset(m, 0, sizeof(*m));
    if (len == 0 || len > CL_FRAME_MAX || mp_scan(body, len))
        return -IM_EINVAL;
    if (!zone_take(&m->zone))
        return -ENOMEM;
    /* msgpack-c points str/bin objects into the input: keep a copy in the
     * zone so views outlive the caller's receive buffer. */
    char *copy = msgpack_zone_malloc(&m->zone, len);
    if (!copy) {
        rc = -ENOMEM;
        goto fail;
    }
    memcpy(copy, body, len);
    m->raw = copy;
    m->raw_len = len;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack(copy, len, &off, &m->zone, &m->root);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        rc = -ENOMEM;
        goto fail;
    }
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len)
        goto fail;
    const char *why = map_check(&m->root);
    if (why) {
        if (why == why_oom)
            rc = -ENOMEM;
        goto fail;
    }
    const msgpack_object *o = map_find(&m->root, "op");
    if (o && o->type == MSGPACK_OBJECT_STR && utf8_ok(o->via.str.ptr, o->via.str.size)) {
        m->op.p = o->via.str.size ? o->via.str.ptr : "";
        m->op.len = o->via.str.size;
    }
    o = map_find(&m->root, "id");
    if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        m->has_id = true;
        m->id = o->via.u64;
    }
    return 0;
fail:
    zone_give(&m->zone);
    memset(m, 0, sizeof(*m));
    return rc;
}

void
cl_msg_free(struct cl_msg *m)
{
    zone_give(&m->zone);
    memset(m, 0, sizeof(*m));
}

void
cl_msg_wipe(struct cl_msg *m)
{
    if (m->raw)
        im_wipe(m->raw, m->raw_len);
}

/* ---- getters ------------------------------------------------------------ */

/* Look key up in map: 0 with *v, -IM_ENOTFOUND, or -IM_EINVAL (map not a map). */
static int
lookup(const msgpack_object *map, const char *key, const msgpack_object **v, const char **why)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP) {
        *why = "must be a map";
        return -IM_EINVAL;
    }
    *v = map_find(map, key);
    return *v ? 0 : -IM_ENOTFOUND;
}

static const char *
too_long(uint32_t max)
{
    switch (max) {
    case 0:     return "must be empty";
    case 64:    return "longer than 64 bytes";
    case 255:   return "longer than 255 bytes";
    case 261:   return "longer than 261 bytes";
    case 1024:  return "longer than 1024 bytes";
    case 65536: return "longer than 65536 bytes";
    default:    return "too long";
    }
}

static const char *
too_short(uint32_t min)
{
    switch (min) {
    case 1:     return "must not be empty";
    case 3:     return "shorter than 3 bytes";
    default:    return "too short";
    }
}

int
cl_get_str(const msgpack_object *map, const char *key, uint32_t minlen, uint32_t maxlen,
           struct im_str *out, const char **why)
{
    const msgpack_object *v;
    int rc = lookup(map, key, &v, why);
    if (rc)
        return rc;
    if (v->type != MSGPACK_OBJECT_STR) {
        *why = "must be a string";
        return -IM_EINVAL;
    }
    uint32_t n = v->via.str.size;
    if (!utf8_ok(v->via.str.ptr, n)) {
        *why = "must be valid UTF-8";
        return -IM_EINVAL;
    }
    if (n < minlen) {
        *why = too_short(minlen);
        return -IM_EINVAL;
    }
    if (n > maxlen) {
        *why = too_long(maxlen);
        return -IM_EINVAL;
    }
    out->p = n ? v->via.str.ptr : "";
    out->len = n;
    return 0;
}

int
cl_get_text(const msgpack_object *map, const char *key, uint32_t minlen, uint32_t maxlen,
            struct im_str *out, const char **why)
{
    int rc = cl_get_str(map, key, minlen, maxlen, out, why);
    if (rc == 0 && out->len && memchr(out->p, '\0', out->len)) {
        *why = "must not contain NUL";
        return -IM_EINVAL;
    }
    return rc;
}

int
cl_get_uint(const msgpack_object *map, const char *key, uint64_t *out, const char **why)
{
    const msgpack_object *v;
    int rc = lookup(map, key, &v, why);
    if (rc)
        return rc;
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *why = "must be an unsigned integer";
        return -IM_EINVAL;
    }
    *out = v->via.u64;
    return 0;
}

int
cl_get_bool(const msgpack_object *map, const char *key, bool *out, const char **why)
{
    const msgpack_object *v;
    int rc = lookup(map, key, &v, why);
    if (rc)
        return rc;
    if (v->type != MSGPACK_OBJECT_BOOLEAN) {
        *why = "must be a boolean";
        return -IM_EINVAL;
    }
    *out = v->via.boolean;
    return 0;
}

int
cl_get_map(const msgpack_object *map, const char *key, const msgpack_object **out, const char **why)
{
    const msgpack_object *v;
    int rc = lookup(map, key, &v, why);
    if (rc)
        return rc;
    const char *w = map_check(v);
    if (w) {
        *why = w;
        return w == why_oom ? -ENOMEM : -IM_EINVAL;
    }
    *out = v;
    return 0;
}

int
cl_get_array(const msgpack_object *map, const char *key, const msgpack_object **out, const char **why)
{
    const msgpack_object *v;
    int rc = lookup(map, key, &v, why);
    if (rc)
        return rc;
    if (v->type != MSGPACK_OBJECT_ARRAY) {
        *why = "must be an array";
        return -IM_EINVAL;
    }
    *out = v;
    return 0;
}

char *
cl_strdup(struct im_str s)
{
    char *d = malloc((size_t)s.len + 1);
    if (!d)
        return NULL;
    if (s.len)
        memcpy(d, s.p, s.len);
    d[s.len] = '\0';
    return d;
}

int
cl_frame_decode(struct cl_msg *m, const uint8_t *p, size_t n)
{
    if (!p || n < 5 || n - 4 > CL_FRAME_MAX)
        return -IM_EINVAL;
    uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    if (len != n - 4)
        return -IM_EINVAL;
    return cl_msg_decode(m, p + 4, len);
}

bool
cl_str_eq(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           (n == 0 || !memcmp(o->via.str.ptr, s, n));
}

bool
cl_view_eq(struct im_str v, const char *s)
{
    size_t n = strlen(s);
    return v.len == n && (n == 0 || !memcmp(v.p, s, n));
}

/* ---- encoding ----------------------------------------------------------- */

/* A write that runs out of memory returns -1, which the packer ignores: the
 * encoder remembers it, stops writing, and cl_enc_finish() fails, so a frame
 * is never silently truncated.  Writes past the frame
 * limit stop early too: an oversized frame never holds more than the limit. */
static int
enc_write(void *data, const char *buf, size_t len)
{
    struct cl_enc *e = data;
    if (e->failed)
        return -1;
    if (!len)           /* an empty list's items: buf may be NULL, which memcpy may not take */
        return 0;
    if (e->buf.size + len > 4 + (size_t)CL_FRAME_MAX + 1) {
        e->failed = e->too_big = true;
        return -1;
    }
    if (e->buf.alloc - e->buf.size < len) {
        /* Grow by hand, not realloc: the old buffer is wiped before it is
         * freed (a frame may carry a password). */
        size_t cap = e->buf.alloc ? e->buf.alloc * 2 : MSGPACK_SBUFFER_INIT_SIZE;
        while (cap < e->buf.size + len)
            cap *= 2;
        char *nb = malloc(cap);
        if (!nb) {
            e->failed = true;
            return -1;
        }
        if (e->buf.size)
            memcpy(nb, e->buf.data, e->buf.size);
        if (e->buf.data) {
            im_wipe(e->buf.data, e->buf.size);
            free(e->buf.data);
        }
        e->buf.data = nb;
        e->buf.alloc = cap;
    }
    memcpy(e->buf.data + e->buf.size, buf, len);
    e->buf.size += len;
    return 0;
}

void
cl_enc_init(struct cl_enc *e)
{
    static const char zero[4];

    msgpack_sbuffer_init(&e->buf);
    struct cl_spares *sp = spares();
    if (sp && sp->have_buf) {
        e->buf.data = sp->buf;
        e->buf.alloc = sp->buf_alloc;
        sp->buf = NULL;
        sp->have_buf = false;
    }
    e->failed = e->too_big = e->secret = false;
    enc_write(e, zero, sizeof(zero));
    msgpack_packer_init(&e->pk, e, enc_write);
}

void
cl_enc_raw(struct cl_enc *e, const void *p, size_t n)
{
    enc_write(e, p, n);
}

const uint8_t *
cl_enc_finish(struct cl_enc *e, size_t *len)
{
    if (e->failed || !e->buf.data)
        return NULL;
    size_t n = e->buf.size - 4;
    if (n > CL_FRAME_MAX) {
        e->too_big = true;
        return NULL;
    }
    uint8_t *p = (uint8_t *)e->buf.data;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    *len = e->buf.size;
    return p;
}

size_t
cl_enc_len(const struct cl_enc *e)
{
    return e->buf.size >= 4 ? e->buf.size - 4 : 0;
}

void
cl_enc_cut(struct cl_enc *e, size_t len)
{
    if (!e->buf.data || len > cl_enc_len(e))
        return;
    e->buf.size = 4 + len;
    if (e->too_big)
        e->failed = e->too_big = false;
}

uint8_t *
cl_enc_release(struct cl_enc *e, size_t *len)
{
    if (!cl_enc_finish(e, len))
        return NULL;
    return (uint8_t *)msgpack_sbuffer_release(&e->buf);
}

void
cl_enc_free(struct cl_enc *e)
{
    struct cl_spares *sp;
    if (e->secret && e->buf.data)
        im_wipe(e->buf.data, e->buf.size);
    if (e->buf.data && e->buf.alloc <= CL_SPARE_BUF_MAX && (sp = spares()) && !sp->have_buf) {
        sp->buf = e->buf.data;
        sp->buf_alloc = e->buf.alloc;
        sp->have_buf = true;
    } else {
        msgpack_sbuffer_destroy(&e->buf);
    }
    memset(&e->buf, 0, sizeof(e->buf));
}

void
cl_pack_strn(struct cl_enc *e, const char *s, size_t n)
{
    msgpack_pack_str(&e->pk, n);
    if (n)
        msgpack_pack_str_body(&e->pk, s, n);
}

void
cl_pack_str(struct cl_enc *e, const char *s)
{
    cl_pack_strn(e, s, strlen(s));
}

void
cl_pack_key(struct cl_enc *e, const char *key)
{
    cl_pack_str(e, key);
}

void
cl_pack_kstr(struct cl_enc *e, const char *key, const char *val)
{
    cl_pack_str(e, key);
    cl_pack_str(e, val);
}

void
cl_pack_kstrn(struct cl_enc *e, const char *key, const char *val, size_t n)
{
    cl_pack_str(e, key);
    cl_pack_strn(e, val, n);
}

void
cl_pack_kuint(struct cl_enc *e, const char *key, uint64_t val)
{
    cl_pack_str(e, key);
    msgpack_pack_uint64(&e->pk, val);
}

void
cl_pack_kbool(struct cl_enc *e, const char *key, bool val)
{
    cl_pack_str(e, key);
    if (val)
        msgpack_pack_true(&e->pk);
    else
        msgpack_pack_false(&e->pk);
}

int
cl_build_ok(uint64_t id, uint8_t **out, size_t *len)
{
    struct cl_enc e;

    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 2);
    cl_pack_kstr(&e, "op", "ok");
    cl_pack_kuint(&e, "id", id);
    *out = cl_enc_release(&e, len);
    cl_enc_free(&e);
    return *out ? 0 : -ENOMEM;
}

int
cl_build_error(bool has_id, uint64_t id, const char *code, const char *msg,
               uint8_t **out, size_t *len)
{
    struct cl_enc e;

    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, has_id ? 4 : 3);
    cl_pack_kstr(&e, "op", "error");
    if (has_id)
        cl_pack_kuint(&e, "id", id);
    cl_pack_kstr(&e, "code", code);
    cl_pack_kstr(&e, "message", msg);
    *out = cl_enc_release(&e, len);
    cl_enc_free(&e);
    return *out ? 0 : -ENOMEM;
}
