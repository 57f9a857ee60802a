/* core.h — what every other module may use from src/core.
 *
 * Errors (mf_errorf sets the thread's message and returns the status),
 * overflow-checked size arithmetic, the budget ledger (mf_alloc/mf_free count
 * bytes per tag against a hard limit and keep the peak), the thread pool
 * (work split by index, deterministic), logging, and small process helpers. */
#ifndef MF_CORE_H
#define MF_CORE_H

#include "memfit.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors ---------------------------------------------------------------- */

/* Record a formatted message for mf_last_error() and return st. */
mf_status mf_errorf(mf_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mf_clear_error(void);

/* Return from the current function if expr fails (the only control-flow macro). */
#define TRY(expr)                              \
    do {                                       \
        mf_status try_st_ = (expr);            \
        if (try_st_ != MF_OK) return try_st_;  \
    } while (0)

/* ---- checked arithmetic ------------------------------------------------------ */

static inline bool mf_mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool mf_add_ok(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* ---- logging ------------------------------------------------------------------ */

void mf_log(mf_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the ledger ------------------------------------------------------------------ */

typedef enum mf_tag {
    MF_TAG_WEIGHTS, MF_TAG_STREAM, MF_TAG_KV, MF_TAG_ACT, MF_TAG_SCRATCH,
    MF_TAG_LOGITS, MF_TAG_VOCAB, MF_TAG_MISC, MF_TAG_COUNT
} mf_tag;

typedef struct mf_ledger {
    uint64_t budget;               /* hard limit in bytes; 0 = unlimited */
    uint64_t used[MF_TAG_COUNT];
    uint64_t total, peak;
    long fail_at;                  /* tests: fail the Nth allocation (1-based); 0 = never */
    long n_allocs;
} mf_ledger;

const char *mf_tag_name(mf_tag t);
void mf_ledger_init(mf_ledger *l, uint64_t budget);
/* 64-byte aligned, zero-filled. ledger may be NULL (counted nowhere). Returns
 * NULL with the error set (MF_E_BUDGET or MF_E_NOMEM). */
void *mf_alloc(mf_ledger *l, uint64_t bytes, mf_tag tag);
/* The same, returning the status (MF_E_BUDGET / MF_E_NOMEM) and *out. */
mf_status mf_alloc_p(mf_ledger *l, uint64_t bytes, mf_tag tag, void **out);
void mf_free(mf_ledger *l, void *p);
/* Charge (or, with a negative amount, uncharge) bytes that are not
 * allocated here, e.g. resident pages of a mapped file. */
mf_status mf_ledger_charge(mf_ledger *l, int64_t bytes, mf_tag tag);

/* ---- thread pool ------------------------------------------------------------------ */

typedef struct mf_pool mf_pool;
/* fn is called once for every ith in [0, nth); nth = the pool's thread count. */
typedef void (*mf_task_fn)(void *ctx, int ith, int nth);

mf_status mf_pool_create(int n_threads, mf_pool **out);
void mf_pool_free(mf_pool *p);
int mf_pool_size(const mf_pool *p);
/* Run fn on every thread (the caller is thread 0) and wait for all. */
void mf_pool_run(mf_pool *p, mf_task_fn fn, void *ctx);
int mf_n_cores(void);

/* Split [0, n) into nth near-equal ranges; range ith is [*lo, *hi). */
static inline void mf_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t per = n / nth, rem = n % nth;
    *lo = ith * per + (ith < rem ? ith : rem);
    *hi = *lo + per + (ith < rem ? 1 : 0);
}

/* ---- time, files -------------------------------------------------------------------- */

double mf_time_s(void);                 /* monotonic seconds */
/* Read n bytes (n a multiple of 32, p 8-byte aligned) with plain loads and
 * no arithmetic worth the name; returns their 64-bit word sum so the reads
 * cannot be optimized away. Memory read bandwidth measurements use it. */
uint64_t mf_read_sum(const void *p, uint64_t n);
uint64_t mf_current_rss(void);          /* VmRSS of this process in bytes, 0 if unknown */
/* Atomic writes: open path.tmp, write, then mf_file_commit fsyncs and renames. */
typedef struct mf_outfile {
    void *fp;                           /* FILE* */
    char *path, *tmp;
    bool failed;
} mf_outfile;
mf_status mf_outfile_open(mf_outfile *f, const char *path);
mf_status mf_outfile_write(mf_outfile *f, const void *data, size_t n);
mf_status mf_outfile_commit(mf_outfile *f);   /* fsync + rename; on failure removes tmp */
void mf_outfile_abort(mf_outfile *f);         /* remove tmp; safe after commit */
/* Read len bytes at off; stops early only at end of file (*got < len).
 * MF_E_IO with the offset in the message on a read error. */
mf_status mf_pread_full(int fd, void *dst, uint64_t len, uint64_t off, uint64_t *got);
/* True when a and b name the same existing file (never overwrite an input). */
bool mf_same_file(const char *a, const char *b);

#endif
