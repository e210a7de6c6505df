/*
 * test_xmpp_scram.c - the SCRAM client against the RFC 5802 (SHA-1) and
 * RFC 7677 (SHA-256) worked examples, byte for byte, both in one call and
 * split around a key derivation done elsewhere (im_kdf_pbkdf2()).
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

    T_EQ_INT(scram_client_first(&sc, v->h, "user", v->nonce, NULL, out, sizeof(out), &n), 0);
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

    T_EQ_INT(scram_client_first(&sc, v->h, "user", v->nonce, NULL, out, sizeof(out), &n), 0);
    T_EQ_INT(scram_client_final(&sc, "pencil", v->sfirst, strlen(v->sfirst), out, sizeof(out), &n), 0);
    /* one bit off in the signature */
    const char *bad = "v=rmF9pqV8S7suAoZWja4dJRkFsKU=";
    T_EQ_INT(scram_verify_server_final(&sc, bad, strlen(bad)), -IM_EAUTH);
    /* the SHA-256 signature for a SHA-1 exchange: wrong length */
    T_EQ_INT(scram_verify_server_final(&sc, rfc7677.sfinal, strlen(rfc7677.sfinal)), -IM_EAUTH);
    T_EQ_INT(scram_verify_server_final(&sc, "e=other-error", 13), -IM_EAUTH);
    /* a wrong password gives a different proof and a different signature */
    T_EQ_INT(scram_client_first(&sc, v->h, "user", v->nonce, NULL, out, sizeof(out), &n), 0);
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
        "r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=12a",
        "r=fyko+d2lbbFgONRv9qkxdawLx,s=!!!,i=4096",
        "r=fyko+d2lbbFgONRv9qkxdawLx,i=4096",
        "m=ext,r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=4096",
        "e=invalid-proof",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        T_EQ_INT(scram_client_first(&sc, SCRAM_SHA1, "user", rfc5802.nonce, NULL, out,
                                    sizeof(out), &n), 0);
        T_EQ_INT(scram_client_final(&sc, "pencil", bad[i], strlen(bad[i]), out, sizeof(out), &n),
                 -IM_EPROTO);
    }
}

static int
fixed_rand(void *ud, void *buf, size_t n)
{
    (void)ud;
    for (size_t i = 0; i < n; i++)
        ((uint8_t *)buf)[i] = (uint8_t)(i * 7 + 1);
    return 0;
}

static const struct im_rng fixed = { .fill = fixed_rand };

T_TEST(username_escaping_and_random_nonce)
{
    struct scram_ctx sc;
    char out[512];
    size_t n;

    T_EQ_INT(scram_client_first(&sc, SCRAM_SHA256, "a=b,c", NULL, &fixed, out,
                                sizeof(out), &n), 0);
    out[n] = 0;
    T_ASSERT(!strncmp(out, "n,,n=a=3Db=2Cc,r=", 17));
    T_EQ_UINT(strlen(out + 17), 24);
    T_EQ_INT(scram_client_first(&sc, SCRAM_SHA256, "", NULL, &fixed, out, sizeof(out), &n),
             -IM_EINVAL);
    T_EQ_INT(scram_client_first(&sc, SCRAM_SHA256, "u", "bad,nonce", NULL, out, sizeof(out), &n),
             -IM_EINVAL);
    T_EQ_INT(scram_client_first(&sc, SCRAM_SHA256, "user", NULL, &fixed, out, 10, &n),
             -IM_ETOOBIG);
}

/* The two halves around a derivation done elsewhere give the RFC bytes too. */
static void
run_split(const struct vec *v)
{
    struct scram_ctx sc;
    struct im_kdf_params p;
    uint8_t key[IM_KDF_MAX_KEY];
    char out[512];
    size_t n;

    T_EQ_INT(scram_client_first(&sc, v->h, "user", v->nonce, NULL, out, sizeof(out), &n), 0);
    T_EQ_INT(scram_server_first(&sc, v->sfirst, strlen(v->sfirst)), 0);
    T_EQ_INT(sc.step, SCRAM_STEP_KEY);
    scram_kdf_params(&sc, "pencil", &p);
    T_EQ_INT(p.hash, v->h == SCRAM_SHA256 ? IM_KDF_SHA256 : IM_KDF_SHA1);
    T_EQ_UINT(p.iterations, 4096);
    T_EQ_UINT(p.password_len, 6);
    T_EQ_MEM(p.password, "pencil", 6);
    T_EQ_UINT(p.salt_len, v->h == SCRAM_SHA1 ? 12 : 16);   /* QSXCR+Q6sek8bf92, W22ZaJ0SNY7soEsUEjb6gQ== */
    /* out of order, and a key of the wrong length, are refused before anything is written */
    T_EQ_INT(scram_server_first(&sc, v->sfirst, strlen(v->sfirst)), -IM_EINVAL);
    T_EQ_INT(im_kdf_pbkdf2(&p, key, sizeof(key)), 0);
    T_EQ_INT(scram_client_final_key(&sc, key, im_kdf_keylen(p.hash) - 1, out, sizeof(out), &n), -IM_EINVAL);
    T_EQ_INT(scram_client_final_key(&sc, key, im_kdf_keylen(p.hash), out, sizeof(out), &n), 0);
    im_wipe(key, sizeof(key));
    out[n] = 0;
    T_EQ_STR(out, v->cfinal);
    T_EQ_INT(scram_client_final_key(&sc, key, im_kdf_keylen(p.hash), out, sizeof(out), &n), -IM_EINVAL);
    T_EQ_INT(scram_verify_server_final(&sc, v->sfinal, strlen(v->sfinal)), 0);
    T_EQ_INT(sc.step, SCRAM_STEP_DONE);
    scram_wipe(&sc);
}

T_TEST(split_around_the_derivation)
{
    run_split(&rfc5802);
    run_split(&rfc7677);
}

T_TEST(server_first_limits)
{
    struct scram_ctx sc;
    char out[512], sf[SCRAM_MAX_SF + 64];
    size_t n;

    /* a server-first over SCRAM_MAX_SF bytes (a long extension) is refused */
    int k = snprintf(sf, sizeof(sf), "%s,x=", rfc5802.sfirst);
    memset(sf + k, 'a', sizeof(sf) - (size_t)k - 1);
    sf[sizeof(sf) - 1] = 0;
    T_EQ_INT(scram_client_first(&sc, SCRAM_SHA1, "user", rfc5802.nonce, NULL, out, sizeof(out), &n), 0);
    T_EQ_INT(scram_server_first(&sc, sf, strlen(sf)), -IM_ETOOBIG);
    T_EQ_INT(sc.step, SCRAM_STEP_FIRST);
    /* the iteration bounds */
    T_EQ_INT(scram_server_first(&sc, "r=" "fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=100000", 55), 0);
    T_EQ_UINT(sc.iter, SCRAM_MAX_ITER);
    T_EQ_INT(scram_client_first(&sc, SCRAM_SHA1, "user", rfc5802.nonce, NULL, out, sizeof(out), &n), 0);
    T_EQ_INT(scram_server_first(&sc, "r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=100001", 55), -IM_ELIMIT);
    T_EQ_UINT(sc.iter, 100001);                     /* kept, to name it */
    T_EQ_INT(sc.step, SCRAM_STEP_FIRST);
    T_EQ_INT(scram_server_first(&sc, "r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=99999999999999", 63),
             -IM_ELIMIT);
    T_EQ_UINT(sc.iter, UINT32_MAX);                 /* saturated */
    T_EQ_INT(scram_server_first(&sc, "r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=0", 50), -IM_EPROTO);
    /* the derivation refuses what it cannot do */
    struct im_kdf_params p = { .hash = IM_KDF_SHA1, .password = "x", .password_len = 1,
                               .salt = (const uint8_t *)"s", .salt_len = 1, .iterations = 0 };
    uint8_t key[IM_KDF_MAX_KEY];
    T_EQ_INT(im_kdf_pbkdf2(&p, key, sizeof(key)), -IM_EINVAL);
    p.iterations = 1;
    T_EQ_INT(im_kdf_pbkdf2(&p, key, 19), -IM_EINVAL);
    p.hash = (enum im_kdf_hash)99;
    T_EQ_INT(im_kdf_pbkdf2(&p, key, sizeof(key)), -IM_EINVAL);
    T_EQ_UINT(im_kdf_keylen(IM_KDF_SHA1), 20);
    T_EQ_UINT(im_kdf_keylen(IM_KDF_SHA256), 32);
}

T_MAIN(T_RUN(rfc5802_sha1), T_RUN(rfc7677_sha256), T_RUN(server_signature_mismatch),
       T_RUN(malformed_server_first), T_RUN(username_escaping_and_random_nonce),
       T_RUN(split_around_the_derivation), T_RUN(server_first_limits))
