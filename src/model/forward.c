/* forward.c — the LLaMA forward pass over a batch of tokens.
 *
 * x = embed(ids); per layer: x += Wo·attn(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x));
 * x += Wdown·(silu(Wgate·n(x)) * Wup·n(x)); logits = Wout·n(x), with n = RMSNorm
 * times the layer's weight. The arithmetic follows llama.cpp's CPU graph for
 * `llama` (RMSNorm summed in double, RoPE on adjacent pairs with the angle
 * advanced by repeated multiplication, softmax summed in double) so logits
 * agree with its references to float rounding. All tokens of the batch go
 * through each matmul together: a weight row is read once per batch. */
#include "model/session.h"

#include "tensor/tensor.h"
#include "tensor/vec.h"

#include <math.h>
#include <string.h>

/* out(T, n) = x(T, n) / rms(x) * w */
static void rmsnorm(float *out, const float *x, const float *w, int T, int n, float eps) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * n;
        float *ot = out + (size_t)t * n;
        double sum = 0.0;
        for (int i = 0; i < n; i++) sum += (double)(xt[i] * xt[i]);
        float mean = (float)(sum / n);
        float scale = 1.0f / sqrtf(mean + eps);
        for (int i = 0; i < n; i++) ot[i] = (xt[i] * scale) * w[i];
    }
}

/* cos/sin of every rotated pair for each token's position: (T, rope_dim) */
static void rope_table(float *tab, const int *pos, int T, int rope_dim, float base) {
    float theta_scale = powf(base, -2.0f / (float)rope_dim);
    for (int t = 0; t < T; t++) {
        float theta = (float)pos[t];
        float *row = tab + (size_t)t * rope_dim;
        for (int i = 0; i < rope_dim; i += 2) {
            /* correctly rounded, whatever the platform's cosf/sinf do */
            row[i] = (float)cos((double)theta);
            row[i + 1] = (float)sin((double)theta);
            theta *= theta_scale;
        }
    }
}

/* Rotate adjacent pairs (x[i], x[i+1]) of the first rope_dim dims of every head. */
static void rope_apply(float *x, const float *tab, int T, int n_heads, int head_dim,
                       int rope_dim) {
    for (int t = 0; t < T; t++) {
        const float *cs = tab + (size_t)t * rope_dim;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * head_dim;
            for (int i = 0; i < rope_dim; i += 2) {
                float c = cs[i], s = cs[i + 1], x0 = v[i], x1 = v[i + 1];
                v[i] = x0 * c - x1 * s;
                v[i + 1] = x0 * s + x1 * c;
            }
        }
    }
}

typedef struct {
    mf_session *s;
    int layer, T;
} attn_job;

/* One (token, head): softmax(q·K^T / sqrt(d)) · V over positions 0..pos_t.
 * As llama.cpp does with a cache of type T, q is converted to T's dot type
 * and each score is T's vec_dot (f32/f16: 16 lanes; q8_0: 8 lanes per
 * block). The weighted sum of V rows follows the 16-lane order too: lane l
 * accumulates the positions j = l mod 16 (tensor/vec.h). */
typedef struct {
    float *scores, *lanes, *vrow;
    uint8_t *qconv;
} attn_scratch;

static void attend_one(mf_session *s, int layer, int t, int h, const attn_scratch *a) {
    const mf_hparams *hp = &s->m->hp;
    const mf_type_traits *kt = mf_traits(s->kv_type);
    const mf_type_traits *qt = mf_traits(kt->vec_dot_type);
    int hd = hp->head_dim, kvh = h / (hp->n_heads / hp->n_kv_heads), n_pos = s->tok_pos[t] + 1;
    uint64_t lbase = ((uint64_t)layer * (uint64_t)s->n_seq + (uint64_t)s->tok_seq[t]) *
                         (uint64_t)s->n_ctx * s->kv_row + (uint64_t)kvh * s->kv_head;
    const uint8_t *kc = s->k_cache + lbase, *vc = s->v_cache + lbase;
    const float *q = s->q + ((size_t)t * hp->n_heads + h) * hd;
    const void *qx = q;
    if (s->kv_type != MF_TYPE_F32) {
        (qt->act_from_float ? qt->act_from_float : qt->from_float)(q, a->qconv, hd);
        qx = a->qconv;
    }
    float scale = 1.0f / sqrtf((float)hd), mx = -INFINITY, *sc = a->scores;
    bool f32 = s->kv_type == MF_TYPE_F32;
    /* f32 cache: the keys are rows of floats, scored in one call (the same
     * 16-lane dot as the type's vec_dot) */
    if (f32) mf_vec_dot16_rows(hd, q, (const float *)(const void *)kc, (int64_t)(s->kv_row / 4), n_pos, sc);
    for (int j = 0; j < n_pos; j++) {
        float d = sc[j];
        if (!f32) kt->vec_dot(hd, &d, kc + (uint64_t)j * s->kv_row, qx);
        sc[j] = d * scale;
        if (sc[j] > mx) mx = sc[j];
    }
    /* llama.cpp pads the cache view to 32 cells (masked: exp gives 0) and sums
     * the exponentials 16 at a time, each group tree-summed in float. */
    double sum = 0.0;
    for (int j0 = 0; j0 < n_pos; j0 += 16) {
        float grp[16] = {0};
        for (int j = j0; j < j0 + 16 && j < n_pos; j++) grp[j - j0] = sc[j] = expf(sc[j] - mx);
        sum += (double)mf_tree16(grp);
    }
    float inv = (float)(1.0 / sum);
    float *out = s->att + ((size_t)t * hp->n_heads + h) * hd;
    if (f32) {
        /* probabilities in place, then lane by lane over the value rows */
        for (int j = 0; j < n_pos; j++) sc[j] *= inv;
        mf_vec_fma_lanes16(hd, (const float *)(const void *)vc, (int64_t)(s->kv_row / 4), sc, n_pos, a->lanes);
        mf_vec_reduce16(hd, a->lanes, out);
        return;
    }
    memset(a->lanes, 0, sizeof(float) * 16 * (size_t)hd);
    for (int j = 0; j < n_pos; j++) {
        const uint8_t *vr = vc + (uint64_t)j * s->kv_row;
        const float *v = (const float *)(const void *)vr;
        float p = sc[j] * inv;
        if (s->kv_type != MF_TYPE_F32) {
            kt->to_float(vr, a->vrow, hd);
            v = a->vrow;
            /* an f16 V makes llama.cpp round the probabilities to f16 too */
            if (s->kv_type == MF_TYPE_F16) p = mf_f16_to_f32(mf_f32_to_f16(p));
        }
        mf_vec_fma(hd, a->lanes + (size_t)(j % 16) * hd, v, p);
    }
    mf_vec_reduce16(hd, a->lanes, out);
}

static void attn_task(void *ctx, int ith, int nth) {
    attn_job *job = ctx;
    mf_session *s = job->s;
    int nh = s->m->hp.n_heads;
    int64_t lo, hi;
    mf_split((int64_t)job->T * nh, ith, nth, &lo, &hi);
    int hd = s->m->hp.head_dim;
    attn_scratch a = {s->scores + (size_t)ith * s->n_ctx, s->lanes + (size_t)ith * 16 * hd,
                      s->vrow + (size_t)ith * hd, s->qconv + (size_t)ith * s->kv_head};
    for (int64_t i = lo; i < hi; i++) attend_one(s, job->layer, (int)(i / nh), (int)(i % nh), &a);
}

/* y(T, w->n_out) = x(T, w->n_in) · w^T, part by part as the provider hands
 * the matrix out. Errors (a failed read) are kept in s->fwd_error and end
 * the pass at the next check. */
static void matmul(mf_session *s, const mf_weight *w, const float *x, int T, float *y) {
    if (s->observe) s->observe(s->observe_user, w, x, T);
    const mf_provider *pv = &s->prov;
    int np = pv->n_parts(pv->ctx, w);
    for (int p = 0; p < np && s->fwd_error == MF_OK; p++) {
        mf_weight v;
        int64_t r0;
        s->fwd_error = pv->acquire(pv->ctx, w, p, &v, &r0);
        if (s->fwd_error != MF_OK) return;
        (v.packed ? mf_matmul_packed_ld : mf_matmul_ld)(s->pool, v.data, v.type, v.n_in, v.n_out, x, T,
                                                        y + r0, w->n_out, s->mm_scratch);
        pv->release(pv->ctx, w, p);
    }
}

/* Append this batch's K and V rows to the cache, converted to its type the
 * way llama.cpp's copy into a quantized cache converts them. */
static void store_kv(mf_session *s, int l, int T) {
    const mf_type_traits *kt = mf_traits(s->kv_type);
    mf_from_float_fn conv = kt->act_from_float ? kt->act_from_float : kt->from_float;
    for (int t = 0; t < T; t++) {
        uint64_t cell = ((uint64_t)l * (uint64_t)s->n_seq + (uint64_t)s->tok_seq[t]) *
                            (uint64_t)s->n_ctx + (uint64_t)s->tok_pos[t];
        uint8_t *kd = s->k_cache + cell * s->kv_row, *vd = s->v_cache + cell * s->kv_row;
        const float *k = s->k + (size_t)t * s->kv_dim, *v = s->v + (size_t)t * s->kv_dim;
        if (s->kv_type == MF_TYPE_F32) {
            memcpy(kd, k, sizeof(float) * (size_t)s->kv_dim);
            memcpy(vd, v, sizeof(float) * (size_t)s->kv_dim);
        } else {
            conv(k, kd, s->kv_dim);
            conv(v, vd, s->kv_dim);
        }
    }
}

static void attention_block(mf_session *s, const mf_layer *L, int l, int T) {
    const mf_hparams *hp = &s->m->hp;
    rmsnorm(s->xb, s->x, L->attn_norm, T, hp->dim, hp->norm_eps);
    matmul(s, &L->wq, s->xb, T, s->q);
    matmul(s, &L->wk, s->xb, T, s->k);
    matmul(s, &L->wv, s->xb, T, s->v);
    rope_apply(s->q, s->rope, T, hp->n_heads, hp->head_dim, hp->rope_dim);
    rope_apply(s->k, s->rope, T, hp->n_kv_heads, hp->head_dim, hp->rope_dim);
    store_kv(s, l, T);
    attn_job job = {s, l, T};
    mf_pool_run(s->pool, attn_task, &job);
    matmul(s, &L->wo, s->att, T, s->xb);
    size_t n = (size_t)T * hp->dim;
    for (size_t i = 0; i < n; i++) s->x[i] += s->xb[i];
}

/* hb = silu(hb) * hb2 over the pool (expf is most of a decode step's serial
 * work otherwise); each element's value does not depend on the split. */
typedef struct { float *g, *u; size_t n; } swiglu_job;

static void swiglu_task(void *ctx, int ith, int nth) {
    const swiglu_job *j = ctx;
    int64_t lo, hi;
    mf_split((int64_t)j->n, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        float g = j->g[i];
        j->g[i] = g / (1.0f + expf(-g)) * j->u[i];
    }
}

static void ffn_block(mf_session *s, const mf_layer *L, int T) {
    const mf_hparams *hp = &s->m->hp;
    rmsnorm(s->xb, s->x, L->ffn_norm, T, hp->dim, hp->norm_eps);
    matmul(s, &L->w_gate, s->xb, T, s->hb);
    matmul(s, &L->w_up, s->xb, T, s->hb2);
    swiglu_job sj = {s->hb, s->hb2, (size_t)T * hp->n_ff};
    mf_pool_run(s->pool, swiglu_task, &sj);
    matmul(s, &L->w_down, s->hb, T, s->xb);
    size_t n = (size_t)T * hp->dim;
    for (size_t i = 0; i < n; i++) s->x[i] += s->xb[i];
}

mf_status mf_forward(mf_session *s, const int32_t *ids, int T, bool all_logits) {
    const mf_model *m = s->m;
    const mf_hparams *hp = &m->hp;
    const mf_provider *pv = &s->prov;
    s->fwd_error = MF_OK;
    for (int t = 0; t < T; t++) TRY(pv->embd_row(pv->ctx, ids[t], s->x + (size_t)t * hp->dim));
    rope_table(s->rope, s->tok_pos, T, hp->rope_dim, hp->rope_base);
    for (int l = 0; l < hp->n_layers && s->fwd_error == MF_OK; l++) {
        attention_block(s, &m->layers[l], l, T);
        if (s->fwd_error == MF_OK) ffn_block(s, &m->layers[l], T);
    }
    if (s->fwd_error != MF_OK) return s->fwd_error;
    int first = all_logits ? 0 : T - 1, rows = T - first;
    const float *xl = s->x + (size_t)first * hp->dim;
    rmsnorm(s->xb, xl, m->out_norm, rows, hp->dim, hp->norm_eps);
    matmul(s, &m->output, s->xb, rows, s->logits);
    return s->fwd_error;
}
