/*
 * cp_client.c - the client requests the controlplane serves: register,
 * login, link, update_account, unlink, set_unified, ack.  The dataplane
 * forwards them as CPM_CLIENT_REQ with the frame as it came.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "im_proto.h"
#include "client/cl_ops.h"
#include "dp_chan.h"
#include "cp_int.h"

/* One request being served. */
struct req {
    struct cp_core *c;
    uint32_t conn, gen;
    uint64_t uid;
    uint64_t id;
    struct cl_msg msg;
    const char *peer;
};

#define MAX_UNIFIED         10000
#define MAX_MEMBERS         64
#define MAX_OPTIONS         32
/* A stored unified list must fit a frame with what goes around it: the
 * reply's {op, id, contacts} and the login's {user, device, unified}. */
#define CP_UNIFIED_MAX_BYTES (CL_FRAME_MAX - 1024)
#define USER_NAME_RULE      "must be 1-64 characters of a-z, 0-9, '.', '_' and '-'"

bool
cp_user_name_ok(const char *s, size_t n)
{
    if (n < 1 || n > CP_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static void
bad(struct req *r, const char *key, const char *why)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "%s: %s", key, why);
    cp_client_error(r->c, r->conn, r->gen, r->id, CL_ERR_BAD_REQUEST, msg);
}

/* A getter's result turned into the field helpers' answer: 0 present, 1
 * absent (and optional), -1 answered with bad_request. */
static int
field_result(struct req *r, const char *key, bool required, int rc, const char *why)
{
    if (rc == 0)
        return 0;
    if (rc == -IM_ENOTFOUND && !required)
        return 1;
    bad(r, key, rc == -IM_ENOTFOUND ? "is required" : why);
    return -1;
}

/* Typed field access that answers bad_request itself; 0 present, 1 absent, -1 answered. */
static int
str_field(struct req *r, const msgpack_object *map, const char *key, uint32_t min, uint32_t max,
          bool required, struct im_str *out)
{
    const char *why = NULL;
    int rc = cl_get_str(map, key, min, max, out, &why);
    return field_result(r, key, required, rc, why);
}

/* str_field() for text that reaches an IM network: NUL refused (cl_get_text()). */
static int
text_field(struct req *r, const msgpack_object *map, const char *key, uint32_t min, uint32_t max,
           bool required, struct im_str *out)
{
    const char *why = NULL;
    int rc = cl_get_text(map, key, min, max, out, &why);
    return field_result(r, key, required, rc, why);
}

static int
uint_field(struct req *r, const msgpack_object *map, const char *key, bool required, uint64_t *out)
{
    const char *why = NULL;
    int rc = cl_get_uint(map, key, out, &why);
    return field_result(r, key, required, rc, why);
}

static char *
vdup(struct im_str v)
{
    char *s = cl_strdup(v);
    if (!s)
        cp_oom(__func__);
    return s;
}

static void
be64(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)v;
}

static void
seal_aad(uint8_t aad[16], uint64_t uid, uint64_t account)
{
    be64(aad, uid);
    be64(aad + 8, account);
}

/* ------------------------------------------------------------------------ */
/* register                                                                  */

static void
register_done(void *ctx, struct cp_auth_job *j)
{
    struct cp_core *c = ctx;
    struct cp_txn *t = cp_txn(c);
    struct cp_user u;
    int rc;

    if (j->result < 0 || !t) {
        cp_client_error(c, j->conn, j->gen, j->req_id, CL_ERR_INTERNAL, "cannot hash the password");
        return;
    }
    memset(&u, 0, sizeof(u));
    im_strlcpy(u.name, j->user, sizeof(u.name));
    im_strlcpy(u.hash, j->newhash, sizeof(u.hash));
    rc = cp_user_add(t, &u);
    im_wipe(&u, sizeof(u));
    if (rc == -IM_EEXIST) {
        cp_client_error(c, j->conn, j->gen, j->req_id, CL_ERR_EXISTS, "user exists");
        return;
    }
    if (rc < 0) {
        cp_client_error(c, j->conn, j->gen, j->req_id, CL_ERR_INTERNAL, cp_store_strerror(rc));
        return;
    }
    LOG(IM_LOG_INFO, "user %s registered from %s", j->user, j->peer);
    cp_client_ok(c, j->conn, j->gen, j->req_id);
}

/* Hand a password job to the pool; false when it answered limit (the job is freed). */
static bool
auth_submit(struct req *r, struct cp_auth_job *j)
{
    struct cp_core *c = r->c;
    const char *which = NULL;
    char msg[200];
    int rc = cp_auth_submit(c->auth, j, &which);
    if (rc == 0)
        return true;
    if (rc == -ENOMEM)
        cp_oom(__func__);
    if (which && !strcmp(which, "per_source")) {
        c->lim.auth_source++;
        snprintf(msg, sizeof(msg), "too many logins and registrations in progress from your address "
                 "(auth-pending-per-address %u): try again when they are answered",
                 c->cfg->auth_pending_per_address);
    } else {
        c->lim.auth_total++;
        snprintf(msg, sizeof(msg), "too many logins and registrations in progress (auth-pending-max %u): "
                 "try again in a moment", c->cfg->auth_pending_max);
    }
    cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_LIMIT, msg);
    if (j->password) {
        im_wipe(j->password, j->pwlen);
        free(j->password);
    }
    im_wipe(j, sizeof(*j));
    free(j);
    return false;
}

/*
 * register always hashes the password, also for a name that exists (the
 * answer is then `exists`, after the same work), so its time says nothing
 * about which names exist.  Registrations are rate-limited per source.
 */
static void
op_register(struct req *r)
{
    struct cp_core *c = r->c;
    struct im_str user, pw;
    char src[CP_AUTH_SRC_MAX], key[CP_AUTH_SRC_MAX + 2];

    if (!c->cfg->open_registration) {
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_UNSUPPORTED,
                        "open registration is off: ask the operator for an account");
        return;
    }
    if (str_field(r, &r->msg.root, "user", 1, CP_NAME_MAX, true, &user) ||
        str_field(r, &r->msg.root, "password", 1, 1024, true, &pw))
        return;
    if (!cp_user_name_ok(user.p, user.len)) {
        bad(r, "user", USER_NAME_RULE);
        return;
    }
    cp_auth_source(r->peer, src, sizeof(src));
    snprintf(key, sizeof(key), "r:%s", src);
    if (cp_ratelim_take(c->rl_register, key, im_mono_ms()) < 0) {
        char msg[160];
        c->lim.register_rate++;
        snprintf(msg, sizeof(msg), "too many registrations from your address (register-per-address %u "
                 "an hour): try again later", c->cfg->register_per_address);
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_LIMIT, msg);
        return;
    }
    struct cp_auth_job *j = calloc(1, sizeof(*j));
    if (!j)
        cp_oom(__func__);
    j->kind = CP_AUTH_HASH;
    j->password = vdup(pw);
    j->pwlen = pw.len;
    j->done = register_done;
    j->ctx = c;
    j->conn = r->conn;
    j->gen = r->gen;
    j->req_id = r->id;
    snprintf(j->user, sizeof(j->user), "%.*s", (int)user.len, user.p);
    im_strlcpy(j->peer, r->peer, sizeof(j->peer));
    im_strlcpy(j->source, src, sizeof(j->source));
    (void)auth_submit(r, j);
}

/* ------------------------------------------------------------------------ */
/* login                                                                     */

/* The three lockout keys of a login: the user, the user from this source,
 * the source (cp_auth_source(): an IPv4 address, an IPv6 /64). */
struct login_keys {
    char user[CP_NAME_MAX + 3];
    char user_src[CP_NAME_MAX + CP_AUTH_SRC_MAX + 4];
    char src[CP_AUTH_SRC_MAX + 2];
};

static void
login_keys(struct login_keys *k, const char *user, const char *source)
{
    snprintf(k->user, sizeof(k->user), "u:%s", user);
    snprintf(k->user_src, sizeof(k->user_src), "s:%s@%s", user, source);
    snprintf(k->src, sizeof(k->src), "a:%s", source);
}

/* The login's attempt ends: a success clears the user's counts (not the
 * source's: another user's success there says nothing), a failure counts
 * against all three. */
static void
login_end(struct cp_core *c, const struct cp_auth_job *j, bool ok)
{
    struct login_keys k;
    uint64_t now = im_mono_ms();
    login_keys(&k, j->user, j->source);
    cp_ratelim_end(c->rl_user, k.user, now, ok, true);
    cp_ratelim_end(c->rl_user_src, k.user_src, now, ok, true);
    cp_ratelim_end(c->rl_addr, k.src, now, ok, false);
}

/*
 * The replay of the queue after login is paced by the connection: one batch
 * at a time, each read from a read-only snapshot of what is committed and
 * sent at once (DPM_DELIVERs to the connection, then DPM_REPLAY_END), the
 * next asked for (CPM_REPLAY_NEXT) only when the client has drained the
 * last.  Live deliveries skip a connection whose replay has not caught up:
 * what is committed meanwhile is in the queue, so the replay reads it in
 * seq order; once a batch reaches the end of the snapshot, everything
 * committed later arrives live after the DPM_REPLAY_END, with higher seqs.
 *
 * An ack from any connection removes its messages at once (its ok follows
 * the commit, as the protocol says): a connection still replaying then skips
 * them, since what another device acknowledged is read already.
 */
#define CP_REPLAY_MSGS      512             /* messages per batch at most */
#define CP_REPLAY_BYTES     (256u * 1024)   /* frame bytes per batch at most */

struct replay_ctx {
    struct cp_core *c;
    uint32_t conn, gen;
    uint64_t last;
    size_t bytes;
    unsigned n;
    bool more;
};

static int
replay_one(void *ud, uint64_t uid, uint64_t seq, const void *v, size_t n)
{
    struct replay_ctx *rc = ud;
    if (rc->n && (rc->n >= CP_REPLAY_MSGS || rc->bytes + n > CP_REPLAY_BYTES)) {
        rc->more = true;
        return 1;
    }
    struct dp_msg d = { .type = DPM_DELIVER, .uid = uid, .conn = rc->conn, .gen = rc->gen };
    d.u.deliver.seq = seq;
    if (dp_msg_copy(&d, v, n) < 0)
        cp_oom(__func__);
    dp_chan_send_down(rc->c->ch, &d);
    rc->last = seq;
    rc->bytes += n;
    rc->n++;
    return 0;
}

/* One batch of uid's queue after seq `after` to one connection, from the
 * snapshot t, then its DPM_REPLAY_END. */
static bool
replay_batch(struct cp_core *c, struct cp_txn *t, uint32_t conn, uint32_t gen, uint64_t uid,
             uint64_t *after)
{
    struct replay_ctx rc = { c, conn, gen, *after, 0, 0, false };
    if (*after < UINT64_MAX)
        (void)cp_blob_each(t, CP_DB_QUEUE, uid, *after + 1, replay_one, &rc);
    struct dp_msg e = { .type = DPM_REPLAY_END, .conn = conn, .gen = gen, .uid = uid };
    e.u.replay_end.last = rc.last;
    e.u.replay_end.more = rc.more;
    dp_chan_send_down(c->ch, &e);
    *after = rc.last;
    return rc.more;
}

static struct cp_session *
session_find(struct cp_core *c, uint32_t conn, uint32_t gen)
{
    for (struct cp_session *s = c->sessions; s; s = s->next)
        if (s->conn == conn && s->gen == gen)
            return s;
    return NULL;
}

/* Remove uid's queued messages up to upto in this turn (the queue quota
 * follows the commit).  0 or the store's error. */
static int
queue_del(struct cp_core *c, struct cp_txn *t, uint64_t uid, uint64_t upto)
{
    uint64_t n, bytes;
    int rc = cp_queue_del_upto(t, uid, upto, &n, &bytes);
    if (rc == 0 && n)
        cp_quota_queue(c, uid, -(int64_t)n, -(int64_t)bytes);
    return rc;
}

void
cp_client_session_end(struct cp_core *c, const struct dp_msg *m)
{
    cp_session_del(c, m->conn, m->gen);
}

void
cp_client_replay_next(struct cp_core *c, const struct dp_msg *m)
{
    struct cp_session *s = session_find(c, m->conn, m->gen);
    if (!s || s->uid != m->uid || !s->replaying)
        return;                         /* logged out or gone meanwhile */
    struct cp_txn *t = NULL;
    int rc = cp_txn_begin(c->store, false, &t);
    if (rc < 0) {
        /* Nothing is lost (it stays queued): the client logs in again. */
        LOG(IM_LOG_ERROR, "replay to uid %llu: cannot read the store: %s", (unsigned long long)m->uid,
            cp_store_strerror(rc));
        struct dp_msg d;
        uint8_t *f;
        size_t len;
        memset(&d, 0, sizeof(d));
        d.type = DPM_CONN_CLOSE;
        d.conn = m->conn;
        d.gen = m->gen;
        if (cl_build_error(false, 0, CL_ERR_INTERNAL, "storage unavailable: log in again later", &f,
                           &len) == 0) {
            if (dp_msg_copy(&d, f, len) < 0)
                cp_oom(__func__);
            free(f);
        }
        dp_chan_send_down(c->ch, &d);
        return;
    }
    uint64_t last = m->u.replay_next.after;
    s->replaying = replay_batch(c, t, m->conn, m->gen, m->uid, &last);
    cp_txn_abort(t);
}

/*
 * The login's answer and its replay's first batch come from a read-only
 * snapshot of what is committed and leave at once: a login writes nothing,
 * so it must not wait for this turn's commit, nor be lost if that commit
 * fails (a full disk).  Messages this turn commits reach the new session
 * after the commit, like every delivery, with higher seqs than the replay's.
 */
static void
login_done(void *ctx, struct cp_auth_job *j)
{
    struct cp_core *c = ctx;
    struct cp_txn *t = NULL;
    struct cp_user u;

    int trc = cp_txn_begin(c->store, false, &t);
    if (trc < 0) {
        login_end(c, j, true);          /* not the client's fault: no failure counted */
        LOG(IM_LOG_ERROR, "login of %s: cannot read the store: %s", j->user, cp_store_strerror(trc));
        cp_client_error(c, j->conn, j->gen, j->req_id, CL_ERR_INTERNAL, "storage unavailable, try again");
        return;
    }
    if (j->result < 0 || cp_user_get(t, j->user, &u) < 0 || u.uid != j->uid) {
        cp_txn_abort(t);
        login_end(c, j, false);
        LOG(IM_LOG_INFO, "login of %s from %s failed", j->user, j->peer);
        c->logins_failed++;
        cp_client_error(c, j->conn, j->gen, j->req_id, CL_ERR_AUTH_FAILED, "wrong user name or password");
        return;
    }
    login_end(c, j, true);

    uint64_t queued = 0;
    (void)cp_blob_count(t, CP_DB_QUEUE, u.uid, &queued);
    struct dp_msg ok = { .type = DPM_LOGIN_OK, .conn = j->conn, .gen = j->gen, .uid = u.uid };
    ok.u.login_ok.req = j->req_id;
    ok.u.login_ok.queued = queued;
    for (int with_unified = 1; with_unified >= 0; with_unified--) {
        struct cl_enc e;
        cl_enc_init(&e);
        msgpack_pack_map(&e.pk, with_unified ? 3 : 2);
        cl_pack_kstr(&e, "user", u.name);
        cl_pack_kstr(&e, "device", j->device);
        if (with_unified) {
            cl_pack_key(&e, "unified");
            cp_pack_unified(c, t, u.uid, &e);
        }
        if (dp_msg_set_frame(&ok, &e) == 0)
            break;
        /* A list stored before set_unified checked its size: the user can
         * still log in, without it (a smaller set_unified replaces it). */
        c->plane_oversize++;
        LOG(IM_LOG_ERROR, "login of %s: the stored unified list is over the frame limit: "
            "logging in without it", j->user);
    }
    if (!ok.len) {
        cp_txn_abort(t);
        cp_client_error(c, j->conn, j->gen, j->req_id, CL_ERR_INTERNAL, "out of memory, try again");
        return;
    }
    dp_chan_send_down(c->ch, &ok);
    uint64_t last = 0;
    bool more = replay_batch(c, t, j->conn, j->gen, u.uid, &last);
    cp_txn_abort(t);
    cp_session_add(c, j->conn, j->gen, u.uid, u.name, j->peer, j->device);
    struct cp_session *s = session_find(c, j->conn, j->gen);
    if (s)
        s->replaying = more;
    LOG(IM_LOG_INFO, "user %s logged in from %s (%llu queued)", u.name, j->peer,
        (unsigned long long)queued);
}

static void
op_login(struct req *r)
{
    struct cp_core *c = r->c;
    struct im_str user, pw, device = { "", 0 };
    char name[CP_NAME_MAX + 1], src[CP_AUTH_SRC_MAX];
    struct login_keys k;
    struct cp_user u;
    uint64_t now = im_mono_ms();

    if (str_field(r, &r->msg.root, "user", 1, CP_NAME_MAX, true, &user) ||
        str_field(r, &r->msg.root, "password", 1, 1024, true, &pw) ||
        str_field(r, &r->msg.root, "device", 0, 64, false, &device) < 0)
        return;
    if (!cp_user_name_ok(user.p, user.len)) {
        bad(r, "user", USER_NAME_RULE);
        return;
    }
    snprintf(name, sizeof(name), "%.*s", (int)user.len, user.p);
    cp_auth_source(r->peer, src, sizeof(src));
    login_keys(&k, name, src);
    /* Every login counts from its submission: with failures and logins in
     * flight together capped, no number of parallel guesses gets past it. */
    if (!cp_ratelim_allows(c->rl_user, k.user, now) || !cp_ratelim_allows(c->rl_user_src, k.user_src, now) ||
        !cp_ratelim_allows(c->rl_addr, k.src, now)) {
        bool locked = cp_ratelim_locked(c->rl_user, k.user, now) ||
                      cp_ratelim_locked(c->rl_user_src, k.user_src, now) ||
                      cp_ratelim_locked(c->rl_addr, k.src, now);
        c->lim.lockout++;
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_LIMIT, locked ?
                        "too many failed logins: locked out for a while, try again later" :
                        "too many logins of this user or from this address are being checked: "
                        "wait for their answers");
        return;
    }
    struct cp_auth_job *j = calloc(1, sizeof(*j));
    if (!j)
        cp_oom(__func__);
    struct cp_txn *t = cp_txn(c);
    if (t && cp_user_get(t, name, &u) == 0) {
        im_strlcpy(j->hash, u.hash, sizeof(j->hash));
        j->uid = u.uid;
        im_wipe(&u, sizeof(u));
    }
    j->kind = CP_AUTH_VERIFY;
    j->password = vdup(pw);
    j->pwlen = pw.len;
    j->done = login_done;
    j->ctx = c;
    j->conn = r->conn;
    j->gen = r->gen;
    j->req_id = r->id;
    im_strlcpy(j->user, name, sizeof(j->user));
    im_strlcpy(j->peer, r->peer, sizeof(j->peer));
    im_strlcpy(j->source, src, sizeof(j->source));
    snprintf(j->device, sizeof(j->device), "%.*s", (int)device.len, device.p);
    if (!auth_submit(r, j))
        return;
    cp_ratelim_begin(c->rl_user, k.user, now);
    cp_ratelim_begin(c->rl_user_src, k.user_src, now);
    cp_ratelim_begin(c->rl_addr, k.src, now);
}

/* ------------------------------------------------------------------------ */
/* accounts                                                                  */

struct contacts_ctx {
    struct cl_enc *e;
    uint64_t account;
    bool found;
};

/* Pack the "contacts" array of the stored list of cx->account (first key >= it). */
static int
pack_contacts_blob(void *ud, uint64_t uid, uint64_t k, const void *v, size_t n)
{
    struct contacts_ctx *cx = ud;
    struct cl_msg m;
    const msgpack_object *arr;
    const char *why;

    if (k != cx->account)
        return 1;
    if (cl_frame_decode(&m, v, n) == 0) {
        if (cl_get_array(&m.root, "contacts", &arr, &why) == 0) {
            msgpack_pack_object(&cx->e->pk, *arr);
            cx->found = true;
        }
        cl_msg_free(&m);
    }
    return 1;
}

int
cp_account_up(struct cp_core *c, struct cp_txn *t, const struct cp_account *a, bool with_contacts)
{
    uint8_t aad[16], *pw = NULL;
    size_t pwlen = 0;
    int rc;

    seal_aad(aad, a->uid, a->account);
    rc = cp_unseal(&c->key, aad, sizeof(aad), a->sealed, a->sealed_len, &pw, &pwlen);
    if (rc < 0)
        return rc;
    struct cp_user u;
    if ((rc = cp_user_get_uid(t, a->uid, &u)) < 0) {
        im_wipe(pw, pwlen);
        free(pw);
        return rc;
    }

    /* the name the certificate is checked against */
    char tls_name[256] = "";
    struct cl_msg om;
    bool have_opts = a->options && a->options_len &&
                     cl_msg_decode(&om, a->options, (uint32_t)a->options_len) == 0;
    if (have_opts) {
        struct im_str tn;
        const char *why;
        if (cl_get_str(&om.root, "tls_name", 1, 255, &tn, &why) == 0)
            snprintf(tls_name, sizeof(tls_name), "%.*s", (int)tn.len, tn.p);
    }
    const struct im_proto_ops *ops = im_proto_find(a->network);
    if (!tls_name[0] && ops && ops->default_tls_name)
        ops->default_tls_name(a->login, tls_name, sizeof(tls_name));
    if (!tls_name[0]) {
        char *host;
        unsigned port;
        if (im_split_hostport(a->server, &host, &port) == 0) {
            im_strlcpy(tls_name, host, sizeof(tls_name));
            free(host);
        }
    }

    /* The whole configuration; over the frame limit, without the unified
     * list (the login brings it), then without the stored contacts too (the
     * emulated login fetches them again). */
    struct dp_msg m = { .type = DPM_ACCOUNT_UP, .uid = a->uid, .account = a->account };
    int levels = with_contacts ? 3 : 2, used = -1;
    for (int level = 0; level < levels && !m.len; level++) {
        bool with_unified = level == 0, with_list = with_contacts && level < 2;
        struct cl_enc e;
        cl_enc_init(&e);
        msgpack_pack_map(&e.pk, 9 + (with_unified ? 1 : 0) + (with_list ? 1 : 0));
        cl_pack_kstr(&e, "user", u.name);
        cl_pack_kstr(&e, "network", a->network);
        cl_pack_kstr(&e, "login", a->login);
        e.secret = true;
        cl_pack_kstrn(&e, "password", (const char *)pw, pwlen);
        cl_pack_kstr(&e, "server", a->server);
        cl_pack_kstr(&e, "tls", a->tls);
        cl_pack_kstr(&e, "tls_name", tls_name);
        cl_pack_kstr(&e, "name", a->name);
        cl_pack_key(&e, "options");
        if (have_opts)
            msgpack_pack_object(&e.pk, om.root);
        else
            msgpack_pack_map(&e.pk, 0);
        if (with_unified) {
            cl_pack_key(&e, "unified");
            cp_pack_unified(c, t, a->uid, &e);
        }
        if (with_list) {
            cl_pack_key(&e, "contacts");
            struct contacts_ctx cx = { &e, a->account, false };
            (void)cp_blob_each(t, CP_DB_CONTACTS, a->uid, a->account, pack_contacts_blob, &cx);
            if (!cx.found)
                msgpack_pack_array(&e.pk, 0);
        }
        if (dp_msg_set_frame(&m, &e) == 0) {
            used = level;
        } else {
            c->plane_oversize++;
            LOG(IM_LOG_WARN, "account %llu: its configuration%s is over the frame limit: %s",
                (unsigned long long)a->account, level == 0 ? " with the unified list" :
                level == 1 && with_list ? " with its stored contacts" : "",
                level + 1 < levels ? "sent without" : "not started");
        }
    }
    if (have_opts)
        cl_msg_free(&om);
    im_wipe(pw, pwlen);
    free(pw);
    if (!m.len)
        return -IM_ETOOBIG;
    cp_after_commit(c, &m, NULL);
    if (used > 0) {
        /* the unified list follows on its own (the user's messages are
         * tagged with it before any login brings it) */
        struct cl_enc ue;
        cl_enc_init(&ue);
        msgpack_pack_map(&ue.pk, 1);
        cl_pack_key(&ue, "unified");
        cp_pack_unified(c, t, a->uid, &ue);
        struct dp_msg um = { .type = DPM_UNIFIED, .uid = a->uid };
        if (dp_msg_set_frame(&um, &ue) == 0)
            cp_after_commit(c, &um, NULL);
    }
    cp_quota_account_up(c, a->uid);
    return 0;
}

struct unified_ctx {
    struct cl_enc *e;
};

static int
pack_unified_blob(void *ud, uint64_t uid, uint64_t k, const void *v, size_t n)
{
    struct unified_ctx *u = ud;
    cl_enc_raw(u->e, v, n);      /* stored as one msgpack map */
    return 0;
}

int
cp_pack_unified(struct cp_core *c, struct cp_txn *t, uint64_t uid, struct cl_enc *e)
{
    uint64_t n = 0;
    int rc = cp_blob_count(t, CP_DB_UNIFIED, uid, &n);
    if (rc < 0)
        n = 0;
    msgpack_pack_array(&e->pk, (uint32_t)n);
    if (n) {
        struct unified_ctx u = { e };
        rc = cp_blob_each(t, CP_DB_UNIFIED, uid, 0, pack_unified_blob, &u);
    }
    return rc < 0 ? rc : 0;
}

/* Validate the `options` map: str keys and str values; packs it into *out (malloc'd msgpack). */
static int
options_field(struct req *r, const msgpack_object *map, uint8_t **out, size_t *outlen)
{
    const msgpack_object *o;
    const char *why;
    int rc = cl_get_map(map, "options", &o, &why);
    *out = NULL;
    *outlen = 0;
    if (rc == -IM_ENOTFOUND)
        return 1;
    if (rc < 0) {
        bad(r, "options", why);
        return -1;
    }
    if (o->via.map.size > MAX_OPTIONS) {
        bad(r, "options", "at most 32 entries");
        return -1;
    }
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size > 255) {
            bad(r, "options", "keys must be strings of at most 255 bytes");
            return -1;
        }
        if (kv->val.type != MSGPACK_OBJECT_STR || kv->val.via.str.size > 1024 ||
            !im_utf8_valid(kv->val.via.str.ptr, kv->val.via.str.size)) {
            bad(r, "options", "values must be strings of at most 1024 bytes");
            return -1;
        }
        if (memchr(kv->val.via.str.ptr, '\0', kv->val.via.str.size)) {
            bad(r, "options", "values must not contain NUL");
            return -1;
        }
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *o);
    *out = (uint8_t *)sb.data;
    *outlen = sb.size;
    return 0;
}

static int
tls_field(struct req *r, const msgpack_object *map, bool required, char out[16])
{
    struct im_str tls;
    int rc = text_field(r, map, "tls", 1, 15, required, &tls);
    if (rc)
        return rc;
    if (!cl_view_eq(tls, "starttls") && !cl_view_eq(tls, "tls") && !cl_view_eq(tls, "none")) {
        bad(r, "tls", "must be \"starttls\", \"tls\" or \"none\"");
        return -1;
    }
    snprintf(out, 16, "%.*s", (int)tls.len, tls.p);
    return 0;
}

static int
server_field(struct req *r, const msgpack_object *map, bool required, char out[262])
{
    struct im_str server;
    int rc = text_field(r, map, "server", 3, 261, required, &server);
    if (rc)
        return rc;
    char buf[262], *host;
    unsigned port;
    snprintf(buf, sizeof(buf), "%.*s", (int)server.len, server.p);
    if (im_split_hostport(buf, &host, &port) < 0) {
        bad(r, "server", "must be \"host:port\" (IPv6 as \"[addr]:port\")");
        return -1;
    }
    free(host);
    memcpy(out, buf, sizeof(buf));
    return 0;
}

struct find_login {
    const char *network, *login;
    uint64_t found;
    uint64_t n;                     /* the user's accounts */
};

static int
find_login_cb(void *ud, const struct cp_account *a)
{
    struct find_login *f = ud;
    f->n++;
    if (!strcmp(a->network, f->network) && !strcmp(a->login, f->login))
        f->found = a->account;
    return 0;
}

static int
seal_password(struct cp_core *c, struct cp_account *a, struct im_str pw)
{
    uint8_t aad[16];
    seal_aad(aad, a->uid, a->account);
    free(a->sealed);
    a->sealed = NULL;
    return cp_seal(&c->key, aad, sizeof(aad), pw.p, pw.len, &a->sealed, &a->sealed_len);
}

static void
op_link(struct req *r)
{
    struct cp_core *c = r->c;
    const msgpack_object *root = &r->msg.root;
    struct im_str network, login, pw, name = { "", 0 };
    struct cp_account a;
    const char *why;
    int rc;

    memset(&a, 0, sizeof(a));
    if (str_field(r, root, "network", 1, 15, true, &network) ||
        text_field(r, root, "login", 1, 255, true, &login) ||
        text_field(r, root, "password", 0, 1024, true, &pw) ||
        server_field(r, root, true, a.server) ||
        tls_field(r, root, true, a.tls) ||
        text_field(r, root, "name", 0, 255, false, &name) < 0 ||
        options_field(r, root, &a.options, &a.options_len) < 0)
        goto out;
    snprintf(a.network, sizeof(a.network), "%.*s", (int)network.len, network.p);
    const struct im_proto_ops *ops = im_proto_find(a.network);
    if (!ops) {
        char msg[96];
        snprintf(msg, sizeof(msg), "network \"%s\" is not supported", a.network);
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_UNSUPPORTED, msg);
        goto out;
    }
    if (!ops->has_starttls && !strcmp(a.tls, "starttls")) {
        bad(r, "tls", "this network has no STARTTLS: use \"tls\" or \"none\"");
        goto out;
    }
    char in[256];
    snprintf(in, sizeof(in), "%.*s", (int)login.len, login.p);
    if (ops->normalize_login(in, a.login, sizeof(a.login), &why) < 0) {
        bad(r, "login", why);
        goto out;
    }
    snprintf(a.name, sizeof(a.name), "%.*s", (int)name.len, name.p);

    struct cp_txn *t = cp_txn(c);
    if (!t) {
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_INTERNAL, "storage unavailable");
        goto out;
    }
    struct find_login f = { a.network, a.login, 0, 0 };
    (void)cp_account_each(t, r->uid, find_login_cb, &f);
    if (f.found) {
        char msg[128];
        snprintf(msg, sizeof(msg), "this %s login is linked already (account %llu)", a.network,
                 (unsigned long long)f.found);
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_EXISTS, msg);
        goto out;
    }
    uint64_t total = 0;
    if (f.n >= c->cfg->max_accounts_per_user ||
        (cp_account_count(t, &total) == 0 && total >= c->cfg->max_sessions)) {
        char msg[160];
        bool mine = f.n >= c->cfg->max_accounts_per_user;
        if (mine) {
            c->lim.accounts++;
            snprintf(msg, sizeof(msg), "max-accounts-per-user reached: %llu accounts linked, at most %u",
                     (unsigned long long)f.n, c->cfg->max_accounts_per_user);
        } else {
            c->lim.sessions++;
            snprintf(msg, sizeof(msg), "max-sessions reached: the appliance holds %llu emulated sessions, "
                     "at most %u", (unsigned long long)total, c->cfg->max_sessions);
        }
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_LIMIT, msg);
        goto out;
    }
    a.uid = r->uid;
    if ((rc = cp_meta_next(t, "account", &a.account)) < 0 ||
        (rc = seal_password(c, &a, pw)) < 0 ||
        (rc = cp_account_put(t, &a)) < 0) {
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_INTERNAL, cp_store_strerror(rc));
        goto out;
    }
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 3);
    cl_pack_kstr(&e, "op", "ok");
    cl_pack_kuint(&e, "id", r->id);
    cl_pack_kuint(&e, "account", a.account);
    cp_client_reply_durable(c, r->conn, r->gen, r->id, &e);
    (void)cp_state_add(c, a.uid, a.account, a.network);
    if (cp_account_up(c, t, &a, false) < 0)
        LOG(IM_LOG_ERROR, "account %llu: cannot start", (unsigned long long)a.account);
    LOG(IM_LOG_INFO, "account %llu linked: %s %s via %s", (unsigned long long)a.account,
        a.network, a.login, a.server);
out:
    cp_account_free(&a);
}

static void
op_update_account(struct req *r)
{
    struct cp_core *c = r->c;
    const msgpack_object *root = &r->msg.root;
    struct cp_account a;
    struct im_str pw;
    uint64_t account;
    char server[262], tls[16];
    uint8_t *opts;
    size_t optslen;
    int rc, has_pw, has_server, has_tls, has_opts;

    memset(&a, 0, sizeof(a));
    if (uint_field(r, root, "account", true, &account) ||
        (has_pw = text_field(r, root, "password", 0, 1024, false, &pw)) < 0 ||
        (has_server = server_field(r, root, false, server)) < 0 ||
        (has_tls = tls_field(r, root, false, tls)) < 0 ||
        (has_opts = options_field(r, root, &opts, &optslen)) < 0)
        return;
    struct cp_txn *t = cp_txn(c);
    if (!t || (rc = cp_account_get(t, r->uid, account, &a)) < 0) {
        free(opts);
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_NOT_FOUND, "no such account");
        return;
    }
    const struct im_proto_ops *ops = im_proto_find(a.network);
    if (has_tls == 0 && ops && !ops->has_starttls && !strcmp(tls, "starttls")) {
        free(opts);
        cp_account_free(&a);
        bad(r, "tls", "this network has no STARTTLS: use \"tls\" or \"none\"");
        return;
    }
    if (has_server == 0)
        memcpy(a.server, server, sizeof(server));
    if (has_tls == 0)
        memcpy(a.tls, tls, sizeof(tls));
    if (has_opts == 0) {
        free(a.options);
        a.options = opts;
        a.options_len = optslen;
    }
    rc = 0;
    if (has_pw == 0)
        rc = seal_password(c, &a, pw);
    if (rc == 0)
        rc = cp_account_put(t, &a);
    if (rc < 0) {
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_INTERNAL, cp_store_strerror(rc));
    } else {
        cp_client_ok(c, r->conn, r->gen, r->id);
        (void)cp_account_up(c, t, &a, false);
    }
    cp_account_free(&a);
}

struct outbox_of {
    uint64_t uid, account;
    uint64_t *ids;
    size_t n, cap;
};

static int
outbox_of_cb(void *ud, uint64_t msg, uint64_t uid, const void *v, size_t n)
{
    struct outbox_of *o = ud;
    struct cl_msg m;
    uint64_t account;
    const char *why;
    if (uid != o->uid || cl_frame_decode(&m, v, n) < 0)
        return 0;
    if (cl_get_uint(&m.root, "account", &account, &why) == 0 && account == o->account) {
        if (o->n == o->cap) {
            o->cap = o->cap ? o->cap * 2 : 16;
            o->ids = realloc(o->ids, o->cap * sizeof(*o->ids));
            if (!o->ids)
                cp_oom(__func__);
        }
        o->ids[o->n++] = msg;
    }
    cl_msg_free(&m);
    return 0;
}

static void
op_unlink(struct req *r)
{
    struct cp_core *c = r->c;
    struct cp_account a;
    uint64_t account;
    int rc;

    if (uint_field(r, &r->msg.root, "account", true, &account))
        return;
    struct cp_txn *t = cp_txn(c);
    if (!t || cp_account_get(t, r->uid, account, &a) < 0) {
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_NOT_FOUND, "no such account");
        return;
    }
    cp_account_free(&a);
    struct outbox_of o = { r->uid, account, NULL, 0, 0 };
    rc = cp_outbox_each(t, outbox_of_cb, &o);
    for (size_t i = 0; rc >= 0 && i < o.n; i++)
        rc = cp_outbox_del(t, o.ids[i]);
    free(o.ids);
    if (rc >= 0)
        rc = cp_account_del(t, r->uid, account);
    if (rc >= 0) {
        rc = cp_blob_del(t, CP_DB_CONTACTS, r->uid, account);
        if (rc == -IM_ENOTFOUND)
            rc = 0;
    }
    if (rc < 0) {
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_INTERNAL, cp_store_strerror(rc));
        return;
    }
    cp_client_ok(c, r->conn, r->gen, r->id);
    struct dp_msg down = { .type = DPM_ACCOUNT_DOWN, .uid = r->uid, .account = account };
    cp_after_commit(c, &down, NULL);
    cp_state_del(c, account);
    LOG(IM_LOG_INFO, "account %llu unlinked", (unsigned long long)account);
}

/* ------------------------------------------------------------------------ */
/* unified contacts                                                          */

struct uni_old {
    uint64_t *ids;
    size_t n, cap;
};

static int
uni_old_cb(void *ud, uint64_t uid, uint64_t k, const void *v, size_t n)
{
    struct uni_old *o = ud;
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 16;
        o->ids = realloc(o->ids, o->cap * sizeof(*o->ids));
        if (!o->ids)
            cp_oom(__func__);
    }
    o->ids[o->n++] = k;
    return 0;
}

/* ids is sorted (the store's cursor order): binary search. */
static bool
id_in_sorted(const uint64_t *ids, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ids[mid] == id)
            return true;
        if (ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

struct norm_member {
    uint64_t account;
    uint32_t contact, member;       /* where it was given */
    char address[256];
};

static int
member_cmp(const void *a, const void *b)
{
    const struct norm_member *x = *(const struct norm_member *const *)a;
    const struct norm_member *y = *(const struct norm_member *const *)b;
    if (x->account != y->account)
        return x->account < y->account ? -1 : 1;
    int c = strcmp(x->address, y->address);
    if (c)
        return c;
    /* equal: in the order given, so the second one is reported */
    return x->contact != y->contact ? (x->contact < y->contact ? -1 : 1) :
           x->member < y->member ? -1 : x->member > y->member;
}

struct given_id {
    uint64_t id;
    uint32_t contact;
};

static int
given_id_cmp(const void *a, const void *b)
{
    const struct given_id *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->contact < y->contact ? -1 : x->contact > y->contact;
}

/*
 * set_unified: validated whole (no change on any error), members
 * normalised, duplicates found by sorting (O(n log n)), the members in all
 * and the stored list's size capped (max-unified-members; the list must fit
 * a frame, for the reply, `unified` and the login that carries it), then
 * the stored list replaced in this turn's transaction.
 */
static void
op_set_unified(struct req *r)
{
    struct cp_core *c = r->c;
    const msgpack_object *list;
    const char *why;
    struct cp_user u;
    int rc;

    rc = cl_get_array(&r->msg.root, "contacts", &list, &why);
    if (rc < 0) {
        bad(r, "contacts", rc == -IM_ENOTFOUND ? "is required" : why);
        return;
    }
    uint32_t n = list->via.array.size;
    if (n > MAX_UNIFIED) {
        bad(r, "contacts", "at most 10000 unified contacts");
        return;
    }
    /* the members in all, counted before anything is allocated for them */
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *members;
        if (list->via.array.ptr[i].type == MSGPACK_OBJECT_MAP &&
            cl_get_array(&list->via.array.ptr[i], "members", &members, &why) == 0 &&
            members->via.array.size <= MAX_MEMBERS)
            total += members->via.array.size;
    }
    if (total > c->cfg->max_unified_members) {
        char msg[160];
        c->lim.unified++;
        snprintf(msg, sizeof(msg), "max-unified-members: the list has %llu members, at most %u",
                 (unsigned long long)total, c->cfg->max_unified_members);
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_LIMIT, msg);
        return;
    }
    struct cp_txn *t = cp_txn(c);
    if (!t || cp_user_get_uid(t, r->uid, &u) < 0) {
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_INTERNAL, "storage unavailable");
        return;
    }
    struct uni_old old = { NULL, 0, 0 };
    (void)cp_blob_each(t, CP_DB_UNIFIED, r->uid, 0, uni_old_cb, &old);

    /* pass 1: validate everything, normalise members, check ids */
    uint64_t *ids = calloc(n + 1, sizeof(*ids));
    struct given_id *given = calloc(n + 1, sizeof(*given));
    struct norm_member *all = calloc(total + 1, sizeof(*all));
    struct norm_member **order = calloc(total + 1, sizeof(*order));
    uint32_t n_all = 0, n_given = 0;
    char msg[512];
    if (!ids || !given || !all || !order)
        cp_oom(__func__);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *uc = &list->via.array.ptr[i], *members;
        struct im_str name;
        uint64_t id, prefer;
        if (uc->type != MSGPACK_OBJECT_MAP) {
            snprintf(msg, sizeof(msg), "contacts[%u]: must be a map", i);
            goto bad_req;
        }
        rc = cl_get_uint(uc, "id", &id, &why);
        if (rc == -IM_EINVAL) {
            snprintf(msg, sizeof(msg), "contacts[%u].id: %s", i, why);
            goto bad_req;
        }
        if (rc == 0) {
            if (!id_in_sorted(old.ids, old.n, id)) {
                snprintf(msg, sizeof(msg), "contacts[%u].id: no unified contact %llu", i,
                         (unsigned long long)id);
                cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_NOT_FOUND, msg);
                goto done;
            }
            ids[i] = id;
            given[n_given++] = (struct given_id){ id, i };
        }
        if ((rc = cl_get_str(uc, "name", 1, 255, &name, &why)) < 0) {
            snprintf(msg, sizeof(msg), "contacts[%u].name: %s", i, rc == -IM_ENOTFOUND ? "is required" : why);
            goto bad_req;
        }
        if ((rc = cl_get_array(uc, "members", &members, &why)) < 0) {
            snprintf(msg, sizeof(msg), "contacts[%u].members: %s", i, rc == -IM_ENOTFOUND ? "is required" : why);
            goto bad_req;
        }
        if (members->via.array.size > MAX_MEMBERS) {
            snprintf(msg, sizeof(msg), "contacts[%u].members: at most 64 members", i);
            goto bad_req;
        }
        bool prefer_ok = false;
        rc = cl_get_uint(uc, "prefer", &prefer, &why);
        if (rc == -IM_EINVAL) {
            snprintf(msg, sizeof(msg), "contacts[%u].prefer: %s", i, why);
            goto bad_req;
        }
        bool has_prefer = rc == 0;
        for (uint32_t j = 0; j < members->via.array.size; j++) {
            const msgpack_object *mo = &members->via.array.ptr[j];
            struct norm_member *nm = &all[n_all];
            struct im_str addr;
            if (mo->type != MSGPACK_OBJECT_MAP ||
                (rc = cl_get_uint(mo, "account", &nm->account, &why)) < 0 ||
                (rc = cl_get_str(mo, "address", 1, 255, &addr, &why)) < 0) {
                snprintf(msg, sizeof(msg), "contacts[%u].members[%u]: must be {account: uint, address: str}", i, j);
                goto bad_req;
            }
            if (memchr(addr.p, '\0', addr.len)) {
                snprintf(msg, sizeof(msg), "contacts[%u].members[%u].address: must not contain NUL", i, j);
                goto bad_req;
            }
            struct cp_account acc;
            if (cp_account_get(t, r->uid, nm->account, &acc) < 0) {
                snprintf(msg, sizeof(msg), "contacts[%u].members[%u]: no account %llu", i, j,
                         (unsigned long long)nm->account);
                cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_NOT_FOUND, msg);
                goto done;
            }
            const struct im_proto_ops *ops = im_proto_find(acc.network);
            cp_account_free(&acc);
            char in[256];
            snprintf(in, sizeof(in), "%.*s", (int)addr.len, addr.p);
            if (!ops || ops->normalize_address(in, nm->address, sizeof(nm->address), &why) < 0) {
                snprintf(msg, sizeof(msg), "contacts[%u].members[%u].address: %s", i, j,
                         ops ? why : "unsupported network");
                goto bad_req;
            }
            nm->contact = i;
            nm->member = j;
            order[n_all] = nm;
            if (has_prefer && prefer == nm->account)
                prefer_ok = true;
            n_all++;
        }
        if (has_prefer && !prefer_ok) {
            snprintf(msg, sizeof(msg), "contacts[%u].prefer: must be the account of one of its members", i);
            goto bad_req;
        }
    }
    /* an id kept twice, a member listed twice: found by sorting */
    qsort(given, n_given, sizeof(*given), given_id_cmp);
    for (uint32_t k = 1; k < n_given; k++)
        if (given[k].id == given[k - 1].id) {
            snprintf(msg, sizeof(msg), "contacts[%u].id: %llu is listed twice", given[k].contact,
                     (unsigned long long)given[k].id);
            goto bad_req;
        }
    qsort(order, n_all, sizeof(*order), member_cmp);
    for (uint32_t k = 1; k < n_all; k++)
        if (order[k]->account == order[k - 1]->account && !strcmp(order[k]->address, order[k - 1]->address)) {
            snprintf(msg, sizeof(msg), "contacts[%u].members[%u]: %s is listed twice", order[k]->contact,
                     order[k]->member, order[k]->address);
            goto bad_req;
        }

    /* pass 2: the new list, packed; it must fit a frame with room for the
     * reply and the login around it, else nothing changes */
    msgpack_sbuffer lsb;
    msgpack_packer pk;
    size_t *offs = calloc((size_t)n + 1, sizeof(*offs));
    if (!offs)
        cp_oom(__func__);
    msgpack_sbuffer_init(&lsb);
    msgpack_packer_init(&pk, &lsb, msgpack_sbuffer_write);
    uint32_t mi = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *uc = &list->via.array.ptr[i], *members;
        struct im_str name;
        uint64_t prefer;
        (void)cl_get_str(uc, "name", 1, 255, &name, &why);
        (void)cl_get_array(uc, "members", &members, &why);
        bool has_prefer = cl_get_uint(uc, "prefer", &prefer, &why) == 0;
        if (!ids[i])
            ids[i] = u.next_unified++;
        offs[i] = lsb.size;
        msgpack_pack_map(&pk, has_prefer ? 4 : 3);
        msgpack_pack_str_with_body(&pk, "id", 2);
        msgpack_pack_uint64(&pk, ids[i]);
        msgpack_pack_str_with_body(&pk, "name", 4);
        msgpack_pack_str_with_body(&pk, name.p, name.len);
        msgpack_pack_str_with_body(&pk, "members", 7);
        msgpack_pack_array(&pk, members->via.array.size);
        for (uint32_t j = 0; j < members->via.array.size; j++, mi++) {
            msgpack_pack_map(&pk, 2);
            msgpack_pack_str_with_body(&pk, "account", 7);
            msgpack_pack_uint64(&pk, all[mi].account);
            msgpack_pack_str_with_body(&pk, "address", 7);
            msgpack_pack_str_with_body(&pk, all[mi].address, strlen(all[mi].address));
        }
        if (has_prefer) {
            msgpack_pack_str_with_body(&pk, "prefer", 6);
            msgpack_pack_uint64(&pk, prefer);
        }
    }
    offs[n] = lsb.size;
    if (!lsb.data && n)
        cp_oom(__func__);
    if (lsb.size > CP_UNIFIED_MAX_BYTES) {
        c->lim.unified++;
        snprintf(msg, sizeof(msg), "the unified list would take %zu bytes: over the %u bytes that fit a "
                 "frame with the reply around it; nothing was changed", lsb.size, CP_UNIFIED_MAX_BYTES);
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_LIMIT, msg);
        goto pass2_done;
    }

    /* pass 3: replace the stored list */
    uint64_t del;
    rc = cp_blob_del_upto(t, CP_DB_UNIFIED, r->uid, UINT64_MAX, &del);
    for (uint32_t i = 0; i < n && rc >= 0; i++)
        rc = cp_blob_put(t, CP_DB_UNIFIED, r->uid, ids[i], lsb.data + offs[i], offs[i + 1] - offs[i]);
    if (rc >= 0)
        rc = cp_user_put(t, &u);
    if (rc < 0) {
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_INTERNAL, cp_store_strerror(rc));
        goto pass2_done;
    }
    struct cl_enc reply, down;
    cl_enc_init(&reply);
    msgpack_pack_map(&reply.pk, 3);
    cl_pack_kstr(&reply, "op", "ok");
    cl_pack_kuint(&reply, "id", r->id);
    cl_pack_key(&reply, "contacts");
    msgpack_pack_array(&reply.pk, n);
    cl_enc_raw(&reply, lsb.data, lsb.size);
    cp_client_reply_durable(c, r->conn, r->gen, r->id, &reply);
    cl_enc_init(&down);
    msgpack_pack_map(&down.pk, 1);
    cl_pack_key(&down, "unified");
    msgpack_pack_array(&down.pk, n);
    cl_enc_raw(&down, lsb.data, lsb.size);
    struct dp_msg dm = { .type = DPM_UNIFIED, .uid = r->uid };
    if (dp_msg_set_frame(&dm, &down) == 0)
        cp_after_commit(c, &dm, NULL);
    else
        cp_oom("unified list to the dataplane");    /* fits: checked above */
pass2_done:
    msgpack_sbuffer_destroy(&lsb);
    free(offs);
    goto done;

bad_req:
    cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_BAD_REQUEST, msg);
done:
    free(ids);
    free(given);
    free(all);
    free(order);
    free(old.ids);
}

/* ------------------------------------------------------------------------ */

/*
 * An ack's removal waits for its turn (CP_ACK_MS): under load the head of
 * the queue is rewritten once per interval instead of once per commit, and
 * a commit writes fewer pages.  The ok still leaves only after the removal
 * is committed (CLIENT-PROTOCOL §4.15).  The bound is read from a committed
 * snapshot, so that an ack that waits opens no write transaction: what was
 * pushed to the user is committed already.
 */
static void
op_ack(struct req *r)
{
    struct cp_core *c = r->c;
    struct cp_txn *t = NULL;
    struct cp_user u;
    uint64_t seq;

    if (uint_field(r, &r->msg.root, "seq", true, &seq))
        return;
    int rc = cp_txn_begin(c->store, false, &t);
    if (rc == 0)
        rc = cp_user_get_uid(t, r->uid, &u);
    cp_txn_abort(t);
    if (rc < 0) {
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_INTERNAL, "storage unavailable");
        return;
    }
    if (seq > u.max_pushed) {
        char msg[128];
        snprintf(msg, sizeof(msg), "seq %llu is above the highest message pushed (%llu)",
                 (unsigned long long)seq, (unsigned long long)u.max_pushed);
        cp_client_error(c, r->conn, r->gen, r->id, CL_ERR_BAD_REQUEST, msg);
        return;
    }
    c->acks = cp_reserve(c->acks, &c->cap_acks, c->n_acks + 1, sizeof(*c->acks), __func__);
    c->acks[c->n_acks++] = (struct cp_ack_wait){ .uid = r->uid, .seq = seq, .id = r->id,
                                                  .conn = r->conn, .gen = r->gen };
}

static bool
acks_due(const struct cp_core *c, uint64_t now)
{
    return c->stopping || c->n_acks >= CP_ACK_MAX || now - c->acks_applied_ms >= CP_ACK_MS;
}

void
cp_client_acks_apply(struct cp_core *c, uint64_t now)
{
    if (!c->n_acks || !acks_due(c, now))
        return;
    struct cp_txn *t = cp_txn(c);
    for (size_t i = 0; i < c->n_acks; i++) {
        const struct cp_ack_wait *a = &c->acks[i];
        int rc;
        if (!t)
            cp_client_error(c, a->conn, a->gen, a->id, CL_ERR_INTERNAL, "storage unavailable");
        else if ((rc = queue_del(c, t, a->uid, a->seq)) < 0)
            cp_client_error(c, a->conn, a->gen, a->id, CL_ERR_INTERNAL, cp_store_strerror(rc));
        else
            cp_client_ok(c, a->conn, a->gen, a->id);
    }
    c->n_acks = 0;
    c->acks_applied_ms = now;
}

int
cp_client_acks_wait(const struct cp_core *c, uint64_t now)
{
    if (!c->n_acks)
        return -1;
    return acks_due(c, now) ? 0 : (int)(CP_ACK_MS - (now - c->acks_applied_ms));
}

typedef void cp_op_fn(struct req *r);

/* The controlplane's ops: the rows of protocols/client/cl_ops.c with
 * CL_PLANE_CONTROL; the dataplane checked the login rule already. */
static cp_op_fn *const cp_op_handlers[CL_OP__COUNT] = {
    [CL_OP_REGISTER] = op_register,
    [CL_OP_LOGIN] = op_login,
    [CL_OP_LINK] = op_link,
    [CL_OP_UPDATE_ACCOUNT] = op_update_account,
    [CL_OP_UNLINK] = op_unlink,
    [CL_OP_SET_UNIFIED] = op_set_unified,
    [CL_OP_ACK] = op_ack,
};

bool
cp_client_serves(enum cl_op_id op)
{
    return op > CL_OP_NONE && op < CL_OP__COUNT && cp_op_handlers[op] != NULL;
}

void
cp_client_request(struct cp_core *c, struct dp_msg *m)
{
    struct req r = { .c = c, .conn = m->conn, .gen = m->gen, .uid = m->uid };
    const struct cl_op *op = cl_op_get(m->u.client_req.op);
    const uint8_t *body;
    uint32_t len;

    if (dp_msg_client_req(m, &body, &len, &r.peer) < 0 || !op || !cp_op_handlers[op->id]) {
        LOG(IM_LOG_ERROR, "malformed request from the dataplane (op %u)", m->u.client_req.op);
        return;
    }
    if (cl_msg_decode(&r.msg, body, len) < 0) {
        LOG(IM_LOG_ERROR, "undecodable %s request from the dataplane", op->name);
        if (r.conn)                     /* the connection waits for an answer (and may hold a login) */
            cp_client_error(c, r.conn, r.gen, 0, CL_ERR_INTERNAL, "request lost between the planes");
        return;
    }
    r.id = r.msg.id;
    if (op->login == CL_LOGIN_REQUIRED && !r.uid)
        cp_client_error(c, r.conn, r.gen, r.id, CL_ERR_NOT_LOGGED_IN, "log in first");
    else
        cp_op_handlers[op->id](&r);
    if (op->secret)
        cl_msg_wipe(&r.msg);
    cl_msg_free(&r.msg);
}
