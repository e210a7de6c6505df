/*
 * cp_kdf.c - IM servers' key derivations (SCRAM's PBKDF2) off the
 * dataplane: CPM_KDF comes up, the cache answers what was derived before (a
 * reconnect costs nothing), else the auth pool derives it (a job of the
 * source "kdf", served in turn with the logins), and DPM_KDF_DONE goes down
 * to the session that asked.  Every CPM_KDF gets its DPM_KDF_DONE.
 *
 * The server chooses the work: SCRAM's iteration count is capped in the
 * adapter (SCRAM_MAX_ITER), and what passes is never derived twice for the
 * same password, salt and count.  The cache maps
 * HMAC-SHA-256(a random key of this process; hash, iterations, salt,
 * password) to the derived key, so a changed password or salt is another
 * entry and nothing in memory names the password.  Entries are key material
 * (a SaltedPassword logs in to that server): wiped when they go; at most
 * CP_KDF_CACHE_MAX, the least recently used goes first.
 */
#include <stdlib.h>
#include <string.h>

#include <mbedtls/md.h>

#include "dp_chan.h"
#include "cp_int.h"
#include "cp_lru.h"

#define KDF_BUCKETS 4096
#define KDF_SOURCE  "kdf"               /* the pool's source of every derivation */

struct kdf_ent {
    struct kdf_ent *hnext;
    struct cp_lru_link lru;
    uint8_t id[32];
    uint8_t key[IM_KDF_MAX_KEY];
    uint8_t key_len;
};

struct cp_kdf {
    uint8_t secret[32];                 /* the HMAC key of the cache's ids */
    struct kdf_ent *b[KDF_BUCKETS];
    struct cp_lru lru;
    unsigned n;
    uint64_t hits, derived, failed;
};

struct cp_kdf *
cp_kdf_new(void)
{
    struct cp_kdf *k = calloc(1, sizeof(*k));
    if (k && cp_random(k->secret, sizeof(k->secret)) < 0) {
        free(k);
        return NULL;
    }
    return k;
}

static void
ent_free(struct kdf_ent *e)
{
    im_wipe(e, sizeof(*e));
    free(e);
}

void
cp_kdf_free(struct cp_kdf *k)
{
    if (!k)
        return;
    while (k->lru.newest) {
        struct kdf_ent *e = CP_LRU_ENTRY(k->lru.newest, struct kdf_ent, lru);
        k->lru.newest = e->lru.older;
        ent_free(e);
    }
    im_wipe(k->secret, sizeof(k->secret));
    free(k);
}

/* The cache id of a derivation.  0 or -ENOMEM / -IM_EINVAL. */
static int
kdf_id(const struct cp_kdf *k, const struct im_kdf_params *p, uint8_t id[32])
{
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    mbedtls_md_context_t ctx;
    uint8_t hdr[6];
    int rc;

    hdr[0] = (uint8_t)p->hash;
    memcpy(hdr + 1, &p->iterations, 4);
    hdr[5] = (uint8_t)p->salt_len;
    mbedtls_md_init(&ctx);
    rc = mbedtls_md_setup(&ctx, md, 1);
    if (!rc)
        rc = mbedtls_md_hmac_starts(&ctx, k->secret, sizeof(k->secret));
    if (!rc)
        rc = mbedtls_md_hmac_update(&ctx, hdr, sizeof(hdr));
    if (!rc)
        rc = mbedtls_md_hmac_update(&ctx, p->salt, p->salt_len);
    if (!rc)
        rc = mbedtls_md_hmac_update(&ctx, (const uint8_t *)p->password, p->password_len);
    if (!rc)
        rc = mbedtls_md_hmac_finish(&ctx, id);
    mbedtls_md_free(&ctx);              /* zeroizes the context */
    return rc == MBEDTLS_ERR_MD_ALLOC_FAILED ? -ENOMEM : rc ? -IM_EINVAL : 0;
}

static unsigned
id_bucket(const uint8_t id[32])
{
    unsigned h;
    memcpy(&h, id, sizeof(h));
    return h % KDF_BUCKETS;
}

static struct kdf_ent *
cache_find(struct cp_kdf *k, const uint8_t id[32])
{
    for (struct kdf_ent *e = k->b[id_bucket(id)]; e; e = e->hnext)
        if (!im_ct_memcmp(e->id, id, 32))
            return e;
    return NULL;
}

static void
cache_put(struct cp_kdf *k, const uint8_t id[32], const uint8_t *key, size_t len)
{
    if (cache_find(k, id) || len > IM_KDF_MAX_KEY)
        return;
    if (k->n >= CP_KDF_CACHE_MAX && k->lru.oldest) {
        struct kdf_ent *v = CP_LRU_ENTRY(k->lru.oldest, struct kdf_ent, lru);
        struct kdf_ent **pp = &k->b[id_bucket(v->id)];
        while (*pp != v)
            pp = &(*pp)->hnext;
        *pp = v->hnext;
        cp_lru_unlink(&k->lru, &v->lru);
        ent_free(v);
        k->n--;
    }
    struct kdf_ent *e = calloc(1, sizeof(*e));
    if (!e)
        cp_oom(__func__);
    memcpy(e->id, id, 32);
    memcpy(e->key, key, len);
    e->key_len = (uint8_t)len;
    unsigned b = id_bucket(id);
    e->hnext = k->b[b];
    k->b[b] = e;
    cp_lru_push(&k->lru, &e->lru);
    k->n++;
}

/* DPM_KDF_DONE to the session that asked. */
static void
answer(struct cp_core *c, uint64_t uid, uint64_t account, uint32_t sess, uint64_t req, int status,
       const uint8_t *key, size_t len)
{
    struct dp_msg d = { .type = DPM_KDF_DONE, .uid = uid, .account = account };
    d.u.kdf.req = req;
    d.u.kdf.sess = sess;
    d.u.kdf.status = status;
    if (!status && dp_msg_copy(&d, key, len) < 0)
        cp_oom(__func__);
    dp_chan_send_down(c->ch, &d);
}

static void
kdf_done(void *ctx, struct cp_auth_job *j)
{
    struct cp_core *c = ctx;
    if (j->result == 0) {
        c->kdf->derived++;
        cache_put(c->kdf, j->kdf.id, j->kdf.key, j->kdf.key_len);
    } else {
        c->kdf->failed++;
    }
    answer(c, j->uid, j->kdf.account, j->kdf.sess, j->kdf.req, j->result, j->kdf.key, j->kdf.key_len);
}

void
cp_kdf_request(struct cp_core *c, const struct dp_msg *m)
{
    struct cp_kdf *k = c->kdf;
    struct im_kdf_params p;
    uint8_t id[32];
    int rc;

    if ((rc = dp_msg_kdf(m, &p)) < 0 || !im_kdf_keylen(p.hash) || p.iterations < 1 ||
        p.iterations > IM_KDF_MAX_ITER || p.salt_len > sizeof(((struct cp_auth_job *)0)->kdf.salt)) {
        answer(c, m->uid, m->account, m->u.kdf.sess, m->u.kdf.req, -IM_EINVAL, NULL, 0);
        return;
    }
    if ((rc = kdf_id(k, &p, id)) < 0) {
        answer(c, m->uid, m->account, m->u.kdf.sess, m->u.kdf.req, rc, NULL, 0);
        return;
    }
    struct kdf_ent *e = cache_find(k, id);
    if (e) {
        k->hits++;
        cp_lru_touch(&k->lru, &e->lru);
        answer(c, m->uid, m->account, m->u.kdf.sess, m->u.kdf.req, 0, e->key, e->key_len);
        im_wipe(id, sizeof(id));
        return;
    }
    struct cp_auth_job *j = calloc(1, sizeof(*j));
    if (!j || !(j->password = malloc(p.password_len + 1)))
        cp_oom(__func__);
    memcpy(j->password, p.password, p.password_len);
    j->password[p.password_len] = '\0';
    j->pwlen = p.password_len;
    j->kind = CP_AUTH_KDF;
    j->uncapped = true;                 /* one per account at most (the dataplane's rule) */
    im_strlcpy(j->source, KDF_SOURCE, sizeof(j->source));
    j->done = kdf_done;
    j->ctx = c;
    j->uid = m->uid;
    j->kdf.account = m->account;
    j->kdf.sess = m->u.kdf.sess;
    j->kdf.req = m->u.kdf.req;
    j->kdf.hash = p.hash;
    j->kdf.iterations = p.iterations;
    memcpy(j->kdf.salt, p.salt, p.salt_len);
    j->kdf.salt_len = p.salt_len;
    memcpy(j->kdf.id, id, sizeof(id));
    im_wipe(id, sizeof(id));
    if (cp_auth_submit(c->auth, j, NULL) < 0)
        cp_oom(__func__);               /* uncapped: only the source's allocation can fail */
}

void
cp_kdf_stats(const struct cp_core *c, uint64_t *hits, uint64_t *derived, uint64_t *entries)
{
    *hits = c->kdf ? c->kdf->hits : 0;
    *derived = c->kdf ? c->kdf->derived : 0;
    *entries = c->kdf ? c->kdf->n : 0;
}
