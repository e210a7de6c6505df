/*
 * dp_tls.c - the TLS layer of a connection (mbedTLS 2.28).
 *
 * Per worker: one entropy source and one CTR-DRBG seeded once, one client
 * config (the CA chain of cfg->ca_file or the system bundle, certificate
 * verification required, TLS 1.2 minimum) and, when a certificate is
 * configured, one server config; a reload replaces either while connections
 * set up before keep theirs (struct dp_tls_conf).  Per connection: an mbedtls_ssl_context
 * whose BIO callbacks work on in-memory queues only: received ciphertext is
 * queued by dp_tls_input() and pulled by mbedTLS; what mbedTLS sends is
 * appended to the connection's raw output chain, which dp_conn.c flushes.
 * So this file never sees a socket and works unchanged on any backend.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "dp_int.h"
#include "im_common.h"

#define DP_SYSTEM_CA "/etc/ssl/certs/ca-certificates.crt"

/*
 * One mbedTLS configuration and what it points to.  Connections keep a
 * reference to the one they were set up with: a reload (dp_worker_tls_reload)
 * installs new ones for new connections while established ones finish on
 * the old, freed with their last connection.
 */
struct dp_tls_conf {
    unsigned refs;                  /* the worker's (while current) + one per connection */
    mbedtls_ssl_config conf;
    mbedtls_x509_crt crt;           /* client: the CA chain; server: the own chain */
    mbedtls_pk_context key;         /* server only */
    bool have_ca;                   /* client: crt holds trusted CAs */
    char ca_why[256];               /* client: why none is loaded (system bundle missing) */
};

struct dp_tls_ctx {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    struct dp_tls_conf *cli;        /* outbound connections (IM servers) */
    struct dp_tls_conf *srv;        /* the TLS listener, or NULL */
};

struct dp_tls {
    mbedtls_ssl_context ssl;
    struct dp_tls_conf *conf;       /* a reference (dp_tls_detach drops it) */
    struct dp_chain in;             /* ciphertext received, not yet taken by mbedTLS */
    char name[256];                 /* expected server name (client side) */
};

static void mbed_err(int rc, char *buf, size_t sz)
{
    mbedtls_strerror(rc, buf, sz);
}

static int set_why(char *why, size_t whysz, const char *what, const char *path, int rc)
{
    char e[128];
    mbed_err(rc, e, sizeof(e));
    snprintf(why, whysz, "%s %s: %s", what, path, e);
    return -EINVAL;
}

/*
 * What the TLS listener offers: forward secrecy (ECDHE) with an AEAD cipher
 * only, strongest first; no static-RSA key exchange, no CBC, no SHA-1 MAC.
 * The client side keeps mbedTLS's defaults (what IM servers speak).
 */
static const int dp_tls_server_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    0
};

/* Settings both configs share. */
static int conf_common(struct dp_tls_ctx *t, mbedtls_ssl_config *conf, int endpoint)
{
    int rc = mbedtls_ssl_config_defaults(conf, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc)
        return rc;
    mbedtls_ssl_conf_rng(conf, mbedtls_ctr_drbg_random, &t->drbg);
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    return 0;
}

static struct dp_tls_conf *conf_alloc(void)
{
    struct dp_tls_conf *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    k->refs = 1;
    mbedtls_ssl_config_init(&k->conf);
    mbedtls_x509_crt_init(&k->crt);
    mbedtls_pk_init(&k->key);
    return k;
}

static void conf_unref(struct dp_tls_conf *k)
{
    if (!k || --k->refs)
        return;
    mbedtls_ssl_config_free(&k->conf);
    mbedtls_pk_free(&k->key);
    mbedtls_x509_crt_free(&k->crt);
    free(k);
}

/* Certificates from a file (path) or from memory (PEM with its NUL, or DER). */
static int crt_parse(mbedtls_x509_crt *crt, const char *path, const uint8_t *p, size_t n)
{
    return path ? mbedtls_x509_crt_parse_file(crt, path) : mbedtls_x509_crt_parse(crt, p, n);
}

/*
 * The client config: verification required against the CA chain of path or
 * of (p, n); a missing system bundle (path_is_default) is not an error: TLS
 * to IM servers then fails with k->ca_why.
 */
static int conf_client(struct dp_tls_ctx *t, const char *path, bool path_is_default, const uint8_t *p,
                       size_t n, const char *shown, struct dp_tls_conf **out, char *why, size_t whysz)
{
    struct dp_tls_conf *k = conf_alloc();
    const char *name = path ? path : shown ? shown : "(reloaded CA file)";
    if (!k) {
        snprintf(why, whysz, "out of memory");
        return -ENOMEM;
    }
    int rc = crt_parse(&k->crt, path, p, n);
    /* A positive count means some certificates of a bundle did not parse: the rest serve. */
    if (rc < 0 || k->crt.version == 0) {
        if (!path_is_default) {
            conf_unref(k);
            return set_why(why, whysz, "cannot load CA file", name, rc < 0 ? rc : -1);
        }
        char e[64];
        mbed_err(rc < 0 ? rc : -1, e, sizeof(e));
        snprintf(k->ca_why, sizeof(k->ca_why), "no trusted CA certificates (%s: %s)", name, e);
    } else {
        k->have_ca = true;
    }
    rc = conf_common(t, &k->conf, MBEDTLS_SSL_IS_CLIENT);
    if (rc) {
        conf_unref(k);
        return set_why(why, whysz, "TLS client config", "", rc);
    }
    mbedtls_ssl_conf_authmode(&k->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&k->conf, &k->crt, NULL);
    *out = k;
    return 0;
}

/* "CN=a.test, valid until 2027-12-05" of the first certificate of a chain. */
static void crt_info(const mbedtls_x509_crt *crt, char *buf, size_t sz)
{
    char subject[200];
    if (mbedtls_x509_dn_gets(subject, sizeof(subject), &crt->subject) < 0)
        snprintf(subject, sizeof(subject), "?");
    snprintf(buf, sz, "%s, valid until %04d-%02d-%02d", subject, crt->valid_to.year, crt->valid_to.mon,
             crt->valid_to.day);
}

/*
 * The server config from files (cert_path, key_path) or memory.  The key
 * must fit the certificate.  strict (a reload): a certificate that is
 * expired or not valid yet is refused too (at start-up it is only logged).
 */
static int conf_server(struct dp_tls_ctx *t, const char *cert_path, const char *key_path,
                       const uint8_t *cert, size_t cert_len, const uint8_t *key, size_t key_len,
                       const char *cert_shown, const char *key_shown,
                       bool strict, struct dp_tls_conf **out, char *why, size_t whysz)
{
    const char *cname = cert_path ? cert_path : cert_shown ? cert_shown : "(new tls-cert)";
    const char *kname = key_path ? key_path : key_shown ? key_shown : "(new tls-key)";
    struct dp_tls_conf *k = conf_alloc();
    int rc;
    if (!k) {
        snprintf(why, whysz, "out of memory");
        return -ENOMEM;
    }
    rc = crt_parse(&k->crt, cert_path, cert, cert_len);
    if (rc != 0) {
        rc = set_why(why, whysz, "cannot load certificate", cname, rc < 0 ? rc : -1);
        goto fail;
    }
    rc = key_path ? mbedtls_pk_parse_keyfile(&k->key, key_path, NULL) :
                    mbedtls_pk_parse_key(&k->key, key, key_len, NULL, 0);
    if (rc != 0) {
        rc = set_why(why, whysz, "cannot load key", kname, rc);
        goto fail;
    }
    if ((rc = mbedtls_pk_check_pair(&k->crt.pk, &k->key)) != 0) {
        char e[128];
        mbed_err(rc, e, sizeof(e));
        snprintf(why, whysz, "the key %s does not belong to the certificate %s (%s)", kname, cname, e);
        rc = -EINVAL;
        goto fail;
    }
    if (mbedtls_x509_time_is_past(&k->crt.valid_to) || mbedtls_x509_time_is_future(&k->crt.valid_from)) {
        char info[300];
        crt_info(&k->crt, info, sizeof(info));
        if (strict) {
            snprintf(why, whysz, "the certificate %s is %s (%s)", cname,
                     mbedtls_x509_time_is_past(&k->crt.valid_to) ? "expired" : "not valid yet", info);
            rc = -EINVAL;
            goto fail;
        }
        IM_LOG(IM_LOG_WARN, "dp", "TLS listener: the certificate %s is %s (%s)", cname,
               mbedtls_x509_time_is_past(&k->crt.valid_to) ? "expired" : "not valid yet", info);
    }
    rc = conf_common(t, &k->conf, MBEDTLS_SSL_IS_SERVER);
    if (!rc) {
        mbedtls_ssl_conf_ciphersuites(&k->conf, dp_tls_server_suites);
        rc = mbedtls_ssl_conf_own_cert(&k->conf, &k->crt, &k->key);
    }
    if (rc) {
        rc = set_why(why, whysz, "certificate and key do not fit", kname, rc);
        goto fail;
    }
    *out = k;
    return 0;
fail:
    conf_unref(k);
    return rc;
}

int dp_tls_ctx_new(struct dp_worker *w, const struct dp_worker_cfg *cfg, char *why, size_t whysz)
{
    struct dp_tls_ctx *t = calloc(1, sizeof(*t));
    if (!t) {
        snprintf(why, whysz, "out of memory");
        return -ENOMEM;
    }
    w->tls = t;
    mbedtls_entropy_init(&t->entropy);
    mbedtls_ctr_drbg_init(&t->drbg);

    char pers[32];
    snprintf(pers, sizeof(pers), "imfuse-dp-%u-%ld", cfg->id, (long)getpid());
    int rc = mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy,
                                   (const unsigned char *)pers, strlen(pers));
    if (rc) {
        char e[128];
        mbed_err(rc, e, sizeof(e));
        snprintf(why, whysz, "cannot seed the TLS random generator: %s", e);
        return -EIO;
    }
    rc = conf_client(t, cfg->ca_file ? cfg->ca_file : DP_SYSTEM_CA, !cfg->ca_file, NULL, 0, NULL, &t->cli,
                     why, whysz);
    if (rc)
        return rc;
    if (cfg->tls_cert || cfg->tls_key) {
        if (!cfg->tls_cert || !cfg->tls_key) {
            snprintf(why, whysz, "a TLS listener needs both a certificate and a key");
            return -EINVAL;
        }
        rc = conf_server(t, cfg->tls_cert, cfg->tls_key, NULL, 0, NULL, 0, NULL, NULL, false, &t->srv, why, whysz);
        if (rc)
            return rc;
    }
    return 0;
}

void dp_tls_ctx_free(struct dp_worker *w)
{
    struct dp_tls_ctx *t = w->tls;
    if (!t)
        return;
    conf_unref(t->srv);
    conf_unref(t->cli);
    mbedtls_ctr_drbg_free(&t->drbg);
    mbedtls_entropy_free(&t->entropy);
    free(t);
    w->tls = NULL;
}

bool dp_tls_have_server(const struct dp_worker *w)
{
    return w->tls && w->tls->srv;
}

int dp_worker_tls_reload(struct dp_worker *w, const struct dp_tls_material *m, char *info, size_t infosz,
                         char *why, size_t whysz)
{
    struct dp_tls_ctx *t = w->tls;
    struct dp_tls_conf *cli = NULL, *srv = NULL;
    size_t off = 0;
    int rc;

    info[0] = '\0';
    if (m->ca && (rc = conf_client(t, NULL, false, m->ca, m->ca_len, m->ca_name, &cli, why, whysz)) < 0)
        return rc;
    if (m->cert && (rc = conf_server(t, NULL, NULL, m->cert, m->cert_len, m->key, m->key_len, m->cert_name,
                                     m->key_name, true, &srv, why, whysz)) < 0) {
        conf_unref(cli);
        return rc;
    }
    /* Both built: new connections take them, old ones keep theirs. */
    if (cli) {
        unsigned n = 0;
        for (const mbedtls_x509_crt *c = &cli->crt; c && c->version; c = c->next)
            n++;
        off += (size_t)snprintf(info + off, infosz - off, "CA chain: %u certificates", n);
        conf_unref(t->cli);
        t->cli = cli;
    }
    if (srv && off < infosz) {
        char ci[300];
        crt_info(&srv->crt, ci, sizeof(ci));
        snprintf(info + off, infosz - off, "%scertificate %s", off ? "; " : "", ci);
        conf_unref(t->srv);
        t->srv = srv;
    }
    return 0;
}

/* ---- BIO over the connection's queues ---------------------------------------- */

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    struct dp_conn *c = ctx;
    if (dp_chain_append(c->w, &c->out, buf, len) < 0)
        return MBEDTLS_ERR_NET_SEND_FAILED;
    return (int)len;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    struct dp_conn *c = ctx;
    if (c->tls->in.len == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    return (int)dp_chain_read(c->w, &c->tls->in, buf, len);
}

int dp_tls_attach(struct dp_conn *c, bool server, const char *name)
{
    struct dp_tls_ctx *t = c->w->tls;
    struct dp_tls_conf *k = server ? t->srv : t->cli;
    if (server && !k) {
        snprintf(c->detail, sizeof(c->detail), "no server certificate configured");
        return -EINVAL;
    }
    if (!server && !k->have_ca) {
        snprintf(c->detail, sizeof(c->detail), "%s", k->ca_why);
        return -IM_ETLS;
    }
    struct dp_tls *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(c->detail, sizeof(c->detail), "out of memory");
        return -ENOMEM;
    }
    mbedtls_ssl_init(&s->ssl);
    int rc = mbedtls_ssl_setup(&s->ssl, &k->conf);
    if (!rc && !server) {
        snprintf(s->name, sizeof(s->name), "%s", name);
        rc = mbedtls_ssl_set_hostname(&s->ssl, name);
    }
    if (rc) {
        char e[128];
        mbed_err(rc, e, sizeof(e));
        snprintf(c->detail, sizeof(c->detail), "TLS setup failed: %s", e);
        mbedtls_ssl_free(&s->ssl);
        free(s);
        return -IM_ETLS;
    }
    mbedtls_ssl_set_bio(&s->ssl, c, bio_send, bio_recv, NULL);
    s->conf = k;
    k->refs++;
    c->tls = s;
    return 0;
}

void dp_tls_detach(struct dp_conn *c)
{
    struct dp_tls *s = c->tls;
    if (!s)
        return;
    mbedtls_ssl_free(&s->ssl);
    conf_unref(s->conf);
    dp_chain_clear(c->w, &s->in);
    free(s);
    c->tls = NULL;
}

int dp_tls_input(struct dp_conn *c, const uint8_t *p, size_t n)
{
    return dp_chain_append(c->w, &c->tls->in, p, n);
}

bool dp_tls_has_input(const struct dp_conn *c)
{
    return c->tls && (c->tls->in.len > 0 || mbedtls_ssl_get_bytes_avail(&c->tls->ssl) > 0);
}

/* Certificate verification flags in words. */
static void verify_detail(struct dp_conn *c, uint32_t flags)
{
    static const struct { uint32_t flag; const char *text; } known[] = {
        { MBEDTLS_X509_BADCERT_CN_MISMATCH, "name mismatch" },
        { MBEDTLS_X509_BADCERT_NOT_TRUSTED, "issuer not trusted" },
        { MBEDTLS_X509_BADCERT_EXPIRED, "certificate expired" },
        { MBEDTLS_X509_BADCERT_FUTURE, "certificate not yet valid" },
        { MBEDTLS_X509_BADCERT_REVOKED, "certificate revoked" },
        { MBEDTLS_X509_BADCERT_MISSING, "no certificate sent" },
        { MBEDTLS_X509_BADCERT_KEY_USAGE, "key usage not allowed" },
        { MBEDTLS_X509_BADCERT_EXT_KEY_USAGE, "extended key usage not allowed" },
        { MBEDTLS_X509_BADCERT_BAD_MD, "weak signature hash" },
        { MBEDTLS_X509_BADCERT_BAD_KEY, "weak key" },
    };
    size_t off = (size_t)snprintf(c->detail, sizeof(c->detail), "certificate verification failed:");
    uint32_t rest = flags;
    const char *sep = " ";
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]) && off < sizeof(c->detail); i++) {
        if (!(flags & known[i].flag))
            continue;
        rest &= ~known[i].flag;
        if (known[i].flag == MBEDTLS_X509_BADCERT_CN_MISMATCH)
            off += (size_t)snprintf(c->detail + off, sizeof(c->detail) - off, "%s%s (expected %s)",
                                    sep, known[i].text, c->tls->name);
        else
            off += (size_t)snprintf(c->detail + off, sizeof(c->detail) - off, "%s%s", sep,
                                    known[i].text);
        sep = ", ";
    }
    if (rest && off < sizeof(c->detail)) {
        /* mbedTLS's own words for the rest ("\n"-separated lines). */
        char info[256];
        int n = mbedtls_x509_crt_verify_info(info, sizeof(info), "", rest);
        for (int i = 0; i < n; i++)
            if (info[i] == '\n')
                info[i] = (i == n - 1) ? '\0' : ';';
        snprintf(c->detail + off, sizeof(c->detail) - off, "%s%s", sep, n > 0 ? info : "unknown");
    }
}

int dp_tls_handshake(struct dp_conn *c)
{
    struct dp_tls *s = c->tls;
    int rc = mbedtls_ssl_handshake(&s->ssl);
    if (rc == 0)
        return 0;
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return -EAGAIN;
    if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        verify_detail(c, mbedtls_ssl_get_verify_result(&s->ssl));
    } else {
        char e[160];
        mbed_err(rc, e, sizeof(e));
        snprintf(c->detail, sizeof(c->detail), "TLS handshake failed: %s", e);
    }
    return -IM_ETLS;
}

int dp_tls_read(struct dp_conn *c, uint8_t *buf, size_t n)
{
    int rc = mbedtls_ssl_read(&c->tls->ssl, buf, n);
    if (rc > 0)
        return rc;
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return -EAGAIN;
    if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
        return 0;
    char e[160];
    mbed_err(rc, e, sizeof(e));
    snprintf(c->detail, sizeof(c->detail), "TLS read failed: %s", e);
    return -IM_ETLS;
}

int dp_tls_write(struct dp_conn *c, const uint8_t *p, size_t n)
{
    int rc = mbedtls_ssl_write(&c->tls->ssl, p, n);
    if (rc > 0)
        return rc;
    char e[160];
    mbed_err(rc, e, sizeof(e));
    snprintf(c->detail, sizeof(c->detail), "TLS write failed: %s", e);
    return -IM_ETLS;
}

void dp_tls_close_notify(struct dp_conn *c)
{
    (void)mbedtls_ssl_close_notify(&c->tls->ssl);
}
