/*
 * xmpp_probe.c - drive xmpp_ops over a blocking TCP socket and mbedTLS
 * against a real server; print every event as one line on stdout.
 *
 *   xmpp_probe --host IP --port N --login JID --password PW [--tls starttls|tls|none]
 *              [--ca-file PEM] [--tls-name NAME] [--resource R]
 *              [--send-to JID --send-body TEXT] [--exit-after-online]
 *              [--wait-message] [--timeout SECONDS] [--kdf-async]
 *
 * --kdf-async: act as a glue that takes the SCRAM key derivation (io->kdf):
 * the request is copied and printed as "KDF <hash> <iterations>", and the key
 * is derived later in the main loop, outside any hook, and handed back with
 * kdf_done(), as the relay's worker pool will.
 *
 * Lines: "STATE <state> <detail>", "STARTTLS", "TLS ok", "TLS error <why>",
 * "CONTACTS <n>" then "CONTACT <address> <presence> <name>" per entry,
 * "PRESENCE <address> <presence>", "MESSAGE <from> <resource> <body>",
 * "SENT <msg>", "CLOSED".
 * Exit: 0 done (online and whatever was asked happened), 2 error state,
 * 3 auth_failed, 4 TLS failure, 5 timeout, 1 usage or I/O.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "im_clock.h"
#include "im_common.h"
#include "im_kdf.h"
#include "im_proto.h"

extern const struct im_proto_ops xmpp_ops;

struct probe {
    struct im_sess *s;
    int fd;
    bool tls, want_starttls, online, got_contacts, got_message, sent, failed;
    int exit_code;
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    const char *ca_file, *tls_name;
    /* --kdf-async: the request taken, derived in the main loop */
    bool kdf_pending;
    uint64_t kdf_req;
    struct im_kdf_params kdf;
    char kdf_password[256];
    uint8_t kdf_salt[128];
};

static int
p_kdf(void *ud, uint64_t req, const struct im_kdf_params *k)
{
    struct probe *p = ud;
    if (p->kdf_pending || k->password_len >= sizeof(p->kdf_password) || k->salt_len > sizeof(p->kdf_salt))
        return -IM_ELIMIT;
    memcpy(p->kdf_password, k->password, k->password_len);
    memcpy(p->kdf_salt, k->salt, k->salt_len);
    p->kdf = *k;
    p->kdf.password = p->kdf_password;
    p->kdf.salt = p->kdf_salt;
    p->kdf_req = req;
    p->kdf_pending = true;
    printf("KDF %s %u\n", k->hash == IM_KDF_SHA256 ? "sha256" : "sha1", k->iterations);
    fflush(stdout);
    return 0;
}

/* The derivation a worker would do, answered from outside any hook. */
static int
p_kdf_run(struct probe *p)
{
    uint8_t key[IM_KDF_MAX_KEY];
    int st = im_kdf_pbkdf2(&p->kdf, key, sizeof(key));
    p->kdf_pending = false;
    im_wipe(p->kdf_password, sizeof(p->kdf_password));
    int rc = xmpp_ops.kdf_done(p->s, p->kdf_req, st, st ? NULL : key, st ? 0 : im_kdf_keylen(p->kdf.hash),
                               im_clock_read(NULL));
    im_wipe(key, sizeof(key));
    return rc;
}

static int
p_out(void *ud, const void *buf, size_t n)
{
    struct probe *p = ud;
    const unsigned char *b = buf;
    while (n) {
        ssize_t r;
        if (p->tls) {
            int t = mbedtls_ssl_write(&p->ssl, b, n);
            if (t == MBEDTLS_ERR_SSL_WANT_READ || t == MBEDTLS_ERR_SSL_WANT_WRITE)
                continue;
            r = t;
        } else {
            r = write(p->fd, b, n);
            if (r < 0 && errno == EINTR)
                continue;
        }
        if (r <= 0)
            return -EIO;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

static void
p_event(void *ud, const struct im_event *e)
{
    struct probe *p = ud;
    switch (e->type) {
    case IM_EV_STATE:
        printf("STATE %s %.*s\n", im_account_state_name(e->u.state.state), (int)e->u.state.detail.len,
               e->u.state.detail.p);
        if (e->u.state.state == IM_ACC_ONLINE)
            p->online = true;
        if (e->u.state.state == IM_ACC_AUTH_FAILED || e->u.state.state == IM_ACC_ERROR) {
            p->failed = true;
            p->exit_code = e->u.state.state == IM_ACC_AUTH_FAILED ? 3 : 2;
        }
        break;
    case IM_EV_STARTTLS:
        printf("STARTTLS\n");
        p->want_starttls = true;
        break;
    case IM_EV_CONTACTS:
        printf("CONTACTS %u\n", e->u.contacts.n);
        for (uint32_t i = 0; i < e->u.contacts.n; i++) {
            const struct im_contact *c = &e->u.contacts.list[i];
            printf("CONTACT %.*s %s %.*s\n", (int)c->address.len, c->address.p, im_presence_name(c->presence),
                   (int)c->name.len, c->name.p);
        }
        p->got_contacts = true;
        break;
    case IM_EV_PRESENCE:
        printf("PRESENCE %.*s %s\n", (int)e->u.presence.address.len, e->u.presence.address.p,
               im_presence_name(e->u.presence.presence));
        break;
    case IM_EV_MESSAGE:
        printf("MESSAGE %.*s %.*s %.*s\n", (int)e->u.message.from.len, e->u.message.from.p,
               (int)e->u.message.resource.len, e->u.message.resource.p ? e->u.message.resource.p : "",
               (int)e->u.message.body.len, e->u.message.body.p);
        p->got_message = true;
        if (e->u.message.token)             /* "stored" at once: printed */
            xmpp_ops.committed(p->s, e->u.message.token);
        break;
    case IM_EV_SENT:
        printf("SENT %llu\n", (unsigned long long)e->u.sent.msg);
        p->sent = true;
        break;
    case IM_EV_CONTACT_DONE:
        printf("CONTACT_DONE %llu %d\n", (unsigned long long)e->u.contact_done.req, e->u.contact_done.status);
        break;
    case IM_EV_NOTICE:
        printf("NOTICE %.*s\n", (int)e->u.notice.text.len, e->u.notice.text.p);
        break;
    }
    fflush(stdout);
}

static int
tls_start(struct probe *p)
{
    char err[160];
    int rc;

    mbedtls_ssl_init(&p->ssl);
    mbedtls_ssl_config_init(&p->conf);
    mbedtls_x509_crt_init(&p->ca);
    mbedtls_entropy_init(&p->entropy);
    mbedtls_ctr_drbg_init(&p->drbg);
    if ((rc = mbedtls_ctr_drbg_seed(&p->drbg, mbedtls_entropy_func, &p->entropy, NULL, 0)) ||
        (rc = mbedtls_x509_crt_parse_file(&p->ca, p->ca_file ? p->ca_file : "/etc/ssl/certs/ca-certificates.crt")) ||
        (rc = mbedtls_ssl_config_defaults(&p->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                          MBEDTLS_SSL_PRESET_DEFAULT)))
        goto fail;
    mbedtls_ssl_conf_authmode(&p->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&p->conf, &p->ca, NULL);
    mbedtls_ssl_conf_rng(&p->conf, mbedtls_ctr_drbg_random, &p->drbg);
    if ((rc = mbedtls_ssl_setup(&p->ssl, &p->conf)) || (rc = mbedtls_ssl_set_hostname(&p->ssl, p->tls_name)))
        goto fail;
    mbedtls_ssl_set_bio(&p->ssl, &p->fd, mbedtls_net_send, mbedtls_net_recv, NULL);
    while ((rc = mbedtls_ssl_handshake(&p->ssl)) != 0)
        if (rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE)
            goto fail;
    p->tls = true;
    printf("TLS ok\n");
    fflush(stdout);
    return 0;
fail:
    mbedtls_strerror(rc, err, sizeof(err));
    uint32_t flags = mbedtls_ssl_get_verify_result(&p->ssl);
    if (flags && flags != (uint32_t)-1) {
        char vb[256];
        mbedtls_x509_crt_verify_info(vb, sizeof(vb), "", flags);
        vb[strcspn(vb, "\n")] = 0;
        printf("TLS error %s (%s)\n", err, vb);
    } else {
        printf("TLS error %s\n", err);
    }
    fflush(stdout);
    return -IM_ETLS;
}

static void
usage(void)
{
    fprintf(stderr, "usage: xmpp_probe --host IP --port N --login JID --password PW [--tls starttls|tls|none]\n"
                    "  [--ca-file PEM] [--tls-name NAME] [--resource R] [--send-to JID --send-body TEXT]\n"
                    "  [--exit-after-online] [--wait-message] [--timeout SECONDS] [--kdf-async]\n");
    exit(1);
}

int
main(int argc, char **argv)
{
    static struct probe p;
    const char *host = NULL, *login = NULL, *password = "", *tls = "starttls", *send_to = NULL;
    const char *send_body = "hello", *resource = NULL;
    int port = 5222, timeout = 20;
    bool exit_online = false, wait_msg = false, kdf_async = false;
    char norm[300], tlsname[300];
    const char *why;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--exit-after-online")) { exit_online = true; continue; }
        if (!strcmp(a, "--wait-message")) { wait_msg = true; continue; }
        if (!strcmp(a, "--kdf-async")) { kdf_async = true; continue; }
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--login")) login = v;
        else if (!strcmp(a, "--password")) password = v;
        else if (!strcmp(a, "--tls")) tls = v;
        else if (!strcmp(a, "--ca-file")) p.ca_file = v;
        else if (!strcmp(a, "--tls-name")) p.tls_name = v;
        else if (!strcmp(a, "--resource")) resource = v;
        else if (!strcmp(a, "--send-to")) send_to = v;
        else if (!strcmp(a, "--send-body")) send_body = v;
        else if (!strcmp(a, "--timeout")) timeout = atoi(v);
        else usage();
    }
    if (!host || !login)
        usage();
    if (xmpp_ops.normalize_login(login, norm, sizeof(norm), &why)) {
        fprintf(stderr, "bad login: %s\n", why);
        return 1;
    }
    xmpp_ops.default_tls_name(norm, tlsname, sizeof(tlsname));
    if (!p.tls_name)
        p.tls_name = tlsname;

    struct im_option opt = { "resource", resource ? resource : "" };
    struct im_account_cfg cfg = {
        .account = 1, .login = norm, .password = password, .host = host, .port = (uint16_t)port,
        .tls = !strcmp(tls, "tls") ? IM_TLS_DIRECT : !strcmp(tls, "none") ? IM_TLS_NONE : IM_TLS_STARTTLS,
        .tls_name = p.tls_name, .options = &opt, .n_options = resource ? 1 : 0,
    };
    struct im_io io = { .out = p_out, .event = p_event, .kdf = kdf_async ? p_kdf : NULL, .ud = &p };

    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "--host must be an IPv4 address\n");
        return 1;
    }
    p.fd = socket(AF_INET, SOCK_STREAM, 0);
    if (p.fd < 0 || connect(p.fd, (struct sockaddr *)&sa, sizeof(sa))) {
        perror("connect");
        return 1;
    }
    if (cfg.tls == IM_TLS_DIRECT && tls_start(&p))
        return 4;

    struct im_sess *s = xmpp_ops.create(&cfg, &io);
    p.s = s;
    uint64_t t0 = im_mono_ms();
    if (!s || xmpp_ops.start(s, im_clock_read(NULL)))
        return p.exit_code ? p.exit_code : 1;
    bool sent_once = false;
    int rc = 0;
    for (;;) {
        if (p.failed) {
            rc = p.exit_code;
            break;
        }
        if (p.want_starttls) {
            p.want_starttls = false;
            int st = tls_start(&p);
            if (xmpp_ops.tls_ready(s, st, im_clock_read(NULL)) || st) {
                rc = st ? 4 : 2;
                break;
            }
        }
        if (p.kdf_pending) {
            p_kdf_run(&p);                      /* on failure the STATE event set p.failed */
            continue;
        }
        if (p.online && send_to && !sent_once) {
            sent_once = true;
            struct im_msg m = { .msg = 1, .to = { send_to, (uint32_t)strlen(send_to) },
                                .body = { send_body, (uint32_t)strlen(send_body) } };
            if (xmpp_ops.send_msg(s, &m)) {
                printf("SEND failed\n");
                rc = 2;
                break;
            }
        }
        if (p.online && p.got_contacts && (!send_to || p.sent) && (!wait_msg || p.got_message) &&
            (exit_online || send_to || wait_msg)) {
            rc = 0;
            break;
        }
        if (im_mono_ms() - t0 > (uint64_t)timeout * 1000) {
            printf("TIMEOUT\n");
            rc = 5;
            break;
        }
        uint8_t buf[8192];
        ssize_t n = 0;
        bool readable = p.tls && mbedtls_ssl_get_bytes_avail(&p.ssl) > 0;
        if (!readable) {
            struct pollfd pf = { .fd = p.fd, .events = POLLIN };
            int pr = poll(&pf, 1, 1000);
            readable = pr > 0;
        }
        if (readable) {
            if (p.tls) {
                int t = mbedtls_ssl_read(&p.ssl, buf, sizeof(buf));
                if (t == MBEDTLS_ERR_SSL_WANT_READ || t == MBEDTLS_ERR_SSL_WANT_WRITE)
                    continue;
                n = t == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY ? 0 : t;
            } else {
                n = read(p.fd, buf, sizeof(buf));
            }
            if (n <= 0) {
                printf("CLOSED\n");
                rc = p.exit_code ? p.exit_code : 2;
                break;
            }
            if (xmpp_ops.input(s, buf, (size_t)n, im_clock_read(NULL)))
                continue;                       /* the STATE event set p.failed */
        }
        if (xmpp_ops.tick(s, im_clock_read(NULL)))
            continue;
    }
    if (!p.failed)
        xmpp_ops.logout(s);
    xmpp_ops.destroy(s);
    if (p.tls)
        mbedtls_ssl_close_notify(&p.ssl);
    close(p.fd);
    fflush(stdout);
    return rc;
}
