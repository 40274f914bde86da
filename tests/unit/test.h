/*
 * test.h — the unit-test harness: CHECK* macros that report file:line and keep going, and a
 * main() that runs every TEST() and prints "N passed, N failed".
 *
 *   TEST(parses_durations) { CHECK_EQ_INT(parse("10s"), 10000); }
 *   TEST_MAIN()
 */
#ifndef WALGATE_TEST_H
#define WALGATE_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*test_fn)(void);
struct test_case {
    const char *name;
    test_fn fn;
};

static struct test_case g_tests[256];
static int g_ntests;
static int g_failures; /* failed checks in the current test */

#define TEST(tname)                                                                                \
    static void test_##tname(void);                                                                \
    __attribute__((constructor)) static void register_##tname(void)                                \
    {                                                                                              \
        g_tests[g_ntests].name = #tname;                                                           \
        g_tests[g_ntests++].fn = test_##tname;                                                     \
    }                                                                                              \
    static void test_##tname(void)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);               \
            g_failures++;                                                                          \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ != vb_) {                                                                          \
            fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, va_,     \
                    vb_);                                                                          \
            g_failures++;                                                                          \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *sa_ = (a), *sb_ = (b);                                                         \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0) {                                               \
            fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a,      \
                    sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                                   \
            g_failures++;                                                                          \
        }                                                                                          \
    } while (0)

/* The string `hay` contains `needle`. */
#define CHECK_CONTAINS(hay, needle)                                                                \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_)) {                                                              \
            fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__,         \
                    h_ ? h_ : "(null)", n_);                                                       \
            g_failures++;                                                                          \
        }                                                                                          \
    } while (0)

/* Two texts have the same lines; the first difference is reported with its line and column. */
#define CHECK_SAME_LINES(got, want) check_same_lines_at(__FILE__, __LINE__, (got), (want))

static inline void check_same_lines_at(const char *file, int at, const char *got, const char *want)
{
    int line = 1;
    got = got ? got : "";
    want = want ? want : "";
    while (*got || *want) {
        const char *ge = strchr(got, '\n'), *we = strchr(want, '\n');
        size_t gl = ge ? (size_t)(ge - got) : strlen(got),
               wl = we ? (size_t)(we - want) : strlen(want);
        if (gl != wl || memcmp(got, want, gl) != 0) {
            size_t k = 0;
            while (k < gl && k < wl && got[k] == want[k])
                k++;
            fprintf(stderr, "%s:%d: line %d differs at column %zu:\n  got:  %.*s\n  want: %.*s\n",
                    file, at, line, k, (int)(gl - k < 200 ? gl - k : 200), got + k,
                    (int)(wl - k < 200 ? wl - k : 200), want + k);
            g_failures++;
            return;
        }
        got += gl + (ge ? 1 : 0);
        want += wl + (we ? 1 : 0);
        line++;
    }
}

#define TEST_MAIN()                                                                                \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        int passed = 0, failed = 0;                                                                \
        for (int i = 0; i < g_ntests; i++) {                                                       \
            if (argc > 1 && strcmp(argv[1], g_tests[i].name) != 0)                                 \
                continue;                                                                          \
            g_failures = 0;                                                                        \
            g_tests[i].fn();                                                                       \
            printf("%s %s\n", g_failures ? "FAIL" : "ok  ", g_tests[i].name);                      \
            if (g_failures)                                                                        \
                failed++;                                                                          \
            else                                                                                   \
                passed++;                                                                          \
        }                                                                                          \
        printf("%d passed, %d failed\n", passed, failed);                                          \
        return failed ? 1 : 0;                                                                     \
    }

#endif /* WALGATE_TEST_H */
