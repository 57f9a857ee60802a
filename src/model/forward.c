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

/* cos/sin of every rotated pair for positions pos..pos+T-1: (T, rope_dim) */
static void rope_table(float *tab, int pos, int T, int rope_dim, float base) {
    float theta_scale = powf(base, -2.0f / (float)rope_dim);
    for (int t = 0; t < T; t++) {
        float theta = (float)(pos + t);
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
 * Dots and the weighted sum use llama.cpp's 16-lane order (tensor/vec.h):
 * lane l of the output accumulates the positions j = l mod 16. */
static void attend_one(mf_session *s, int layer, int t, int h, float *scores, float *lanes) {
    const mf_hparams *hp = &s->m->hp;
    int hd = hp->head_dim, kvh = h / (hp->n_heads / hp->n_kv_heads);
    int n_pos = s->pos + t + 1;
    size_t lbase = (size_t)layer * s->n_ctx * s->kv_dim;
    const float *q = s->q + ((size_t)t * hp->n_heads + h) * hd;
    const float *kc = s->k_cache + lbase + (size_t)kvh * hd;
    const float *vc = s->v_cache + lbase + (size_t)kvh * hd;
    float scale = 1.0f / sqrtf((float)hd), mx = -INFINITY;
    for (int j = 0; j < n_pos; j++) {
        scores[j] = mf_vec_dot16(hd, q, kc + (size_t)j * s->kv_dim) * scale;
        if (scores[j] > mx) mx = scores[j];
    }
    /* llama.cpp pads the cache view to 32 cells (masked: exp gives 0) and sums
     * the exponentials 16 at a time, each group tree-summed in float. */
    double sum = 0.0;
    for (int j0 = 0; j0 < n_pos; j0 += 16) {
        float grp[16] = {0};
        for (int j = j0; j < j0 + 16 && j < n_pos; j++) grp[j - j0] = scores[j] = expf(scores[j] - mx);
        sum += (double)mf_tree16(grp);
    }
    float inv = (float)(1.0 / sum);
    memset(lanes, 0, sizeof(float) * 16 * (size_t)hd);
    for (int j = 0; j < n_pos; j++)
        mf_vec_fma(hd, lanes + (size_t)(j % 16) * hd, vc + (size_t)j * s->kv_dim, scores[j] * inv);
    mf_vec_reduce16(hd, lanes, s->att + ((size_t)t * hp->n_heads + h) * hd);
}

static void attn_task(void *ctx, int ith, int nth) {
    attn_job *job = ctx;
    mf_session *s = job->s;
    int nh = s->m->hp.n_heads;
    int64_t lo, hi;
    mf_split((int64_t)job->T * nh, ith, nth, &lo, &hi);
    float *scores = s->scores + (size_t)ith * s->n_ctx;
    float *lanes = s->lanes + (size_t)ith * 16 * s->m->hp.head_dim;
    for (int64_t i = lo; i < hi; i++)
        attend_one(s, job->layer, (int)(i / nh), (int)(i % nh), scores, lanes);
}

static void matmul(mf_session *s, const mf_weight *w, const float *x, int T, float *y) {
    if (s->observe) s->observe(s->observe_user, w, x, T);
    mf_matmul(s->pool, w->data, w->type, w->n_in, w->n_out, x, T, y, s->mm_scratch);
}

static void attention_block(mf_session *s, int l, int T) {
    const mf_hparams *hp = &s->m->hp;
    const mf_layer *L = &s->m->layers[l];
    rmsnorm(s->xb, s->x, L->attn_norm, T, hp->dim, hp->norm_eps);
    matmul(s, &L->wq, s->xb, T, s->q);
    matmul(s, &L->wk, s->xb, T, s->k);
    matmul(s, &L->wv, s->xb, T, s->v);
    rope_apply(s->q, s->rope, T, hp->n_heads, hp->head_dim, hp->rope_dim);
    rope_apply(s->k, s->rope, T, hp->n_kv_heads, hp->head_dim, hp->rope_dim);
    size_t row = (size_t)s->kv_dim, base = ((size_t)l * s->n_ctx + (size_t)s->pos) * row;
    memcpy(s->k_cache + base, s->k, sizeof(float) * row * (size_t)T);
    memcpy(s->v_cache + base, s->v, sizeof(float) * row * (size_t)T);
    attn_job job = {s, l, T};
    mf_pool_run(s->pool, attn_task, &job);
    matmul(s, &L->wo, s->att, T, s->xb);
    size_t n = (size_t)T * hp->dim;
    for (size_t i = 0; i < n; i++) s->x[i] += s->xb[i];
}

static void ffn_block(mf_session *s, int l, int T) {
    const mf_hparams *hp = &s->m->hp;
    const mf_layer *L = &s->m->layers[l];
    rmsnorm(s->xb, s->x, L->ffn_norm, T, hp->dim, hp->norm_eps);
    matmul(s, &L->w_gate, s->xb, T, s->hb);
    matmul(s, &L->w_up, s->xb, T, s->hb2);
    size_t n = (size_t)T * hp->n_ff;
    for (size_t i = 0; i < n; i++) {
        float g = s->hb[i];
        s->hb[i] = g / (1.0f + expf(-g)) * s->hb2[i];
    }
    matmul(s, &L->w_down, s->hb, T, s->xb);
    n = (size_t)T * hp->dim;
    for (size_t i = 0; i < n; i++) s->x[i] += s->xb[i];
}

void mf_forward(mf_session *s, const int32_t *ids, int T, bool all_logits) {
    const mf_model *m = s->m;
    const mf_hparams *hp = &m->hp;
    for (int t = 0; t < T; t++)
        mf_get_row(m->tok_embd.data, m->tok_embd.type, hp->dim, ids[t], s->x + (size_t)t * hp->dim);
    rope_table(s->rope, s->pos, T, hp->rope_dim, hp->rope_base);
    for (int l = 0; l < hp->n_layers; l++) {
        attention_block(s, l, T);
        ffn_block(s, l, T);
    }
    int first = all_logits ? 0 : T - 1, rows = T - first;
    const float *xl = s->x + (size_t)first * hp->dim;
    rmsnorm(s->xb, xl, m->out_norm, rows, hp->dim, hp->norm_eps);
    matmul(s, &m->output, s->xb, rows, s->logits);
}
