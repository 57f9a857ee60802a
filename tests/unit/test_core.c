/* test_core.c — the ledger (budget, per-tag counts, peak, injected failure),
 * the thread pool (every index runs exactly once, for many sizes), size
 * parsing, and atomic file output. */
#include "core/core.h"
#include "core/dtype.h"
#include "test.h"

static void test_ledger(void) {
    mf_ledger l;
    mf_ledger_init(&l, 1000);
    void *a = mf_alloc(&l, 600, MF_TAG_KV);
    CHECK(a && ((uintptr_t)a % 64) == 0, "aligned allocation");
    CHECK(l.used[MF_TAG_KV] == 600 && l.total == 600, "counted per tag");
    void *b = mf_alloc(&l, 500, MF_TAG_ACT);
    CHECK(!b, "over budget refused");
    CHECK(strstr(mf_last_error(), "budget") != NULL, "budget message: %s", mf_last_error());
    void *p = NULL;
    CHECK(mf_alloc_p(&l, 500, MF_TAG_ACT, &p) == MF_E_BUDGET && !p, "status MF_E_BUDGET");
    b = mf_alloc(&l, 400, MF_TAG_ACT);
    CHECK(b && l.total == 1000 && l.peak == 1000, "exactly at budget is allowed");
    mf_free(&l, a);
    CHECK(l.total == 400 && l.used[MF_TAG_KV] == 0 && l.peak == 1000, "free uncharges, peak kept");
    mf_free(&l, b);
    mf_free(&l, NULL);
    CHECK(l.total == 0, "all freed");
    mf_ledger_init(&l, 0);
    l.fail_at = 3;
    void *x[4];
    for (int i = 0; i < 4; i++) x[i] = mf_alloc(&l, 10, MF_TAG_MISC);
    CHECK(x[0] && x[1] && !x[2] && x[3], "injected failure hits the 3rd allocation only");
    for (int i = 0; i < 4; i++) mf_free(&l, x[i]);
    CHECK(mf_alloc(&l, UINT64_MAX - 8, MF_TAG_MISC) == NULL, "absurd size refused");
}

typedef struct { int counts[64]; int n; } pool_ctx;

static void mark(void *ctx, int ith, int nth) {
    pool_ctx *c = ctx;
    int64_t lo, hi;
    mf_split(c->n, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) __atomic_fetch_add(&c->counts[i], 1, __ATOMIC_RELAXED);
}

static void test_pool(void) {
    int sizes[] = {1, 2, 3, 4, 7};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        mf_pool *p;
        CHECK(mf_pool_create(sizes[s], &p) == MF_OK, "pool %d", sizes[s]);
        CHECK(mf_pool_size(p) == sizes[s], "pool size");
        for (int n = 0; n <= 64; n += 7) {
            for (int rep = 0; rep < 50; rep++) {
                pool_ctx c = {{0}, n};
                mf_pool_run(p, mark, &c);
                int bad = 0;
                for (int i = 0; i < n; i++) bad += c.counts[i] != 1;
                if (bad) CHECK(0, "pool %d: n=%d: %d indices not run exactly once", sizes[s], n, bad);
            }
        }
        mf_pool_free(p);
    }
    mf_pool *p;
    CHECK(mf_pool_create(100000, &p) == MF_E_INVALID, "absurd thread count refused");
}

static void test_sizes(void) {
    struct { const char *s; uint64_t v; } ok[] = {
        {"512", 512}, {"2K", 2048}, {"512M", 512ull << 20}, {"2G", 2ull << 30},
        {"1.5G", 3ull << 29}, {"2GiB", 2ull << 30}, {"3gb", 3ull << 30}, {"1T", 1ull << 40}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 0;
        CHECK(mf_parse_size(ok[i].s, &v) == MF_OK && v == ok[i].v, "size '%s' -> %llu", ok[i].s,
              (unsigned long long)v);
    }
    const char *bad[] = {"", "G", "-1G", "12X", "1e400", "nan", "2 G x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v;
        CHECK(mf_parse_size(bad[i], &v) == MF_E_INVALID, "size '%s' rejected", bad[i]);
    }
}

static void test_outfile(void) {
    char dir[] = "/tmp/mf_core_XXXXXX", path[256], tmp[300];
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/out.bin", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(mf_write_file(path, "hello", 5) == MF_OK, "write");
    size_t n;
    unsigned char *b = test_read_file(path, &n);
    CHECK(b && n == 5 && !memcmp(b, "hello", 5), "content");
    free(b);
    CHECK(access(tmp, F_OK) != 0, "no tmp left");
    mf_outfile f;
    CHECK(mf_outfile_open(&f, path) == MF_OK, "open");
    mf_outfile_write(&f, "partial", 7);
    mf_outfile_abort(&f);
    b = test_read_file(path, &n);
    CHECK(b && n == 5, "abort leaves the old file intact");
    free(b);
    CHECK(access(tmp, F_OK) != 0, "abort removes tmp");
    snprintf(tmp, sizeof tmp, "%s/missing/x.bin", dir);
    CHECK(mf_write_file(tmp, "x", 1) == MF_E_IO, "unwritable path is an I/O error");
    CHECK(mf_same_file(path, path) && !mf_same_file(path, dir), "same file");
    remove(path);
    rmdir(dir);
}

static void test_dtype(void) {
    uint64_t b;
    CHECK(mf_type_row_bytes(MF_TYPE_Q8_0, 64, &b) && b == 68, "q8_0 row bytes");
    CHECK(!mf_type_row_bytes(MF_TYPE_Q8_0, 33, &b), "q8_0 needs whole blocks");
    CHECK(mf_type_row_bytes(MF_TYPE_Q4_K, 512, &b) && b == 288, "q4_K row bytes");
    CHECK(!mf_type_layout_of(4) && !mf_type_layout_of(99) && !mf_type_layout_of(-1), "unknown ids");
    CHECK(mf_type_from_name("Q8_0") == MF_TYPE_Q8_0 && mf_type_from_name("nope") == -1, "names");
    CHECK(!mf_type_row_bytes(MF_TYPE_F32, UINT64_MAX / 2, &b), "overflow detected");
}

int main(void) {
    test_ledger();
    test_pool();
    test_sizes();
    test_outfile();
    test_dtype();
    return test_report("core");
}
