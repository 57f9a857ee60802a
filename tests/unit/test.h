/* test.h — the few macros every unit test uses.
 *
 * CHECK counts a check and prints the failing expression with file and line;
 * test_main's caller ends with test_report(), which prints the program's
 * "RESULT passed failed" line that tests/run.sh adds up, and returns the exit
 * code (non-zero if anything failed). SKIP_IF_NO_SHARED lets a test run on a
 * user's machine without ../shared. */
#ifndef MF_TEST_H
#define MF_TEST_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int test_passed, test_failed;

/* xorshift64 with the top bits kept: the random bytes of the kernel tests
 * (each file keeps its own state and seed, so its sequence is fixed). */
static inline uint32_t test_xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 16);
}

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) {                                                        \
            test_passed++;                                                 \
        } else {                                                           \
            test_failed++;                                                 \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
        }                                                                  \
    } while (0)

static inline int test_report(const char *name) {
    printf("RESULT %d %d %s\n", test_passed, test_failed, name);
    return test_failed ? 1 : 0;
}

/* Directory of the shared fixtures; tests skip (and say so) if it is absent. */
static inline const char *test_shared(void) {
    const char *d = getenv("MF_SHARED");
    if (!d) d = "../shared";
    return access(d, R_OK) == 0 ? d : NULL;
}

static inline char *test_path(char *buf, size_t n, const char *rel) {
    snprintf(buf, n, "%s/%s", test_shared() ? test_shared() : "../shared", rel);
    return buf;
}

/* Read a whole file; returns NULL if it cannot. */
static inline unsigned char *test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

#endif
