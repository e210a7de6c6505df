/*
 * arch/cc.h - lwIP's compiler and platform glue for imfuse (Linux, gcc or
 * clang, glibc).
 */
#ifndef IMFUSE_LWIP_ARCH_CC_H
#define IMFUSE_LWIP_ARCH_CC_H

#include <endian.h>
#include <stdint.h>

#define BYTE_ORDER __BYTE_ORDER

/* A broken lwIP invariant is a bug: say where, and stop (BUG_ON). */
void dp_lwip_assert(const char *msg, const char *file, int line) __attribute__((noreturn));
#define LWIP_PLATFORM_ASSERT(x)     dp_lwip_assert((x), __FILE__, __LINE__)
/* Libraries stay silent: lwIP's debug output is compiled out. */
#define LWIP_PLATFORM_DIAG(x)       do { } while (0)

#define LWIP_NO_UNISTD_H            0
#define LWIP_TIMEVAL_PRIVATE        0

#endif
