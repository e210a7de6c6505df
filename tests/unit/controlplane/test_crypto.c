/*
 * test_crypto.c - Argon2id hashes, the appliance key file and AES-256-GCM
 * sealing.
 */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "t.h"
#include "im_common.h"
#include "cp_crypto.h"

static char dir[64];

static void dir_new(void)
{
    strcpy(dir, "/tmp/imfuse-crypto-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
}

static void dir_done(void)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/appliance.key", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/appliance.key.new", dir);
    unlink(p);
    rmdir(dir);
}

static void fast_params(void)
{
    cp_argon2_params.t_cost = 1;
    cp_argon2_params.m_cost_kib = 256;
    cp_argon2_params.parallelism = 1;
}

/* ---- passwords -------------------------------------------------------- */

T_TEST(password_hash_verify)
{
    char h1[CP_HASH_MAX + 1], h2[CP_HASH_MAX + 1];

    fast_params();
    T_EQ_INT(cp_password_hash("correct horse", 13, h1), 0);
    T_ASSERT(strncmp(h1, "$argon2id$v=19$m=256,t=1,p=1$", 29) == 0);
    T_EQ_INT(cp_password_verify(h1, "correct horse", 13), 0);
    T_EQ_INT(cp_password_verify(h1, "correct horsE", 13), -IM_EAUTH);
    T_EQ_INT(cp_password_verify(h1, "correct hors", 12), -IM_EAUTH);
    T_EQ_INT(cp_password_verify(h1, "", 0), -IM_EAUTH);
    /* a fresh salt each time */
    T_EQ_INT(cp_password_hash("correct horse", 13, h2), 0);
    T_ASSERT(strcmp(h1, h2) != 0);
    T_EQ_INT(cp_password_verify(h2, "correct horse", 13), 0);
    /* binary passwords with a NUL are hashed by length */
    T_EQ_INT(cp_password_hash("a\0b", 3, h2), 0);
    T_EQ_INT(cp_password_verify(h2, "a\0b", 3), 0);
    T_EQ_INT(cp_password_verify(h2, "a", 1), -IM_EAUTH);
    /* the empty password */
    T_EQ_INT(cp_password_hash("", 0, h2), 0);
    T_EQ_INT(cp_password_verify(h2, "", 0), 0);
}

T_TEST(password_default_params)
{
    char h[CP_HASH_MAX + 1];
    struct cp_argon2_params saved = cp_argon2_params;

    cp_argon2_params = (struct cp_argon2_params){ 3, 64 * 1024, 1 };
    T_EQ_INT(cp_password_hash("pw", 2, h), 0);
    cp_argon2_params = saved;
    T_ASSERT(strncmp(h, "$argon2id$v=19$m=65536,t=3,p=1$", 31) == 0);
    T_EQ_INT(cp_password_verify(h, "pw", 2), 0);
}

T_TEST(password_malformed)
{
    char h[CP_HASH_MAX + 1], bad[CP_HASH_MAX + 1];

    fast_params();
    T_EQ_INT(cp_password_verify("", "pw", 2), -IM_ECORRUPT);
    T_EQ_INT(cp_password_verify("$argon2id$garbage", "pw", 2), -IM_ECORRUPT);
    T_EQ_INT(cp_password_verify("$argon2id$v=19$m=256,t=1,p=1$", "pw", 2), -IM_ECORRUPT);
    T_EQ_INT(cp_password_verify("plaintext-password", "pw", 2), -IM_ECORRUPT);
    T_EQ_INT(cp_password_verify(NULL, "pw", 2), -IM_ECORRUPT);
    T_EQ_INT(cp_password_hash("pw", 2, h), 0);
    /* an argon2i hash is not accepted as argon2id */
    strcpy(bad, h);
    memmove(bad + 8, bad + 9, strlen(bad + 9) + 1);     /* "$argon2i$..." */
    T_EQ_INT(cp_password_verify(bad, "pw", 2), -IM_ECORRUPT);
    /* a truncated hash */
    strcpy(bad, h);
    bad[strlen(bad) - 10] = '\0';
    T_ASSERT(cp_password_verify(bad, "pw", 2) != 0);
    /* a broken base64 salt */
    strcpy(bad, h);
    char *salt = strrchr(bad, '$');
    T_ASSERT(salt);
    salt[-3] = '*';
    T_EQ_INT(cp_password_verify(bad, "pw", 2), -IM_ECORRUPT);
}

/* ---- sealing ---------------------------------------------------------- */

static void some_key(struct cp_key *k, uint8_t seed)
{
    for (size_t i = 0; i < sizeof(k->k); i++)
        k->k[i] = (uint8_t)(seed + i * 13);
}

T_TEST(seal_round_trip)
{
    struct cp_key k;
    uint8_t *s1, *s2, *pt;
    size_t n1, n2, ptn;
    static const char secret[] = "hunter2 and more";
    static const uint8_t aad[16] = { 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7 };

    some_key(&k, 1);
    T_EQ_INT(cp_seal(&k, aad, sizeof(aad), secret, strlen(secret), &s1, &n1), 0);
    T_EQ_UINT(n1, 1 + 12 + strlen(secret) + 16);
    T_EQ_INT(s1[0], 1);
    T_ASSERT(memmem(s1, n1, "hunter2", 7) == NULL);
    T_EQ_INT(cp_unseal(&k, aad, sizeof(aad), s1, n1, &pt, &ptn), 0);
    T_EQ_UINT(ptn, strlen(secret));
    T_EQ_STR((char *)pt, secret);      /* NUL-terminated */
    free(pt);

    /* two seals of the same plaintext differ (fresh nonce) */
    T_EQ_INT(cp_seal(&k, aad, sizeof(aad), secret, strlen(secret), &s2, &n2), 0);
    T_EQ_UINT(n2, n1);
    T_ASSERT(memcmp(s1 + 1, s2 + 1, 12) != 0);
    T_ASSERT(memcmp(s1, s2, n1) != 0);
    free(s2);

    /* the empty plaintext, no aad */
    T_EQ_INT(cp_seal(&k, NULL, 0, "", 0, &s2, &n2), 0);
    T_EQ_UINT(n2, 29);
    T_EQ_INT(cp_unseal(&k, NULL, 0, s2, n2, &pt, &ptn), 0);
    T_EQ_UINT(ptn, 0);
    T_EQ_INT(pt[0], 0);
    free(pt);
    free(s2);
    free(s1);
}

T_TEST(seal_tamper)
{
    struct cp_key k, other;
    uint8_t *s, *pt;
    size_t n, ptn;
    static const char aad[] = "uid1.acct7";

    some_key(&k, 1);
    some_key(&other, 2);
    T_EQ_INT(cp_seal(&k, aad, sizeof(aad), "secret", 6, &s, &n), 0);
    /* every single flipped bit anywhere is refused */
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            s[i] ^= (uint8_t)(1u << bit);
            pt = (uint8_t *)"x";
            T_EQ_INT(cp_unseal(&k, aad, sizeof(aad), s, n, &pt, &ptn), -IM_ECORRUPT);
            T_ASSERT(pt == NULL);
            s[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* wrong aad, wrong key */
    T_EQ_INT(cp_unseal(&k, "uid1.acct8", sizeof(aad), s, n, &pt, &ptn), -IM_ECORRUPT);
    T_EQ_INT(cp_unseal(&k, aad, sizeof(aad) - 1, s, n, &pt, &ptn), -IM_ECORRUPT);
    T_EQ_INT(cp_unseal(&other, aad, sizeof(aad), s, n, &pt, &ptn), -IM_ECORRUPT);
    /* short input, truncated tag, unknown version */
    T_EQ_INT(cp_unseal(&k, aad, sizeof(aad), s, 28, &pt, &ptn), -IM_ECORRUPT);
    T_EQ_INT(cp_unseal(&k, aad, sizeof(aad), s, n - 1, &pt, &ptn), -IM_ECORRUPT);
    T_EQ_INT(cp_unseal(&k, aad, sizeof(aad), s, 0, &pt, &ptn), -IM_ECORRUPT);
    s[0] = 2;
    T_EQ_INT(cp_unseal(&k, aad, sizeof(aad), s, n, &pt, &ptn), -IM_ECORRUPT);
    s[0] = 1;
    T_EQ_INT(cp_unseal(&k, aad, sizeof(aad), s, n, &pt, &ptn), 0);
    T_EQ_STR((char *)pt, "secret");
    free(pt);
    free(s);
}

/* ---- the key file ----------------------------------------------------- */

T_TEST(key_file)
{
    struct cp_key k1, k2, zero;
    struct stat st;
    char path[128], why[256];

    dir_new();
    snprintf(path, sizeof(path), "%s/appliance.key", dir);
    memset(&zero, 0, sizeof(zero));
    T_EQ_INT(cp_key_load_or_create(dir, &k1, why, sizeof(why)), 0);
    T_ASSERT(memcmp(&k1, &zero, sizeof(zero)) != 0);
    T_EQ_INT(stat(path, &st), 0);
    T_ASSERT(S_ISREG(st.st_mode));
    T_EQ_INT(st.st_mode & 07777, 0600);
    T_EQ_INT(st.st_size, 32);
    T_EQ_INT(cp_key_load_or_create(dir, &k2, why, sizeof(why)), 0);
    T_EQ_MEM(k1.k, k2.k, 32);
    /* the temporary file is gone */
    char tmp[140];
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    T_ASSERT(access(tmp, F_OK) != 0);

    /* group/world accessible: refused, with the fix in the reason */
    T_EQ_INT(chmod(path, 0644), 0);
    T_ASSERT(cp_key_load_or_create(dir, &k2, why, sizeof(why)) < 0);
    T_ASSERT(strstr(why, "group/world accessible"));
    T_ASSERT(strstr(why, "0644"));
    T_ASSERT(strstr(why, "chmod 600"));
    T_EQ_INT(chmod(path, 0640), 0);
    T_ASSERT(cp_key_load_or_create(dir, &k2, why, sizeof(why)) < 0);
    T_EQ_INT(chmod(path, 0600), 0);

    /* the wrong size: refused, and never replaced by a new key */
    T_EQ_INT(truncate(path, 31), 0);
    T_EQ_INT(cp_key_load_or_create(dir, &k2, why, sizeof(why)), -IM_ECORRUPT);
    T_ASSERT(strstr(why, "31 bytes"));
    T_EQ_INT(truncate(path, 33), 0);
    T_EQ_INT(cp_key_load_or_create(dir, &k2, why, sizeof(why)), -IM_ECORRUPT);
    T_EQ_INT(truncate(path, 0), 0);
    T_EQ_INT(cp_key_load_or_create(dir, &k2, why, sizeof(why)), -IM_ECORRUPT);
    T_EQ_INT(stat(path, &st), 0);
    T_EQ_INT(st.st_size, 0);

    /* a symbolic link is refused */
    T_EQ_INT(unlink(path), 0);
    T_EQ_INT(symlink("/etc/hostname", path), 0);
    T_ASSERT(cp_key_load_or_create(dir, &k2, why, sizeof(why)) < 0);
    T_ASSERT(why[0]);
    T_EQ_INT(unlink(path), 0);

    /* a new key after removal differs */
    T_EQ_INT(cp_key_load_or_create(dir, &k2, why, sizeof(why)), 0);
    T_ASSERT(memcmp(k1.k, k2.k, 32) != 0);
    dir_done();

    /* a missing directory */
    T_ASSERT(cp_key_load_or_create("/tmp/imfuse-no-such-dir", &k2, why, sizeof(why)) < 0);
    T_ASSERT(strstr(why, "imfuse-no-such-dir"));
}

T_TEST(random_bytes)
{
    uint8_t a[300], b[300];
    T_EQ_INT(cp_random(a, sizeof(a)), 0);
    T_EQ_INT(cp_random(b, sizeof(b)), 0);
    T_ASSERT(memcmp(a, b, sizeof(a)) != 0);
    T_EQ_INT(cp_random(a, 0), 0);
}

T_MAIN(T_RUN(password_hash_verify), T_RUN(password_default_params), T_RUN(password_malformed),
       T_RUN(seal_round_trip), T_RUN(seal_tamper), T_RUN(key_file), T_RUN(random_bytes))
