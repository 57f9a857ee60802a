/* test_quant_k.c — q4_K, q5_K, q6_K (quantize and multiply) and q8_K.
 *
 * Oracles: ggml's block vectors in ../shared/quant (our quantizer must give
 * the same bytes, hence the same error); the rule of ggml's q8_K quantizer
 * checked element by element; a weighted-error comparison (with an
 * importance matrix <= without); a double-precision dot of the dequantized
 * rows (tolerance 1e-5 of sum |w_i x_i|); bit-identity of the AVX2 kernels
 * with the scalar reference on random and on extreme blocks, of the
 * four-row kernels with the one-row ones, and of mf_matmul across thread
 * counts and batching; and llama.cpp's logits of the pure-K models in
 * ../shared/reference (position 0 bit for bit). */
#include "tensor/kernels.h"
#include "test.h"

#define NTYPES 3
static const int ktypes[NTYPES] = {MF_TYPE_Q4_K, MF_TYPE_Q5_K, MF_TYPE_Q6_K};
static const char *const kfiles[NTYPES] = {"q4_K", "q5_K", "q6_K"};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}
/* uniform in [-1, 1) */
static float frand(void) { return (float)((double)(rnd() >> 40) / (double)(1ull << 23) - 1.0); }

static uint64_t row_bytes(int type, int64_t n) {
    uint64_t b = 0;
    mf_type_row_bytes(type, (uint64_t)n, &b);
    return b;
}

static float *read_f32(const char *rel, size_t *n) {
    char p[512];
    size_t len = 0;
    float *v = (float *)test_read_file(test_path(p, sizeof p, rel), &len);
    *n = len / 4;
    return v;
}

/* ---- q8_K ---- */

static void test_q8_k(void) {
    float x[512];
    uint8_t q[2 * MF_Q8_K_BYTES];
    for (int i = 0; i < 512; i++) x[i] = frand() * (i < 256 ? 3.0f : 0.01f);
    x[77] = -5.0f; /* block 0: the max-|x| value is negative */
    x[300] = 0.02f;
    const mf_type_traits *t = mf_traits(MF_TYPE_Q8_K);
    CHECK(t && t->from_float && t->to_float, "q8_K is a full type");
    if (!t) return;
    t->from_float(x, q, 512);
    int bad_q = 0, bad_sum = 0;
    for (int b = 0; b < 2; b++) {
        const uint8_t *p = q + b * MF_Q8_K_BYTES;
        float d, mx = b ? 0.02f : -5.0f, iscale = -127.0f / mx;
        memcpy(&d, p, 4);
        CHECK(d == 1 / iscale, "block %d: d = 1/iscale (%g vs %g)", b, d, 1 / iscale);
        for (int j = 0; j < 256; j++) {
            /* nearbyint: ties to even, what ggml's nearest_int does */
            float want = nearbyintf(iscale * x[256 * b + j]);
            bad_q += (float)((const int8_t *)p + 4)[j] != fminf(want, 127.0f);
        }
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += ((const int8_t *)p + 4)[16 * g + j];
            bad_sum += (int16_t)mf_rd16(p + 260 + 2 * g) != s;
        }
    }
    CHECK(bad_q == 0 && bad_sum == 0, "q8_K rule: %d quants, %d bsums differ", bad_q, bad_sum);
    CHECK(((const int8_t *)q + 4)[77] == -127, "the max-|x| value becomes -127");
    memset(x, 0, sizeof x);
    memset(q, 0xff, sizeof q);
    t->from_float(x, q, 256);
    int nz = 0;
    for (int i = 0; i < MF_Q8_K_BYTES; i++) nz += q[i] != 0;
    CHECK(nz == 0, "an all-zero block is all zero bytes (%d non-zero)", nz);
}

/* ---- quantizers against ggml's vectors ---- */

static void test_ggml_vectors(void) {
    for (int k = 0; k < NTYPES; k++) {
        char rel[128];
        size_t n_in = 0, n_out = 0, n_bl = 0;
        snprintf(rel, sizeof rel, "quant/%s.in.f32", kfiles[k]);
        float *in = read_f32(rel, &n_in);
        snprintf(rel, sizeof rel, "quant/%s.out.f32", kfiles[k]);
        float *out = read_f32(rel, &n_out);
        char p[512];
        snprintf(rel, sizeof rel, "quant/%s.blocks", kfiles[k]);
        uint8_t *blocks = test_read_file(test_path(p, sizeof p, rel), &n_bl);
        uint64_t rb = row_bytes(ktypes[k], 256);
        uint8_t *q = malloc(rb * 16);
        float *deq = malloc(4096 * 4);
        if (!in || !out || !blocks || n_in != 4096 || n_bl != rb * 16 || !q || !deq) {
            CHECK(0, "%s: cannot read the vectors", kfiles[k]);
        } else {
            uint64_t w = mf_quantize_rows(ktypes[k], in, q, 16, 256, NULL);
            CHECK(w == rb * 16, "%s: bytes written", kfiles[k]);
            CHECK(memcmp(q, blocks, rb * 16) == 0, "%s: blocks differ from ggml's reference", kfiles[k]);
            mf_traits(ktypes[k])->to_float(q, deq, 4096);
            double e_ours = 0, e_ggml = 0;
            for (int i = 0; i < 4096; i++) {
                e_ours += ((double)deq[i] - in[i]) * ((double)deq[i] - in[i]);
                e_ggml += ((double)out[i] - in[i]) * ((double)out[i] - in[i]);
            }
            CHECK(e_ours <= e_ggml, "%s: error %.6g > ggml's %.6g", kfiles[k], e_ours, e_ggml);
            /* from_float is the same rule, one row */
            mf_traits(ktypes[k])->from_float(in, q, 256);
            CHECK(memcmp(q, blocks, rb) == 0, "%s: from_float differs", kfiles[k]);
        }
        free(in); free(out); free(blocks); free(q); free(deq);
    }
}

/* ---- importance matrix ---- */

/* sum_i imp_i (x_i - deq_i)^2 over rows of n */
static double weighted_error(int type, const float *x, const void *q, int64_t rows, int64_t n,
                             const float *imp) {
    float *deq = malloc((size_t)(rows * n) * 4);
    double e = 0;
    if (!deq) return INFINITY;
    mf_traits(type)->to_float(q, deq, rows * n);
    for (int64_t i = 0; i < rows * n; i++) {
        double d = (double)x[i] - deq[i];
        e += imp[i % n] * d * d;
    }
    free(deq);
    return e;
}

/* Random rows (with a few outliers), random importances spread over four
 * decades: the weighted error with the imatrix must not exceed the plain
 * quantizer's, and should be clearly smaller. */
static void test_imatrix(void) {
    const int64_t rows = 32, n = 1024;
    float *x = malloc((size_t)(rows * n) * 4), *imp = malloc((size_t)n * 4);
    uint8_t *q0 = malloc(row_bytes(MF_TYPE_Q6_K, n) * rows), *q1 = malloc(row_bytes(MF_TYPE_Q6_K, n) * rows);
    if (!x || !imp || !q0 || !q1) {
        CHECK(0, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < rows * n; i++) x[i] = frand() * (rnd() % 50 == 0 ? 4.0f : 1.0f);
    for (int64_t i = 0; i < n; i++) imp[i] = powf(10.0f, 2.0f * frand() - 2.0f);
    for (int k = 0; k < NTYPES; k++) {
        mf_quantize_rows(ktypes[k], x, q0, rows, n, NULL);
        mf_quantize_rows(ktypes[k], x, q1, rows, n, imp);
        double e0 = weighted_error(ktypes[k], x, q0, rows, n, imp);
        double e1 = weighted_error(ktypes[k], x, q1, rows, n, imp);
        CHECK(e1 <= e0, "%s: weighted error with imatrix %.6g > without %.6g", kfiles[k], e1, e0);
        printf("%s: weighted error with imatrix / without = %.3f\n", kfiles[k], e1 / e0);
        /* zero importances must still give finite, sane blocks */
        float *zero = calloc((size_t)n, 4);
        if (zero) {
            mf_quantize_rows(ktypes[k], x, q1, rows, n, zero);
            double ez = weighted_error(ktypes[k], x, q1, rows, n, imp);
            CHECK(isfinite(ez) && ez < 20 * e0, "%s: all-zero imatrix gives error %.3g", kfiles[k], ez);
            free(zero);
        }
    }
done:
    free(x); free(imp); free(q0); free(q1);
}

/* ---- SIMD == scalar, four rows == one row ---- */

/* Offsets of the f16 scales in a block of each type. */
static void f16_fields(int type, int *o1, int *o2) {
    *o1 = type == MF_TYPE_Q6_K ? 208 : 0;
    *o2 = type == MF_TYPE_Q6_K ? -1 : 2;
}

/* rows x n weights: mode 0 quantized random floats, 1 random bytes (every
 * bit pattern is a valid block; the f16 scales are set finite), 2 the
 * extremes (all levels and scales at their maximum; q6_K scales -128). */
static void make_weights(int type, int mode, int64_t rows, int64_t n, uint8_t *w) {
    uint64_t rb = row_bytes(type, n), bb = rb / (uint64_t)(n / 256);
    if (mode == 0) {
        float *x = malloc((size_t)(rows * n) * 4);
        if (!x) return;
        for (int64_t i = 0; i < rows * n; i++) x[i] = frand() * (1.0f + (float)(i % 5));
        mf_quantize_rows(type, x, w, rows, n, NULL);
        free(x);
        return;
    }
    for (uint64_t i = 0; i < rb * (uint64_t)rows; i++) w[i] = mode == 1 ? (uint8_t)rnd() : 0xff;
    int o1, o2;
    f16_fields(type, &o1, &o2);
    for (uint64_t b = 0; b < rb * (uint64_t)rows / bb; b++) {
        uint8_t *p = w + b * bb;
        mf_wr16(p + o1, mf_f32_to_f16(mode == 1 ? frand() * 0.01f : 0.01f));
        if (o2 >= 0) mf_wr16(p + o2, mf_f32_to_f16(mode == 1 ? frand() * 0.01f : 0.01f));
        if (type == MF_TYPE_Q6_K && mode == 2) memset(p + 192, 0x80, 16);
    }
}

/* n activations as q8_K: mode 0 quantized random floats, 1 random quants
 * in -127..127, 2 every quant at sign * 127. */
static void make_acts(int mode, int sign, int64_t n, uint8_t *y) {
    float x[256];
    for (int64_t b = 0; b < n / 256; b++) {
        uint8_t *p = y + b * MF_Q8_K_BYTES;
        for (int j = 0; j < 256; j++) x[j] = frand();
        mf_traits_ref(MF_TYPE_Q8_K)->from_float(x, p, 256);
        if (mode == 0) continue;
        int8_t *qs = (int8_t *)(p + 4);
        for (int j = 0; j < 256; j++) qs[j] = (int8_t)(mode == 1 ? (int)(rnd() % 255) - 127 : sign * 127);
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += qs[16 * g + j];
            mf_wr16(p + 260 + 2 * g, (uint16_t)(int16_t)s);
        }
    }
}

static int compare_kernels(int type, int mode, int sign, int64_t n) {
    uint64_t rb = row_bytes(type, n);
    uint8_t *w = malloc(rb * 4), *y = malloc(row_bytes(MF_TYPE_Q8_K, n));
    int bad = 0;
    if (!w || !y) { free(w); free(y); return 1; }
    make_weights(type, mode, 4, n, w);
    make_acts(mode, sign, n, y);
    const mf_type_traits *t = mf_traits(type), *r = mf_traits_ref(type);
    float s1[4], s4[4] = {0};
    for (int k = 0; k < 4; k++) {
        float sr;
        r->vec_dot(n, &sr, w + k * rb, y);
        t->vec_dot(n, &s1[k], w + k * rb, y);
        bad += memcmp(&sr, &s1[k], 4) != 0;
    }
    if (t->vec_dot4) {
        t->vec_dot4(n, s4, w, rb, y);
        bad += memcmp(s1, s4, sizeof s4) != 0;
    }
    free(w);
    free(y);
    return bad;
}

static void test_simd_equals_ref(void) {
    static const int64_t lens[] = {256, 512, 2048, 4096 + 256};
    for (int k = 0; k < NTYPES; k++) {
        int bad = 0, runs = 0;
        for (int mode = 0; mode < 3; mode++)
            for (size_t l = 0; l < 4; l++)
                for (int rep = 0; rep < (mode == 2 ? 2 : 8); rep++, runs++)
                    bad += compare_kernels(ktypes[k], mode, rep % 2 ? -1 : 1, lens[l]);
        CHECK(bad == 0, "%s: %d of %d kernel comparisons not bit-identical", kfiles[k], bad, runs);
    }
}

/* ---- dot against the exact dot of the dequantized rows ---- */

static void test_dot_accuracy(void) {
    const int64_t n = 4096 + 256;
    for (int k = 0; k < NTYPES; k++) {
        uint64_t rb = row_bytes(ktypes[k], n);
        uint8_t *w = malloc(rb), *y = malloc(row_bytes(MF_TYPE_Q8_K, n));
        float *wd = malloc((size_t)n * 4), *yd = malloc((size_t)n * 4);
        double worst = 0;
        for (int rep = 0; w && y && wd && yd && rep < 20; rep++) {
            make_weights(ktypes[k], rep % 2, 1, n, w);
            make_acts(rep % 2, 1, n, y);
            mf_traits(ktypes[k])->to_float(w, wd, n);
            mf_traits(MF_TYPE_Q8_K)->to_float(y, yd, n);
            double exact = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) {
                exact += (double)wd[i] * yd[i];
                mag += fabs((double)wd[i] * yd[i]);
            }
            float s;
            mf_traits(ktypes[k])->vec_dot(n, &s, w, y);
            double e = fabs(s - exact) / (1e-5 * mag + 1e-30);
            if (e > worst) worst = e;
        }
        CHECK(w && y && wd && yd && worst <= 1.0, "%s: dot error %.3g x (1e-5 sum|w x|)", kfiles[k], worst);
        free(w); free(y); free(wd); free(yd);
    }
}

/* ---- mf_matmul: same bits for 1..4 threads and alone vs batched ---- */

static void matmul_case(mf_pool *pools[5], int type, int64_t n_in, int64_t n_out, int64_t n_tok) {
    uint64_t rb = row_bytes(type, n_in);
    uint8_t *w = malloc(rb * (uint64_t)n_out);
    float *x = malloc((size_t)(n_in * n_tok) * 4), *y1 = malloc((size_t)(n_out * n_tok) * 4);
    float *yk = malloc((size_t)(n_out * n_tok) * 4), *wd = malloc((size_t)n_in * 4);
    void *scratch = malloc(mf_matmul_scratch_bytes(type, n_in, n_tok) + 1);
    if (!w || !x || !y1 || !yk || !wd || !scratch) {
        CHECK(0, "out of memory");
        goto done;
    }
    make_weights(type, 0, n_out, n_in, w);
    for (int64_t i = 0; i < n_in * n_tok; i++) x[i] = frand();
    mf_matmul(pools[1], w, type, n_in, n_out, x, n_tok, y1, scratch);
    int bad = 0;
    for (int p = 2; p <= 4; p++) {
        mf_matmul(pools[p], w, type, n_in, n_out, x, n_tok, yk, scratch);
        bad += memcmp(y1, yk, (size_t)(n_out * n_tok) * 4) != 0;
    }
    for (int64_t t = 0; t < n_tok; t++) {
        mf_matmul(pools[2], w, type, n_in, n_out, x + t * n_in, 1, yk, scratch);
        bad += memcmp(yk, y1 + t * n_out, (size_t)n_out * 4) != 0;
    }
    /* and the product is the row's dot with the token's q8_K row */
    uint8_t *q8 = scratch;
    float s;
    mf_traits(MF_TYPE_Q8_K)->from_float(x, q8, n_in);
    mf_traits(type)->vec_dot(n_in, &s, w + (uint64_t)(n_out - 1) * rb, q8);
    bad += memcmp(&s, &y1[n_out - 1], 4) != 0;
    CHECK(bad == 0, "%s %lldx%lld n_tok=%lld: %d thread/batch results differ", mf_type_name(type),
          (long long)n_out, (long long)n_in, (long long)n_tok, bad);
done:
    free(w); free(x); free(y1); free(yk); free(wd); free(scratch);
}

static void test_matmul(void) {
    mf_pool *pools[5] = {0};
    for (int p = 1; p <= 4; p++) {
        if (mf_pool_create(p, &pools[p]) != MF_OK) {
            CHECK(0, "pool of %d", p);
            goto done;
        }
    }
    static const int64_t n_outs[] = {1, 3, 5, 16, 17, 33};
    static const int64_t n_toks[] = {1, 2, 5, 17};
    for (int k = 0; k < NTYPES; k++) {
        CHECK(mf_type_can_matmul(ktypes[k]), "%s can be multiplied", kfiles[k]);
        CHECK(mf_matmul_scratch_bytes(ktypes[k], 512, 3) == 3 * 2 * MF_Q8_K_BYTES, "%s scratch", kfiles[k]);
        for (size_t o = 0; o < 6; o++)
            for (size_t t = 0; t < 4; t++) matmul_case(pools, ktypes[k], 512, n_outs[o], n_toks[t]);
        matmul_case(pools, ktypes[k], 4096 + 256, 9, 70); /* more than one tile */
    }
done:
    for (int p = 1; p <= 4; p++) mf_pool_free(pools[p]);
}

/* ---- llama.cpp's logits of the pure-K models ---- */

/* logits of an MFRF file (see ../shared/README.md); NULL if unreadable */
static float *read_mfrf(const char *path, int *n_tok, int *n_vocab) {
    size_t len = 0;
    unsigned char *b = test_read_file(path, &len);
    int32_t h[2];
    if (!b || len < 16 || memcmp(b, "MFRF", 4) != 0) goto fail;
    memcpy(h, b + 8, 8);
    size_t off = 16 + 4 * (size_t)h[0], need = (size_t)h[0] * (size_t)h[1] * 4;
    if (h[0] <= 0 || h[1] <= 0 || off + need > len) goto fail;
    float *l = malloc(need);
    if (l) memcpy(l, b + off, need);
    free(b);
    *n_tok = h[0];
    *n_vocab = h[1];
    return l;
fail:
    free(b);
    return NULL;
}

/* max_i |ours_i - ref_i| / std(ref) at position t */
static double position_error(const float *ours, const float *ref, int t, int nv) {
    const float *a = ours + (size_t)t * nv, *r = ref + (size_t)t * nv;
    double mean = 0, var = 0, worst = 0;
    for (int i = 0; i < nv; i++) mean += r[i];
    mean /= nv;
    for (int i = 0; i < nv; i++) var += (r[i] - mean) * (r[i] - mean);
    for (int i = 0; i < nv; i++) worst = fmax(worst, fabs((double)a[i] - r[i]));
    return worst / sqrt(var / nv);
}

#define LOGIT_TOL_ALL 0.25

static void test_models(void) {
    static const char *const types[NTYPES] = {"Q4_K", "Q5_K", "Q6_K"};
    char ids_path[512], model[512], refp[512];
    size_t ilen = 0;
    char *ids = (char *)test_read_file(test_path(ids_path, sizeof ids_path, "reference/ids64.txt"), &ilen);
    for (size_t i = 0; ids && i < ilen; i++)
        if (ids[i] == '\n' || ids[i] == '\r') ids[i] = ' ';
    for (int k = 0; ids && k < NTYPES; k++) {
        char rel[128], out[] = "/tmp/mf_test_qk_XXXXXX", cmd[4096];
        snprintf(rel, sizeof rel, "models/quantized/synth-512-pure-%s.gguf", types[k]);
        test_path(model, sizeof model, rel);
        snprintf(rel, sizeof rel, "reference/synth-512-pure-%s.ref", types[k]);
        test_path(refp, sizeof refp, rel);
        int fd = mkstemp(out);
        close(fd);
        snprintf(cmd, sizeof cmd, "%s logits -m %s --ids %s -o %s -t 2",
                 getenv("MEMFIT") ? getenv("MEMFIT") : "./memfit", model, ids, out);
        int rc = system(cmd), nt = 0, nv = 0, nt2 = 0, nv2 = 0;
        float *ours = rc == 0 ? read_mfrf(out, &nt, &nv) : NULL, *ref = read_mfrf(refp, &nt2, &nv2);
        CHECK(ours && ref && nt == nt2 && nv == nv2, "%s: memfit logits (rc %d) or reference unreadable",
              types[k], rc);
        if (ours && ref && nt == nt2 && nv == nv2) {
            double w0 = position_error(ours, ref, 0, nv), w = 0;
            for (int t = 0; t < nt; t++) w = fmax(w, position_error(ours, ref, t, nv));
            CHECK(memcmp(ours, ref, (size_t)nv * 4) == 0, "%s: position 0 not bit-identical (%.3g x std)",
                  types[k], w0);
            CHECK(w <= LOGIT_TOL_ALL, "%s: max |dlogit| %.3g x std (bound %g)", types[k], w, LOGIT_TOL_ALL);
            printf("synth-512-pure-%s: position 0 %s, all %d positions %.3g x std (bound %g)\n", types[k],
                   w0 == 0 ? "bit-identical" : "differs", nt, w, LOGIT_TOL_ALL);
        }
        free(ours);
        free(ref);
        remove(out);
    }
    free(ids);
}

int main(void) {
    test_q8_k();
    test_imatrix();
    test_simd_equals_ref();
    test_dot_accuracy();
    test_matmul();
    if (test_shared()) {
        test_ggml_vectors();
        test_models();
    } else {
        printf("skipped the ggml vectors and llama.cpp references: ../shared not found\n");
    }
    return test_report("quant_k");
}
