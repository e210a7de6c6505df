/*
 * test_cl_json.c - msgpack <-> JSON for the CLI tools.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "im_common.h"
#include "client/cl_frame.h"
#include "client/cl_json.h"

/* ---- helpers ------------------------------------------------------------ */

/* Unpack msgpack bytes and write them as JSON; returns rc, *json malloc'd. */
static int
mp_to_json(const void *mp, size_t n, char **json)
{
    msgpack_zone z;
    msgpack_object o;
    size_t off = 0, len;

    *json = NULL;
    msgpack_zone_init(&z, 1024);
    if (msgpack_unpack(mp, n, &off, &z, &o) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_zone_destroy(&z);
        return -9999;
    }
    int rc = cl_json_write(&o, json, &len);
    if (!rc && strlen(*json) != len)
        rc = -9998;
    msgpack_zone_destroy(&z);
    return rc;
}

/* Write a C-literal msgpack byte string as JSON and compare with want. */
#define W_EQ(want, ...) do { static const uint8_t mp_[] = { __VA_ARGS__ }; char *j_; \
    int rc_ = mp_to_json(mp_, sizeof(mp_), &j_); T_EQ_INT(rc_, 0); \
    T_EQ_STR(j_, want); free(j_); } while (0)
#define W_ERR(err, ...) do { static const uint8_t mp_[] = { __VA_ARGS__ }; char *j_; \
    T_EQ_INT(mp_to_json(mp_, sizeof(mp_), &j_), err); T_ASSERT(j_ == NULL); } while (0)

/* Parse JSON text; on success return the packed bytes (after the 4-byte
 * frame prefix) in a malloc'd buffer. */
static int
json_to_mp(const char *text, size_t tlen, uint8_t **mp, size_t *n)
{
    struct cl_enc e;

    *mp = NULL;
    cl_enc_init(&e);
    int rc = cl_json_parse(text, tlen, &e);
    if (!rc) {
        *n = e.buf.size - 4;
        *mp = malloc(*n ? *n : 1);
        memcpy(*mp, e.buf.data + 4, *n);
    } else if (e.buf.size != 4) {
        rc = -9997;                     /* encoder not restored */
    }
    cl_enc_free(&e);
    return rc;
}

#define P_EQ(text, ...) do { static const uint8_t want_[] = { __VA_ARGS__ }; \
    uint8_t *mp_; size_t n_; \
    T_EQ_INT(json_to_mp(text, strlen(text), &mp_, &n_), 0); \
    if (n_ != sizeof(want_) || memcmp(mp_, want_, n_)) { free(mp_); \
        T_FAIL("%s: packed bytes differ", text); } \
    free(mp_); } while (0)
#define P_ERR(err, text) do { uint8_t *mp_; size_t n_; \
    int rc_ = json_to_mp(text, strlen(text), &mp_, &n_); free(mp_); \
    if (rc_ != (err)) T_FAIL("%s: rc %d, expected %d", text, rc_, (err)); } while (0)

/* ---- writer ------------------------------------------------------------- */

T_TEST(write_scalars)
{
    W_EQ("null", 0xc0);
    W_EQ("true", 0xc3);
    W_EQ("false", 0xc2);
    W_EQ("0", 0x00);
    W_EQ("127", 0x7f);
    W_EQ("18446744073709551615", 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    W_EQ("-1", 0xff);
    W_EQ("-9223372036854775808", 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0);
    /* a non-negative value in a signed encoding is still exact */
    W_EQ("5", 0xd0, 0x05);
}

T_TEST(write_floats)
{
    W_EQ("1.5", 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0);
    W_EQ("0.1", 0xcb, 0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a);
    W_EQ("5.0", 0xcb, 0x40, 0x14, 0, 0, 0, 0, 0, 0);
    W_EQ("-0.0", 0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0);
    W_EQ("1e+300", 0xcb, 0x7e, 0x37, 0xe4, 0x3c, 0x88, 0x00, 0x75, 0x9c);
    /* float32 0.1f prints as the shortest float that reads back */
    W_EQ("0.1", 0xca, 0x3d, 0xcc, 0xcc, 0xcd);
    W_EQ("0.30000000000000004", 0xcb, 0x3f, 0xd3, 0x33, 0x33, 0x33, 0x33, 0x33, 0x34);
    W_ERR(-IM_EINVAL, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0);           /* NaN */
    W_ERR(-IM_EINVAL, 0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0);           /* +inf */
    W_ERR(-IM_EINVAL, 0xca, 0xff, 0x80, 0, 0);                       /* -inf */
}

T_TEST(write_strings)
{
    W_EQ("\"\"", 0xa0);
    W_EQ("\"a\\\"b\\\\c/\"", 0xa6, 'a', '"', 'b', '\\', 'c', '/');
    W_EQ("\"\\u000a\\u0000\\u001f\\u0009\x7f\"", 0xa5, '\n', 0x00, 0x1f, '\t', 0x7f);
    W_EQ("\"h\xc3\xa9\xf0\x9f\x98\x80\"", 0xa7, 'h', 0xc3, 0xa9, 0xf0, 0x9f, 0x98, 0x80);
    W_ERR(-IM_EUTF8, 0xa1, 0xff);
    W_ERR(-IM_EUTF8, 0xa2, 0xc0, 0x80);                 /* overlong NUL */
    W_ERR(-IM_EUTF8, 0xa3, 0xed, 0xa0, 0x80);           /* UTF-8 surrogate */
    W_ERR(-IM_EUTF8, 0xa2, 0xe2, 0x82);                 /* truncated */
}

T_TEST(write_bin_base64)
{
    /* RFC 4648 section 10 test vectors */
    W_EQ("\"\"", 0xc4, 0x00);
    W_EQ("\"Zg==\"", 0xc4, 0x01, 'f');
    W_EQ("\"Zm8=\"", 0xc4, 0x02, 'f', 'o');
    W_EQ("\"Zm9v\"", 0xc4, 0x03, 'f', 'o', 'o');
    W_EQ("\"Zm9vYg==\"", 0xc4, 0x04, 'f', 'o', 'o', 'b');
    W_EQ("\"Zm9vYmE=\"", 0xc4, 0x05, 'f', 'o', 'o', 'b', 'a');
    W_EQ("\"Zm9vYmFy\"", 0xc4, 0x06, 'f', 'o', 'o', 'b', 'a', 'r');
    W_EQ("\"//7/\"", 0xc4, 0x03, 0xff, 0xfe, 0xff);
}

T_TEST(write_containers)
{
    W_EQ("[]", 0x90);
    W_EQ("{}", 0x80);
    W_EQ("[1,\"a\",null,[true]]", 0x94, 0x01, 0xa1, 'a', 0xc0, 0x91, 0xc3);
    /* {"op":"message","seq":3,"to":{"contact":1},"g":[]} in map order */
    W_EQ("{\"op\":\"message\",\"seq\":3,\"to\":{\"contact\":1},\"g\":[]}",
         0x84, 0xa2, 'o', 'p', 0xa7, 'm', 'e', 's', 's', 'a', 'g', 'e',
         0xa3, 's', 'e', 'q', 0x03,
         0xa2, 't', 'o', 0x81, 0xa7, 'c', 'o', 'n', 't', 'a', 'c', 't', 0x01,
         0xa1, 'g', 0x90);
    W_EQ("{\"a\\u000ab\":1}", 0x81, 0xa3, 'a', '\n', 'b', 0x01);
    W_ERR(-IM_EINVAL, 0x81, 0x01, 0x02);                /* int key */
    W_ERR(-IM_EUTF8, 0x81, 0xa1, 0xff, 0x02);           /* key not UTF-8 */
    W_ERR(-IM_EINVAL, 0xd4, 0x01, 0x00);                /* ext */
    W_ERR(-IM_EINVAL, 0x92, 0x01, 0xd4, 0x01, 0x00);    /* ext inside */
    W_ERR(-IM_EUTF8, 0x92, 0x01, 0xa1, 0x80);           /* bad str inside */
}

/* ---- parser ------------------------------------------------------------- */

T_TEST(parse_scalars)
{
    P_EQ("null", 0xc0);
    P_EQ("true", 0xc3);
    P_EQ("false", 0xc2);
    P_EQ("0", 0x00);
    P_EQ("-0", 0x00);
    P_EQ("127", 0x7f);
    P_EQ("128", 0xcc, 0x80);
    P_EQ("65536", 0xce, 0x00, 0x01, 0x00, 0x00);
    P_EQ("18446744073709551615", 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    P_EQ("-1", 0xff);
    P_EQ("-32", 0xe0);
    P_EQ("-33", 0xd0, 0xdf);
    P_EQ("-9223372036854775808", 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0);
    P_EQ("1.5", 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0);
    P_EQ("1e2", 0xcb, 0x40, 0x59, 0, 0, 0, 0, 0, 0);
    P_EQ("1E+2", 0xcb, 0x40, 0x59, 0, 0, 0, 0, 0, 0);
    P_EQ("100e-2", 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0);
    P_EQ("-0.0", 0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0);
    P_EQ(" \t\r\n 7 \n", 0x07);

    P_ERR(-IM_EINVAL, "18446744073709551616");
    P_ERR(-IM_EINVAL, "99999999999999999999");
    P_ERR(-IM_EINVAL, "-9223372036854775809");
    P_ERR(-IM_EINVAL, "1e999");
    P_ERR(-IM_EINVAL, "-1e999");
}

T_TEST(parse_syntax_errors)
{
    static const char *const bad[] = {
        "", " ", "{", "}", "[", "]", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{,}", "[1,]", "[,1]",
        "[1 2]", "01", "-01", "1.", ".5", "+1", "-", "1e", "1e+", "0x10", "tru", "nul", "falsey",
        "True", "NaN", "Infinity", "-Infinity", "{a:1}", "'x'", "[1]x", "1 2", "// c\n1",
        "/* c */1", "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\u12g4\"", "\"\\", "[\"a\" : 1]",
        "{\"a\" 1}", "{1:2}", "\xef\xbb\xbf{}", "\v1", "\f1",
    };
    for (size_t i = 0; i < IM_ARRAY_SIZE(bad); i++)
        P_ERR(-IM_EINVAL, bad[i]);
    /* embedded NUL after a value */
    uint8_t *mp;
    size_t n;
    T_EQ_INT(json_to_mp("1\0", 2, &mp, &n), -IM_EINVAL);
}

T_TEST(parse_strings)
{
    P_EQ("\"\"", 0xa0);
    P_EQ("\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\"", 0xa9, 'a', '"', '\\', '/', '\b', '\f', '\n', '\r', '\t');
    P_EQ("\"\\u0000\"", 0xa1, 0x00);
    P_EQ("\"\\u00e9\\u00E9\"", 0xa4, 0xc3, 0xa9, 0xc3, 0xa9);
    P_EQ("\"\\u20ac\"", 0xa3, 0xe2, 0x82, 0xac);
    P_EQ("\"\\ud83d\\ude00\"", 0xa4, 0xf0, 0x9f, 0x98, 0x80);
    P_EQ("\"\\uDBFF\\uDFFF\"", 0xa4, 0xf4, 0x8f, 0xbf, 0xbf);
    P_EQ("\"h\xc3\xa9\xf0\x9f\x98\x80\"", 0xa7, 'h', 0xc3, 0xa9, 0xf0, 0x9f, 0x98, 0x80);
    P_EQ("\"\x7f\"", 0xa1, 0x7f);

    P_ERR(-IM_EINVAL, "\"\\ud83d\"");              /* lone high */
    P_ERR(-IM_EINVAL, "\"\\ude00\"");              /* lone low */
    P_ERR(-IM_EINVAL, "\"\\ud83d\\u0041\"");       /* high + not low */
    P_ERR(-IM_EINVAL, "\"\\ud83dx\"");
    P_ERR(-IM_EINVAL, "\"\\ud83d\\ud83d\"");
    P_ERR(-IM_EINVAL, "\"a\nb\"");                 /* raw control character */
    P_ERR(-IM_EINVAL, "\"a\tb\"");
    P_ERR(-IM_EINVAL, "\"\\U00e9\"");
    P_ERR(-IM_EUTF8, "\"\xff\"");
    P_ERR(-IM_EUTF8, "\"\xc3\"");
    P_ERR(-IM_EUTF8, "\"\xc0\x80\"");
    P_ERR(-IM_EUTF8, "\"\xed\xa0\x80\"");
    P_ERR(-IM_EUTF8, "\"\xc3\\u00e9\"");           /* raw lead byte, then an escape */

    /* str8 header from 32 bytes */
    char s[40];
    memset(s, 'x', sizeof(s));
    s[0] = '"';
    s[33] = '"';
    s[34] = '\0';
    uint8_t *mp;
    size_t n;
    T_EQ_INT(json_to_mp(s, strlen(s), &mp, &n), 0);
    T_EQ_UINT(n, 34);
    T_EQ_UINT(mp[0], 0xd9);
    T_EQ_UINT(mp[1], 32);
    free(mp);
}

T_TEST(parse_containers)
{
    P_EQ("[]", 0x90);
    P_EQ("{}", 0x80);
    P_EQ(" [ 1 , [ ] , { } ] ", 0x93, 0x01, 0x90, 0x80);
    P_EQ("{\"op\":\"ping\",\"id\":1}", 0x82, 0xa2, 'o', 'p', 0xa4, 'p', 'i', 'n', 'g', 0xa2, 'i', 'd', 0x01);
    P_EQ("{\"a\":{\"a\":1},\"b\":{\"a\":2}}",
         0x82, 0xa1, 'a', 0x81, 0xa1, 'a', 0x01, 0xa1, 'b', 0x81, 0xa1, 'a', 0x02);
    P_EQ("[[[[]]]]", 0x91, 0x91, 0x91, 0x90);
    P_EQ("{\"\":0}", 0x81, 0xa0, 0x00);
    /* a name with an escape is compared decoded */
    P_ERR(-IM_EINVAL, "{\"a\":1,\"\\u0061\":2}");
    P_ERR(-IM_EINVAL, "{\"a\":1,\"a\":2}");
    P_ERR(-IM_EINVAL, "{\"a\":{\"b\":1,\"b\":1}}");
    P_EQ("{\"a\":1,\"A\":2}", 0x82, 0xa1, 'a', 0x01, 0xa1, 'A', 0x02);
    P_EQ("{\"ab\":1,\"a\":2}", 0x82, 0xa2, 'a', 'b', 0x01, 0xa1, 'a', 0x02);
}

/* Header sizes of larger containers and duplicate detection over many names. */
T_TEST(parse_sizes)
{
    char *t = malloc(1 << 20);
    uint8_t *mp;
    size_t n, k;
    T_ASSERT(t);

    /* arrays of 15, 16, 65535, 65536 zeros */
    static const size_t counts[] = { 15, 16, 65535, 65536 };
    for (size_t c = 0; c < IM_ARRAY_SIZE(counts); c++) {
        k = 0;
        t[k++] = '[';
        for (size_t i = 0; i < counts[c]; i++) {
            if (i)
                t[k++] = ',';
            t[k++] = '0';
        }
        t[k++] = ']';
        T_EQ_INT(json_to_mp(t, k, &mp, &n), 0);
        size_t hl = counts[c] < 16 ? 1 : counts[c] < 65536 ? 3 : 5;
        T_EQ_UINT(n, hl + counts[c]);
        T_EQ_UINT(mp[0], hl == 1 ? 0x9f : hl == 3 ? 0xdc : 0xdd);
        T_EQ_UINT(mp[n - 1], 0);
        free(mp);
    }

    /* an object of 100 distinct names, then one with a duplicate at the end */
    for (int dup = 0; dup < 2; dup++) {
        k = 0;
        t[k++] = '{';
        for (int i = 0; i < 100; i++)
            k += (size_t)sprintf(t + k, "%s\"n%d\":%d", i ? "," : "", dup && i == 99 ? 42 : i, i);
        t[k++] = '}';
        int rc = json_to_mp(t, k, &mp, &n);
        T_EQ_INT(rc, dup ? -IM_EINVAL : 0);
        if (!rc) {
            T_EQ_UINT(mp[0], 0xde);
            T_EQ_UINT(mp[2], 100);
            free(mp);
        }
    }
    free(t);
}

T_TEST(parse_depth)
{
    char t[200];
    uint8_t *mp;
    size_t n;

    for (int d = CL_JSON_MAX_DEPTH; d <= CL_JSON_MAX_DEPTH + 1; d++) {
        size_t k = 0;
        for (int i = 0; i < d; i++)
            t[k++] = '[';
        for (int i = 0; i < d; i++)
            t[k++] = ']';
        int rc = json_to_mp(t, k, &mp, &n);
        T_EQ_INT(rc, d <= CL_JSON_MAX_DEPTH ? 0 : -IM_EINVAL);
        if (!rc)
            free(mp);
    }

    /* the deepest request the parser accepts is one the frame decoder takes */
    struct cl_enc e;
    struct cl_msg m;
    size_t k = 0, len;
    k += (size_t)sprintf(t, "{\"a\":");
    for (int i = 1; i < CL_JSON_MAX_DEPTH; i++)
        t[k++] = '[';
    for (int i = 1; i < CL_JSON_MAX_DEPTH; i++)
        t[k++] = ']';
    t[k++] = '}';
    cl_enc_init(&e);
    T_EQ_INT(cl_json_parse(t, k, &e), 0);
    const uint8_t *f = cl_enc_finish(&e, &len);
    T_ASSERT(f);
    int rc = cl_msg_decode(&m, f + 4, (uint32_t)(len - 4));
    cl_enc_free(&e);
    T_EQ_INT(rc, 0);
    cl_msg_free(&m);
}

T_TEST(parse_failure_restores_encoder)
{
    struct cl_enc e;
    size_t len;

    cl_enc_init(&e);
    msgpack_pack_array(&e.pk, 2);
    static const char broken[] = "{\"a\":[1,2,{\"b\":\"c\"}]";
    T_EQ_INT(cl_json_parse(broken, strlen(broken), &e), -IM_EINVAL);
    T_EQ_UINT(e.buf.size, 5);
    T_EQ_INT(cl_json_parse("1", 1, &e), 0);
    T_EQ_INT(cl_json_parse("\"x\"", 3, &e), 0);
    const uint8_t *f = cl_enc_finish(&e, &len);
    static const uint8_t want[] = { 0, 0, 0, 4, 0x92, 0x01, 0xa1, 'x' };
    T_EQ_UINT(len, sizeof(want));
    T_EQ_MEM(f, want, sizeof(want));
    cl_enc_free(&e);
}

/* JSON -> frame -> cl_msg -> JSON gives back the compact text. */
T_TEST(round_trip_request)
{
    static const char *const texts[] = {
        "{\"op\":\"send\",\"id\":12,\"to\":{\"account\":1,\"address\":\"bob@a.test\"},"
            "\"body\":\"hi \\\"there\\\"\\u000a\xf0\x9f\x98\x80\",\"cid\":\"c-1\"}",
        "{\"op\":\"set_unified\",\"id\":4,\"contacts\":[{\"name\":\"Bob\",\"members\":"
            "[{\"account\":1,\"address\":\"bob@a.test\"},{\"account\":2,\"address\":\"bob\"}],"
            "\"prefer\":1}]}",
        "{\"x\":[-1,0,18446744073709551615,-9223372036854775808,1.5,0.1,1e+300,-0.0,true,false,null]}",
    };
    for (size_t i = 0; i < IM_ARRAY_SIZE(texts); i++) {
        struct cl_enc e;
        struct cl_msg m;
        size_t len;
        char *out;

        cl_enc_init(&e);
        T_EQ_INT(cl_json_parse(texts[i], strlen(texts[i]), &e), 0);
        const uint8_t *f = cl_enc_finish(&e, &len);
        T_ASSERT(f);
        int rc = cl_msg_decode(&m, f + 4, (uint32_t)(len - 4));
        cl_enc_free(&e);
        T_EQ_INT(rc, 0);
        rc = cl_json_write(&m.root, &out, &len);
        cl_msg_free(&m);
        T_EQ_INT(rc, 0);
        T_EQ_UINT(len, strlen(texts[i]));
        int same = !strcmp(out, texts[i]);
        if (!same)
            fprintf(stderr, "    got  %s\n    want %s\n", out, texts[i]);
        free(out);
        T_ASSERT(same);
    }
}

/*
 * Every worked example of docs/CLIENT-PROTOCOL.md: a line "→ {json}" or
 * "← {json}" followed by lines of hex bytes ("  00 00 00 0d 82 ...").  The
 * hex must be one valid frame whose payload is byte for byte what the JSON
 * packs to.  Run from the top of the tree (tests/run does).
 */
T_TEST(doc_examples)
{
    FILE *f = fopen("docs/CLIENT-PROTOCOL.md", "r");
    T_ASSERT(f);
    static char line[4096], json[4096];
    static uint8_t hex[8192];
    size_t nhex = 0;
    int have = 0, checked = 0, bad = 0;

    for (;;) {
        char *l = fgets(line, sizeof(line), f);
        bool is_hex = have && l && l[0] == ' ' && l[1] == ' ' && l[2] && strchr("0123456789abcdef", l[2]);
        if (is_hex) {
            for (char *p = l; *p && nhex < sizeof(hex); ) {
                unsigned v;
                int used;
                if (sscanf(p, " %2x%n", &v, &used) != 1)
                    break;
                hex[nhex++] = (uint8_t)v;
                p += used;
            }
            continue;
        }
        if (have) {                     /* an example ends: check it */
            const uint8_t *body;
            uint32_t blen;
            struct cl_msg m;
            uint8_t *mp;
            size_t n;
            int ok = cl_frame_split(hex, nhex, &body, &blen) == (long)nhex &&
                     cl_msg_decode(&m, body, blen) == 0;
            if (ok)
                cl_msg_free(&m);
            ok = ok && json_to_mp(json, strlen(json), &mp, &n) == 0;
            if (ok) {
                ok = n == blen && !memcmp(mp, body, n);
                free(mp);
            }
            if (!ok) {
                fprintf(stderr, "    example does not match its bytes: %s\n", json);
                bad++;
            }
            checked++;
            have = 0;
        }
        if (!l)
            break;
        if ((!strncmp(l, "\xe2\x86\x92 ", 4) || !strncmp(l, "\xe2\x86\x90 ", 4)) && l[4] == '{') {
            snprintf(json, sizeof(json), "%s", l + 4);
            have = 1;
            nhex = 0;
        }
    }
    fclose(f);
    T_EQ_INT(bad, 0);
    T_ASSERT(checked >= 35);            /* every op and event has one */
}

T_MAIN(T_RUN(write_scalars), T_RUN(write_floats), T_RUN(write_strings), T_RUN(write_bin_base64),
       T_RUN(write_containers), T_RUN(parse_scalars), T_RUN(parse_syntax_errors),
       T_RUN(parse_strings), T_RUN(parse_containers), T_RUN(parse_sizes), T_RUN(parse_depth),
       T_RUN(parse_failure_restores_encoder), T_RUN(round_trip_request), T_RUN(doc_examples))
