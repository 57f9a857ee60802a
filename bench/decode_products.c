/* decode_products.c — the matrix products of one decoding step alone, against
 * a read-only pass over the same memory.
 *
 * Lays out the 154 weight matrices of a TinyLlama-1.1B-shaped model (22
 * layers x q, k, v, o, gate, up, down; 2048 wide, FFN 5632, 4 KV heads) in
 * q4_K, packed as a session packs them (one arena, MADV_HUGEPAGE), then
 * times, several rounds: the 154 products with one token (best of 3) and one
 * pass that only reads the arena with the same threads. Their ratio is how
 * close the kernels come to the bandwidth the memory gives them, without
 * the rest of a decoding step (attention, norms). This VM's bandwidth moves
 * between ~31 and ~67 GB/s over minutes, hence several rounds. Reports;
 * never fails on speed.
 *
 * Build and run: make build/bench/decode_products && build/bench/decode_products [threads] */
#include "core/core.h"
#include "tensor/tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define LAYERS 22
#define ROUNDS 5

typedef struct { const uint8_t *p; uint64_t n; uint64_t sums[256]; } read_job;

static void read_task(void *ctx, int ith, int nth) {
    read_job *j = ctx;
    int64_t lo, hi;
    mf_split((int64_t)(j->n / 64), ith, nth, &lo, &hi);
    j->sums[ith] += mf_read_sum(j->p + (uint64_t)lo * 64, (uint64_t)(hi - lo) * 64);
}

int main(int argc, char **argv) {
    int nth = argc > 1 ? atoi(argv[1]) : 2;
    const int64_t d = 2048, f = 5632;
    const int64_t shape[7][2] = {{d, d}, {d, 256}, {d, 256}, {d, d}, {d, f}, {d, f}, {f, d}}; /* n_in, n_out */
    uint64_t off[LAYERS][7], total = 0;
    for (int l = 0; l < LAYERS; l++)
        for (int k = 0; k < 7; k++) {
            uint64_t row;
            mf_type_row_bytes(MF_TYPE_Q4_K, (uint64_t)shape[k][0], &row);
            off[l][k] = total;
            total += row * (uint64_t)shape[k][1];
        }
    if (!mf_can_pack(MF_TYPE_Q4_K, d, 256)) {
        printf("no packed q4_K kernel on this CPU (or MF_NO_REPACK set): nothing to measure\n");
        return 0;
    }
    uint8_t *arena = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    float *w = malloc(sizeof(float) * (size_t)(d * f)), *x = malloc(sizeof(float) * (size_t)f),
          *y = malloc(sizeof(float) * (size_t)f);
    void *scratch = malloc(mf_matmul_scratch_bytes(MF_TYPE_Q4_K, f, 1) + 64);
    mf_pool *pool = NULL;
    if (arena == MAP_FAILED || !w || !x || !y || !scratch || mf_pool_create(nth, &pool) != MF_OK) return 1;
    madvise(arena, total, MADV_HUGEPAGE);
    srand(3);
    for (int64_t i = 0; i < d * f; i++) w[i] = (float)(rand() / (double)RAND_MAX - 0.5);
    for (int64_t i = 0; i < f; i++) x[i] = (float)(rand() / (double)RAND_MAX - 0.5);
    for (int k = 0; k < 7; k++) { /* one quantized matrix per shape, copied to every layer */
        uint8_t *m0 = arena + off[0][k];
        mf_quantize_rows(MF_TYPE_Q4_K, w, m0, shape[k][1], shape[k][0], NULL);
        mf_pack_rows(MF_TYPE_Q4_K, m0, m0, shape[k][0], shape[k][1]);
        uint64_t bytes = (k + 1 < 7 ? off[0][k + 1] : off[1][0]) - off[0][k];
        for (int l = 1; l < LAYERS; l++) memcpy(arena + off[l][k], m0, (size_t)bytes);
    }
    printf("q4_K packed, %d layers x 7 products (%.0f MiB), %d threads\n\n", LAYERS, total / 1048576.0, nth);
    printf("| round | products GB/s | read alone GB/s | products / read alone |\n| ---: | ---: | ---: | ---: |\n");
    for (int r = 0; r < ROUNDS; r++) {
        double best = 1e9;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = mf_time_s();
            for (int l = 0; l < LAYERS; l++)
                for (int k = 0; k < 7; k++)
                    mf_matmul_packed_ld(pool, arena + off[l][k], MF_TYPE_Q4_K, shape[k][0], shape[k][1], x, 1,
                                        y, shape[k][1], scratch);
            double dt = mf_time_s() - t0;
            if (dt < best) best = dt;
        }
        read_job j = {arena, total, {0}};
        double t1 = mf_time_s();
        mf_pool_run(pool, read_task, &j);
        double dr = mf_time_s() - t1;
        printf("| %d | %.1f | %.1f | %.0f%% |\n", r + 1, total / best / 1e9, total / dr / 1e9, 100.0 * dr / best);
    }
    mf_pool_free(pool);
    return 0;
}
