/*
 * im_common.h - return codes, logging and small helpers shared by every layer
 * (both planes, the adapters, the codec and the tools).  The rest of the kit
 * is beside it in common/: im_buf.h (one growable buffer), im_rng.h (random
 * sources), im_clock.h (clocks), im_kdf.h (key derivation).
 *
 * Return convention (STYLE 6): 0 is success, negative is -errno or one of the
 * IM_E* codes below, -EAGAIN means "need more input".  im_strerror() names
 * both kinds.
 */
#ifndef IM_COMMON_H
#define IM_COMMON_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* Project error codes live above the errno range. */
#define IM_EBASE        10000
#define IM_EINVAL       (IM_EBASE + 1)  /* malformed input */
#define IM_EPROTO       (IM_EBASE + 2)  /* peer broke its protocol */
#define IM_EAUTH        (IM_EBASE + 3)  /* authentication failed */
#define IM_ETLS         (IM_EBASE + 4)  /* TLS handshake or certificate failure */
#define IM_ETOOBIG      (IM_EBASE + 5)  /* over a size limit */
#define IM_EEXIST       (IM_EBASE + 6)
#define IM_ENOTFOUND    (IM_EBASE + 7)
#define IM_EUTF8        (IM_EBASE + 8)  /* invalid UTF-8 */
#define IM_ELIMIT       (IM_EBASE + 9)  /* rate limit / lockout */
#define IM_ECORRUPT     (IM_EBASE + 10) /* stored data does not decode */

/* Name of a return code (positive or negative errno, or IM_E*). */
const char *im_strerror(int rc);

/* true when [p, p+n) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool im_utf8_valid(const void *p, size_t n);

/* Largest prefix length <= n of valid UTF-8 p that ends on a character boundary. */
size_t im_utf8_trim(const void *p, size_t n);

/* Constant-time compare of two equal-length buffers: 0 when equal. */
int im_ct_memcmp(const void *a, const void *b, size_t n);

/* Wipe memory the compiler may not elide. */
void im_wipe(void *p, size_t n);

/* Longest host im_parse_hostport() accepts, in bytes. */
#define IM_HOST_MAX 255

/*
 * The one host:port parser.  Parse "host:port" or "[v6]:port" (host 1 to
 * IM_HOST_MAX bytes, without the brackets; port 1-65535 in decimal digits
 * only; a bare IPv6 address without brackets is refused) into host (hostsz
 * bytes, NUL-terminated: IM_HOST_MAX + 1 always suffices) and *port.
 * Returns 0, or -IM_EINVAL (malformed, or the host does not fit hostsz);
 * host and *port are untouched on failure.
 */
int im_parse_hostport(const char *s, char *host, size_t hostsz, unsigned *port);

/* The same, with the host malloc'd: on success *host belongs to the caller.
 * 0, -IM_EINVAL or -ENOMEM. */
int im_split_hostport(const char *s, char **host, unsigned *port);

/* Copy at most dstsz-1 bytes and NUL-terminate; returns strlen(src). */
size_t im_strlcpy(char *dst, const char *src, size_t dstsz);

/* ---- logging --------------------------------------------------------- */

enum im_log_level {
    IM_LOG_ERROR = 0,
    IM_LOG_WARN,
    IM_LOG_INFO,
    IM_LOG_DEBUG,
};

extern int im_log_level;

/* Parse "error|warn|info|debug"; -IM_EINVAL when unknown. */
int im_log_parse_level(const char *s);

void im_log_write(int level, const char *layer, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Arguments are not evaluated when the level is off (STYLE 12). */
#define IM_LOG(level, layer, ...) \
    do { if ((level) <= im_log_level) im_log_write((level), (layer), __VA_ARGS__); } while (0)

#define BUG_ON(cond) \
    do { if (__builtin_expect(!!(cond), 0)) im_bug(__FILE__, __LINE__, #cond); } while (0)
void im_bug(const char *file, int line, const char *what) __attribute__((noreturn));

#define IM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
