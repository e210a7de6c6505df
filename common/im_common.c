/*
 * im_common.c - return codes, UTF-8, the log sink and the host:port parser.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "im_common.h"

int im_log_level = IM_LOG_INFO;

const char *
im_strerror(int rc)
{
    if (rc < 0)
        rc = -rc;
    switch (rc) {
    case 0:             return "success";
    case IM_EINVAL:     return "malformed input";
    case IM_EPROTO:     return "protocol violation by the peer";
    case IM_EAUTH:      return "authentication failed";
    case IM_ETLS:       return "TLS failure";
    case IM_ETOOBIG:    return "over a size limit";
    case IM_EEXIST:     return "already exists";
    case IM_ENOTFOUND:  return "not found";
    case IM_EUTF8:      return "invalid UTF-8";
    case IM_ELIMIT:     return "rate limited";
    case IM_ECORRUPT:   return "stored data is corrupt";
    default:
        return rc < IM_EBASE ? strerror(rc) : "unknown error";
    }
}

bool
im_utf8_valid(const void *buf, size_t n)
{
    if (n == 0)
        return true;            /* buf may be NULL */
    const uint8_t *p = buf, *end = p + n;

    while (p < end) {
        uint8_t c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            len = 2; cp = c & 0x1f; min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3; cp = c & 0x0f; min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4; cp = c & 0x07; min = 0x10000;
        } else {
            return false;
        }
        if ((size_t)(end - p) < len)
            return false;
        for (size_t i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += len;
    }
    return true;
}

size_t
im_utf8_trim(const void *buf, size_t n)
{
    const uint8_t *p = buf;
    size_t i = n;

    /* Step back over at most 3 continuation bytes to the lead byte. */
    while (i > 0 && n - i < 4 && (p[i - 1] & 0xc0) == 0x80)
        i--;
    if (i == 0)
        return 0;
    uint8_t c = p[i - 1];
    size_t need = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : 4;
    return (n - (i - 1) >= need) ? n : i - 1;
}

int
im_ct_memcmp(const void *a, const void *b, size_t n)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    return d != 0;
}

void
im_wipe(void *p, size_t n)
{
    volatile uint8_t *v = p;
    while (n--)
        *v++ = 0;
}

size_t
im_strlcpy(char *dst, const char *src, size_t dstsz)
{
    size_t len = strlen(src);
    if (dstsz) {
        size_t n = len < dstsz - 1 ? len : dstsz - 1;
        memcpy(dst, src, n);
        dst[n] = '\0';
    }
    return len;
}

int
im_log_parse_level(const char *s)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    for (size_t i = 0; i < IM_ARRAY_SIZE(names); i++)
        if (!strcmp(s, names[i]))
            return (int)i;
    return -IM_EINVAL;
}

void
im_log_write(int level, const char *layer, const char *fmt, ...)
{
    static const char *const tag[] = { "ERROR", "WARN", "INFO", "DEBUG" };
    char line[1024];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, tag[level & 3], layer);
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* One write per line so lines of concurrent threads do not interleave. */
    size_t len = strnlen(line, sizeof(line) - 2);
    line[len++] = '\n';
    fwrite(line, 1, len, stderr);
}

void
im_bug(const char *file, int line, const char *what)
{
    fprintf(stderr, "BUG at %s:%d: %s\n", file, line, what);
    abort();
}

int
im_parse_hostport(const char *s, char *host, size_t hostsz, unsigned *port)
{
    const char *h = s, *colon;
    size_t hl;

    if (!s)
        return -IM_EINVAL;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -IM_EINVAL;
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return -IM_EINVAL;      /* bare IPv6 needs brackets */
        hl = (size_t)(colon - s);
    }
    unsigned long p = 0;
    const char *d = colon + 1;
    for (; *d >= '0' && *d <= '9' && p <= 65535; d++)
        p = p * 10 + (unsigned long)(*d - '0');
    if (hl == 0 || hl > IM_HOST_MAX || hl >= hostsz || d == colon + 1 || *d || p == 0 || p > 65535)
        return -IM_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (unsigned)p;
    return 0;
}

int
im_split_hostport(const char *s, char **host, unsigned *port)
{
    char h[IM_HOST_MAX + 1];
    int rc = im_parse_hostport(s, h, sizeof(h), port);

    if (rc)
        return rc;
    if (!(*host = strdup(h)))
        return -ENOMEM;
    return 0;
}
