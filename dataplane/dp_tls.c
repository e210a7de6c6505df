/*
 * dp_tls.c - the TLS layer of a connection (mbedTLS 2.28).
 *
 * Per worker: one entropy source and one CTR-DRBG seeded once, the CA chain
 * (cfg->ca_file or the system bundle), one client config (certificate
 * verification required, TLS 1.2 minimum) and, when a certificate is
 * configured, one server config.  Per connection: an mbedtls_ssl_context
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

struct dp_tls_ctx {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca;
    bool have_ca;
    char ca_why[256];               /* why no CA is loaded (system bundle missing) */
    mbedtls_ssl_config cli;
    bool have_srv;
    mbedtls_x509_crt srv_crt;
    mbedtls_pk_context srv_key;
    mbedtls_ssl_config srv;
};

struct dp_tls {
    mbedtls_ssl_context ssl;
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
    mbedtls_x509_crt_init(&t->ca);
    mbedtls_ssl_config_init(&t->cli);
    mbedtls_x509_crt_init(&t->srv_crt);
    mbedtls_pk_init(&t->srv_key);
    mbedtls_ssl_config_init(&t->srv);

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

    const char *ca = cfg->ca_file ? cfg->ca_file : DP_SYSTEM_CA;
    rc = mbedtls_x509_crt_parse_file(&t->ca, ca);
    /* A positive count means some certificates of a bundle did not parse: the rest serve. */
    if (rc < 0 || t->ca.version == 0) {
        if (cfg->ca_file)
            return set_why(why, whysz, "cannot load CA file", ca, rc < 0 ? rc : -1);
        char e[64];
        mbed_err(rc < 0 ? rc : -1, e, sizeof(e));
        snprintf(t->ca_why, sizeof(t->ca_why), "no trusted CA certificates (%s: %s)", ca, e);
    } else {
        t->have_ca = true;
    }

    rc = conf_common(t, &t->cli, MBEDTLS_SSL_IS_CLIENT);
    if (rc)
        return set_why(why, whysz, "TLS client config", "", rc);
    mbedtls_ssl_conf_authmode(&t->cli, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&t->cli, &t->ca, NULL);

    if (cfg->tls_cert || cfg->tls_key) {
        if (!cfg->tls_cert || !cfg->tls_key) {
            snprintf(why, whysz, "a TLS listener needs both a certificate and a key");
            return -EINVAL;
        }
        rc = mbedtls_x509_crt_parse_file(&t->srv_crt, cfg->tls_cert);
        if (rc != 0)
            return set_why(why, whysz, "cannot load certificate", cfg->tls_cert, rc < 0 ? rc : -1);
        rc = mbedtls_pk_parse_keyfile(&t->srv_key, cfg->tls_key, NULL);
        if (rc != 0)
            return set_why(why, whysz, "cannot load key", cfg->tls_key, rc);
        rc = conf_common(t, &t->srv, MBEDTLS_SSL_IS_SERVER);
        if (!rc) {
            mbedtls_ssl_conf_ciphersuites(&t->srv, dp_tls_server_suites);
            rc = mbedtls_ssl_conf_own_cert(&t->srv, &t->srv_crt, &t->srv_key);
        }
        if (rc)
            return set_why(why, whysz, "certificate and key do not fit", cfg->tls_key, rc);
        t->have_srv = true;
    }
    return 0;
}

void dp_tls_ctx_free(struct dp_worker *w)
{
    struct dp_tls_ctx *t = w->tls;
    if (!t)
        return;
    mbedtls_ssl_config_free(&t->srv);
    mbedtls_pk_free(&t->srv_key);
    mbedtls_x509_crt_free(&t->srv_crt);
    mbedtls_ssl_config_free(&t->cli);
    mbedtls_x509_crt_free(&t->ca);
    mbedtls_ctr_drbg_free(&t->drbg);
    mbedtls_entropy_free(&t->entropy);
    free(t);
    w->tls = NULL;
}

bool dp_tls_have_server(const struct dp_worker *w)
{
    return w->tls && w->tls->have_srv;
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
    if (server && !t->have_srv) {
        snprintf(c->detail, sizeof(c->detail), "no server certificate configured");
        return -EINVAL;
    }
    if (!server && !t->have_ca) {
        snprintf(c->detail, sizeof(c->detail), "%s", t->ca_why);
        return -IM_ETLS;
    }
    struct dp_tls *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(c->detail, sizeof(c->detail), "out of memory");
        return -ENOMEM;
    }
    mbedtls_ssl_init(&s->ssl);
    int rc = mbedtls_ssl_setup(&s->ssl, server ? &t->srv : &t->cli);
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
    c->tls = s;
    return 0;
}

void dp_tls_detach(struct dp_conn *c)
{
    struct dp_tls *s = c->tls;
    if (!s)
        return;
    mbedtls_ssl_free(&s->ssl);
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
