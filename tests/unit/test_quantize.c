/* test_quantize.c — quantizing model files, the importance matrix, and what
 * a failed run leaves behind.
 *
 * Oracles: llama.cpp's llama-quantize output in ../shared/models/quantized
 * (each tensor's type under every mixture; the q8_0 file byte for byte), the
 * original model's logits (the quantized model's mean KL divergence from
 * them stays under a bound stated per type), the first layer's attention
 * input recomputed here from the embedding table (its importances), and
 * properties: the input is never modified, a failure leaves no file, the
 * thread count changes nothing, an importance matrix lowers the importance-
 * weighted error of the quantizers that take one. Types whose quantizer or
 * matmul has not landed yet are skipped with a message. */
#include "memfit.h"
#include "io/gguf.h"
#include "quant/quant.h"
#include "tensor/tensor.h"
#include "test.h"

#include <sys/stat.h>

static char tmpdir[64];

static char *tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", tmpdir, name);
    return buf;
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

static bool no_output(const char *path) {
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    return !exists(path) && !exists(tmp);
}

static uint64_t checksum(const char *path) {
    size_t n = 0;
    unsigned char *b = test_read_file(path, &n);
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; b && i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    free(b);
    return b ? h : 0;
}

static bool can_write(int type) {
    const mf_type_traits *t = mf_traits(type);
    return t && (t->from_float || t->quantize);
}

/* Every type a mixture's plan uses for this file can be written. */
static bool plan_writable(const char *model, const char *type) {
    mf_gguf *g;
    if (mf_gguf_open(model, &g) != MF_OK) return false;
    const mf_quant_mixture *mx = mf_quant_mixture_find(type);
    int *order = calloc(g->n_tensors, sizeof *order);
    mf_quant_choice *c = calloc(g->n_tensors, sizeof *c);
    bool ok = mx && order && c && mf_quant_order(g, order) == MF_OK &&
              mf_quant_plan(g, order, mx, false, false, c) == MF_OK;
    for (uint64_t i = 0; ok && i < g->n_tensors; i++) ok = c[i].copy || can_write(c[i].type);
    free(order);
    free(c);
    mf_gguf_close(g);
    return ok;
}

/* ---- the plan against llama.cpp's files ---- */

static void check_plan(const char *base_rel, const char *ref_rel, const char *type, bool pure) {
    char bp[512], rp[512];
    mf_gguf *g = NULL, *r = NULL;
    if (mf_gguf_open(test_path(bp, sizeof bp, base_rel), &g) != MF_OK ||
        mf_gguf_open(test_path(rp, sizeof rp, ref_rel), &r) != MF_OK) {
        CHECK(0, "open %s / %s: %s", base_rel, ref_rel, mf_last_error());
        mf_gguf_close(g);
        return;
    }
    int *order = calloc(g->n_tensors, sizeof *order);
    mf_quant_choice *c = calloc(g->n_tensors, sizeof *c);
    CHECK(mf_quant_order(g, order) == MF_OK, "order");
    CHECK(mf_quant_plan(g, order, mf_quant_mixture_find(type), pure, false, c) == MF_OK, "plan");
    int wrong = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const mf_gguf_tensor *t = mf_gguf_find_tensor(r, g->tensors[i].name);
        if (!t || t->type != c[i].type) {
            if (wrong++ < 3)
                fprintf(stderr, "  %s %s: memfit %s, llama.cpp %s\n", type, g->tensors[i].name,
                        mf_type_name(c[i].type), t ? mf_type_name(t->type) : "(absent)");
        }
        /* and the written order is llama.cpp's */
        if (i < r->n_tensors && strcmp(r->tensors[i].name, g->tensors[order[i]].name)) wrong++;
    }
    CHECK(wrong == 0, "%s%s: %d tensor types or positions differ from %s", pure ? "pure " : "",
          type, wrong, ref_rel);
    int64_t ft = -1;
    CHECK(mf_gguf_get_int(r, "general.file_type", &ft) && ft == mf_quant_mixture_find(type)->ftype,
          "%s: file_type %lld", type, (long long)ft);
    free(order);
    free(c);
    mf_gguf_close(g);
    mf_gguf_close(r);
}

static void test_plans(void) {
    static const char *const mixes[][2] = {
        {"q4_0", "Q4_0"}, {"q4_1", "Q4_1"}, {"q5_0", "Q5_0"}, {"q5_1", "Q5_1"},
        {"q8_0", "Q8_0"}, {"q2_k", "Q2_K"}, {"q3_k_m", "Q3_K_M"}, {"q4_k_m", "Q4_K_M"},
        {"q5_k_m", "Q5_K_M"}, {"q6_k", "Q6_K"}};
    char ref[128];
    for (size_t i = 0; i < sizeof mixes / sizeof mixes[0]; i++) {
        snprintf(ref, sizeof ref, "models/quantized/synth-512-%s.gguf", mixes[i][1]);
        check_plan("models/synth-512-f16.gguf", ref, mixes[i][0], false);
    }
    static const char *const pure[][2] = {{"q2_k", "Q2_K"}, {"q3_k_m", "Q3_K"}, {"q4_k_m", "Q4_K"},
                                          {"q5_k_m", "Q5_K"}, {"q6_k", "Q6_K"}};
    for (size_t i = 0; i < sizeof pure / sizeof pure[0]; i++) {
        snprintf(ref, sizeof ref, "models/quantized/synth-512-pure-%s.gguf", pure[i][1]);
        check_plan("models/synth-512-f16.gguf", ref, pure[i][0], true);
    }
    /* tied embeddings: token_embd is the output matrix and gets Q6_K */
    check_plan("models/synth-mini-f16.gguf", "models/quantized/synth-mini-Q4_K_M.gguf", "q4_k_m",
               false);
}

/* ---- quantize, load, compare logits ---- */

typedef struct collected {
    int n, n_fallback, n_imatrix;
    char fallback_names[8][64];
    double sum_w2;   /* sum over tensors of wrmse^2 * elements, where given */
    double sum_n;
    char first_fallback[96];
} collected;

static void on_report(void *user, const mf_quant_report *r) {
    collected *c = user;
    c->n++;
    if (r->fallback) {
        if (c->n_fallback < 8) snprintf(c->fallback_names[c->n_fallback], 64, "%s", r->name);
        if (!c->first_fallback[0])
            snprintf(c->first_fallback, sizeof c->first_fallback, "%s %s<-%s", r->name,
                     r->type_name, r->wanted_name);
        c->n_fallback++;
    }
    c->n_imatrix += r->used_imatrix;
    if (r->wrmse >= 0) {
        c->sum_w2 += r->wrmse * r->wrmse * (double)r->n_elements;
        c->sum_n += (double)r->n_elements;
    }
}

static float *eval_logits(const char *path, const int32_t *ids, int n, int *n_vocab) {
    mf_model *m;
    if (mf_model_load(path, NULL, &m) != MF_OK) return NULL;
    mf_model_info info;
    mf_model_get_info(m, &info);
    *n_vocab = info.n_vocab;
    mf_session *s;
    mf_session_params p = {.n_ctx = n, .n_threads = 2};
    float *out = NULL;
    if (mf_session_create(m, &p, &s) == MF_OK && mf_session_eval(s, ids, n, 1) == MF_OK) {
        out = malloc(sizeof(float) * (size_t)n * (size_t)info.n_vocab);
        for (int i = 0; out && i < n; i++)
            memcpy(out + (size_t)i * info.n_vocab, mf_session_logits(s, i),
                   sizeof(float) * (size_t)info.n_vocab);
        mf_session_free(s);
    }
    mf_model_free(m);
    return out;
}

/* mean over positions of KL(softmax(a) || softmax(b)) */
static double mean_kl(const float *a, const float *b, int n, int nv) {
    double total = 0;
    for (int i = 0; i < n; i++) {
        const float *x = a + (size_t)i * nv, *y = b + (size_t)i * nv;
        double mx = -1e300, my = -1e300, sx = 0, sy = 0, kl = 0;
        for (int j = 0; j < nv; j++) {
            mx = x[j] > mx ? x[j] : mx;
            my = y[j] > my ? y[j] : my;
        }
        for (int j = 0; j < nv; j++) {
            sx += exp(x[j] - mx);
            sy += exp(y[j] - my);
        }
        for (int j = 0; j < nv; j++) {
            double lx = x[j] - mx - log(sx), ly = y[j] - my - log(sy);
            kl += exp(lx) * (lx - ly);
        }
        total += kl;
    }
    return total / n;
}

static int read_ids(const char *rel, int32_t *ids, int cap) {
    char p[512];
    char *text = (char *)test_read_file(test_path(p, sizeof p, rel), NULL);
    int n = 0;
    for (char *s = text; s && *s && n < cap;) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) {
            s++;
            continue;
        }
        ids[n++] = (int32_t)v;
        s = end;
    }
    free(text);
    return n;
}

typedef struct kl_case {
    const char *type;
    double bound_story, bound_synth; /* stated bounds on the mean KL (nats) */
    const char *ref;                 /* llama.cpp's logits for synth-512 in this type */
} kl_case;

/* Bounds: about 1.5 times what each type measured when this test was
 * written. Both models are very sensitive: stories260K is tiny (every weight
 * matters, and its 64-wide matrices send K-types to 32-block fallbacks), and
 * synth-512's random weights give large logits; llama.cpp's own references
 * show the same KL for synth-512 (q4_0: 0.608 nats), which is the check where
 * a reference exists: memfit's KL within 10% of llama.cpp's. */
static const kl_case kl_cases[] = {
    {"f16", 1e-3, 1e-4, NULL},         {"bf16", 0.01, 1e-3, NULL},
    {"q8_0", 0.06, 0.01, "Q8_0"},      {"q6_k", 0.06, 0.07, "Q6_K"},
    {"q5_1", 1.0, 0.25, "Q5_1"},       {"q5_0", 1.5, 0.3, "Q5_0"},
    {"q5_k_m", 1.0, 0.22, "Q5_K_M"},   {"q4_1", 3.0, 0.75, "Q4_1"},
    {"q4_0", 3.0, 0.9, "Q4_0"},        {"q4_k_m", 1.5, 0.7, "Q4_K_M"},
    {"iq4_nl", 3.0, 0.75, NULL},       {"iq4_xs", 3.0, 0.75, NULL},
    {"q3_k_m", 2.5, 1.6, "Q3_K_M"},    {"q2_k", 3.0, 3.0, "Q2_K"},
};

/* Logits of an MFRF reference file (n positions, nv each), or NULL. */
static float *ref_logits(const char *name, int n, int nv) {
    char rel[128], p[512];
    snprintf(rel, sizeof rel, "reference/synth-512-%s.ref", name);
    size_t len = 0;
    unsigned char *b = test_read_file(test_path(p, sizeof p, rel), &len);
    int32_t hn = 0, hv = 0;
    if (b && len >= 16) {
        memcpy(&hn, b + 8, 4);
        memcpy(&hv, b + 12, 4);
    }
    size_t off = 16 + 4 * (size_t)n, bytes = sizeof(float) * (size_t)n * (size_t)nv;
    float *out = b && hn == n && hv == nv && len >= off + bytes ? malloc(bytes) : NULL;
    if (out) memcpy(out, b + off, bytes);
    free(b);
    return out;
}

static void kl_one(const char *model, const char *name, const float *base, const int32_t *ids,
                   int n, const kl_case *k, bool story) {
    char out[600], file[96];
    snprintf(file, sizeof file, "%s-%s.gguf", name, k->type);
    tmp_path(out, sizeof out, file);
    collected c = {0};
    mf_quantize_params p = {.type = k->type, .n_threads = 2, .report = on_report, .user = &c};
    mf_status st = mf_quantize_file(model, out, &p);
    CHECK(st == MF_OK, "quantize %s to %s: %s", name, k->type, mf_last_error());
    if (st != MF_OK) return;
    int nv = 0;
    float *q = eval_logits(out, ids, n, &nv);
    remove(out);
    if (!q) {
        printf("skip: %s %s written but cannot be evaluated yet (%s)\n", name, k->type,
               mf_last_error());
        return;
    }
    double kl = mean_kl(base, q, n, nv), bound = story ? k->bound_story : k->bound_synth;
    printf("  %-11s %-7s mean KL %-9.3g (bound %.3g)", name, k->type, kl, bound);
    CHECK(kl >= 0 && kl < bound, "%s %s: mean KL %g over %d positions exceeds %g", name, k->type,
          kl, n, bound);
    float *rb = !story && k->ref ? ref_logits("f16", n, nv) : NULL;
    float *rq = rb ? ref_logits(k->ref, n, nv) : NULL;
    if (rq) {
        double want = mean_kl(rb, rq, n, nv);
        printf("  llama.cpp %.3g", want);
        CHECK(fabs(kl - want) <= 0.1 * want, "%s %s: KL %g, llama.cpp's %g", name, k->type, kl,
              want);
    }
    printf("\n");
    free(rb);
    free(rq);
    free(q);
}

static void test_kl(void) {
    int32_t story[300], synth[64];
    int ns = read_ids("reference/stories260K.story-ids.txt", story, 300);
    int ny = read_ids("reference/ids64.txt", synth, 64);
    CHECK(ns > 100 && ny == 64, "id files: %d, %d", ns, ny);
    char sp[512], yp[512];
    test_path(sp, sizeof sp, "models/stories260K.gguf");
    test_path(yp, sizeof yp, "models/synth-512-f16.gguf");
    int nv;
    float *bs = eval_logits(sp, story, ns, &nv), *by = eval_logits(yp, synth, ny, &nv);
    CHECK(bs && by, "base logits: %s", mf_last_error());
    for (size_t i = 0; bs && by && i < sizeof kl_cases / sizeof kl_cases[0]; i++) {
        const kl_case *k = &kl_cases[i];
        if (!plan_writable(sp, k->type) || !plan_writable(yp, k->type)) {
            printf("skip: %s cannot be written yet (no quantizer)\n", k->type);
            continue;
        }
        kl_one(sp, "stories260K", bs, story, ns, k, true);
        kl_one(yp, "synth-512", by, synth, ny, k, false);
    }
    free(bs);
    free(by);
}

/* ---- byte-for-byte against llama-quantize ---- */

static bool same_bytes(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    unsigned char *x = test_read_file(a, &na), *y = test_read_file(b, &nb);
    bool same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static void test_bytes(void) {
    static const char *const t[][2] = {{"q8_0", "Q8_0"}, {"q4_0", "Q4_0"}, {"q4_1", "Q4_1"},
                                       {"q5_0", "Q5_0"}, {"q5_1", "Q5_1"}, {"q2_k", "Q2_K"},
                                       {"q3_k_m", "Q3_K_M"}, {"q4_k_m", "Q4_K_M"},
                                       {"q5_k_m", "Q5_K_M"}, {"q6_k", "Q6_K"}};
    char in[512], ref[512], out[600];
    test_path(in, sizeof in, "models/synth-512-f16.gguf");
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (!plan_writable(in, t[i][0])) continue;
        snprintf(ref, sizeof ref, "%s/models/quantized/synth-512-%s.gguf", test_shared(), t[i][1]);
        tmp_path(out, sizeof out, "bytes.gguf");
        mf_quantize_params p = {.type = t[i][0], .n_threads = 3};
        CHECK(mf_quantize_file(in, out, &p) == MF_OK, "%s: %s", t[i][0], mf_last_error());
        bool same = same_bytes(out, ref);
        printf("  synth-512 %-7s %s llama-quantize's file\n", t[i][0],
               same ? "is byte-identical to" : "differs from");
        /* q8_0 has one right answer (ggml's reference rounding); the others
         * may legitimately choose other scales, so they are only reported */
        if (i == 0) CHECK(same, "q8_0 file differs from llama.cpp's");
        remove(out);
    }
}

/* ---- the FFN-172 fallback, thread-count independence ---- */

static void test_fallback_threads(void) {
    char in[512], o1[600], o3[600];
    test_path(in, sizeof in, "models/stories260K.gguf");
    tmp_path(o1, sizeof o1, "fb1.gguf");
    tmp_path(o3, sizeof o3, "fb3.gguf");
    collected c1 = {0}, c3 = {0};
    mf_quantize_params p = {.type = "q8_0", .n_threads = 1, .report = on_report, .user = &c1};
    CHECK(mf_quantize_file(in, o1, &p) == MF_OK, "q8_0 1 thread: %s", mf_last_error());
    p.n_threads = 3;
    p.user = &c3;
    CHECK(mf_quantize_file(in, o3, &p) == MF_OK, "q8_0 3 threads: %s", mf_last_error());
    CHECK(same_bytes(o1, o3), "1 and 3 threads give different files");
    CHECK(c1.n == 48 && c1.n_fallback == 5, "%d tensors, %d fallbacks (want 48, 5)", c1.n,
          c1.n_fallback);
    CHECK(strstr(c1.first_fallback, "ffn_down.weight f16<-q8_0") != NULL, "fallback: %s",
          c1.first_fallback);
    for (int i = 0; i < c1.n_fallback && i < 8; i++)
        CHECK(strstr(c1.fallback_names[i], "ffn_down") != NULL, "fallback on %s",
              c1.fallback_names[i]);
    /* the file says the same: ffn_down is f16, the rest of the matrices q8_0 */
    mf_model *m;
    CHECK(mf_model_load(o1, NULL, &m) == MF_OK, "load: %s", mf_last_error());
    mf_model_info info;
    mf_model_get_info(m, &info);
    int n_f16 = 0, n_q8 = 0;
    for (int i = 0; i < info.n_tensors; i++) {
        mf_tensor_info t;
        if (mf_model_tensor(m, i, &t) != MF_OK) continue;
        n_f16 += !strcmp(t.type_name, "f16") && strstr(t.name, "ffn_down");
        n_q8 += !strcmp(t.type_name, "q8_0");
    }
    CHECK(n_f16 == 5 && n_q8 == 32, "f16 ffn_down %d (5), q8_0 %d (32)", n_f16, n_q8);
    mf_model_free(m);
    remove(o1);
    remove(o3);
}

/* ---- failures leave nothing; the input is never touched ---- */

static void copy_file(const char *from, const char *to) {
    size_t n = 0;
    unsigned char *b = test_read_file(from, &n);
    FILE *f = fopen(to, "wb");
    CHECK(b && f && fwrite(b, 1, n, f) == n, "copy %s", from);
    if (f) fclose(f);
    free(b);
}

static void test_failures(void) {
    char shared_in[512], in[600], out[600], alias[700];
    test_path(shared_in, sizeof shared_in, "models/stories260K.gguf");
    tmp_path(in, sizeof in, "in.gguf");
    copy_file(shared_in, in);
    uint64_t sum = checksum(in);
    mf_quantize_params p = {.type = "q8_0", .n_threads = 2};
    /* an unwritable place */
    tmp_path(out, sizeof out, "no/such/dir/out.gguf");
    CHECK(mf_quantize_file(in, out, &p) == MF_E_IO, "missing dir: %s", mf_last_error());
    CHECK(no_output(out), "file left in a missing dir");
    /* out is in, by the same or another name */
    CHECK(mf_quantize_file(in, in, &p) == MF_E_INVALID, "out == in");
    snprintf(alias, sizeof alias, "%s/../%s/in.gguf", tmpdir, strrchr(tmpdir, '/') + 1);
    CHECK(mf_quantize_file(in, alias, &p) == MF_E_INVALID, "out == in by another path");
    CHECK(strstr(mf_last_error(), "input") != NULL, "message: %s", mf_last_error());
    char hard[600];
    tmp_path(hard, sizeof hard, "hardlink.gguf");
    CHECK(link(in, hard) == 0, "hard link");
    CHECK(mf_quantize_file(in, hard, &p) == MF_E_INVALID, "out is a hard link to in");
    remove(hard);
    /* unknown and not-yet-writable types */
    tmp_path(out, sizeof out, "out.gguf");
    p.type = "q9_9";
    CHECK(mf_quantize_file(in, out, &p) == MF_E_INVALID, "unknown type");
    CHECK(strstr(mf_last_error(), "q4_k_m") != NULL, "lists the types: %s", mf_last_error());
    CHECK(no_output(out), "file left after an unknown type");
    int n_unsup = 0;
    for (int i = 0; mf_quant_mixture_at(i); i++) {
        const mf_quant_mixture *mx = mf_quant_mixture_at(i);
        if (can_write(mx->base)) continue;
        p.type = mx->name;
        mf_status st = mf_quantize_file(in, out, &p);
        CHECK(st == MF_E_UNSUPPORTED && strstr(mf_last_error(), mf_type_name(mx->base)),
              "%s: status %d, '%s'", mx->name, st, mf_last_error());
        CHECK(no_output(out), "file left after %s", mx->name);
        n_unsup++;
    }
    if (!n_unsup) printf("  (every mixture's base type can be written: no unsupported case)\n");
    /* a truncated input */
    char trunc[600];
    tmp_path(trunc, sizeof trunc, "trunc.gguf");
    size_t n = 0;
    unsigned char *b = test_read_file(in, &n);
    FILE *f = fopen(trunc, "wb");
    if (f && b) fwrite(b, 1, n / 2, f);
    if (f) fclose(f);
    free(b);
    p.type = "q8_0";
    CHECK(mf_quantize_file(trunc, out, &p) == MF_E_FORMAT, "truncated input: %s", mf_last_error());
    CHECK(no_output(out), "file left after a truncated input");
    CHECK(checksum(in) == sum, "the input changed");
    remove(trunc);
    remove(in);
}

/* ---- the importance matrix ---- */

static bool same_floats(const float *a, const float *b, int n) {
    return a && b && memcmp(a, b, sizeof(float) * (size_t)n) == 0;
}

/* blk.0's attention input is rmsnorm(embedding row) * attn_norm: position
 * independent, so its mean square per channel can be recomputed here. */
static void check_first_layer(const mf_imatrix *im, const char *model, const int32_t *ids, int n) {
    mf_gguf *g;
    if (mf_gguf_open(model, &g) != MF_OK) return;
    const mf_gguf_tensor *e = mf_gguf_find_tensor(g, "token_embd.weight");
    const mf_gguf_tensor *w = mf_gguf_find_tensor(g, "blk.0.attn_norm.weight");
    double eps = 1e-5;
    mf_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &eps);
    int dim = (int)e->ne[0];
    double *want = calloc((size_t)dim, sizeof *want);
    float *row = malloc(sizeof(float) * (size_t)dim), *nw = malloc(sizeof(float) * (size_t)dim);
    mf_get_row(w->data, w->type, dim, 0, nw);
    for (int t = 0; t < n; t++) {
        mf_get_row(e->data, e->type, dim, ids[t], row);
        double ss = 0;
        for (int j = 0; j < dim; j++) ss += (double)row[j] * row[j];
        double r = 1.0 / sqrt(ss / dim + eps);
        for (int j = 0; j < dim; j++) want[j] += (row[j] * r * nw[j]) * (row[j] * r * nw[j]) / n;
    }
    const float *got = mf_imatrix_get(im, "blk.0.attn_q.weight", dim);
    double worst = 0;
    for (int j = 0; got && j < dim; j++) {
        double rel = fabs(got[j] - want[j]) / want[j];
        worst = rel > worst ? rel : worst;
    }
    CHECK(got && worst < 1e-4, "blk.0 attention importances differ from the recomputation by %g",
          worst);
    free(want);
    free(row);
    free(nw);
    mf_gguf_close(g);
}

static void check_entries(const mf_imatrix *im) {
    int n = mf_imatrix_count(im), bad = 0;
    CHECK(n == 36, "%d entries (5 layers x 7 matrices + output)", n);
    for (int i = 0; i < n; i++) {
        const char *name;
        int len;
        CHECK(mf_imatrix_entry(im, i, &name, &len) == MF_OK, "entry %d", i);
        int want = strstr(name, "ffn_down") ? 172 : 64;
        const float *v = mf_imatrix_get(im, name, len);
        for (int j = 0; v && j < len; j++) bad += !(isfinite(v[j]) && v[j] > 0);
        CHECK(len == want && v, "%s has %d values, want %d", name, len, want);
    }
    CHECK(bad == 0, "%d values are not positive and finite", bad);
    CHECK(mf_imatrix_get(im, "output.weight", 64) != NULL, "output observed");
    CHECK(mf_imatrix_get(im, "blk.0.attn_q.weight", 65) == NULL, "wrong length gives NULL");
    CHECK(mf_imatrix_get(im, "no.such.weight", 64) == NULL, "unknown name gives NULL");
    /* matrices fed the same input have the same statistics */
    CHECK(same_floats(mf_imatrix_get(im, "blk.2.attn_q.weight", 64),
                      mf_imatrix_get(im, "blk.2.attn_v.weight", 64), 64), "q and v inputs");
    CHECK(same_floats(mf_imatrix_get(im, "blk.3.ffn_gate.weight", 64),
                      mf_imatrix_get(im, "blk.3.ffn_up.weight", 64), 64), "gate and up inputs");
}

static void check_roundtrip(const mf_imatrix *im) {
    char path[600], path2[600];
    tmp_path(path, sizeof path, "m.imatrix");
    tmp_path(path2, sizeof path2, "m2.imatrix");
    mf_imatrix *back = NULL;
    CHECK(mf_imatrix_save(im, path) == MF_OK, "save: %s", mf_last_error());
    CHECK(mf_imatrix_load(path, &back) == MF_OK, "load: %s", mf_last_error());
    if (!back) return;
    CHECK(mf_imatrix_count(back) == mf_imatrix_count(im) &&
          mf_imatrix_chunks(back) == mf_imatrix_chunks(im), "counts survive");
    CHECK(mf_imatrix_dataset(back) && !strcmp(mf_imatrix_dataset(back), "story-ids"), "dataset");
    int differ = 0;
    for (int i = 0; i < mf_imatrix_count(im); i++) {
        const char *name;
        int len;
        mf_imatrix_entry(im, i, &name, &len);
        differ += !same_floats(mf_imatrix_get(im, name, len), mf_imatrix_get(back, name, len), len);
    }
    CHECK(differ == 0, "%d entries changed in a save/load round trip", differ);
    CHECK(mf_imatrix_save(back, path2) == MF_OK && same_bytes(path, path2), "saved twice alike");
    mf_imatrix_free(back);
    remove(path2);
}

static void check_corrupt(const char *path) {
    size_t n = 0;
    unsigned char *b = test_read_file(path, &n);
    if (!b) return;
    int ok = 0, other = 0;
    for (size_t len = 0; len < n; len++) {
        mf_imatrix *im = NULL;
        mf_status st = mf_imatrix_parse(b, len, "prefix", &im);
        ok += st == MF_OK;
        other += st != MF_OK && st != MF_E_FORMAT;
        mf_imatrix_free(im);
    }
    /* the only valid prefix is the file without its optional dataset tail */
    CHECK(ok == 1 && other == 0, "prefixes: %d parse, %d fail oddly", ok, other);
    mf_imatrix *im = NULL;
    unsigned char *c = malloc(n);
    memcpy(c, b, n);
    c[3] = 0x7f; /* two billion entries */
    CHECK(mf_imatrix_parse(c, n, "big", &im) == MF_E_FORMAT && !im, "absurd entry count");
    memcpy(c, b, n);
    int32_t len;
    memcpy(&len, c + 4, 4); /* first value of the first entry, made -1 */
    float neg = -1.0f;
    memcpy(c + 4 + 4 + len + 8, &neg, 4);
    CHECK(mf_imatrix_parse(c, n, "neg", &im) == MF_E_FORMAT && !im, "negative importance");
    CHECK(mf_imatrix_load("/nonexistent/x.imatrix", &im) == MF_E_IO, "missing file");
    free(c);
    free(b);
}

/* sum_ij imp_j (w_ij - q_ij)^2 over the matrices of `out` with importances,
 * and the same normalised per tensor as mf_quant_report.wrmse is */
static double weighted_error(const char *in, const char *out, const mf_imatrix *im,
                             double *report_like) {
    mf_gguf *g0, *g1;
    if (mf_gguf_open(in, &g0) != MF_OK || mf_gguf_open(out, &g1) != MF_OK) return -1;
    double total = 0;
    *report_like = 0;
    for (uint64_t t = 0; t < g1->n_tensors; t++) {
        const mf_gguf_tensor *q = &g1->tensors[t], *w = mf_gguf_find_tensor(g0, q->name);
        const float *imp = mf_imatrix_get(im, q->name, (int)q->ne[0]);
        if (!imp || !w || q->type == w->type) continue;
        int64_t n = q->ne[0];
        float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
        double err = 0, isum = 0;
        for (int64_t r = 0; r < q->ne[1]; r++) {
            mf_get_row(w->data, w->type, n, r, a);
            mf_get_row(q->data, q->type, n, r, b);
            for (int64_t j = 0; j < n; j++) err += imp[j] * ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
        }
        for (int64_t j = 0; j < n; j++) isum += imp[j];
        total += err;
        *report_like += err / ((double)q->ne[1] * isum) * (double)(n * q->ne[1]);
        free(a);
        free(b);
    }
    mf_gguf_close(g0);
    mf_gguf_close(g1);
    return total;
}

/* For each mixture whose base type's quantizer takes importances (only
 * 256-blocks with big_blocks, which the 64-wide stories260K cannot have). */
static void check_effect(const char *model, const mf_imatrix *im, bool big_blocks) {
    char with[600], without[600];
    tmp_path(with, sizeof with, "with.gguf");
    tmp_path(without, sizeof without, "without.gguf");
    int tested = 0;
    for (int i = 0; mf_quant_mixture_at(i); i++) {
        const mf_quant_mixture *mx = mf_quant_mixture_at(i);
        const mf_type_traits *tr = mf_traits(mx->base);
        if (!tr || !tr->quantize || !plan_writable(model, mx->name)) continue;
        if ((mf_type_layout_of(mx->base)->block == 256) != big_blocks) continue;
        if (i > 0 && mf_quant_mixture_at(i - 1)->base == mx->base) continue; /* seen */
        if (!strcmp(mx->name, "q3_k") || !strcmp(mx->name, "q4_k") || !strcmp(mx->name, "q5_k"))
            continue; /* aliases */
        collected c = {0};
        mf_quantize_params p = {.type = mx->name, .imatrix = im, .n_threads = 2,
                                .report = on_report, .user = &c};
        CHECK(mf_quantize_file(model, with, &p) == MF_OK, "%s with: %s", mx->name, mf_last_error());
        p.imatrix = NULL;
        p.report = NULL;
        CHECK(mf_quantize_file(model, without, &p) == MF_OK, "%s without", mx->name);
        double r1, r0, e1 = weighted_error(model, with, im, &r1), e0 = weighted_error(model, without, im, &r0);
        printf("  %-7s importance-weighted error %.4g with the imatrix, %.4g without (%d tensors "
               "used it)\n", mx->name, e1, e0, c.n_imatrix);
        CHECK(c.n_imatrix > 0 && e1 > 0 && e1 < e0, "%s: %g with, %g without", mx->name, e1, e0);
        CHECK(fabs(r1 - c.sum_w2) <= 1e-6 * r1, "%s: report's weighted error %g, recomputed %g",
              mx->name, c.sum_w2, r1);
        tested++;
    }
    if (!tested) printf("skip: no quantizer takes importances yet\n");
    remove(with);
    remove(without);
}

/* synth-512's matrices are 256 wide: the K-types keep their 256-blocks */
static void test_imatrix_synth(void) {
    char yp[512];
    test_path(yp, sizeof yp, "models/synth-512-f16.gguf");
    int32_t ids[256];
    for (int i = 0; i < 256; i++) ids[i] = i ? (int32_t)((i * 131 + 7) % 512) : 1;
    mf_model *m;
    mf_imatrix *im = NULL;
    CHECK(mf_model_load(yp, NULL, &m) == MF_OK, "load");
    CHECK(mf_imatrix_collect(m, ids, 256, 128, 2, &im) == MF_OK, "collect: %s", mf_last_error());
    CHECK(mf_imatrix_count(im) == 29, "synth-512: %d entries", mf_imatrix_count(im));
    mf_model_free(m);
    if (im) check_effect(yp, im, true);
    mf_imatrix_free(im);
}

static void test_imatrix(void) {
    char sp[512], path[600];
    test_path(sp, sizeof sp, "models/stories260K.gguf");
    int32_t ids[300];
    int n = read_ids("reference/stories260K.story-ids.txt", ids, 300);
    mf_model *m;
    mf_imatrix *im = NULL;
    CHECK(mf_model_load(sp, NULL, &m) == MF_OK, "load");
    CHECK(mf_imatrix_collect(m, ids, n, 64, 2, &im) == MF_OK, "collect: %s", mf_last_error());
    int32_t bad[2] = {1, 512};
    mf_imatrix *none = NULL;
    CHECK(mf_imatrix_collect(m, ids, 0, 64, 2, &none) == MF_E_INVALID && !none, "no tokens");
    CHECK(mf_imatrix_collect(m, bad, 2, 64, 2, &none) == MF_E_INVALID && !none, "bad id");
    mf_model_free(m);
    if (!im) return;
    CHECK(mf_imatrix_chunks(im) == (n + 63) / 64, "%d windows", mf_imatrix_chunks(im));
    mf_imatrix_set_dataset(im, "story-ids");
    check_entries(im);
    check_first_layer(im, sp, ids, n);
    check_roundtrip(im);
    check_corrupt(tmp_path(path, sizeof path, "m.imatrix"));
    check_effect(sp, im, false);
    remove(path);
    mf_imatrix_free(im);
}

int main(void) {
    if (!test_shared()) {
        printf("skip: ../shared not found\n");
        return test_report("quantize");
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mf_quant_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        CHECK(0, "mkdtemp");
        return test_report("quantize");
    }
    char shared_in[512];
    uint64_t before = checksum(test_path(shared_in, sizeof shared_in, "models/stories260K.gguf"));
    test_plans();
    test_bytes();
    test_fallback_threads();
    test_failures();
    test_imatrix();
    test_imatrix_synth();
    test_kl();
    CHECK(checksum(shared_in) == before, "stories260K.gguf changed");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    CHECK(system(cmd) == 0, "cleanup");
    return test_report("quantize");
}
