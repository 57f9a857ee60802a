/* test_matmul.c — mf_matmul for every computable weight type at awkward sizes.
 *
 * Oracles: a double-precision product of the dequantized weights with the
 * activations as the kernel sees them (converted to the vec_dot_type and
 * back), tolerance 1e-5 of sum |w_i*x_i| per output; and properties that must
 * hold bit for bit: the same output for pools of 1, 2, 3 and 4 threads, and
 * for each token computed alone (n_tok = 1) or inside a batch. The program
 * also re-runs itself with MF_FORCE_REF=1 so the reference kernels go
 * through the same checks; packed weights must match the row layout bit
 * for bit under the same properties. */
#include "tensor/tensor.h"
#include "test.h"

#include <sys/wait.h>

#define MM_TOL 1e-5

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static float frand(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 0x2545f4914f6cdd1dull;
    return (float)((double)(r >> 40) / (double)(1ull << 23) - 1.0);
}

static mf_pool *pools[5];

typedef struct mm_case {
    int type;
    int64_t n_in, n_out, n_tok;
    void *w;
    float *x, *wd, *xd; /* dequantized weights, activations as the kernel sees them */
    void *scratch;
} mm_case;

static bool case_init(mm_case *c) {
    uint64_t wrow, arow;
    int vt = mf_traits(c->type)->vec_dot_type;
    mf_type_row_bytes(c->type, (uint64_t)c->n_in, &wrow);
    mf_type_row_bytes(vt, (uint64_t)c->n_in, &arow);
    int64_t nw = c->n_out * c->n_in, nx = c->n_tok * c->n_in;
    float *wf = malloc((size_t)nw * 4);
    void *tmp = malloc(arow * (uint64_t)c->n_tok);
    c->w = malloc(wrow * (uint64_t)c->n_out);
    c->x = malloc((size_t)nx * 4);
    c->wd = malloc((size_t)nw * 4);
    c->xd = malloc((size_t)nx * 4);
    c->scratch = malloc(mf_matmul_scratch_bytes(c->type, c->n_in, c->n_tok) + 1);
    if (!wf || !tmp || !c->w || !c->x || !c->wd || !c->xd || !c->scratch) return false;
    for (int64_t i = 0; i < nw; i++) wf[i] = frand() * (1.0f + (float)(i % 7));
    for (int64_t i = 0; i < nx; i++) c->x[i] = frand() * 2.0f;
    mf_traits(c->type)->from_float(wf, c->w, nw);
    mf_traits_ref(c->type)->to_float(c->w, c->wd, nw);
    /* the exact product of what matmul multiplies: activations converted the
     * way matmul converts them (act_from_float where the type has one) */
    const mf_type_traits *vtr = mf_traits_ref(vt);
    (vtr->act_from_float ? vtr->act_from_float : vtr->from_float)(c->x, tmp, nx);
    mf_traits_ref(vt)->to_float(tmp, c->xd, nx);
    free(wf);
    free(tmp);
    return true;
}

static void case_free(mm_case *c) {
    free(c->w); free(c->x); free(c->wd); free(c->xd); free(c->scratch);
}

/* Worst |y - exact| / (tol) over all outputs; <= 1 passes. */
static double case_error(const mm_case *c, const float *y) {
    double worst = 0;
    for (int64_t t = 0; t < c->n_tok; t++) {
        for (int64_t r = 0; r < c->n_out; r++) {
            double s = 0, mag = 0;
            for (int64_t i = 0; i < c->n_in; i++) {
                double p = (double)c->wd[r * c->n_in + i] * c->xd[t * c->n_in + i];
                s += p;
                mag += fabs(p);
            }
            double e = fabs(y[t * c->n_out + r] - s) / (MM_TOL * mag + 1e-30);
            if (e > worst) worst = e;
        }
    }
    return worst;
}

static void run_case(int type, int64_t n_in, int64_t n_out, int64_t n_tok) {
    mm_case c = {type, n_in, n_out, n_tok, NULL, NULL, NULL, NULL, NULL};
    size_t ny = (size_t)(n_tok * n_out);
    float *y1 = malloc(ny * 4), *yk = malloc(ny * 4), *ytok = malloc((size_t)n_out * 4);
    if (!case_init(&c) || !y1 || !yk || !ytok) {
        CHECK(0, "out of memory");
        goto done;
    }
    const char *tn = mf_type_name(type);
    mf_matmul(pools[1], c.w, type, n_in, n_out, c.x, n_tok, y1, c.scratch);
    double err = case_error(&c, y1);
    CHECK(err <= 1.0, "%s %lldx%lld n_tok=%lld: error %.3g x tolerance", tn, (long long)n_out,
          (long long)n_in, (long long)n_tok, err);
    for (int p = 2; p <= 4; p++) {
        mf_matmul(pools[p], c.w, type, n_in, n_out, c.x, n_tok, yk, c.scratch);
        CHECK(memcmp(y1, yk, ny * 4) == 0, "%s %lldx%lld n_tok=%lld: %d threads differ", tn,
              (long long)n_out, (long long)n_in, (long long)n_tok, p);
    }
    int mismatched = 0;
    for (int64_t t = 0; t < n_tok; t++) {
        mf_matmul(pools[2], c.w, type, n_in, n_out, c.x + t * n_in, 1, ytok, c.scratch);
        mismatched += memcmp(ytok, y1 + t * n_out, (size_t)n_out * 4) != 0;
    }
    CHECK(mismatched == 0, "%s %lldx%lld n_tok=%lld: %d tokens differ alone vs batched", tn,
          (long long)n_out, (long long)n_in, (long long)n_tok, mismatched);
done:
    case_free(&c);
    free(y1); free(yk); free(ytok);
}

static void test_sizes(void) {
    /* q4_1/q5_1 are left to test_quant_q32.c: their q8_1 activations carry
     * an f16-rounded d*sum(qs), which this double-precision oracle lacks */
    static const int types[] = {MF_TYPE_F32,  MF_TYPE_F16,  MF_TYPE_BF16,
                                MF_TYPE_Q8_0, MF_TYPE_Q4_0, MF_TYPE_Q5_0, MF_TYPE_IQ4_NL};
    const size_t n_types = sizeof types / sizeof *types;
    static const int64_t n_ins[] = {32, 64, 96, 256, 2048};
    static const int64_t n_outs[] = {1, 2, 3, 5, 7, 15, 16, 17, 31, 33};
    static const int64_t n_toks[] = {1, 2, 3, 5, 7, 17};
    for (size_t t = 0; t < n_types; t++)
        for (size_t i = 0; i < 5; i++)
            for (size_t o = 0; o < 10; o++)
                for (size_t k = 0; k < 6; k++) run_case(types[t], n_ins[i], n_outs[o], n_toks[k]);
    /* batches bigger than one tile, converted on the pool */
    for (size_t t = 0; t < n_types; t++) run_case(types[t], 2048, 19, 70);
    /* lengths that are not a multiple of the SIMD width (block size 1) */
    for (size_t t = 0; t < 3; t++) run_case(types[t], 37, 5, 3);
}

/* Packed weights (where this CPU has a packed kernel): the same bits as the
 * row layout for pools of 1..4 threads (the threads claim runs of groups in
 * whatever order they get to them), for batches over more than one tile and
 * for each token alone. */
static void test_packed(void) {
    static const int types[] = {MF_TYPE_Q4_K, MF_TYPE_Q5_K, MF_TYPE_Q6_K, MF_TYPE_Q8_0, MF_TYPE_Q4_0, MF_TYPE_IQ4_NL};
    static const int64_t n_ins[] = {256, 512, 2048}, n_outs[] = {16, 48, 272}, n_toks[] = {1, 3, 17, 70};
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        if (!mf_can_pack(types[t], 256, 16)) {
            printf("matmul: no packed %s kernel on this CPU (or MF_NO_REPACK set); skipped\n",
                   mf_type_name(types[t]));
            continue;
        }
        for (size_t i = 0; i < 3; i++)
            for (size_t o = 0; o < 3; o++)
                for (size_t k = 0; k < 4; k++) {
                    mm_case c = {types[t], n_ins[i], n_outs[o], n_toks[k], NULL, NULL, NULL, NULL, NULL};
                    size_t ny = (size_t)(c.n_tok * c.n_out);
                    uint64_t row;
                    mf_type_row_bytes(c.type, (uint64_t)c.n_in, &row);
                    float *y0 = malloc(ny * 4), *yp = malloc(ny * 4);
                    void *wp = malloc(row * (uint64_t)c.n_out);
                    if (!case_init(&c) || !y0 || !yp || !wp) {
                        CHECK(0, "out of memory");
                    } else {
                        CHECK(mf_pack_rows(c.type, c.w, wp, c.n_in, c.n_out), "pack");
                        mf_matmul_ld(pools[1], c.w, c.type, c.n_in, c.n_out, c.x, c.n_tok, y0, c.n_out, c.scratch);
                        for (int p = 1; p <= 4; p++) {
                            mf_matmul_packed_ld(pools[p], wp, c.type, c.n_in, c.n_out, c.x, c.n_tok, yp, c.n_out,
                                                c.scratch);
                            CHECK(memcmp(y0, yp, ny * 4) == 0, "packed %s %lldx%lld n_tok=%lld, %d threads: differs",
                                  mf_type_name(c.type), (long long)c.n_out, (long long)c.n_in, (long long)c.n_tok, p);
                        }
                        int bad = 0;
                        for (int64_t tk = 0; tk < c.n_tok; tk++) {
                            mf_matmul_packed_ld(pools[2], wp, c.type, c.n_in, c.n_out, c.x + tk * c.n_in, 1, yp,
                                                c.n_out, c.scratch);
                            bad += memcmp(yp, y0 + tk * c.n_out, (size_t)c.n_out * 4) != 0;
                        }
                        CHECK(bad == 0, "packed %s: %d tokens alone differ", mf_type_name(c.type), bad);
                    }
                    case_free(&c);
                    free(y0), free(yp), free(wp);
                }
    }
}

static void test_misc(void) {
    CHECK(mf_matmul_scratch_bytes(MF_TYPE_Q8_0, 64, 3) == 3 * 2 * 34, "q8_0 scratch");
    CHECK(mf_matmul_scratch_bytes(MF_TYPE_F16, 10, 2) == 40, "f16 scratch");
    CHECK(mf_matmul_scratch_bytes(MF_TYPE_F32, 64, 3) == 0, "f32 needs no scratch");
    CHECK(mf_matmul_scratch_bytes(MF_TYPE_Q8_0, 33, 1) == 0, "partial block refused");
    CHECK(mf_matmul_scratch_bytes(MF_TYPE_IQ2_XXS, 256, 1) == 0, "no matmul for iq2_xxs");
    float y[2] = {1, 1}, x[33] = {0};
    uint8_t w[68] = {0};
    mf_matmul(pools[1], w, MF_TYPE_Q8_0, 33, 1, x, 2, y, w);
    CHECK(isnan(y[0]) && isnan(y[1]), "a bad call poisons the output");
}

/* Run this program again with the reference kernels forced. */
static void test_forced_ref(const char *self) {
    pid_t pid = fork();
    if (pid == 0) {
        setenv("MF_FORCE_REF", "1", 1);
        execl(self, self, "--child", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "the same tests with MF_FORCE_REF=1 (exit status %d)", WEXITSTATUS(st));
}

int main(int argc, char **argv) {
    bool child = argc > 1 && strcmp(argv[1], "--child") == 0;
    for (int p = 1; p <= 4; p++)
        if (mf_pool_create(p, &pools[p]) != MF_OK) return 1;
    if (child)
        CHECK(mf_traits(MF_TYPE_F16)->vec_dot == mf_traits_ref(MF_TYPE_F16)->vec_dot &&
                  mf_traits(MF_TYPE_Q8_0)->vec_dot == mf_traits_ref(MF_TYPE_Q8_0)->vec_dot,
              "MF_FORCE_REF=1 selects the reference kernels");
    test_misc();
    test_sizes();
    test_packed();
    for (int p = 1; p <= 4; p++) mf_pool_free(pools[p]);
    if (!child) test_forced_ref("/proc/self/exe");
    return test_report(child ? "matmul (MF_FORCE_REF=1)" : "matmul");
}
