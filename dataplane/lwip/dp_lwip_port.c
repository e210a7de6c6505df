/*
 * dp_lwip_port.c - what lwIP asks of its platform (NO_SYS=1): the clock
 * (sys_now), randomness (LWIP_RAND), RFC 6528 initial sequence numbers
 * (LWIP_HOOK_TCP_ISN) and the assertion handler.  lwIP translation unit.
 *
 * Threading: lwIP runs on one dataplane thread; the ISN key and the random
 * buffer are that thread's (the key is drawn once per process, under a
 * pthread_once, so tests may drive lwIP from any single thread).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <mbedtls/sha256.h>

#include "lwip/opt.h"
#include "lwip/ip4_addr.h"
#include "lwip/sys.h"
#include "dp_lwip_hooks.h"

unsigned long dp_lwip_rto_events;

static uint8_t isn_key[32];
static pthread_once_t isn_once = PTHREAD_ONCE_INIT;

static void fill_random(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* No randomness means predictable sequence numbers: refuse to run. */
            dp_lwip_assert("getrandom failed", __FILE__, __LINE__);
        }
        p += r;
        n -= (size_t)r;
    }
}

static void isn_key_init(void)
{
    fill_random(isn_key, sizeof(isn_key));
}

u32_t sys_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (u32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

uint32_t dp_lwip_rand(void)
{
    static __thread uint32_t buf[64];
    static __thread unsigned left;
    if (!left) {
        fill_random(buf, sizeof(buf));
        left = 64;
    }
    return buf[--left];
}

/*
 * ISN = M + F(localip, localport, remoteip, remoteport, secretkey)
 * (RFC 6528 section 3): M a clock ticking every 4 microseconds, F the first
 * 32 bits of SHA-256(key | addresses | ports).  The same connection tuple
 * gets increasing ISNs over time (old duplicates stay out of the window);
 * another tuple's ISN cannot be guessed from one observed.
 */
uint32_t dp_lwip_isn(const struct ip4_addr *local_ip, uint16_t local_port,
                     const struct ip4_addr *remote_ip, uint16_t remote_port)
{
    pthread_once(&isn_once, isn_key_init);
    uint8_t in[sizeof(isn_key) + 12], out[32];
    memcpy(in, isn_key, sizeof(isn_key));
    uint32_t la = local_ip ? ip4_addr_get_u32(local_ip) : 0;
    uint32_t ra = remote_ip ? ip4_addr_get_u32(remote_ip) : 0;
    memcpy(in + 32, &la, 4);
    memcpy(in + 36, &ra, 4);
    memcpy(in + 40, &local_port, 2);
    memcpy(in + 42, &remote_port, 2);
    mbedtls_sha256_ret(in, sizeof(in), out, 0);
    uint32_t f;
    memcpy(&f, out, 4);
    memset(in, 0, sizeof(in));
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    return (uint32_t)(us / 4) + f;
}

void dp_lwip_assert(const char *msg, const char *file, int line)
{
    fprintf(stderr, "imfused: lwIP assertion failed: %s (%s:%d)\n", msg, file, line);
    abort();
}
