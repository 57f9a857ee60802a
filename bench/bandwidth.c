/* bandwidth.c — how close decoding matmuls come to the machine's read bandwidth.
 *
 * Measures (1) the read bandwidth of this machine: a 1 GiB buffer summed with
 * AVX2 loads by 1 and 2 threads, best of several runs; (2) mf_matmul with one
 * token (decoding) on a 2048-in x 5632-out matrix of f32, f16, bf16, q8_0 and
 * the k-quants q4_K, q5_K, q6_K, the 32-blocks q4_0, q4_1, q5_0, q5_1, iq4_nl,
 * with 1 and 2 threads: "cold" cycles through copies of the matrix totalling
 * more than the last-level cache, so the weights stream from DRAM as they do
 * in a real model, "hot" repeats one matrix (it may sit in L3); (3) the same
 * matmul on a 64-token prompt, in GFLOP/s. Prints a markdown table and writes
 * it to bench/results/bandwidth.md. Numbers are reported, never asserted.
 *
 * Build: gcc -std=c11 -O2 -mavx2 -D_GNU_SOURCE -Iinclude -Isrc bench/bandwidth.c \
 *            build/libmemfit.a -lpcre2-8 -lm -lpthread */
#include "core/core.h"
#include "tensor/tensor.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BUF_BYTES (1ull << 30)
#define COLD_BYTES (384ull << 20) /* well past a 32 MiB L3 */
#define N_IN 2048
#define N_OUT 5632
#define PROMPT 64
#define REPS 10

/* ---- read bandwidth ---- */

typedef struct { const uint8_t *p; size_t n; float sum; } read_arg;

static void *read_part(void *v) {
    read_arg *a = v;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 128 <= a->n; i += 128) {
        s0 = _mm256_add_ps(s0, _mm256_load_ps((const float *)(a->p + i)));
        s1 = _mm256_add_ps(s1, _mm256_load_ps((const float *)(a->p + i + 32)));
        s2 = _mm256_add_ps(s2, _mm256_load_ps((const float *)(a->p + i + 64)));
        s3 = _mm256_add_ps(s3, _mm256_load_ps((const float *)(a->p + i + 96)));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    a->sum = t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
    return NULL;
}

static double read_gbs(const uint8_t *buf, int nth) {
    double best = 0;
    for (int rep = 0; rep < REPS; rep++) {
        pthread_t th[2];
        read_arg a[2];
        double t0 = mf_time_s();
        for (int i = 0; i < nth; i++) {
            a[i] = (read_arg){buf + (BUF_BYTES / nth) * i, BUF_BYTES / nth, 0};
            pthread_create(&th[i], NULL, read_part, &a[i]);
        }
        for (int i = 0; i < nth; i++) pthread_join(th[i], NULL);
        double gbs = BUF_BYTES / (mf_time_s() - t0) / 1e9;
        if (gbs > best) best = gbs;
        if (a[0].sum == 12345.0f) printf("(unlikely)\n"); /* keep the sums alive */
    }
    return best;
}

/* ---- matmul ---- */

typedef struct {
    int type;
    uint64_t bytes;      /* one matrix */
    int copies;
    bool packed;         /* w in the type's packed layout (mf_matmul_packed_ld) */
    uint8_t *w;          /* copies * bytes */
    float *x, *y;
    void *scratch;
} mm_bench;

static bool mm_setup(mm_bench *b, int type) {
    b->type = type;
    if (!mf_type_row_bytes(type, N_IN, &b->bytes)) return false;
    b->bytes *= N_OUT;
    b->copies = (int)(COLD_BYTES / b->bytes) + 1;
    b->w = aligned_alloc(64, b->bytes * (uint64_t)b->copies);
    b->x = malloc(sizeof(float) * N_IN * PROMPT);
    b->y = malloc(sizeof(float) * N_OUT * PROMPT);
    b->scratch = malloc(mf_matmul_scratch_bytes(type, N_IN, PROMPT) + 64);
    float *wf = malloc(sizeof(float) * N_IN * N_OUT);
    if (!b->w || !b->x || !b->y || !b->scratch || !wf) return false;
    srand(7);
    for (int64_t i = 0; i < (int64_t)N_IN * N_OUT; i++) wf[i] = (float)(rand() / (double)RAND_MAX - 0.5);
    for (int64_t i = 0; i < (int64_t)N_IN * PROMPT; i++) b->x[i] = (float)(rand() / (double)RAND_MAX - 0.5);
    mf_traits(type)->from_float(wf, b->w, (int64_t)N_IN * N_OUT);
    for (int c = 1; c < b->copies; c++) memcpy(b->w + b->bytes * (uint64_t)c, b->w, b->bytes);
    free(wf);
    return true;
}

/* Pack every copy in place (the layout a session uses where it can). */
static bool mm_pack(mm_bench *b) {
    for (int c = 0; c < b->copies; c++)
        if (!mf_pack_rows(b->type, b->w + b->bytes * (uint64_t)c, b->w + b->bytes * (uint64_t)c, N_IN, N_OUT))
            return false;
    b->packed = true;
    return true;
}

static void mm_run(mm_bench *b, mf_pool *pool, const uint8_t *w, int64_t n_tok) {
    (b->packed ? mf_matmul_packed_ld : mf_matmul_ld)(pool, w, b->type, N_IN, N_OUT, b->x, n_tok, b->y,
                                                     N_OUT, b->scratch);
}

static void mm_free(mm_bench *b) {
    free(b->w); free(b->x); free(b->y); free(b->scratch);
}

/* GB/s of weights read by decode matmuls over `copies` matrices (1 = hot). */
static double decode_gbs(mm_bench *b, mf_pool *pool, int copies) {
    int calls = copies > 1 ? copies : 40;
    double best = 0;
    for (int rep = 0; rep < REPS; rep++) {
        double t0 = mf_time_s();
        for (int i = 0; i < calls; i++)
            mm_run(b, pool, b->w + b->bytes * (uint64_t)(i % copies), 1);
        double gbs = (double)b->bytes * calls / (mf_time_s() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    return best;
}

static double prompt_gflops(mm_bench *b, mf_pool *pool) {
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = mf_time_s();
        mm_run(b, pool, b->w, PROMPT);
        double gf = 2.0 * N_IN * N_OUT * PROMPT / (mf_time_s() - t0) / 1e9;
        if (gf > best) best = gf;
    }
    return best;
}

/* Types named on the command line only (e.g. `bandwidth q4_K q8_0`); all
 * of them otherwise. `bandwidth --read` measures the read bandwidth only. */
static bool wanted(int type, int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (mf_type_from_name(argv[i]) == type) return true;
    return argc <= 1;
}

int main(int argc, char **argv) {
    uint8_t *buf = aligned_alloc(64, BUF_BYTES);
    if (!buf) return 1;
    memset(buf, 1, BUF_BYTES);
    double bw[3] = {0, read_gbs(buf, 1), read_gbs(buf, 2)};
    free(buf);
    if (argc > 1 && strcmp(argv[1], "--read") == 0) {
        /* the read bandwidth only, for scripts that measure it next to a run
         * (this VM's bandwidth drifts by tens of percent over minutes) */
        printf("read bandwidth: 1 thread %.1f GB/s, 2 threads %.1f GB/s\n", bw[1], bw[2]);
        return 0;
    }

    char table[8192];
    int len = snprintf(table, sizeof table,
                       "Read bandwidth (1 GiB, AVX2 loads, best of %d): 1 thread %.1f GB/s, "
                       "2 threads %.1f GB/s\n\n"
                       "Decode: mf_matmul n_tok=1, %d in x %d out; cold = weights from DRAM, "
                       "hot = one matrix repeated; prompt: n_tok=%d.\n\n"
                       "| type | MiB | threads | cold GB/s | of bandwidth | hot GB/s | "
                       "ms/token (cold) | prompt GFLOP/s |\n"
                       "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
                       REPS, bw[1], bw[2], N_IN, N_OUT, PROMPT);
    static const int types[] = {MF_TYPE_F32, MF_TYPE_F16, MF_TYPE_BF16, MF_TYPE_Q8_0,
                                MF_TYPE_Q4_K, MF_TYPE_Q5_K, MF_TYPE_Q6_K,
                                MF_TYPE_Q2_K, MF_TYPE_Q3_K, MF_TYPE_IQ4_XS,
                                MF_TYPE_Q4_0, MF_TYPE_Q4_1, MF_TYPE_Q5_0, MF_TYPE_Q5_1,
                                MF_TYPE_IQ4_NL};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        mm_bench b = {0};
        if (!wanted(types[t], argc, argv)) continue;
        if (!mm_setup(&b, types[t])) return 1;
        /* row-major, then (where the CPU has a kernel for it) packed */
        for (int layout = 0; layout < 2; layout++) {
            if (layout == 1 && !(mf_can_pack(types[t], N_IN, N_OUT) && mm_pack(&b))) break;
            for (int nth = 1; nth <= 2; nth++) {
                mf_pool *pool = NULL;
                if (mf_pool_create(nth, &pool) != MF_OK) return 1;
                double cold = decode_gbs(&b, pool, b.copies), hot = decode_gbs(&b, pool, 1);
                double gf = prompt_gflops(&b, pool);
                len += snprintf(table + len, sizeof table - (size_t)len,
                                "| %s%s | %.1f | %d | %.1f | %.0f%% | %.1f | %.3f | %.1f |\n",
                                mf_type_name(types[t]), b.packed ? " packed" : "", b.bytes / 1048576.0,
                                nth, cold, 100.0 * cold / bw[nth], hot, b.bytes / cold / 1e6, gf);
                mf_pool_free(pool);
            }
        }
        mm_free(&b);
    }
    fputs(table, stdout);
    mkdir("bench/results", 0755);
    FILE *f = fopen("bench/results/bandwidth.md", "w");
    if (!f) return 1;
    fprintf(f, "# bench/bandwidth.c\n\n%s", table);
    return fclose(f) == 0 ? 0 : 1;
}
