/*
 * t.h - the in-house unit test harness.
 *
 *   T_TEST(name) { T_ASSERT(x == 1); T_EQ_INT(a, b); T_EQ_STR(s, "x"); }
 *   T_MAIN(T_RUN(name), T_RUN(other))
 *
 * A test binary prints one line per test case and exits non-zero if any
 * assertion failed.  Assertions abort the current test case only.
 */
#ifndef T_H
#define T_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <inttypes.h>

static jmp_buf t_jmp;
static const char *t_current;
static void (*t_fn)(void);

#define T_TEST(name) static void t_case_##name(void)

#define T_FAIL(...) do { \
    fprintf(stderr, "  %s:%d: %s: ", __FILE__, __LINE__, t_current); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); \
    longjmp(t_jmp, 1); } while (0)

#define T_ASSERT(c) do { if (!(c)) T_FAIL("assertion failed: %s", #c); } while (0)
#define T_EQ_INT(a, b) do { long long t_a_ = (long long)(a), t_b_ = (long long)(b); \
    if (t_a_ != t_b_) T_FAIL("%s == %lld, expected %s == %lld", #a, t_a_, #b, t_b_); } while (0)
#define T_EQ_UINT(a, b) do { unsigned long long t_a_ = (a), t_b_ = (b); \
    if (t_a_ != t_b_) T_FAIL("%s == %llu, expected %llu", #a, t_a_, t_b_); } while (0)
#define T_EQ_STR(a, b) do { const char *t_a_ = (a), *t_b_ = (b); \
    if (!t_a_ || !t_b_ || strcmp(t_a_, t_b_)) T_FAIL("%s == \"%s\", expected \"%s\"", #a, \
        t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)"); } while (0)
#define T_EQ_MEM(a, b, n) do { if (memcmp((a), (b), (n))) T_FAIL("%s differs from %s", #a, #b); } while (0)

struct t_case { const char *name; void (*fn)(void); };
#define T_RUN(name) { #name, t_case_##name }

/* Runs t_fn; returns 1 if an assertion jumped out of it, else 0.  setjmp()
 * lives here, apart from main(), and this function has no local variables,
 * so longjmp() has nothing to clobber (no -Wclobbered, nothing to mark
 * volatile in the tests).  noinline keeps it apart. */
__attribute__((noinline, unused)) static int t_call(void)
{
    if (setjmp(t_jmp))
        return 1;
    t_fn();
    return 0;
}

#define T_MAIN(...) \
int main(int argc, char **argv) { \
    static const struct t_case cases[] = { __VA_ARGS__ }; \
    int failed = 0, passed = 0; \
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) { \
        if (argc > 1 && strcmp(argv[1], cases[i].name)) continue; \
        t_current = cases[i].name; \
        t_fn = cases[i].fn; \
        if (t_call()) { failed++; printf("  FAIL %s\n", cases[i].name); } \
        else { passed++; printf("  ok   %s\n", cases[i].name); } \
    } \
    printf("%d cases passed, %d failed\n", passed, failed); \
    return failed ? 1 : 0; \
}

#endif
