/*
 * test_xmpp_scram.c - the SCRAM client against the RFC 5802 (SHA-1) and
 * RFC 7677 (SHA-256) worked examples, byte for byte.
 */
#include "t.h"
#include "im_common.h"
#include "xmpp/xmpp_scram.h"

struct vec {
    enum scram_hash h;
    const char *nonce, *cfirst, *sfirst, *cfinal, *sfinal;
};

static const struct vec rfc5802 = {
    SCRAM_SHA1, "fyko+d2lbbFgONRv9qkxdawL",
    "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
};

static const struct vec rfc7677 = {
    SCRAM_SHA256, "rOprNGfwEbeRWgbNEkqO",
    "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

static void
run_vec(const struct vec *v)
{
    struct scram_ctx sc;
    char out[512];
    size_t n;

    T_EQ_INT(scram_client_first(&sc, v->h, "user", v->nonce, NULL, NULL, out, sizeof(out), &n), 0);
    T_EQ_UINT(n, strlen(v->cfirst));
    T_EQ_MEM(out, v->cfirst, n);
    T_EQ_INT(scram_client_final(&sc, "pencil", v->sfirst, strlen(v->sfirst), out, sizeof(out), &n), 0);
    out[n] = 0;
    T_EQ_STR(out, v->cfinal);
    T_EQ_INT(scram_verify_server_final(&sc, v->sfinal, strlen(v->sfinal)), 0);
    scram_wipe(&sc);
}

T_TEST(rfc5802_sha1) { run_vec(&rfc5802); }
T_TEST(rfc7677_sha256) { run_vec(&rfc7677); }

T_TEST(server_signature_mismatch)
{
    struct scram_ctx sc;
    char out[512];
    size_t n;
    const struct vec *v = &rfc5802;

    T_EQ_INT(scram_client_first(&sc, v->h, "user", v->nonce, NULL, NULL, out, sizeof(out), &n), 0);
    T_EQ_INT(scram_client_final(&sc, "pencil", v->sfirst, strlen(v->sfirst), out, sizeof(out), &n), 0);
    /* one bit off in the signature */
    const char *bad = "v=rmF9pqV8S7suAoZWja4dJRkFsKU=";
    T_EQ_INT(scram_verify_server_final(&sc, bad, strlen(bad)), -IM_EAUTH);
    /* the SHA-256 signature for a SHA-1 exchange: wrong length */
    T_EQ_INT(scram_verify_server_final(&sc, rfc7677.sfinal, strlen(rfc7677.sfinal)), -IM_EAUTH);
    T_EQ_INT(scram_verify_server_final(&sc, "e=other-error", 13), -IM_EAUTH);
    /* a wrong password gives a different proof and a different signature */
    T_EQ_INT(scram_client_first(&sc, v->h, "user", v->nonce, NULL, NULL, out, sizeof(out), &n), 0);
    T_EQ_INT(scram_client_final(&sc, "pencil2", v->sfirst, strlen(v->sfirst), out, sizeof(out), &n), 0);
    out[n] = 0;
    T_ASSERT(strcmp(out, v->cfinal) != 0);
    T_EQ_INT(scram_verify_server_final(&sc, v->sfinal, strlen(v->sfinal)), -IM_EAUTH);
}

T_TEST(malformed_server_first)
{
    struct scram_ctx sc;
    char out[512];
    size_t n;
    static const char *const bad[] = {
        "r=someoneelse3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",  /* nonce not ours */
        "r=fyko+d2lbbFgONRv9qkxdawL,s=QSXCR+Q6sek8bf92,i=4096",       /* not extended */
        "r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=0",
        "r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=99999999",
        "r=fyko+d2lbbFgONRv9qkxdawLx,s=!!!,i=4096",
        "r=fyko+d2lbbFgONRv9qkxdawLx,i=4096",
        "m=ext,r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=4096",
        "e=invalid-proof",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        T_EQ_INT(scram_client_first(&sc, SCRAM_SHA1, "user", rfc5802.nonce, NULL, NULL, out,
                                    sizeof(out), &n), 0);
        T_EQ_INT(scram_client_final(&sc, "pencil", bad[i], strlen(bad[i]), out, sizeof(out), &n),
                 -IM_EPROTO);
    }
}

static int
fixed_rand(void *ud, uint8_t *buf, size_t n)
{
    (void)ud;
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    return 0;
}

T_TEST(username_escaping_and_random_nonce)
{
    struct scram_ctx sc;
    char out[512];
    size_t n;

    T_EQ_INT(scram_client_first(&sc, SCRAM_SHA256, "a=b,c", NULL, fixed_rand, NULL, out,
                                sizeof(out), &n), 0);
    out[n] = 0;
    T_ASSERT(!strncmp(out, "n,,n=a=3Db=2Cc,r=", 17));
    T_EQ_UINT(strlen(out + 17), 24);
    T_EQ_INT(scram_client_first(&sc, SCRAM_SHA256, "", NULL, fixed_rand, NULL, out, sizeof(out), &n),
             -IM_EINVAL);
    T_EQ_INT(scram_client_first(&sc, SCRAM_SHA256, "u", "bad,nonce", NULL, NULL, out, sizeof(out), &n),
             -IM_EINVAL);
    T_EQ_INT(scram_client_first(&sc, SCRAM_SHA256, "user", NULL, fixed_rand, NULL, out, 10, &n),
             -IM_ETOOBIG);
}

T_MAIN(T_RUN(rfc5802_sha1), T_RUN(rfc7677_sha256), T_RUN(server_signature_mismatch),
       T_RUN(malformed_server_first), T_RUN(username_escaping_and_random_nonce))
