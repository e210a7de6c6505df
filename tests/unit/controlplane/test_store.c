/*
 * test_store.c - the controlplane's LMDB store: users (with cascading
 * deletion), accounts, blobs in key order, outbox, counters and commits across
 * reopen, the schema check, a full map and corrupt records.
 */
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lmdb.h>

#include "t.h"
#include "im_common.h"
#include "cp_store.h"

/* ---- helpers ---------------------------------------------------------- */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(p);
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

struct env {
    char dir[64];
    struct cp_store *s;
};

static struct env g;

static void env_close(void)
{
    cp_store_close(g.s);
    g.s = NULL;
}

static int env_open(size_t mapsize)
{
    char why[256];
    int rc = cp_store_open(&g.s, g.dir, mapsize, why, sizeof(why));
    if (rc)
        fprintf(stderr, "  open: %s\n", why);
    return rc;
}

static void env_new(size_t mapsize)
{
    if (g.dir[0]) {
        env_close();
        rm_tree(g.dir);
    }
    strcpy(g.dir, "/tmp/imfuse-store-XXXXXX");
    if (!mkdtemp(g.dir)) {
        perror("mkdtemp");
        exit(2);
    }
    if (env_open(mapsize)) {
        fprintf(stderr, "cannot open store in %s\n", g.dir);
        exit(2);
    }
}

static void env_done(void)
{
    env_close();
    if (g.dir[0])
        rm_tree(g.dir);
    g.dir[0] = '\0';
}

static struct cp_txn *wtxn(void)
{
    struct cp_txn *t = NULL;
    if (cp_txn_begin(g.s, true, &t))
        return NULL;
    return t;
}

static struct cp_txn *rtxn(void)
{
    struct cp_txn *t = NULL;
    if (cp_txn_begin(g.s, false, &t))
        return NULL;
    return t;
}

static int add_user(struct cp_txn *t, const char *name, uint64_t *uid)
{
    struct cp_user u;
    memset(&u, 0, sizeof(u));
    strcpy(u.name, name);
    strcpy(u.hash, "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA");
    int rc = cp_user_add(t, &u);
    if (!rc && uid)
        *uid = u.uid;
    return rc;
}

/* Write a raw record with LMDB itself (the store must be closed). */
static int raw_put(const char *db, const void *k, size_t kn, const void *v, size_t vn)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    int rc = mdb_env_create(&env);
    if (rc)
        return rc;
    mdb_env_set_maxdbs(env, 16);
    if ((rc = mdb_env_open(env, g.dir, 0, 0600)) ||
        (rc = mdb_txn_begin(env, NULL, 0, &txn))) {
        mdb_env_close(env);
        return rc;
    }
    MDB_val key = { kn, (void *)k }, val = { vn, (void *)v };
    if ((rc = mdb_dbi_open(txn, db, 0, &dbi)) || (rc = mdb_put(txn, dbi, &key, &val, 0)))
        mdb_txn_abort(txn);
    else
        rc = mdb_txn_commit(txn);
    mdb_env_close(env);
    return rc;
}

static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* Collects the keys a walk visits. */
struct seen {
    uint64_t uid[32], k[32];
    char v[32][16];
    int n;
};

static int blob_cb(void *ud, uint64_t uid, uint64_t k, const void *v, size_t n)
{
    struct seen *s = ud;
    if (s->n == 32)
        return -1;
    s->uid[s->n] = uid;
    s->k[s->n] = k;
    snprintf(s->v[s->n], sizeof(s->v[0]), "%.*s", (int)n, (const char *)v);
    s->n++;
    return 0;
}

static int outbox_cb(void *ud, uint64_t msg, uint64_t uid, const void *v, size_t n)
{
    return blob_cb(ud, uid, msg, v, n);
}

static int account_cb(void *ud, const struct cp_account *a)
{
    return blob_cb(ud, a->uid, a->account, a->login, strlen(a->login));
}

static int user_cb(void *ud, const struct cp_user *u)
{
    return blob_cb(ud, u->uid, u->next_seq, u->name, strlen(u->name));
}

static int stop_cb(void *ud, uint64_t uid, uint64_t k, const void *v, size_t n)
{
    (void)uid; (void)k; (void)v; (void)n;
    return ++*(int *)ud == 2 ? 42 : 0;
}

static void fill_account(struct cp_account *a, uint64_t uid, uint64_t id, const char *login)
{
    memset(a, 0, sizeof(*a));
    a->uid = uid;
    a->account = id;
    strcpy(a->network, "xmpp");
    snprintf(a->login, sizeof(a->login), "%s", login);
    strcpy(a->server, "127.0.0.1:5222");
    strcpy(a->tls, "starttls");
    strcpy(a->name, "work");
}

/* ---- cases ------------------------------------------------------------ */

T_TEST(users)
{
    struct cp_txn *t;
    struct cp_user u;
    uint64_t a, b;
    struct seen s = { .n = 0 };

    env_new(0);
    T_ASSERT((t = wtxn()));
    T_EQ_INT(add_user(t, "alice", &a), 0);
    T_EQ_INT(add_user(t, "bob", &b), 0);
    T_EQ_UINT(a, 1);
    T_EQ_UINT(b, 2);
    T_EQ_INT(add_user(t, "alice", NULL), -IM_EEXIST);
    T_EQ_INT(add_user(t, "Alice", NULL), -IM_EINVAL);
    T_EQ_INT(add_user(t, "", NULL), -IM_EINVAL);
    T_EQ_INT(add_user(t, "a b", NULL), -IM_EINVAL);
    T_EQ_INT(cp_txn_commit(t), 0);     /* EEXIST/EINVAL do not poison the txn */

    T_ASSERT((t = rtxn()));
    T_EQ_INT(cp_user_get(t, "alice", &u), 0);
    T_EQ_UINT(u.uid, 1);
    T_EQ_STR(u.name, "alice");
    T_EQ_STR(u.hash, "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA");
    T_EQ_UINT(u.next_seq, 1);
    T_EQ_UINT(u.next_unified, 1);
    T_ASSERT(u.created_ms > 1600000000000ull);
    T_EQ_INT(cp_user_get_uid(t, 2, &u), 0);
    T_EQ_STR(u.name, "bob");
    T_EQ_INT(cp_user_get(t, "carol", &u), -IM_ENOTFOUND);
    T_EQ_INT(cp_user_get_uid(t, 99, &u), -IM_ENOTFOUND);
    T_EQ_INT(cp_user_each(t, user_cb, &s), 0);
    T_EQ_INT(s.n, 2);
    T_EQ_STR(s.v[0], "alice");
    T_EQ_STR(s.v[1], "bob");
    cp_txn_abort(t);

    /* put updates an existing user, and only the same one */
    T_ASSERT((t = wtxn()));
    T_EQ_INT(cp_user_get(t, "bob", &u), 0);
    u.flags = 7;
    u.next_seq = 10;
    u.max_pushed = 9;
    T_EQ_INT(cp_user_put(t, &u), 0);
    u.uid = 1;
    T_EQ_INT(cp_user_put(t, &u), -IM_ENOTFOUND);
    strcpy(u.name, "nobody");
    T_EQ_INT(cp_user_put(t, &u), -IM_ENOTFOUND);
    T_EQ_INT(cp_txn_commit(t), 0);
    T_ASSERT((t = rtxn()));
    T_EQ_INT(cp_user_get(t, "bob", &u), 0);
    T_EQ_UINT(u.flags, 7);
    T_EQ_UINT(u.next_seq, 10);
    T_EQ_UINT(u.max_pushed, 9);
    cp_txn_abort(t);

    /* deleted uids are never reused */
    T_ASSERT((t = wtxn()));
    T_EQ_INT(cp_user_del(t, "bob"), 0);
    T_EQ_INT(cp_user_del(t, "bob"), -IM_ENOTFOUND);
    T_EQ_INT(cp_user_get(t, "bob", &u), -IM_ENOTFOUND);
    T_EQ_INT(cp_user_get_uid(t, b, &u), -IM_ENOTFOUND);
    T_EQ_INT(add_user(t, "bob", &b), 0);
    T_EQ_UINT(b, 3);
    T_EQ_INT(cp_txn_commit(t), 0);
    env_done();
}

T_TEST(user_del_cascades)
{
    struct cp_txn *t;
    struct cp_account acc;
    uint64_t a, b, n;
    struct seen s = { .n = 0 };

    env_new(0);
    T_ASSERT((t = wtxn()));
    T_EQ_INT(add_user(t, "alice", &a), 0);
    T_EQ_INT(add_user(t, "bob", &b), 0);
    for (uint64_t uid = a; uid <= b; uid++) {
        for (uint64_t k = 1; k <= 3; k++) {
            fill_account(&acc, uid, k + 10 * uid, "x@a.test");
            T_EQ_INT(cp_account_put(t, &acc), 0);
            T_EQ_INT(cp_blob_put(t, CP_DB_CONTACTS, uid, k, "c", 1), 0);
            T_EQ_INT(cp_blob_put(t, CP_DB_UNIFIED, uid, k, "u", 1), 0);
            T_EQ_INT(cp_blob_put(t, CP_DB_QUEUE, uid, k, "q", 1), 0);
            T_EQ_INT(cp_outbox_put(t, 100 + 10 * k + uid, uid, "o", 1), 0);
        }
    }
    T_EQ_INT(cp_txn_commit(t), 0);

    T_ASSERT((t = wtxn()));
    T_EQ_INT(cp_user_del(t, "alice"), 0);
    T_EQ_INT(cp_txn_commit(t), 0);

    /* reopen: the deletion is durable and bob's data is untouched */
    env_close();
    T_EQ_INT(env_open(0), 0);
    T_ASSERT((t = rtxn()));
    static const enum cp_blob_db dbs[] = { CP_DB_CONTACTS, CP_DB_UNIFIED, CP_DB_QUEUE };
    for (size_t i = 0; i < 3; i++) {
        T_EQ_INT(cp_blob_count(t, dbs[i], a, &n), 0);
        T_EQ_UINT(n, 0);
        T_EQ_INT(cp_blob_count(t, dbs[i], b, &n), 0);
        T_EQ_UINT(n, 3);
        T_EQ_INT(cp_blob_count(t, dbs[i], 0, &n), 0);
        T_EQ_UINT(n, 3);
    }
    T_EQ_INT(cp_account_each(t, 0, account_cb, &s), 0);
    T_EQ_INT(s.n, 3);
    for (int i = 0; i < s.n; i++)
        T_EQ_UINT(s.uid[i], b);
    s.n = 0;
    T_EQ_INT(cp_outbox_each(t, outbox_cb, &s), 0);
    T_EQ_INT(s.n, 3);
    for (int i = 0; i < s.n; i++)
        T_EQ_UINT(s.uid[i], b);
    T_EQ_INT(cp_account_get(t, a, 11, &acc), -IM_ENOTFOUND);
    cp_txn_abort(t);

    struct cp_store_stats st;
    T_EQ_INT(cp_store_stats(g.s, &st), 0);
    T_EQ_UINT(st.users, 1);
    T_EQ_UINT(st.accounts, 3);
    T_EQ_UINT(st.queued, 3);
    T_EQ_UINT(st.map_size, 1ull << 30);
    T_ASSERT(st.page_size >= 4096);
    T_ASSERT(st.last_pgno > 0);
    env_done();
}

T_TEST(accounts)
{
    struct cp_txn *t;
    struct cp_account a, got;
    struct seen s = { .n = 0 };
    uint8_t opts[3] = { 0x81, 0xa1, 'x' }, sealed[40];

    env_new(0);
    for (size_t i = 0; i < sizeof(sealed); i++)
        sealed[i] = (uint8_t)(i * 7);
    T_ASSERT((t = wtxn()));
    fill_account(&a, 1, 300, "alice@a.test");
    a.options = opts;
    a.options_len = sizeof(opts);
    a.sealed = sealed;
    a.sealed_len = sizeof(sealed);
    T_EQ_INT(cp_account_put(t, &a), 0);
    fill_account(&a, 1, 2, "alice@b.test");
    T_EQ_INT(cp_account_put(t, &a), 0);
    fill_account(&a, 2, 1, "bob@a.test");
    T_EQ_INT(cp_account_put(t, &a), 0);
    fill_account(&a, 1, 256, "alice@c.test");
    T_EQ_INT(cp_account_put(t, &a), 0);
    /* a field that fills its buffer is not NUL-terminated: refused */
    memset(a.tls, 'x', sizeof(a.tls));
    T_EQ_INT(cp_account_put(t, &a), -IM_EINVAL);
    fill_account(&a, 0, 1, "nobody");
    T_EQ_INT(cp_account_put(t, &a), -IM_EINVAL);
    T_EQ_INT(cp_txn_commit(t), 0);

    T_ASSERT((t = rtxn()));
    T_EQ_INT(cp_account_get(t, 1, 300, &got), 0);
    T_EQ_UINT(got.uid, 1);
    T_EQ_UINT(got.account, 300);
    T_EQ_STR(got.network, "xmpp");
    T_EQ_STR(got.login, "alice@a.test");
    T_EQ_STR(got.server, "127.0.0.1:5222");
    T_EQ_STR(got.tls, "starttls");
    T_EQ_STR(got.name, "work");
    T_EQ_UINT(got.options_len, sizeof(opts));
    T_EQ_MEM(got.options, opts, sizeof(opts));
    T_EQ_UINT(got.sealed_len, sizeof(sealed));
    T_EQ_MEM(got.sealed, sealed, sizeof(sealed));
    cp_account_free(&got);
    T_ASSERT(got.options == NULL && got.sealed == NULL);
    T_EQ_INT(cp_account_get(t, 1, 2, &got), 0);
    T_ASSERT(got.options == NULL && got.options_len == 0 && got.sealed == NULL);
    cp_account_free(&got);
    T_EQ_INT(cp_account_get(t, 1, 3, &got), -IM_ENOTFOUND);

    /* one user's accounts in numeric order (256 after 2, before 300) */
    T_EQ_INT(cp_account_each(t, 1, account_cb, &s), 0);
    T_EQ_INT(s.n, 3);
    T_EQ_UINT(s.k[0], 2);
    T_EQ_UINT(s.k[1], 256);
    T_EQ_UINT(s.k[2], 300);
    T_EQ_STR(s.v[0], "alice@b.test");
    s.n = 0;
    T_EQ_INT(cp_account_each(t, 0, account_cb, &s), 0);
    T_EQ_INT(s.n, 4);
    T_EQ_UINT(s.uid[3], 2);
    s.n = 0;
    T_EQ_INT(cp_account_each(t, 3, account_cb, &s), 0);
    T_EQ_INT(s.n, 0);
    cp_txn_abort(t);

    T_ASSERT((t = wtxn()));
    T_EQ_INT(cp_account_del(t, 1, 256), 0);
    T_EQ_INT(cp_account_del(t, 1, 256), -IM_ENOTFOUND);
    T_EQ_INT(cp_txn_commit(t), 0);
    T_ASSERT((t = rtxn()));
    T_EQ_INT(cp_account_get(t, 1, 256, &got), -IM_ENOTFOUND);
    s.n = 0;
    T_EQ_INT(cp_account_each(t, 1, account_cb, &s), 0);
    T_EQ_INT(s.n, 2);
    cp_txn_abort(t);
    env_done();
}

T_TEST(blobs_order)
{
    struct cp_txn *t;
    struct seen s = { .n = 0 };
    static const uint64_t seqs[] = { 5, 1, 300, 2, 256, 65536, 3 };
    char v[16];
    uint64_t n;
    int calls = 0;

    env_new(0);
    T_ASSERT((t = wtxn()));
    for (size_t i = 0; i < IM_ARRAY_SIZE(seqs); i++) {
        snprintf(v, sizeof(v), "m%llu", (unsigned long long)seqs[i]);
        T_EQ_INT(cp_blob_put(t, CP_DB_QUEUE, 1, seqs[i], v, strlen(v)), 0);
    }
    T_EQ_INT(cp_blob_put(t, CP_DB_QUEUE, 256, 1, "x256", 4), 0);
    T_EQ_INT(cp_blob_put(t, CP_DB_QUEUE, 2, 7, "x2", 2), 0);
    T_EQ_INT(cp_blob_put(t, CP_DB_QUEUE, 2, 9, NULL, 0), 0);        /* empty value */
    T_EQ_INT(cp_blob_put(t, CP_DB_QUEUE, 0, 9, "z", 1), -IM_EINVAL);
    T_EQ_INT(cp_blob_put(t, CP_DB_CONTACTS, 1, 1, "other db", 8), 0);
    T_EQ_INT(cp_txn_commit(t), 0);

    T_ASSERT((t = rtxn()));
    T_EQ_INT(cp_blob_each(t, CP_DB_QUEUE, 1, 0, blob_cb, &s), 0);
    T_EQ_INT(s.n, 7);
    static const uint64_t sorted[] = { 1, 2, 3, 5, 256, 300, 65536 };
    for (int i = 0; i < 7; i++) {
        T_EQ_UINT(s.uid[i], 1);
        T_EQ_UINT(s.k[i], sorted[i]);
        snprintf(v, sizeof(v), "m%llu", (unsigned long long)sorted[i]);
        T_EQ_STR(s.v[i], v);
    }
    s.n = 0;
    T_EQ_INT(cp_blob_each(t, CP_DB_QUEUE, 1, 4, blob_cb, &s), 0);
    T_EQ_INT(s.n, 4);
    T_EQ_UINT(s.k[0], 5);
    /* uid 0: all users in (uid, k) order, from ignored */
    s.n = 0;
    T_EQ_INT(cp_blob_each(t, CP_DB_QUEUE, 0, 1000, blob_cb, &s), 0);
    T_EQ_INT(s.n, 10);
    T_EQ_UINT(s.uid[7], 2);
    T_EQ_UINT(s.k[7], 7);
    T_EQ_UINT(s.uid[8], 2);
    T_EQ_STR(s.v[8], "");
    T_EQ_UINT(s.uid[9], 256);
    /* a callback's non-zero return stops the walk and is returned */
    T_EQ_INT(cp_blob_each(t, CP_DB_QUEUE, 1, 0, stop_cb, &calls), 42);
    T_EQ_INT(calls, 2);
    T_EQ_INT(cp_blob_count(t, CP_DB_QUEUE, 1, &n), 0);
    T_EQ_UINT(n, 7);
    T_EQ_INT(cp_blob_count(t, CP_DB_QUEUE, 3, &n), 0);
    T_EQ_UINT(n, 0);
    cp_txn_abort(t);

    T_ASSERT((t = wtxn()));
    T_EQ_INT(cp_blob_del_upto(t, CP_DB_QUEUE, 1, 256, &n), 0);
    T_EQ_UINT(n, 5);
    T_EQ_INT(cp_blob_del_upto(t, CP_DB_QUEUE, 1, 256, &n), 0);     /* idempotent */
    T_EQ_UINT(n, 0);
    T_EQ_INT(cp_blob_del(t, CP_DB_QUEUE, 1, 300), 0);
    T_EQ_INT(cp_blob_del(t, CP_DB_QUEUE, 1, 300), -IM_ENOTFOUND);
    T_EQ_INT(cp_txn_commit(t), 0);

    T_ASSERT((t = rtxn()));
    s.n = 0;
    T_EQ_INT(cp_blob_each(t, CP_DB_QUEUE, 1, 0, blob_cb, &s), 0);
    T_EQ_INT(s.n, 1);
    T_EQ_UINT(s.k[0], 65536);
    T_EQ_INT(cp_blob_count(t, CP_DB_QUEUE, 2, &n), 0);
    T_EQ_UINT(n, 2);
    T_EQ_INT(cp_blob_count(t, CP_DB_QUEUE, 256, &n), 0);
    T_EQ_UINT(n, 1);
    T_EQ_INT(cp_blob_count(t, CP_DB_CONTACTS, 1, &n), 0);
    T_EQ_UINT(n, 1);
    cp_txn_abort(t);

    T_ASSERT((t = wtxn()));
    T_EQ_INT(cp_blob_del_upto(t, CP_DB_QUEUE, 2, UINT64_MAX, &n), 0);
    T_EQ_UINT(n, 2);
    T_EQ_INT(cp_blob_count(t, CP_DB_QUEUE, 0, &n), 0);
    T_EQ_UINT(n, 2);
    T_EQ_INT(cp_txn_commit(t), 0);
    env_done();
}

T_TEST(outbox)
{
    struct cp_txn *t;
    struct seen s = { .n = 0 };
    uint64_t n;

    env_new(0);
    T_ASSERT((t = wtxn()));
    T_EQ_INT(cp_outbox_put(t, 300, 1, "c", 1), 0);
    T_EQ_INT(cp_outbox_put(t, 1, 2, "a", 1), 0);
    T_EQ_INT(cp_outbox_put(t, 2, 1, "b", 1), 0);
    T_EQ_INT(cp_outbox_put(t, 256, 2, "", 0), 0);
    T_EQ_INT(cp_outbox_put(t, 9, 0, "z", 1), -IM_EINVAL);
    T_EQ_INT(cp_txn_commit(t), 0);

    T_ASSERT((t = rtxn()));
    T_EQ_INT(cp_outbox_each(t, outbox_cb, &s), 0);
    T_EQ_INT(s.n, 4);
    T_EQ_UINT(s.k[0], 1);   T_EQ_UINT(s.uid[0], 2);   T_EQ_STR(s.v[0], "a");
    T_EQ_UINT(s.k[1], 2);   T_EQ_UINT(s.uid[1], 1);   T_EQ_STR(s.v[1], "b");
    T_EQ_UINT(s.k[2], 256); T_EQ_UINT(s.uid[2], 2);   T_EQ_STR(s.v[2], "");
    T_EQ_UINT(s.k[3], 300); T_EQ_UINT(s.uid[3], 1);   T_EQ_STR(s.v[3], "c");
    cp_txn_abort(t);

    T_ASSERT((t = wtxn()));
    T_EQ_INT(cp_outbox_del_uid(t, 1, &n), 0);
    T_EQ_UINT(n, 2);
    T_EQ_INT(cp_outbox_del(t, 1), 0);
    T_EQ_INT(cp_outbox_del(t, 1), -IM_ENOTFOUND);
    T_EQ_INT(cp_txn_commit(t), 0);
    T_ASSERT((t = rtxn()));
    s.n = 0;
    T_EQ_INT(cp_outbox_each(t, outbox_cb, &s), 0);
    T_EQ_INT(s.n, 1);
    T_EQ_UINT(s.k[0], 256);
    cp_txn_abort(t);
    env_done();
}

T_TEST(counters_persist)
{
    struct cp_txn *t;
    uint64_t v, uid;

    env_new(0);
    T_ASSERT((t = wtxn()));
    T_EQ_INT(cp_meta_next(t, "msg", &v), 0);
    T_EQ_UINT(v, 1);
    T_EQ_INT(cp_meta_next(t, "msg", &v), 0);
    T_EQ_UINT(v, 2);
    T_EQ_INT(cp_meta_next(t, "account", &v), 0);
    T_EQ_UINT(v, 1);
    T_EQ_INT(add_user(t, "alice", &uid), 0);
    T_EQ_INT(cp_txn_commit(t), 0);

    env_close();
    T_EQ_INT(env_open(0), 0);
    T_ASSERT((t = wtxn()));
    T_EQ_INT(cp_meta_next(t, "msg", &v), 0);
    T_EQ_UINT(v, 3);
    T_EQ_INT(cp_meta_next(t, "account", &v), 0);
    T_EQ_UINT(v, 2);
    T_EQ_INT(add_user(t, "bob", &uid), 0);
    T_EQ_UINT(uid, 2);
    cp_txn_abort(t);        /* an aborted counter step is not kept */
    T_ASSERT((t = wtxn()));
    T_EQ_INT(cp_meta_next(t, "msg", &v), 0);
    T_EQ_UINT(v, 3);
    cp_txn_abort(t);
    /* a read transaction cannot advance a counter */
    T_ASSERT((t = rtxn()));
    T_ASSERT(cp_meta_next(t, "msg", &v) < 0);
    cp_txn_abort(t);
    env_done();
}

T_TEST(commit_and_abort)
{
    struct cp_txn *t, *r;
    struct cp_user u;

    env_new(0);
    T_ASSERT((t = wtxn()));
    T_EQ_INT(add_user(t, "kept", NULL), 0);
    T_EQ_INT(cp_blob_put(t, CP_DB_QUEUE, 1, 1, "hello", 5), 0);
    T_EQ_INT(cp_txn_commit(t), 0);

    T_ASSERT((t = wtxn()));
    T_EQ_INT(add_user(t, "dropped", NULL), 0);
    T_EQ_INT(cp_user_get(t, "dropped", &u), 0);        /* visible inside the txn */
    T_ASSERT((r = rtxn()));                            /* a reader beside the writer */
    T_EQ_INT(cp_user_get(r, "dropped", &u), -IM_ENOTFOUND);
    T_EQ_INT(cp_user_get(r, "kept", &u), 0);
    cp_txn_abort(r);
    cp_txn_abort(t);

    env_close();
    T_EQ_INT(env_open(0), 0);
    T_ASSERT((r = rtxn()));
    T_EQ_INT(cp_user_get(r, "kept", &u), 0);
    T_EQ_INT(cp_user_get(r, "dropped", &u), -IM_ENOTFOUND);
    uint64_t n;
    T_EQ_INT(cp_blob_count(r, CP_DB_QUEUE, 1, &n), 0);
    T_EQ_UINT(n, 1);
    cp_txn_abort(r);
    env_done();
}

T_TEST(schema_check)
{
    uint8_t v[8];
    char why[256];
    struct cp_store *s2 = NULL;

    env_new(0);
    env_close();
    /* reopening a schema-1 store is fine */
    T_EQ_INT(env_open(0), 0);
    env_close();
    be64(v, 2);
    T_EQ_INT(raw_put("meta", "schema", 6, v, 8), 0);
    why[0] = '\0';
    T_EQ_INT(cp_store_open(&s2, g.dir, 0, why, sizeof(why)), -ENOTSUP);
    T_ASSERT(s2 == NULL);
    T_ASSERT(strstr(why, "schema 2"));
    T_ASSERT(strstr(why, "newer"));
    /* a schema value that does not decode */
    T_EQ_INT(raw_put("meta", "schema", 6, "x", 1), 0);
    T_EQ_INT(cp_store_open(&s2, g.dir, 0, why, sizeof(why)), -IM_ECORRUPT);
    T_ASSERT(why[0]);
    be64(v, 1);
    T_EQ_INT(raw_put("meta", "schema", 6, v, 8), 0);
    T_EQ_INT(env_open(0), 0);
    env_done();

    /* a directory that does not exist */
    T_ASSERT(cp_store_open(&s2, "/tmp/imfuse-no-such-dir/x", 0, why, sizeof(why)) < 0);
    T_ASSERT(strstr(why, "imfuse-no-such-dir"));
    T_ASSERT(s2 == NULL);
}

T_TEST(map_full)
{
    struct cp_txn *t;
    struct cp_user u;
    uint8_t big[4000];
    uint64_t n;
    int rc = 0, i;
    const size_t small = 256 * 1024;

    memset(big, 0xab, sizeof(big));
    env_new(small);
    T_ASSERT((t = wtxn()));
    T_EQ_INT(add_user(t, "keep", NULL), 0);
    T_EQ_INT(cp_blob_put(t, CP_DB_QUEUE, 1, 1, "before", 6), 0);
    T_EQ_INT(cp_txn_commit(t), 0);

    T_ASSERT((t = wtxn()));
    for (i = 0; i < 1000; i++)
        if ((rc = cp_blob_put(t, CP_DB_QUEUE, 1, 100 + (uint64_t)i, big, sizeof(big))))
            break;
    T_EQ_INT(rc, -ENOSPC);
    T_ASSERT(i > 5);
    /* the transaction is dead: later calls and the commit report the same */
    T_EQ_INT(cp_blob_put(t, CP_DB_QUEUE, 1, 2, "x", 1), -ENOSPC);
    T_EQ_INT(cp_user_get(t, "keep", &u), -ENOSPC);
    T_EQ_INT(cp_txn_commit(t), -ENOSPC);
    T_ASSERT(strstr(cp_store_strerror(-ENOSPC), "full"));

    /* the earlier data is intact, and the store still takes small writes */
    T_ASSERT((t = rtxn()));
    T_EQ_INT(cp_user_get(t, "keep", &u), 0);
    T_EQ_INT(cp_blob_count(t, CP_DB_QUEUE, 1, &n), 0);
    T_EQ_UINT(n, 1);
    cp_txn_abort(t);
    T_ASSERT((t = wtxn()));
    T_EQ_INT(cp_blob_put(t, CP_DB_QUEUE, 1, 2, "after", 5), 0);
    T_EQ_INT(cp_txn_commit(t), 0);

    env_close();
    T_EQ_INT(env_open(small), 0);
    T_ASSERT((t = rtxn()));
    T_EQ_INT(cp_user_get(t, "keep", &u), 0);
    T_EQ_INT(cp_blob_count(t, CP_DB_QUEUE, 1, &n), 0);
    T_EQ_UINT(n, 2);
    cp_txn_abort(t);
    struct cp_store_stats st;
    T_EQ_INT(cp_store_stats(g.s, &st), 0);
    T_EQ_UINT(st.map_size, small);
    env_done();
}

T_TEST(corrupt_records)
{
    struct cp_txn *t;
    struct cp_user u;
    struct cp_account a;
    struct seen s = { .n = 0 };
    uint8_t rec[64], key[16];

    env_new(0);
    T_ASSERT((t = wtxn()));
    T_EQ_INT(add_user(t, "alice", NULL), 0);
    T_EQ_INT(add_user(t, "bob", NULL), 0);
    T_EQ_INT(add_user(t, "carol", NULL), 0);
    fill_account(&a, 1, 1, "alice@a.test");
    T_EQ_INT(cp_account_put(t, &a), 0);
    T_EQ_INT(cp_txn_commit(t), 0);
    env_close();

    /* users: truncated, unknown version, over-long hash, trailing bytes */
    T_EQ_INT(raw_put("users", "alice", 5, "\x01\x00", 2), 0);
    T_EQ_INT(raw_put("users", "bob", 3, "\x09", 1), 0);
    memset(rec, 0, sizeof(rec));
    rec[0] = 1;
    rec[8] = 3;                         /* uid 3 */
    rec[1 + 8 + 4 + 32] = 0xff;         /* hash length 0xff.. */
    rec[1 + 8 + 4 + 32 + 1] = 0xff;
    T_EQ_INT(raw_put("users", "carol", 5, rec, 1 + 8 + 4 + 32 + 2), 0);
    /* accounts: a string length running past the end */
    be64(key, 1);
    be64(key + 8, 1);
    T_EQ_INT(raw_put("accounts", key, 16, "\x01\x00\x04xm", 5), 0);
    be64(key + 8, 2);
    T_EQ_INT(raw_put("accounts", key, 16, "", 0), 0);
    /* outbox: too short; uids: name too long */
    be64(key, 5);
    T_EQ_INT(raw_put("outbox", key, 8, "\x01\x00", 2), 0);
    be64(key, 9);
    memset(rec, 'a', sizeof(rec));
    T_EQ_INT(raw_put("uids", key, 8, rec, sizeof(rec)), 0);
    /* meta counter of the wrong width */
    T_EQ_INT(raw_put("meta", "msg", 3, "abc", 3), 0);

    T_EQ_INT(env_open(0), 0);
    T_ASSERT((t = wtxn()));
    T_EQ_INT(cp_user_get(t, "alice", &u), -IM_ECORRUPT);
    T_EQ_INT(cp_user_get(t, "bob", &u), -IM_ECORRUPT);
    T_EQ_INT(cp_user_get(t, "carol", &u), -IM_ECORRUPT);
    T_EQ_INT(cp_user_get_uid(t, 9, &u), -IM_ECORRUPT);
    T_EQ_INT(cp_user_each(t, user_cb, &s), -IM_ECORRUPT);
    T_EQ_INT(cp_account_get(t, 1, 1, &a), -IM_ECORRUPT);
    T_ASSERT(a.options == NULL && a.sealed == NULL);
    T_EQ_INT(cp_account_get(t, 1, 2, &a), -IM_ECORRUPT);
    T_EQ_INT(cp_account_each(t, 1, account_cb, &s), -IM_ECORRUPT);
    T_EQ_INT(cp_outbox_each(t, outbox_cb, &s), -IM_ECORRUPT);
    uint64_t v;
    T_EQ_INT(cp_meta_next(t, "msg", &v), -IM_ECORRUPT);
    T_EQ_INT(cp_user_del(t, "alice"), -IM_ECORRUPT);
    cp_txn_abort(t);
    T_ASSERT(strstr(cp_store_strerror(-IM_ECORRUPT), "corrupt"));

    /* a data.mdb that is not LMDB at all */
    char path[128], why[256];
    struct cp_store *s2 = NULL;
    env_close();
    snprintf(path, sizeof(path), "%s/data.mdb", g.dir);
    FILE *f = fopen(path, "w");
    T_ASSERT(f);
    for (int i = 0; i < 4096; i++)
        fputc('z', f);
    fclose(f);
    T_ASSERT(cp_store_open(&s2, g.dir, 0, why, sizeof(why)) < 0);
    T_ASSERT(s2 == NULL);
    T_ASSERT(why[0]);
    env_done();
}

/* A child commits one transaction, starts another and is killed with SIGKILL
 * in the middle of it: the committed one is there, the other is not, and the
 * store opens and writes normally afterwards (stale reader/writer cleaned). */
T_TEST(kill_9)
{
    struct cp_txn *t;
    struct cp_user u;
    int pfd[2], status;
    char c;

    env_new(0);
    env_close();
    T_EQ_INT(pipe(pfd), 0);
    pid_t pid = fork();
    T_ASSERT(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        if (env_open(0) || !(t = wtxn()) || add_user(t, "committed", NULL) || cp_txn_commit(t))
            _exit(3);
        if (!(t = rtxn()))              /* a reader slot left behind too */
            _exit(3);
        struct cp_txn *w = wtxn();
        if (!w || add_user(w, "inflight", NULL))
            _exit(3);
        for (uint64_t k = 1; k <= 2000; k++)
            if (cp_blob_put(w, CP_DB_QUEUE, 1, k, "payload-payload-payload", 23))
                _exit(3);
        if (write(pfd[1], "x", 1) != 1)
            _exit(3);
        for (;;)
            pause();
    }
    close(pfd[1]);
    T_EQ_INT(read(pfd[0], &c, 1), 1);
    close(pfd[0]);
    T_EQ_INT(kill(pid, SIGKILL), 0);
    T_EQ_INT(waitpid(pid, &status, 0), pid);
    T_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    T_EQ_INT(env_open(0), 0);
    T_ASSERT((t = wtxn()));                 /* the dead writer's lock is released */
    T_EQ_INT(cp_user_get(t, "committed", &u), 0);
    T_EQ_INT(cp_user_get(t, "inflight", &u), -IM_ENOTFOUND);
    uint64_t n;
    T_EQ_INT(cp_blob_count(t, CP_DB_QUEUE, 0, &n), 0);
    T_EQ_UINT(n, 0);
    T_EQ_INT(add_user(t, "after", NULL), 0);
    T_EQ_INT(cp_txn_commit(t), 0);
    env_done();
}

T_MAIN(T_RUN(users), T_RUN(user_del_cascades), T_RUN(accounts), T_RUN(blobs_order), T_RUN(outbox),
       T_RUN(counters_persist), T_RUN(commit_and_abort), T_RUN(schema_check), T_RUN(map_full),
       T_RUN(corrupt_records), T_RUN(kill_9))
