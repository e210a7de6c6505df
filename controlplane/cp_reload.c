/*
 * cp_reload.c - SIGHUP and `imfusectl reload` (cp_int.h): the config file is
 * read again and what can change at run time is applied; every other key
 * that changed is named as waiting for a restart.  The TLS files are read
 * here, on the controlplane, and their bytes go down to the worker, which
 * builds the new configurations and swaps them on its own thread
 * (DPM_TLS_RELOAD); its answer (CPM_TLS_RELOADED) completes the reload.  A
 * file that cannot be read or a certificate the worker refuses leaves the
 * old one serving, and the answer says why.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <mbedtls/sha256.h>

#include "dp_chan.h"
#include "cp_int.h"

#define RL_SYSTEM_CA    "/etc/ssl/certs/ca-certificates.crt"   /* dp_tls.c's default */
#define RL_FILE_MAX     (512u * 1024u)      /* a TLS file larger than this is refused */
#define RL_LINES_MAX    64

/* The keys a reload applies; the others take a restart. */
static const char *const rl_live_keys[] = {
    "log-level", "open-registration", "account-storm", "ca-file", "tls-cert", "tls-key",
};

/* What a reload did and still waits for. */
struct rl_pending {
    struct rl_pending *next;
    uint64_t seq;                   /* of its DPM_TLS_RELOAD */
    bool has_who;
    struct cp_rpc_who who;
    char *changed[RL_LINES_MAX], *restart[RL_LINES_MAX], *failed[RL_LINES_MAX];
    unsigned n_changed, n_restart, n_failed;
    /* applied when the worker says yes */
    bool ca, srv;
    uint8_t ca_hash[32], cert_hash[32], key_hash[32];
    struct cp_config *n;            /* the config read again: its TLS keys are taken then */
    int log_level;                  /* >= 0: set once the outcome is logged */
};

struct cp_reload {
    uint64_t seq;
    /* what the worker holds now: hashes of the files' bytes */
    uint8_t ca_hash[32], cert_hash[32], key_hash[32];
    bool have_ca_hash, have_cert_hash;
    struct rl_pending *pending;
};

static void
add_line(char **lines, unsigned *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
add_line(char **lines, unsigned *n, const char *fmt, ...)
{
    if (*n == RL_LINES_MAX)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&lines[*n], fmt, ap) < 0)
        cp_oom(__func__);
    va_end(ap);
    (*n)++;
}

/*
 * A whole file into memory, as mbedTLS parses it from memory: PEM gets a
 * terminating NUL counted in the length.  0 with *out (malloc'd, wiped by
 * the caller when secret) or negative with why.
 */
static int
read_file(const char *path, uint8_t **out, size_t *len, char *why, size_t whysz)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc = 0;
    *out = NULL;
    if (fd < 0 || fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(why, whysz, "cannot read %s: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > RL_FILE_MAX) {
        rc = -IM_EINVAL;
        snprintf(why, whysz, "%s is %s", path, !S_ISREG(st.st_mode) ? "not a file" :
                 st.st_size <= 0 ? "empty" : "larger than 512 KiB");
        goto done;
    }
    uint8_t *b = malloc((size_t)st.st_size + 1);
    if (!b)
        cp_oom(__func__);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, b + got, (size_t)st.st_size - got);
        if (r <= 0) {
            rc = r < 0 ? -errno : -EIO;
            snprintf(why, whysz, "cannot read %s: %s", path, r < 0 ? strerror(errno) : "it shrank");
            im_wipe(b, got);
            free(b);
            goto done;
        }
        got += (size_t)r;
    }
    b[got] = '\0';
    *out = b;
    *len = got + (memmem(b, got, "-----BEGIN", 10) != NULL);   /* PEM: with its NUL */
done:
    if (fd >= 0)
        close(fd);
    return rc;
}

static void
hash(const uint8_t *p, size_t n, uint8_t out[32])
{
    (void)mbedtls_sha256_ret(p, n, out, 0);
}

/* The file's hash now, for the start-up state; false when unreadable. */
static bool
hash_file(const char *path, uint8_t out[32])
{
    uint8_t *b;
    size_t n;
    char why[300];
    if (read_file(path, &b, &n, why, sizeof(why)) < 0)
        return false;
    hash(b, n, out);
    im_wipe(b, n);
    free(b);
    return true;
}

void
cp_reload_init(struct cp_core *c)
{
    struct cp_reload *r = calloc(1, sizeof(*r));
    if (!r)
        cp_oom(__func__);
    c->reload = r;
    r->have_ca_hash = hash_file(c->cfg->ca_file ? c->cfg->ca_file : RL_SYSTEM_CA, r->ca_hash);
    if (c->cfg->tls_cert && c->cfg->tls_key)
        r->have_cert_hash = hash_file(c->cfg->tls_cert, r->cert_hash) &&
                            hash_file(c->cfg->tls_key, r->key_hash);
}

static void
pending_free(struct rl_pending *p)
{
    for (unsigned i = 0; i < p->n_changed; i++)
        free(p->changed[i]);
    for (unsigned i = 0; i < p->n_restart; i++)
        free(p->restart[i]);
    for (unsigned i = 0; i < p->n_failed; i++)
        free(p->failed[i]);
    if (p->n) {
        cp_config_free(p->n);
        free(p->n);
    }
    free(p);
}

void
cp_reload_free(struct cp_core *c)
{
    struct cp_reload *r = c->reload;
    if (!r)
        return;
    while (r->pending) {
        struct rl_pending *p = r->pending;
        r->pending = p->next;
        pending_free(p);
    }
    free(r);
    c->reload = NULL;
}

int
cp_set_log_level(struct cp_core *c, const char *level, const char **was)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    int lv = im_log_parse_level(level);
    if (lv < 0)
        return -IM_EINVAL;
    int old = atomic_load_explicit(&im_log_level, memory_order_relaxed);
    *was = old >= 0 && old < 4 ? names[old] : "?";
    char why[128];
    if (cp_config_set(c->cfg, "log-level", level, why, sizeof(why)) < 0)
        return -IM_EINVAL;
    atomic_store_explicit(&im_log_level, lv, memory_order_relaxed);
    LOG(IM_LOG_INFO, "operator: log level %s (was %s)", level, *was);
    return 0;
}

/* ---- the reload ------------------------------------------------------------ */

struct kv_list {
    unsigned n;
    char key[CP_CONFIG_KEYS][40];
    char *val[CP_CONFIG_KEYS];
};

static void
kv_add(void *ud, const char *key, const char *value, const char *origin)
{
    struct kv_list *l = ud;
    if (l->n == CP_CONFIG_KEYS)
        return;
    im_strlcpy(l->key[l->n], key, sizeof(l->key[0]));
    if (!(l->val[l->n] = strdup(value)))
        cp_oom(__func__);
    l->n++;
}

static void
kv_free(struct kv_list *l)
{
    for (unsigned i = 0; i < l->n; i++)
        free(l->val[i]);
}

static bool
live_key(const char *k)
{
    for (size_t i = 0; i < IM_ARRAY_SIZE(rl_live_keys); i++)
        if (!strcmp(rl_live_keys[i], k))
            return true;
    return false;
}

/* Send the reply (or log the outcome of a SIGHUP) and forget p. */
static void
finish(struct cp_core *c, struct rl_pending *p)
{
    for (unsigned i = 0; i < p->n_changed; i++)
        LOG(IM_LOG_INFO, "reload: %s", p->changed[i]);
    for (unsigned i = 0; i < p->n_restart; i++)
        LOG(IM_LOG_WARN, "reload: %s", p->restart[i]);
    for (unsigned i = 0; i < p->n_failed; i++)
        LOG(IM_LOG_ERROR, "reload: %s", p->failed[i]);
    if (!p->n_changed && !p->n_restart && !p->n_failed)
        LOG(IM_LOG_INFO, "reload: nothing changed");
    if (p->log_level >= 0)          /* after its own lines, which the old level shows */
        atomic_store_explicit(&im_log_level, p->log_level, memory_order_relaxed);
    if (p->has_who && c->rpc && p->n_failed) {
        /* an error, naming what failed and what did change */
        char msg[2048];
        size_t off = 0;
        for (unsigned i = 0; i < p->n_failed && off < sizeof(msg); i++)
            off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s%s", i ? "; " : "", p->failed[i]);
        for (unsigned i = 0; i < p->n_changed && off < sizeof(msg); i++)
            off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s%s", i ? "; " : " (applied: ",
                                    p->changed[i]);
        if (p->n_changed && off < sizeof(msg))
            snprintf(msg + off, sizeof(msg) - off, ")");
        cp_rpc_answer_error(c->rpc, &p->who, CL_ERR_BAD_REQUEST, msg);
    } else if (p->has_who && c->rpc) {
        struct cl_enc e;
        cp_rpc_ok_head(&e, p->who.id, 2);
        cl_pack_key(&e, "changed");
        msgpack_pack_array(&e.pk, p->n_changed);
        for (unsigned i = 0; i < p->n_changed; i++)
            cl_pack_str(&e, p->changed[i]);
        cl_pack_key(&e, "restart");
        msgpack_pack_array(&e.pk, p->n_restart);
        for (unsigned i = 0; i < p->n_restart; i++)
            cl_pack_str(&e, p->restart[i]);
        cp_rpc_answer(c->rpc, &p->who, &e);
    }
    pending_free(p);
}

/*
 * The TLS part: read the files the new config names, compare with what the
 * worker holds, and build the DPM_TLS_RELOAD of what changed.  Returns
 * whether there is something to send (in e).
 */
static bool
same(const char *a, const char *b)
{
    return !strcmp(a ? a : "", b ? b : "");
}

static bool
tls_part(struct cp_core *c, struct rl_pending *p, struct cl_enc *e)
{
    const struct cp_config *n = p->n;
    struct cp_reload *r = c->reload;
    char why[400];
    uint8_t *ca = NULL, *cert = NULL, *key = NULL;
    size_t ca_len = 0, cert_len = 0, key_len = 0;
    const char *ca_path = n->ca_file ? n->ca_file : RL_SYSTEM_CA;

    if (read_file(ca_path, &ca, &ca_len, why, sizeof(why)) < 0) {
        if (n->ca_file)
            add_line(p->failed, &p->n_failed, "ca-file: %s; the CA certificates in use stay", why);
    } else {
        hash(ca, ca_len, p->ca_hash);
        p->ca = !r->have_ca_hash || memcmp(p->ca_hash, r->ca_hash, 32) || !same(n->ca_file, c->cfg->ca_file);
    }
    if (n->tls_cert && n->tls_key) {
        const char *bad = NULL;
        if (read_file(n->tls_cert, &cert, &cert_len, why, sizeof(why)) < 0)
            bad = "tls-cert";
        else if (read_file(n->tls_key, &key, &key_len, why, sizeof(why)) < 0)
            bad = "tls-key";
        if (bad) {
            add_line(p->failed, &p->n_failed, "%s: %s; the TLS listener keeps its certificate", bad, why);
        } else {
            hash(cert, cert_len, p->cert_hash);
            hash(key, key_len, p->key_hash);
            p->srv = !r->have_cert_hash || memcmp(p->cert_hash, r->cert_hash, 32) ||
                     memcmp(p->key_hash, r->key_hash, 32) || !same(n->tls_cert, c->cfg->tls_cert) ||
                     !same(n->tls_key, c->cfg->tls_key);
        }
    } else if (c->cfg->tls_cert) {
        add_line(p->restart, &p->n_restart, "tls-cert and tls-key: a TLS listener without a certificate "
                 "takes a restart; the current one keeps serving");
    }
    bool send = p->ca || p->srv;
    if (send) {
        cl_enc_init(e);
        msgpack_pack_map(&e->pk, 2 * (uint32_t)p->ca + 4 * (uint32_t)p->srv);
        if (p->ca) {
            cl_pack_key(e, "ca");
            msgpack_pack_bin(&e->pk, ca_len);
            msgpack_pack_bin_body(&e->pk, ca, ca_len);
            cl_pack_kstr(e, "ca_file", ca_path);
        }
        if (p->srv) {
            cl_pack_kstr(e, "cert_file", n->tls_cert);
            cl_pack_kstr(e, "key_file", n->tls_key);
            cl_pack_key(e, "cert");
            msgpack_pack_bin(&e->pk, cert_len);
            msgpack_pack_bin_body(&e->pk, cert, cert_len);
            cl_pack_key(e, "key");
            msgpack_pack_bin(&e->pk, key_len);
            msgpack_pack_bin_body(&e->pk, key, key_len);
        }
    }
    if (key)
        im_wipe(key, key_len);
    free(ca);
    free(cert);
    free(key);
    return send;
}

void
cp_reload(struct cp_core *c, const struct cp_rpc_who *who)
{
    struct cp_reload *r = c->reload;
    char why[512];
    struct rl_pending *p = calloc(1, sizeof(*p));
    if (!p || !r || !(p->n = calloc(1, sizeof(*p->n))))
        cp_oom(__func__);
    p->log_level = -1;
    if (who) {
        p->has_who = true;
        p->who = *who;
    }
    if (cp_config_reread(c->cfg, p->n, why, sizeof(why)) < 0) {
        free(p->n);             /* nothing left in it to free */
        p->n = NULL;
        add_line(p->failed, &p->n_failed, "%s: nothing changed (fix it and reload again)", why);
        finish(c, p);
        return;
    }
    struct cp_config *n = p->n;

    /* every key: applied now, applied with the TLS swap, or for a restart */
    struct kv_list *old = calloc(1, sizeof(*old)), *now = calloc(1, sizeof(*now));
    if (!old || !now)
        cp_oom(__func__);
    cp_config_each(c->cfg, kv_add, old);
    cp_config_each(n, kv_add, now);
    for (unsigned i = 0; i < old->n && i < now->n; i++) {
        const char *k = old->key[i];
        if (!strcmp(old->val[i], now->val[i]) || !strcmp(k, "config"))
            continue;
        if (!strcmp(k, "listen") && c->cfg->listen_default && n->listen_default)
            continue;                   /* io dpdk: the port's address, put in at start-up */
        if (!live_key(k)) {
            add_line(p->restart, &p->n_restart, "%s: \"%s\" in force, \"%s\" takes effect at the next restart",
                     k, old->val[i], now->val[i]);
            continue;
        }
        if (!strcmp(k, "ca-file") || !strcmp(k, "tls-cert") || !strcmp(k, "tls-key"))
            continue;                   /* taken with the TLS swap */
        if (!strcmp(k, "log-level"))
            p->log_level = im_log_parse_level(now->val[i]);
        cp_config_take(c->cfg, n, k);   /* the config's value and origin */
        add_line(p->changed, &p->n_changed, "%s: %s -> %s", k, old->val[i], now->val[i]);
    }
    kv_free(old);
    kv_free(now);
    free(old);
    free(now);

    struct cl_enc e;
    bool send = c->relay && tls_part(c, p, &e);
    if (!send) {
        finish(c, p);
        return;
    }
    struct dp_msg m = { .type = DPM_TLS_RELOAD };
    p->seq = m.u.tls_reload.seq = ++r->seq;
    if (dp_msg_set_frame(&m, &e) < 0) {
        add_line(p->failed, &p->n_failed, "the TLS files are too large to hand to the dataplane");
        finish(c, p);
        return;
    }
    dp_chan_send_down(c->ch, &m);
    dp_chan_flush_down(c->ch);
    p->next = r->pending;
    r->pending = p;
}

void
cp_reload_tls_done(struct cp_core *c, struct dp_msg *m)
{
    struct cp_reload *r = c->reload;
    struct rl_pending **pp = r ? &r->pending : NULL;
    while (pp && *pp && (*pp)->seq != m->u.tls_reload.seq)
        pp = &(*pp)->next;
    if (!pp || !*pp)
        return;
    struct rl_pending *p = *pp;
    *pp = p->next;

    char detail[600] = "";
    struct cl_msg pm;
    struct im_str d;
    const char *why;
    if (dp_msg_decode(m, &pm) == 0) {
        if (cl_get_str(&pm.root, "detail", 0, 512, &d, &why) == 0)
            snprintf(detail, sizeof(detail), "%.*s", (int)d.len, d.p);
        cl_msg_free(&pm);
    }
    const char *what = p->srv && p->ca ? "tls-cert, tls-key and ca-file" : p->srv ? "tls-cert and tls-key" :
                       "ca-file";
    if (m->u.tls_reload.status < 0) {
        add_line(p->failed, &p->n_failed, "%s: %s; the TLS configuration in use stays", what, detail);
        finish(c, p);
        return;
    }
    if (p->ca) {
        memcpy(r->ca_hash, p->ca_hash, 32);
        r->have_ca_hash = true;
        cp_config_take(c->cfg, p->n, "ca-file");
    }
    if (p->srv) {
        memcpy(r->cert_hash, p->cert_hash, 32);
        memcpy(r->key_hash, p->key_hash, 32);
        r->have_cert_hash = true;
        cp_config_take(c->cfg, p->n, "tls-cert");
        cp_config_take(c->cfg, p->n, "tls-key");
    }
    add_line(p->changed, &p->n_changed, "%s reloaded: %s", what, detail);
    finish(c, p);
}
