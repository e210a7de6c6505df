/*
 * cp_store.c - the controlplane's LMDB store (DESIGN 5).  See cp_store.h for
 * the contracts; this file holds the record encodings and the LMDB mapping.
 *
 * Encodings (all integers big-endian):
 *   key uid.k          8 + 8 bytes
 *   user v1            u8 1 | u64 uid | u32 flags | u64 next_seq | u64 max_pushed |
 *                      u64 next_unified | u64 created_ms | u16 len + hash
 *   account v1         u8 1 | 5 x (u16 len + str: network login server tls name) |
 *                      u32 len + options | u32 len + sealed
 *   outbox v1          u8 1 | u64 uid | blob
 *   meta               u64 value
 * A record that is short, long, of an unknown version or with an over-long
 * field decodes to -IM_ECORRUPT.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "im_common.h"
#include "cp_store.h"

#define ST_MAPSIZE_DEFAULT  ((size_t)1 << 30)
#define ST_MAXDBS           16
#define ST_REC_V1           1

struct cp_store {
    MDB_env *env;
    MDB_dbi users, uids, accounts, contacts, unified, queue, outbox, meta;
    /* written by the committing thread, read by cp_store_stats() anywhere */
    _Atomic uint64_t commit_cpu_ns;     /* CPU time the committing thread spent in them */
};

struct cp_txn {
    struct cp_store *s;
    MDB_txn *txn;
    bool write;
    int err;            /* first fatal error of a write txn: commit refuses */
};

/* ---- codes ------------------------------------------------------------ */

static int st_code(int mrc)
{
    switch (mrc) {
    case MDB_SUCCESS:           return 0;
    case MDB_NOTFOUND:          return -IM_ENOTFOUND;
    case MDB_KEYEXIST:          return -IM_EEXIST;
    case MDB_MAP_FULL:          return -ENOSPC;
    case MDB_TXN_FULL:          return -IM_ETOOBIG;
    case MDB_BAD_VALSIZE:       return -IM_ETOOBIG;
    case MDB_PAGE_NOTFOUND:
    case MDB_CORRUPTED:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE:      return -IM_ECORRUPT;
    case MDB_PANIC:             return -EIO;
    case MDB_READERS_FULL:
    case MDB_MAP_RESIZED:       return -EBUSY;
    case MDB_DBS_FULL:
    case MDB_TLS_FULL:
    case MDB_CURSOR_FULL:
    case MDB_PAGE_FULL:         return -IM_ELIMIT;
    case MDB_BAD_RSLOT:
    case MDB_BAD_TXN:
    case MDB_BAD_DBI:           return -IM_EINVAL;
    default:                    return mrc > 0 ? -mrc : -EIO;
    }
}

const char *cp_store_strerror(int rc)
{
    switch (rc) {
    case 0:             return "success";
    case -ENOSPC:       return "store full: the LMDB map size is reached or the disk is full "
                               "(the transaction was not written)";
    case -IM_ECORRUPT:  return "store record or environment is corrupt";
    case -ENOTSUP:      return "data directory written by a newer imfused (schema too new)";
    case -IM_ENOTFOUND: return "not found in the store";
    case -IM_EEXIST:    return "already in the store";
    case -IM_ETOOBIG:   return "record or transaction too big for the store";
    case -IM_ELIMIT:    return "store limit reached (LMDB internal table full)";
    case -IM_EINVAL:    return "invalid store request";
    case -EBUSY:        return "store busy (reader table full or map resized by another process)";
    default:            return im_strerror(rc);
    }
}

/* A failure that leaves a write transaction unusable (or half-done) poisons it. */
static int st_fail(struct cp_txn *t, int rc)
{
    if (rc && t->write && !t->err && rc != -IM_ENOTFOUND && rc != -IM_EEXIST)
        t->err = rc;
    return rc;
}

/* Same, for a step after the first change of a multi-step operation: any
 * failure, even not-found, poisons the transaction so nothing half-done commits. */
static int st_fail_hard(struct cp_txn *t, int rc)
{
    if (rc && t->write && !t->err)
        t->err = rc;
    return rc;
}

/* ---- keys and encodings ---------------------------------------------- */

static void be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

struct st_key16 {
    uint8_t b[16];
};

static MDB_val key16(struct st_key16 *k, uint64_t uid, uint64_t sub)
{
    be64_put(k->b, uid);
    be64_put(k->b + 8, sub);
    return (MDB_val){ .mv_size = sizeof(k->b), .mv_data = k->b };
}

struct st_enc {
    uint8_t *p;
    size_t off;
};

static void enc_u8(struct st_enc *e, uint8_t v) { e->p[e->off++] = v; }

static void enc_u16(struct st_enc *e, uint16_t v)
{
    e->p[e->off++] = (uint8_t)(v >> 8);
    e->p[e->off++] = (uint8_t)v;
}

static void enc_u32(struct st_enc *e, uint32_t v)
{
    for (int i = 3; i >= 0; i--)
        e->p[e->off++] = (uint8_t)(v >> (8 * i));
}

static void enc_u64(struct st_enc *e, uint64_t v)
{
    be64_put(e->p + e->off, v);
    e->off += 8;
}

static void enc_mem(struct st_enc *e, const void *p, size_t n)
{
    if (n)
        memcpy(e->p + e->off, p, n);
    e->off += n;
}

struct st_dec {
    const uint8_t *p;
    size_t n, off;
    bool bad;
};

static bool dec_need(struct st_dec *d, size_t n)
{
    if (d->bad || d->n - d->off < n) {
        d->bad = true;
        return false;
    }
    return true;
}

static uint8_t dec_u8(struct st_dec *d)
{
    return dec_need(d, 1) ? d->p[d->off++] : 0;
}

static uint32_t dec_uN(struct st_dec *d, int bytes)
{
    uint32_t v = 0;
    if (!dec_need(d, (size_t)bytes))
        return 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | d->p[d->off++];
    return v;
}

static uint64_t dec_u64(struct st_dec *d)
{
    if (!dec_need(d, 8))
        return 0;
    uint64_t v = be64_get(d->p + d->off);
    d->off += 8;
    return v;
}

/* A u16-counted string into dst (NUL-terminated); too long for dst is corrupt. */
static void dec_str(struct st_dec *d, char *dst, size_t dstsz)
{
    size_t len = dec_uN(d, 2);
    if (d->bad || len >= dstsz || !dec_need(d, len)) {
        d->bad = true;
        dst[0] = '\0';
        return;
    }
    memcpy(dst, d->p + d->off, len);
    dst[len] = '\0';
    d->off += len;
}

/* A u32-counted byte string into a malloc'd copy (NULL when empty).
 * 0, or -ENOMEM; a short record sets d->bad. */
static int dec_bytes(struct st_dec *d, uint8_t **out, size_t *len)
{
    size_t n = dec_uN(d, 4);
    *out = NULL;
    *len = 0;
    if (d->bad || !dec_need(d, n) || n == 0)
        return 0;
    if (!(*out = malloc(n)))
        return -ENOMEM;
    memcpy(*out, d->p + d->off, n);
    d->off += n;
    *len = n;
    return 0;
}

/* ---- environment ------------------------------------------------------ */

#define WHY(...) do { if (why && whysz) snprintf(why, whysz, __VA_ARGS__); } while (0)

static int st_open_dbs(struct cp_store *s, MDB_txn *txn)
{
    static const struct {
        const char *name;
        size_t off;
    } dbs[] = {
        { "users",    offsetof(struct cp_store, users) },
        { "uids",     offsetof(struct cp_store, uids) },
        { "accounts", offsetof(struct cp_store, accounts) },
        { "contacts", offsetof(struct cp_store, contacts) },
        { "unified",  offsetof(struct cp_store, unified) },
        { "queue",    offsetof(struct cp_store, queue) },
        { "outbox",   offsetof(struct cp_store, outbox) },
        { "meta",     offsetof(struct cp_store, meta) },
    };
    for (size_t i = 0; i < IM_ARRAY_SIZE(dbs); i++) {
        MDB_dbi *dbi = (MDB_dbi *)(void *)((char *)s + dbs[i].off);
        int mrc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbi);
        if (mrc)
            return mrc;
    }
    return 0;
}

int cp_store_open(struct cp_store **out, const char *dir, size_t mapsize, char *why, size_t whysz)
{
    struct cp_store *s = calloc(1, sizeof(*s));
    MDB_txn *txn = NULL;
    int mrc, rc;

    *out = NULL;
    if (why && whysz)
        why[0] = '\0';
    if (!s) {
        WHY("out of memory");
        return -ENOMEM;
    }
    if (!mapsize)
        mapsize = ST_MAPSIZE_DEFAULT;
    long pg = sysconf(_SC_PAGESIZE);
    if (pg > 0)
        mapsize = (mapsize + (size_t)pg - 1) / (size_t)pg * (size_t)pg;

    mrc = mdb_env_create(&s->env);
    if (mrc) {
        s->env = NULL;
        goto fail_mdb;
    }
    if ((mrc = mdb_env_set_maxdbs(s->env, ST_MAXDBS)) ||
        (mrc = mdb_env_set_mapsize(s->env, mapsize)))
        goto fail_mdb;
    /* Full sync on commit (no NOSYNC / NOMETASYNC / WRITEMAP+MAPASYNC). */
    mrc = mdb_env_open(s->env, dir, MDB_NOTLS, 0600);
    if (mrc) {
        if (mrc == MDB_INVALID)
            WHY("%s/data.mdb is not an LMDB environment", dir);
        else if (mrc == MDB_VERSION_MISMATCH)
            WHY("%s/data.mdb was written by an incompatible LMDB version", dir);
        else
            WHY("cannot open the store in %s: %s", dir, mrc > 0 ? strerror(mrc) : mdb_strerror(mrc));
        rc = st_code(mrc);
        goto fail;
    }
    int dead = 0;
    (void)mdb_reader_check(s->env, &dead);      /* readers left by a killed process */

    if ((mrc = mdb_txn_begin(s->env, NULL, 0, &txn)) || (mrc = st_open_dbs(s, txn)))
        goto fail_mdb;

    MDB_val k = { .mv_size = 6, .mv_data = "schema" }, v;
    mrc = mdb_get(txn, s->meta, &k, &v);
    if (mrc == MDB_NOTFOUND) {
        uint8_t b[8];
        be64_put(b, CP_SCHEMA);
        v = (MDB_val){ .mv_size = 8, .mv_data = b };
        if ((mrc = mdb_put(txn, s->meta, &k, &v, 0)))
            goto fail_mdb;
    } else if (mrc) {
        goto fail_mdb;
    } else if (v.mv_size != 8 || be64_get(v.mv_data) == 0) {
        WHY("%s/data.mdb: meta \"schema\" does not decode", dir);
        rc = -IM_ECORRUPT;
        goto fail;
    } else if (be64_get(v.mv_data) > CP_SCHEMA) {
        WHY("%s/data.mdb has schema %llu, newer than this imfused supports (%d); "
            "run a newer imfused or restore a backup", dir,
            (unsigned long long)be64_get(v.mv_data), CP_SCHEMA);
        rc = -ENOTSUP;
        goto fail;
    }
    mrc = mdb_txn_commit(txn);
    txn = NULL;
    if (mrc)
        goto fail_mdb;
    /* LMDB syncs the files but not the directory entries of a new environment. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) < 0) {
        rc = -errno;
        WHY("cannot sync %s: %s", dir, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        goto fail;
    }
    close(dfd);
    *out = s;
    return 0;

fail_mdb:
    rc = st_code(mrc);
    if (why && whysz && !why[0]) {
        if (rc == -ENOSPC)
            snprintf(why, whysz, "cannot initialise the store in %s: %s", dir, cp_store_strerror(rc));
        else
            snprintf(why, whysz, "cannot initialise the store in %s: %s", dir,
                     mrc > 0 ? strerror(mrc) : mdb_strerror(mrc));
    }
fail:
    if (txn)
        mdb_txn_abort(txn);
    if (s->env)
        mdb_env_close(s->env);
    free(s);
    return rc;
}

void cp_store_close(struct cp_store *s)
{
    if (!s)
        return;
    mdb_env_close(s->env);
    free(s);
}

int cp_store_stats(struct cp_store *s, struct cp_store_stats *st)
{
    MDB_envinfo info;
    MDB_stat ms;
    MDB_txn *txn;
    int mrc;

    memset(st, 0, sizeof(*st));
    if ((mrc = mdb_env_info(s->env, &info)) || (mrc = mdb_env_stat(s->env, &ms)))
        return st_code(mrc);
    st->map_size = info.me_mapsize;
    st->last_pgno = info.me_last_pgno;
    st->page_size = ms.ms_psize;
    st->commit_cpu_us = atomic_load_explicit(&s->commit_cpu_ns, memory_order_relaxed) / 1000u;
    if ((mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn)))
        return st_code(mrc);
    if (!(mrc = mdb_stat(txn, s->users, &ms)))
        st->users = ms.ms_entries;
    if (!mrc && !(mrc = mdb_stat(txn, s->accounts, &ms)))
        st->accounts = ms.ms_entries;
    if (!mrc && !(mrc = mdb_stat(txn, s->queue, &ms)))
        st->queued = ms.ms_entries;
    mdb_txn_abort(txn);
    return st_code(mrc);
}

int cp_store_copy_fd(struct cp_store *s, int fd)
{
    return st_code(mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT));
}

/* ---- transactions ----------------------------------------------------- */

int cp_txn_begin(struct cp_store *s, bool write, struct cp_txn **out)
{
    struct cp_txn *t = calloc(1, sizeof(*t));
    *out = NULL;
    if (!t)
        return -ENOMEM;
    int mrc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, &t->txn);
    if (mrc) {
        free(t);
        return st_code(mrc);
    }
    t->s = s;
    t->write = write;
    *out = t;
    return 0;
}

/* The calling thread's CPU time in ns.  CLOCK_THREAD_CPUTIME_ID is exact;
 * getrusage's times only move when the scheduler accounts them, so a commit
 * that never slept would read as free and one that slept would be charged the
 * thread's work since its last wake-up. */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int cp_txn_commit(struct cp_txn *t)
{
    int rc;
    if (t->err) {
        rc = t->err;
        mdb_txn_abort(t->txn);
    } else {
        uint64_t before = thread_cpu_ns();
        rc = st_code(mdb_txn_commit(t->txn));
        uint64_t after = thread_cpu_ns();
        if (after > before)
            atomic_fetch_add_explicit(&t->s->commit_cpu_ns, after - before, memory_order_relaxed);
    }
    free(t);
    return rc;
}

void cp_txn_abort(struct cp_txn *t)
{
    if (!t)
        return;
    mdb_txn_abort(t->txn);
    free(t);
}

/* ---- meta ------------------------------------------------------------- */

int cp_meta_next(struct cp_txn *t, const char *name, uint64_t *out)
{
    size_t len = strlen(name);
    MDB_val k = { .mv_size = len, .mv_data = (void *)name }, v;
    uint64_t cur = 1;
    uint8_t b[8];
    int rc;

    if (t->err)
        return t->err;
    if (len == 0 || len > 255)
        return -IM_EINVAL;
    rc = st_code(mdb_get(t->txn, t->s->meta, &k, &v));
    if (rc == 0) {
        if (v.mv_size != 8)
            return -IM_ECORRUPT;
        cur = be64_get(v.mv_data);
        if (cur == UINT64_MAX)
            return -EOVERFLOW;
    } else if (rc != -IM_ENOTFOUND) {
        return st_fail(t, rc);
    }
    be64_put(b, cur + 1);
    v = (MDB_val){ .mv_size = 8, .mv_data = b };
    rc = st_code(mdb_put(t->txn, t->s->meta, &k, &v, 0));
    if (rc)
        return st_fail_hard(t, rc);
    *out = cur;
    return 0;
}

int cp_meta_get(struct cp_txn *t, const char *name, uint64_t *out)
{
    size_t len = strlen(name);
    MDB_val k = { .mv_size = len, .mv_data = (void *)name }, v;
    if (t->err)
        return t->err;
    if (len == 0 || len > 255)
        return -IM_EINVAL;
    int rc = st_code(mdb_get(t->txn, t->s->meta, &k, &v));
    if (rc)
        return st_fail(t, rc);
    if (v.mv_size != 8)
        return -IM_ECORRUPT;
    *out = be64_get(v.mv_data);
    return 0;
}

int cp_meta_set(struct cp_txn *t, const char *name, uint64_t value)
{
    size_t len = strlen(name);
    uint8_t b[8];
    MDB_val k = { .mv_size = len, .mv_data = (void *)name }, v = { .mv_size = 8, .mv_data = b };
    if (t->err)
        return t->err;
    if (len == 0 || len > 255)
        return -IM_EINVAL;
    be64_put(b, value);
    return st_fail_hard(t, st_code(mdb_put(t->txn, t->s->meta, &k, &v, 0)));
}

/* ---- users ------------------------------------------------------------ */

static bool user_name_ok(const char *name)
{
    size_t len = strnlen(name, CP_NAME_MAX + 1);
    if (len == 0 || len > CP_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

#define USER_FIXED  (1 + 8 + 4 + 8 + 8 + 8 + 8 + 2)

static int user_encode(const struct cp_user *u, uint8_t *buf, size_t *n)
{
    size_t hl = strnlen(u->hash, sizeof(u->hash));
    if (hl > CP_HASH_MAX)
        return -IM_EINVAL;
    struct st_enc e = { .p = buf };
    enc_u8(&e, ST_REC_V1);
    enc_u64(&e, u->uid);
    enc_u32(&e, u->flags);
    enc_u64(&e, u->next_seq);
    enc_u64(&e, u->max_pushed);
    enc_u64(&e, u->next_unified);
    enc_u64(&e, u->created_ms);
    enc_u16(&e, (uint16_t)hl);
    enc_mem(&e, u->hash, hl);
    *n = e.off;
    return 0;
}

static int user_decode(const MDB_val *k, const MDB_val *v, struct cp_user *u)
{
    struct st_dec d = { .p = v->mv_data, .n = v->mv_size };

    memset(u, 0, sizeof(*u));
    if (k->mv_size == 0 || k->mv_size > CP_NAME_MAX)
        return -IM_ECORRUPT;
    memcpy(u->name, k->mv_data, k->mv_size);
    if (dec_u8(&d) != ST_REC_V1)
        return -IM_ECORRUPT;
    u->uid = dec_u64(&d);
    u->flags = dec_uN(&d, 4);
    u->next_seq = dec_u64(&d);
    u->max_pushed = dec_u64(&d);
    u->next_unified = dec_u64(&d);
    u->created_ms = dec_u64(&d);
    dec_str(&d, u->hash, sizeof(u->hash));
    if (d.bad || d.off != d.n || u->uid == 0) {
        memset(u, 0, sizeof(*u));
        return -IM_ECORRUPT;
    }
    return 0;
}

static MDB_val name_key(const char *name)
{
    return (MDB_val){ .mv_size = strlen(name), .mv_data = (void *)name };
}

static int user_put_rec(struct cp_txn *t, const struct cp_user *u, unsigned flags)
{
    uint8_t buf[USER_FIXED + CP_HASH_MAX];
    size_t n;
    int rc = user_encode(u, buf, &n);
    if (rc)
        return rc;
    MDB_val k = name_key(u->name), v = { .mv_size = n, .mv_data = buf };
    return st_code(mdb_put(t->txn, t->s->users, &k, &v, flags));
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int cp_user_add(struct cp_txn *t, struct cp_user *u)
{
    struct cp_user rec;
    uint64_t uid;
    int rc;

    if (t->err)
        return t->err;
    if (!user_name_ok(u->name) || strnlen(u->hash, sizeof(u->hash)) > CP_HASH_MAX)
        return -IM_EINVAL;
    MDB_val k = name_key(u->name), v;
    rc = st_code(mdb_get(t->txn, t->s->users, &k, &v));
    if (rc == 0)
        return -IM_EEXIST;
    if (rc != -IM_ENOTFOUND)
        return st_fail(t, rc);

    if ((rc = cp_meta_next(t, "uid", &uid)))
        return rc;
    rec = *u;
    rec.uid = uid;
    if (!rec.next_seq)
        rec.next_seq = 1;
    if (!rec.next_unified)
        rec.next_unified = 1;
    if (!rec.created_ms)
        rec.created_ms = now_ms();
    if ((rc = user_put_rec(t, &rec, MDB_NOOVERWRITE)))
        return st_fail_hard(t, rc);

    struct st_key16 kb;
    be64_put(kb.b, uid);
    MDB_val uk = { .mv_size = 8, .mv_data = kb.b }, uv = name_key(rec.name);
    rc = st_code(mdb_put(t->txn, t->s->uids, &uk, &uv, MDB_NOOVERWRITE));
    if (rc)     /* an existing uid means the counter went backwards */
        return st_fail_hard(t, rc == -IM_EEXIST ? -IM_ECORRUPT : rc);
    *u = rec;
    return 0;
}

int cp_user_get(struct cp_txn *t, const char *name, struct cp_user *out)
{
    if (t->err)
        return t->err;
    size_t len = strlen(name);
    if (len == 0 || len > CP_NAME_MAX)
        return -IM_ENOTFOUND;
    MDB_val k = name_key(name), v;
    int rc = st_code(mdb_get(t->txn, t->s->users, &k, &v));
    if (rc)
        return st_fail(t, rc);
    return user_decode(&k, &v, out);
}

int cp_user_get_uid(struct cp_txn *t, uint64_t uid, struct cp_user *out)
{
    uint8_t b[8];
    char name[CP_NAME_MAX + 1];

    if (t->err)
        return t->err;
    be64_put(b, uid);
    MDB_val k = { .mv_size = 8, .mv_data = b }, v;
    int rc = st_code(mdb_get(t->txn, t->s->uids, &k, &v));
    if (rc)
        return st_fail(t, rc);
    if (v.mv_size == 0 || v.mv_size > CP_NAME_MAX)
        return -IM_ECORRUPT;
    memcpy(name, v.mv_data, v.mv_size);
    name[v.mv_size] = '\0';
    rc = cp_user_get(t, name, out);
    if (rc == -IM_ENOTFOUND)
        return -IM_ECORRUPT;    /* uids points at a missing user */
    if (rc == 0 && out->uid != uid) {
        memset(out, 0, sizeof(*out));
        return -IM_ECORRUPT;
    }
    return rc;
}

int cp_user_put(struct cp_txn *t, const struct cp_user *u)
{
    struct cp_user cur;
    int rc;

    if (t->err)
        return t->err;
    if (!user_name_ok(u->name))
        return -IM_ENOTFOUND;
    if ((rc = cp_user_get(t, u->name, &cur)))
        return rc;
    if (cur.uid != u->uid)
        return -IM_ENOTFOUND;
    return st_fail(t, user_put_rec(t, u, 0));
}

/* Delete every key of uid in a (uid, k) database with k <= upto. */
static int del_range(struct cp_txn *t, MDB_dbi dbi, uint64_t uid, uint64_t upto, uint64_t *count,
                     uint64_t *bytes)
{
    struct st_key16 kb;
    MDB_cursor *c;
    MDB_val k = key16(&kb, uid, 0), v;
    uint64_t n = 0, b = 0;
    int rc = st_code(mdb_cursor_open(t->txn, dbi, &c));

    if (rc)
        return rc;
    rc = st_code(mdb_cursor_get(c, &k, &v, MDB_SET_RANGE));
    while (rc == 0) {
        if (k.mv_size != 16) {
            rc = -IM_ECORRUPT;
            break;
        }
        if (be64_get(k.mv_data) != uid || be64_get((const uint8_t *)k.mv_data + 8) > upto)
            break;
        /* Copy the key first (it points into the page the delete changes),
         * then re-seek from it: the next key is the first >= it. */
        memcpy(kb.b, k.mv_data, 16);
        b += v.mv_size;
        if ((rc = st_code(mdb_cursor_del(c, 0))))
            break;
        n++;
        k = (MDB_val){ .mv_size = 16, .mv_data = kb.b };
        rc = st_code(mdb_cursor_get(c, &k, &v, MDB_SET_RANGE));
    }
    mdb_cursor_close(c);
    if (rc == -IM_ENOTFOUND)
        rc = 0;
    if (count)
        *count = n;
    if (bytes)
        *bytes = b;
    return rc;
}

int cp_user_del(struct cp_txn *t, const char *name)
{
    struct cp_user u;
    uint8_t b[8];
    int rc;

    if (t->err)
        return t->err;
    if ((rc = cp_user_get(t, name, &u)))
        return rc;
    MDB_val k = name_key(name);
    if ((rc = st_code(mdb_del(t->txn, t->s->users, &k, NULL))))
        return st_fail(t, rc);
    be64_put(b, u.uid);
    k = (MDB_val){ .mv_size = 8, .mv_data = b };
    rc = st_code(mdb_del(t->txn, t->s->uids, &k, NULL));
    if (rc == -IM_ENOTFOUND)
        rc = 0;                 /* tolerate a missing reverse entry */
    if (!rc)
        rc = del_range(t, t->s->accounts, u.uid, UINT64_MAX, NULL, NULL);
    if (!rc)
        rc = del_range(t, t->s->contacts, u.uid, UINT64_MAX, NULL, NULL);
    if (!rc)
        rc = del_range(t, t->s->unified, u.uid, UINT64_MAX, NULL, NULL);
    if (!rc)
        rc = del_range(t, t->s->queue, u.uid, UINT64_MAX, NULL, NULL);
    if (!rc)
        rc = cp_outbox_del_uid(t, u.uid, NULL);
    return st_fail_hard(t, rc);
}

int cp_user_each(struct cp_txn *t, cp_user_fn *fn, void *ud)
{
    MDB_cursor *c;
    MDB_val k, v;
    struct cp_user u;
    int rc;

    if (t->err)
        return t->err;
    if ((rc = st_code(mdb_cursor_open(t->txn, t->s->users, &c))))
        return st_fail(t, rc);
    for (rc = st_code(mdb_cursor_get(c, &k, &v, MDB_FIRST)); rc == 0;
         rc = st_code(mdb_cursor_get(c, &k, &v, MDB_NEXT))) {
        if ((rc = user_decode(&k, &v, &u)))
            break;
        if ((rc = fn(ud, &u)))
            break;
    }
    mdb_cursor_close(c);
    return rc == -IM_ENOTFOUND ? 0 : rc;
}

/* ---- accounts --------------------------------------------------------- */

static const char *acct_str(const char *s, size_t sz, size_t *len)
{
    *len = strnlen(s, sz);
    return *len < sz ? s : NULL;
}

int cp_account_put(struct cp_txn *t, const struct cp_account *a)
{
    const char *strs[5];
    size_t lens[5];
    const char *f[5] = { a->network, a->login, a->server, a->tls, a->name };
    const size_t fsz[5] = { sizeof(a->network), sizeof(a->login), sizeof(a->server),
                            sizeof(a->tls), sizeof(a->name) };
    size_t total = 1 + 4 + 4;
    struct st_key16 kb;
    int rc;

    if (t->err)
        return t->err;
    if (!a->uid || a->options_len > UINT32_MAX || a->sealed_len > UINT32_MAX ||
        (a->options_len && !a->options) || (a->sealed_len && !a->sealed))
        return -IM_EINVAL;
    for (int i = 0; i < 5; i++) {
        if (!(strs[i] = acct_str(f[i], fsz[i], &lens[i])))
            return -IM_EINVAL;
        total += 2 + lens[i];
    }
    total += a->options_len + a->sealed_len;

    MDB_val k = key16(&kb, a->uid, a->account);
    MDB_val v = { .mv_size = total, .mv_data = NULL };
    if ((rc = st_code(mdb_put(t->txn, t->s->accounts, &k, &v, MDB_RESERVE))))
        return st_fail(t, rc);
    struct st_enc e = { .p = v.mv_data };
    enc_u8(&e, ST_REC_V1);
    for (int i = 0; i < 5; i++) {
        enc_u16(&e, (uint16_t)lens[i]);
        enc_mem(&e, strs[i], lens[i]);
    }
    enc_u32(&e, (uint32_t)a->options_len);
    enc_mem(&e, a->options, a->options_len);
    enc_u32(&e, (uint32_t)a->sealed_len);
    enc_mem(&e, a->sealed, a->sealed_len);
    return 0;
}

static int account_decode(const MDB_val *k, const MDB_val *v, struct cp_account *a)
{
    struct st_dec d = { .p = v->mv_data, .n = v->mv_size };
    int rc;

    memset(a, 0, sizeof(*a));
    if (k->mv_size != 16)
        return -IM_ECORRUPT;
    a->uid = be64_get(k->mv_data);
    a->account = be64_get((const uint8_t *)k->mv_data + 8);
    if (dec_u8(&d) != ST_REC_V1)
        return -IM_ECORRUPT;
    dec_str(&d, a->network, sizeof(a->network));
    dec_str(&d, a->login, sizeof(a->login));
    dec_str(&d, a->server, sizeof(a->server));
    dec_str(&d, a->tls, sizeof(a->tls));
    dec_str(&d, a->name, sizeof(a->name));
    if ((rc = dec_bytes(&d, &a->options, &a->options_len)) ||
        (rc = dec_bytes(&d, &a->sealed, &a->sealed_len))) {
        cp_account_free(a);
        return rc;
    }
    if (d.bad || d.off != d.n) {
        cp_account_free(a);
        memset(a, 0, sizeof(*a));
        return -IM_ECORRUPT;
    }
    return 0;
}

void cp_account_free(struct cp_account *a)
{
    if (!a)
        return;
    if (a->sealed)
        im_wipe(a->sealed, a->sealed_len);
    free(a->options);
    free(a->sealed);
    a->options = a->sealed = NULL;
    a->options_len = a->sealed_len = 0;
}

int cp_account_get(struct cp_txn *t, uint64_t uid, uint64_t account, struct cp_account *out)
{
    struct st_key16 kb;
    MDB_val k = key16(&kb, uid, account), v;

    memset(out, 0, sizeof(*out));
    if (t->err)
        return t->err;
    int rc = st_code(mdb_get(t->txn, t->s->accounts, &k, &v));
    if (rc)
        return st_fail(t, rc);
    return account_decode(&k, &v, out);
}

int cp_account_del(struct cp_txn *t, uint64_t uid, uint64_t account)
{
    struct st_key16 kb;
    MDB_val k = key16(&kb, uid, account);

    if (t->err)
        return t->err;
    return st_fail(t, st_code(mdb_del(t->txn, t->s->accounts, &k, NULL)));
}

int cp_account_each(struct cp_txn *t, uint64_t uid, cp_account_fn *fn, void *ud)
{
    struct st_key16 kb;
    struct cp_account a;
    MDB_cursor *c;
    MDB_val k = key16(&kb, uid, 0), v;
    int rc;

    if (t->err)
        return t->err;
    if ((rc = st_code(mdb_cursor_open(t->txn, t->s->accounts, &c))))
        return st_fail(t, rc);
    rc = st_code(mdb_cursor_get(c, &k, &v, uid ? MDB_SET_RANGE : MDB_FIRST));
    for (; rc == 0; rc = st_code(mdb_cursor_get(c, &k, &v, MDB_NEXT))) {
        if (k.mv_size != 16) {
            rc = -IM_ECORRUPT;
            break;
        }
        if (uid && be64_get(k.mv_data) != uid)
            break;
        if ((rc = account_decode(&k, &v, &a)))
            break;
        rc = fn(ud, &a);
        cp_account_free(&a);
        if (rc)
            break;
    }
    mdb_cursor_close(c);
    return rc == -IM_ENOTFOUND ? 0 : rc;
}

/* ---- blobs ------------------------------------------------------------ */

static MDB_dbi blob_dbi(struct cp_txn *t, enum cp_blob_db db)
{
    switch (db) {
    case CP_DB_CONTACTS:    return t->s->contacts;
    case CP_DB_UNIFIED:     return t->s->unified;
    case CP_DB_QUEUE:       return t->s->queue;
    }
    return t->s->queue;     /* unreachable: checked by blob_db_ok */
}

static bool blob_db_ok(enum cp_blob_db db)
{
    return db == CP_DB_CONTACTS || db == CP_DB_UNIFIED || db == CP_DB_QUEUE;
}

int cp_blob_put(struct cp_txn *t, enum cp_blob_db db, uint64_t uid, uint64_t k, const void *v, size_t n)
{
    struct st_key16 kb;

    if (t->err)
        return t->err;
    if (!blob_db_ok(db) || !uid || (n && !v))
        return -IM_EINVAL;
    MDB_val key = key16(&kb, uid, k), val = { .mv_size = n, .mv_data = (void *)v };
    return st_fail(t, st_code(mdb_put(t->txn, blob_dbi(t, db), &key, &val, 0)));
}

int cp_blob_del(struct cp_txn *t, enum cp_blob_db db, uint64_t uid, uint64_t k)
{
    struct st_key16 kb;

    if (t->err)
        return t->err;
    if (!blob_db_ok(db) || !uid)
        return -IM_EINVAL;
    MDB_val key = key16(&kb, uid, k);
    return st_fail(t, st_code(mdb_del(t->txn, blob_dbi(t, db), &key, NULL)));
}

int cp_blob_del_upto(struct cp_txn *t, enum cp_blob_db db, uint64_t uid, uint64_t upto, uint64_t *n)
{
    if (n)
        *n = 0;
    if (t->err)
        return t->err;
    if (!blob_db_ok(db) || !uid)
        return -IM_EINVAL;
    return st_fail_hard(t, del_range(t, blob_dbi(t, db), uid, upto, n, NULL));
}

int cp_account_count(struct cp_txn *t, uint64_t *n)
{
    MDB_stat ms;
    *n = 0;
    if (t->err)
        return t->err;
    int rc = st_code(mdb_stat(t->txn, t->s->accounts, &ms));
    if (!rc)
        *n = ms.ms_entries;
    return rc;
}

int cp_queue_del_upto(struct cp_txn *t, uint64_t uid, uint64_t upto, uint64_t *n, uint64_t *bytes)
{
    *n = *bytes = 0;
    if (t->err)
        return t->err;
    if (!uid)
        return -IM_EINVAL;
    return st_fail_hard(t, del_range(t, t->s->queue, uid, upto, n, bytes));
}

int cp_blob_each(struct cp_txn *t, enum cp_blob_db db, uint64_t uid, uint64_t from, cp_blob_fn *fn, void *ud)
{
    struct st_key16 kb;
    MDB_cursor *c;
    int rc;

    if (t->err)
        return t->err;
    if (!blob_db_ok(db))
        return -IM_EINVAL;
    MDB_val k = key16(&kb, uid, uid ? from : 0), v;
    if ((rc = st_code(mdb_cursor_open(t->txn, blob_dbi(t, db), &c))))
        return st_fail(t, rc);
    rc = st_code(mdb_cursor_get(c, &k, &v, uid ? MDB_SET_RANGE : MDB_FIRST));
    for (; rc == 0; rc = st_code(mdb_cursor_get(c, &k, &v, MDB_NEXT))) {
        if (k.mv_size != 16) {
            rc = -IM_ECORRUPT;
            break;
        }
        uint64_t ku = be64_get(k.mv_data);
        if (uid && ku != uid)
            break;
        if ((rc = fn(ud, ku, be64_get((const uint8_t *)k.mv_data + 8), v.mv_data, v.mv_size)))
            break;
    }
    mdb_cursor_close(c);
    return rc == -IM_ENOTFOUND ? 0 : rc;
}

int cp_blob_count(struct cp_txn *t, enum cp_blob_db db, uint64_t uid, uint64_t *n)
{
    struct st_key16 kb;
    MDB_cursor *c;
    uint64_t cnt = 0;
    int rc;

    *n = 0;
    if (t->err)
        return t->err;
    if (!blob_db_ok(db))
        return -IM_EINVAL;
    if (!uid) {
        MDB_stat ms;
        if ((rc = st_code(mdb_stat(t->txn, blob_dbi(t, db), &ms))))
            return st_fail(t, rc);
        *n = ms.ms_entries;
        return 0;
    }
    MDB_val k = key16(&kb, uid, 0), v;
    if ((rc = st_code(mdb_cursor_open(t->txn, blob_dbi(t, db), &c))))
        return st_fail(t, rc);
    for (rc = st_code(mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)); rc == 0;
         rc = st_code(mdb_cursor_get(c, &k, &v, MDB_NEXT))) {
        if (k.mv_size != 16) {
            rc = -IM_ECORRUPT;
            break;
        }
        if (be64_get(k.mv_data) != uid)
            break;
        cnt++;
    }
    mdb_cursor_close(c);
    if (rc == -IM_ENOTFOUND)
        rc = 0;
    if (!rc)
        *n = cnt;
    return rc;
}

/* ---- outbox ----------------------------------------------------------- */

int cp_outbox_put(struct cp_txn *t, uint64_t msg, uint64_t uid, const void *v, size_t n)
{
    uint8_t kb[8];
    int rc;

    if (t->err)
        return t->err;
    if (!uid || (n && !v) || n > SIZE_MAX - 9)
        return -IM_EINVAL;
    be64_put(kb, msg);
    MDB_val k = { .mv_size = 8, .mv_data = kb }, val = { .mv_size = 9 + n, .mv_data = NULL };
    /* Ids only grow: append to the last page instead of splitting it
     * (pages stay full, a commit writes fewer).  An id below the last one
     * (never made by imfused) is put the ordinary way. */
    rc = st_code(mdb_put(t->txn, t->s->outbox, &k, &val, MDB_RESERVE | MDB_APPEND));
    if (rc == -IM_EEXIST) {
        val = (MDB_val){ .mv_size = 9 + n, .mv_data = NULL };
        rc = st_code(mdb_put(t->txn, t->s->outbox, &k, &val, MDB_RESERVE));
    }
    if (rc)
        return st_fail(t, rc);
    struct st_enc e = { .p = val.mv_data };
    enc_u8(&e, ST_REC_V1);
    enc_u64(&e, uid);
    enc_mem(&e, v, n);
    return 0;
}

int cp_outbox_del(struct cp_txn *t, uint64_t msg)
{
    uint8_t kb[8];

    if (t->err)
        return t->err;
    be64_put(kb, msg);
    MDB_val k = { .mv_size = 8, .mv_data = kb };
    return st_fail(t, st_code(mdb_del(t->txn, t->s->outbox, &k, NULL)));
}

/* Split an outbox record: 0 or -IM_ECORRUPT. */
static int outbox_decode(const MDB_val *k, const MDB_val *v, uint64_t *msg, uint64_t *uid)
{
    const uint8_t *p = v->mv_data;
    if (k->mv_size != 8 || v->mv_size < 9 || p[0] != ST_REC_V1)
        return -IM_ECORRUPT;
    *msg = be64_get(k->mv_data);
    *uid = be64_get(p + 1);
    return 0;
}

int cp_outbox_del_uid(struct cp_txn *t, uint64_t uid, uint64_t *n)
{
    MDB_cursor *c;
    MDB_val k, v;
    uint64_t msg, ouid, cnt = 0;
    uint8_t kb[8];
    int rc;

    if (n)
        *n = 0;
    if (t->err)
        return t->err;
    if ((rc = st_code(mdb_cursor_open(t->txn, t->s->outbox, &c))))
        return st_fail(t, rc);
    for (rc = st_code(mdb_cursor_get(c, &k, &v, MDB_FIRST)); rc == 0;) {
        if ((rc = outbox_decode(&k, &v, &msg, &ouid)))
            break;
        if (ouid != uid) {
            rc = st_code(mdb_cursor_get(c, &k, &v, MDB_NEXT));
            continue;
        }
        if ((rc = st_code(mdb_cursor_del(c, 0))))
            break;
        cnt++;
        be64_put(kb, msg);
        k = (MDB_val){ .mv_size = 8, .mv_data = kb };
        rc = st_code(mdb_cursor_get(c, &k, &v, MDB_SET_RANGE));
    }
    mdb_cursor_close(c);
    if (rc == -IM_ENOTFOUND)
        rc = 0;
    if (n)
        *n = cnt;
    return st_fail_hard(t, rc);
}

int cp_outbox_each(struct cp_txn *t, cp_outbox_fn *fn, void *ud)
{
    MDB_cursor *c;
    MDB_val k, v;
    uint64_t msg, uid;
    int rc;

    if (t->err)
        return t->err;
    if ((rc = st_code(mdb_cursor_open(t->txn, t->s->outbox, &c))))
        return st_fail(t, rc);
    for (rc = st_code(mdb_cursor_get(c, &k, &v, MDB_FIRST)); rc == 0;
         rc = st_code(mdb_cursor_get(c, &k, &v, MDB_NEXT))) {
        if ((rc = outbox_decode(&k, &v, &msg, &uid)))
            break;
        if ((rc = fn(ud, msg, uid, (const uint8_t *)v.mv_data + 9, v.mv_size - 9)))
            break;
    }
    mdb_cursor_close(c);
    return rc == -IM_ENOTFOUND ? 0 : rc;
}
