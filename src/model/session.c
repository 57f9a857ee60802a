/* session.c — creating a session (KV cache + buffers, all through the
 * ledger, all sized up front) and evaluating batches of tokens. */
#include "model/session.h"

#include "tensor/tensor.h"

#include <stdlib.h>
#include <string.h>

static uint64_t max_scratch(const mf_model *m, int B) {
    const mf_weight *ws[] = {&m->output};
    uint64_t best = mf_matmul_scratch_bytes(ws[0]->type, ws[0]->n_in, B);
    for (int l = 0; l < m->hp.n_layers; l++) {
        const mf_layer *L = &m->layers[l];
        const mf_weight *lw[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up,
                                 &L->w_down};
        for (size_t i = 0; i < sizeof lw / sizeof lw[0]; i++) {
            uint64_t b = mf_matmul_scratch_bytes(lw[i]->type, lw[i]->n_in, B);
            if (b > best) best = b;
        }
    }
    return best;
}

/* Every buffer goes through here: allocated and charged, or (when only
 * measuring for the planner) counted. */
static mf_status salloc(mf_session *s, uint64_t bytes, mf_tag tag, void **p) {
    if (s->measure) {
        *p = NULL;
        return mf_add_ok(s->measured, bytes, &s->measured)
                   ? MF_OK : mf_errorf(MF_E_INVALID, "session size overflows");
    }
    return mf_alloc_p(&s->ledger, bytes, tag, p);
}

static mf_status alloc_f32(mf_session *s, float **p, uint64_t a, uint64_t b, mf_tag tag) {
    uint64_t n, bytes;
    if (!mf_mul_ok(a, b, &n) || !mf_mul_ok(n, sizeof(float), &bytes))
        return mf_errorf(MF_E_INVALID, "buffer size overflows");
    return salloc(s, bytes, tag, (void **)p);
}

static mf_status alloc_buffers(mf_session *s) {
    const mf_hparams *hp = &s->m->hp;
    uint64_t B = (uint64_t)s->n_batch, qd = (uint64_t)hp->n_heads * hp->head_dim;
    uint64_t kv = (uint64_t)hp->n_layers * (uint64_t)s->n_seq * (uint64_t)s->n_ctx;
    uint64_t kv_bytes, nth = (uint64_t)s->nth;
    if (!mf_mul_ok(kv, s->kv_row, &kv_bytes))
        return mf_errorf(MF_E_INVALID, "KV cache size overflows");
    TRY(salloc(s, kv_bytes, MF_TAG_KV, (void **)&s->k_cache));
    TRY(salloc(s, kv_bytes, MF_TAG_KV, (void **)&s->v_cache));
    TRY(salloc(s, nth * s->kv_head + 64, MF_TAG_SCRATCH, (void **)&s->qconv));
    TRY(alloc_f32(s, &s->vrow, nth, (uint64_t)hp->head_dim, MF_TAG_SCRATCH));
    TRY(alloc_f32(s, &s->x, B, (uint64_t)hp->dim, MF_TAG_ACT));
    TRY(alloc_f32(s, &s->xb, B, (uint64_t)hp->dim, MF_TAG_ACT));
    TRY(alloc_f32(s, &s->q, B, qd, MF_TAG_ACT));
    TRY(alloc_f32(s, &s->k, B, (uint64_t)s->kv_dim, MF_TAG_ACT));
    TRY(alloc_f32(s, &s->v, B, (uint64_t)s->kv_dim, MF_TAG_ACT));
    TRY(alloc_f32(s, &s->att, B, qd, MF_TAG_ACT));
    TRY(alloc_f32(s, &s->hb, B, (uint64_t)hp->n_ff, MF_TAG_ACT));
    TRY(alloc_f32(s, &s->hb2, B, (uint64_t)hp->n_ff, MF_TAG_ACT));
    TRY(alloc_f32(s, &s->rope, B, (uint64_t)hp->rope_dim, MF_TAG_ACT));
    TRY(salloc(s, sizeof(int) * (B * 2 + (uint64_t)s->n_seq), MF_TAG_MISC, (void **)&s->tok_seq));
    if (s->tok_seq) s->tok_pos = s->tok_seq + B, s->seq_pos = s->tok_seq + 2 * B;
    TRY(alloc_f32(s, &s->scores, nth, (uint64_t)s->n_ctx, MF_TAG_SCRATCH));
    TRY(alloc_f32(s, &s->lanes, nth * 16, (uint64_t)hp->head_dim, MF_TAG_SCRATCH));
    TRY(alloc_f32(s, &s->logits, B, (uint64_t)hp->n_vocab, MF_TAG_LOGITS));
    return salloc(s, max_scratch(s->m, s->n_batch) + 64, MF_TAG_SCRATCH, &s->mm_scratch);
}

/* The KV cache type: f32 (default), f16 or q8_0; a quantized cache needs
 * heads that are whole blocks, since each head is dotted on its own. */
static mf_status pick_kv_type(mf_session *s, const char *name) {
    s->kv_type = name ? mf_type_from_name(name) : MF_TYPE_F32;
    if (s->kv_type != MF_TYPE_F32 && s->kv_type != MF_TYPE_F16 && s->kv_type != MF_TYPE_Q8_0)
        return mf_errorf(MF_E_INVALID, "KV cache type '%s' is not one of f32, f16, q8_0", name);
    const mf_type_traits *vt = mf_traits(mf_traits(s->kv_type)->vec_dot_type);
    if (!mf_type_row_bytes(s->kv_type, (uint64_t)s->m->hp.head_dim, &s->kv_head) || !vt)
        return mf_errorf(MF_E_INVALID, "KV cache type %s needs a head size that is a multiple "
                         "of %d (this model's is %d)", name,
                         mf_type_layout_of(s->kv_type)->block, s->m->hp.head_dim);
    s->kv_row = s->kv_head * (uint64_t)s->m->hp.n_kv_heads;
    return MF_OK;
}

uint64_t mf_session_kv_bytes(const mf_session *s) { return s->ledger.used[MF_TAG_KV]; }

/* Fill the fields every session needs from the parameters. */
static mf_status session_setup(mf_session *s, mf_model *m, const mf_session_params *p) {
    if (p->n_ctx < 0 || p->n_batch < 0 || p->n_threads < 0)
        return mf_errorf(MF_E_INVALID, "negative context, batch or thread count");
    if (p->n_threads > 256) return mf_errorf(MF_E_INVALID, "thread count %d is too large", p->n_threads);
    if (p->n_seq < 0 || p->n_seq > 4096)
        return mf_errorf(MF_E_INVALID, "%d sequences: must be 1..4096", p->n_seq);
    s->n_seq = p->n_seq ? p->n_seq : 1;
    s->m = m;
    s->n_ctx = p->n_ctx ? p->n_ctx : m->hp.n_ctx_train;
    s->n_batch = p->n_batch ? p->n_batch : 512;
    /* a batch never needs more tokens than all sequences' contexts hold */
    if ((int64_t)s->n_batch > (int64_t)s->n_ctx * s->n_seq) s->n_batch = s->n_ctx * s->n_seq;
    s->nth = p->n_threads ? p->n_threads : mf_n_cores();
    s->kv_dim = m->hp.n_kv_heads * m->hp.head_dim;
    return pick_kv_type(s, p->kv_type);
}

mf_status mf_session_measure(mf_model *m, const mf_session_params *p, uint64_t *bytes,
                             mf_session_params *eff) {
    mf_session s;
    memset(&s, 0, sizeof s);
    s.measure = true;
    TRY(session_setup(&s, m, p));
    TRY(alloc_buffers(&s));
    *bytes = s.measured;
    if (eff) {
        *eff = *p;
        eff->n_ctx = s.n_ctx;
        eff->n_batch = s.n_batch;
        eff->n_threads = s.nth;
    }
    return MF_OK;
}

mf_status mf_session_new(mf_model *m, const mf_session_params *p, const mf_provider *prov,
                         mf_ledger *ledger_init, mf_session **out) {
    *out = NULL;
    mf_session *s = calloc(1, sizeof *s);
    if (!s) {
        if (prov->destroy) prov->destroy(prov->ctx);
        return mf_errorf(MF_E_NOMEM, "out of memory");
    }
    s->prov = *prov;
    if (ledger_init) s->ledger = *ledger_init;
    else mf_ledger_init(&s->ledger, 0);
    mf_status st = session_setup(s, m, p);
    if (st == MF_OK) st = mf_pool_create(s->nth, &s->pool);
    if (st == MF_OK) st = alloc_buffers(s);
    if (st != MF_OK) {
        mf_session_free(s);
        return st;
    }
    *out = s;
    return MF_OK;
}

void mf_session_free(mf_session *s) {
    if (!s) return;
    mf_free(&s->ledger, s->k_cache);
    mf_free(&s->ledger, s->v_cache);
    mf_free(&s->ledger, s->qconv);
    mf_free(&s->ledger, s->tok_seq);
    float **bufs[] = {&s->vrow, &s->x, &s->xb, &s->q, &s->k, &s->v,
                      &s->att, &s->hb, &s->hb2, &s->rope, &s->scores, &s->lanes, &s->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) mf_free(&s->ledger, *bufs[i]);
    mf_free(&s->ledger, s->mm_scratch);
    mf_pool_free(s->pool);
    if (s->prov.destroy) s->prov.destroy(s->prov.ctx);
    if (s->plan_free) s->plan_free(s->plan);
    free(s);
}

static mf_status check_ids(const mf_session *s, const int32_t *ids, int n) {
    if (n <= 0) return mf_errorf(MF_E_INVALID, "nothing to evaluate (%d tokens)", n);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->m->hp.n_vocab)
            return mf_errorf(MF_E_INVALID, "token id %d is outside the vocabulary (0..%d)",
                             ids[i], s->m->hp.n_vocab - 1);
    return MF_OK;
}

mf_status mf_session_eval(mf_session *s, const int32_t *ids, int n, int all_logits) {
    TRY(check_ids(s, ids, n));
    if (all_logits && n > s->n_batch)
        return mf_errorf(MF_E_INVALID, "%d tokens with all logits exceed the batch of %d", n,
                         s->n_batch);
    if (n > s->n_ctx - s->seq_pos[0])
        return mf_errorf(MF_E_CONTEXT_FULL, "context full: %d tokens at position %d exceed "
                         "the context of %d", n, s->seq_pos[0], s->n_ctx);
    for (int done = 0; done < n;) {
        int chunk = n - done < s->n_batch ? n - done : s->n_batch;
        bool last = done + chunk == n;
        for (int t = 0; t < chunk; t++) s->tok_seq[t] = 0, s->tok_pos[t] = s->seq_pos[0] + t;
        TRY(mf_forward(s, ids + done, chunk, all_logits && last));
        s->seq_pos[0] += chunk;
        s->pos = s->seq_pos[0];
        s->n_last = chunk;
        s->logits_rows = all_logits ? chunk : 1;
        done += chunk;
    }
    return MF_OK;
}

mf_status mf_session_eval_seqs(mf_session *s, const int32_t *ids, const int32_t *seq, int n) {
    TRY(check_ids(s, ids, n));
    if (n > s->n_batch)
        return mf_errorf(MF_E_INVALID, "%d tokens exceed the batch of %d", n, s->n_batch);
    for (int t = 0; t < n; t++) {
        if (seq[t] < 0 || seq[t] >= s->n_seq)
            return mf_errorf(MF_E_INVALID, "sequence %d is outside 0..%d", seq[t], s->n_seq - 1);
        int before = 0;
        for (int u = 0; u < t; u++) before += seq[u] == seq[t];
        s->tok_seq[t] = seq[t];
        s->tok_pos[t] = s->seq_pos[seq[t]] + before;
        if (s->tok_pos[t] >= s->n_ctx)
            return mf_errorf(MF_E_CONTEXT_FULL, "context full: sequence %d has no room past "
                             "position %d", seq[t], s->n_ctx);
    }
    TRY(mf_forward(s, ids, n, true));
    for (int t = 0; t < n; t++) s->seq_pos[seq[t]]++;
    s->pos = s->seq_pos[0];
    s->n_last = n;
    s->logits_rows = n;
    return MF_OK;
}

int mf_session_seq_pos(const mf_session *s, int seq) {
    return seq >= 0 && seq < s->n_seq ? s->seq_pos[seq] : -1;
}

void mf_session_seq_reset(mf_session *s, int seq) {
    if (seq >= 0 && seq < s->n_seq) s->seq_pos[seq] = 0;
    s->pos = s->seq_pos[0];
}

const float *mf_session_logits(const mf_session *s, int i) {
    if (s->n_last == 0) return NULL;
    if (i < 0) i = s->n_last - 1;
    if (i >= s->n_last) return NULL;
    if (s->logits_rows == 1) return i == s->n_last - 1 ? s->logits : NULL;
    return s->logits + (size_t)i * (size_t)s->m->hp.n_vocab;
}

void mf_session_set_provider(mf_session *s, const mf_provider *prov) {
    if (s->prov.destroy) s->prov.destroy(s->prov.ctx);
    s->prov = *prov;
}

void mf_session_set_observer(mf_session *s, mf_observe_fn fn, void *user) {
    s->observe = fn;
    s->observe_user = user;
}

int mf_session_pos(const mf_session *s) { return s->pos; }
int mf_session_n_ctx(const mf_session *s) { return s->n_ctx; }
int mf_session_n_batch(const mf_session *s) { return s->n_batch; }

void mf_session_reset(mf_session *s) {
    for (int i = 0; i < s->n_seq; i++) s->seq_pos[i] = 0;
    s->pos = 0;
    s->n_last = 0;
}

/* ---- reading the weights alone: the ceiling of a memory-bound decode ---- */

typedef struct {
    const uint8_t *p;
    uint64_t n;
    uint64_t sums[256];
} read_job;

static void read_task(void *ctx, int ith, int nth) {
    read_job *j = ctx;
    int64_t lo, hi;
    mf_split((int64_t)(j->n / 64), ith, nth, &lo, &hi); /* 64-byte lines */
    j->sums[ith] += mf_read_sum(j->p + (uint64_t)lo * 64, (uint64_t)(hi - lo) * 64);
}

mf_status mf_session_read_weights(mf_session *s, int passes, double *gbs) {
    const mf_provider *pv = &s->prov;
    int n_w = s->m->hp.n_layers * MF_LAYER_MATS + 1;
    read_job j = {0};
    double best = 0;
    for (int pass = 0; pass < (passes > 0 ? passes : 1); pass++) {
        uint64_t bytes = 0;
        double t0 = mf_time_s();
        for (int id = 0; id < n_w; id++) {
            const mf_weight *w = mf_model_weight(s->m, id);
            for (int p = 0; p < pv->n_parts(pv->ctx, w); p++) {
                mf_weight v;
                int64_t r0;
                uint64_t row;
                TRY(pv->acquire(pv->ctx, w, p, &v, &r0));
                mf_type_row_bytes(v.type, (uint64_t)v.n_in, &row);
                j.p = v.data;
                j.n = row * (uint64_t)v.n_out;
                mf_pool_run(s->pool, read_task, &j);
                pv->release(pv->ctx, w, p);
                bytes += j.n / 64 * 64;
            }
        }
        double g = (double)bytes / (mf_time_s() - t0) / 1e9;
        if (g > best) best = g;
    }
    *gbs = best;
    return MF_OK;
}
