/*
 * test_im_common.c - the small pieces of the kit: the one host:port parser,
 * random sources, clocks and the key derivation (RFC 6070 vectors).
 */
#include "t.h"
#include "im_clock.h"
#include "im_common.h"
#include "im_kdf.h"
#include "im_rng.h"

T_TEST(hostport)
{
    char host[IM_HOST_MAX + 1], small[4];
    unsigned port = 0;
    char *h;

    T_EQ_INT(im_parse_hostport("127.0.0.1:7700", host, sizeof(host), &port), 0);
    T_EQ_STR(host, "127.0.0.1");
    T_EQ_UINT(port, 7700);
    T_EQ_INT(im_parse_hostport("[::1]:17700", host, sizeof(host), &port), 0);
    T_EQ_STR(host, "::1");
    T_EQ_UINT(port, 17700);
    T_EQ_INT(im_parse_hostport("a.test:1", host, sizeof(host), &port), 0);
    T_EQ_INT(im_parse_hostport("a.test:65535", host, sizeof(host), &port), 0);
    T_EQ_UINT(port, 65535);
    static const char *const bad[] = {
        "::1:7700", "host:0", "host:65536", ":80", "host", "host:", "host:5x", "host:+5", "host: 5",
        "[::1]7700", "[::1", "[]:5", "host:99999999999999999999", NULL,
    };
    for (size_t i = 0; bad[i]; i++)
        if (im_parse_hostport(bad[i], host, sizeof(host), &port) != -IM_EINVAL)
            T_FAIL("accepted %s", bad[i]);
    T_EQ_INT(im_parse_hostport(NULL, host, sizeof(host), &port), -IM_EINVAL);
    /* the host must fit the caller's buffer, and IM_HOST_MAX */
    T_EQ_INT(im_parse_hostport("abcd:1", small, sizeof(small), &port), -IM_EINVAL);
    T_EQ_INT(im_parse_hostport("abc:1", small, sizeof(small), &port), 0);
    char longhost[IM_HOST_MAX + 8];
    memset(longhost, 'a', IM_HOST_MAX + 1);
    strcpy(longhost + IM_HOST_MAX + 1, ":5");
    T_EQ_INT(im_parse_hostport(longhost, host, sizeof(host), &port), -IM_EINVAL);
    strcpy(longhost + IM_HOST_MAX, ":5");
    T_EQ_INT(im_parse_hostport(longhost, host, sizeof(host), &port), 0);
    /* the malloc'd variant is the same parser */
    T_EQ_INT(im_split_hostport("[fe80::1]:5222", &h, &port), 0);
    T_EQ_STR(h, "fe80::1");
    T_EQ_UINT(port, 5222);
    free(h);
    T_EQ_INT(im_split_hostport("x:0", &h, &port), -IM_EINVAL);
}

static int
count_fill(void *ud, void *buf, size_t n)
{
    int *calls = ud;
    (*calls)++;
    memset(buf, 0xab, n);
    return 0;
}

static int
positive_fill(void *ud, void *buf, size_t n)
{
    return 1;
}

T_TEST(rng)
{
    uint8_t a[32] = { 0 }, b[32] = { 0 }, zero[32] = { 0 };
    int calls = 0;
    struct im_rng mine = { .fill = count_fill, .ud = &calls };
    struct im_rng odd = { .fill = positive_fill };

    T_EQ_INT(im_rng_fill(NULL, a, sizeof(a)), 0);       /* NULL: the default */
    T_EQ_INT(im_rng_fill(&im_rng_default, b, sizeof(b)), 0);
    T_ASSERT(memcmp(a, zero, sizeof(a)) && memcmp(a, b, sizeof(a)));
    T_EQ_INT(im_rng_fill(&mine, a, 5), 0);
    T_EQ_INT(calls, 1);
    T_EQ_UINT(a[4], 0xab);
    T_EQ_INT(im_rng_fill(&odd, a, 5), -EIO);
    T_EQ_INT(im_random(a, 0), 0);
}

static uint64_t
fake_mono(void *ud)
{
    return ((uint64_t *)ud)[0];
}

static uint64_t
fake_wall(void *ud)
{
    return ((uint64_t *)ud)[1];
}

T_TEST(clocks)
{
    uint64_t t[2] = { 5000, 1700000000000ull };
    struct im_clock fake = { .mono_ms = fake_mono, .wall_ms = fake_wall, .ud = t };
    struct im_time now = im_clock_read(&fake);

    T_EQ_UINT(now.mono_ms, 5000);
    T_EQ_UINT(now.wall_ms, 1700000000000ull);
    t[0] += 100;
    T_EQ_UINT(im_clock_read(&fake).mono_ms, 5100);
    /* the default: the system clocks */
    struct im_time a = im_clock_read(NULL), b = im_clock_read(&im_clock_default);
    T_ASSERT(b.mono_ms >= a.mono_ms);
    T_ASSERT(a.wall_ms > 1600000000000ull);             /* after 2020 */
    T_ASSERT(im_mono_ms() >= b.mono_ms);
}

/* RFC 6070 PBKDF2-HMAC-SHA1 vectors, and RFC 7914 section 11's SHA-256 one. */
T_TEST(kdf_vectors)
{
    static const uint8_t v1[20] = { 0x0c, 0x60, 0xc8, 0x0f, 0x96, 0x1f, 0x0e, 0x71, 0xf3, 0xa9,
                                    0xb5, 0x24, 0xaf, 0x60, 0x12, 0x06, 0x2f, 0xe0, 0x37, 0xa6 };
    static const uint8_t v4096[20] = { 0x4b, 0x00, 0x79, 0x01, 0xb7, 0x65, 0x48, 0x9a, 0xbe, 0xad,
                                       0x49, 0xd9, 0x26, 0xf7, 0x21, 0xd0, 0x65, 0xa4, 0x29, 0xc1 };
    static const uint8_t s256[32] = { 0x55, 0xac, 0x04, 0x6e, 0x56, 0xe3, 0x08, 0x9f, 0xec, 0x16, 0x91,
                                      0xc2, 0x25, 0x44, 0xb6, 0x05, 0xf9, 0x41, 0x85, 0x21, 0x6d, 0xde,
                                      0x04, 0x65, 0xe6, 0x8b, 0x9d, 0x57, 0xc2, 0x0d, 0xac, 0xbc };
    struct im_kdf_params p = { .hash = IM_KDF_SHA1, .password = "password", .password_len = 8,
                               .salt = (const uint8_t *)"salt", .salt_len = 4, .iterations = 1 };
    uint8_t key[IM_KDF_MAX_KEY];

    T_EQ_INT(im_kdf_pbkdf2(&p, key, sizeof(key)), 0);
    T_EQ_MEM(key, v1, 20);
    p.iterations = 4096;
    T_EQ_INT(im_kdf_pbkdf2(&p, key, 20), 0);
    T_EQ_MEM(key, v4096, 20);
    /* RFC 7914 11: PBKDF2-HMAC-SHA256 (P="passwd", S="salt", c=1), first 32 bytes */
    p = (struct im_kdf_params){ .hash = IM_KDF_SHA256, .password = "passwd", .password_len = 6,
                                .salt = (const uint8_t *)"salt", .salt_len = 4, .iterations = 1 };
    T_EQ_INT(im_kdf_pbkdf2(&p, key, sizeof(key)), 0);
    T_EQ_MEM(key, s256, 32);
    p.iterations = IM_KDF_MAX_ITER + 1;
    T_EQ_INT(im_kdf_pbkdf2(&p, key, sizeof(key)), -IM_EINVAL);
}

T_MAIN(T_RUN(hostport), T_RUN(rng), T_RUN(clocks), T_RUN(kdf_vectors))
