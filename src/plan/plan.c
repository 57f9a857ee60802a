/* plan.c — the planner: what is resident, what streams, how big the prefill
 * chunk is, and the predicted peak and speed (see plan.h). */
#include "plan/plan.h"

#include "tensor/tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024.0 * 1024.0)

/* A resident unit is one ledger block: the bytes plus the block header. */
static uint64_t resident_cost(uint64_t b) { return b + 64; }

/* File range of a unit: the span of its matrices in the file. */
static void unit_range(const mf_model *m, int u, uint64_t *off, uint64_t *len) {
    const mf_layer *L = &m->layers[u < m->hp.n_layers ? u : 0];
    const mf_weight *ws[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    int n = 7;
    if (u == m->hp.n_layers) ws[0] = &m->output, n = 1;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < n; i++) {
        uint64_t row, o = (uint64_t)((const uint8_t *)ws[i]->data - m->file->base);
        mf_type_row_bytes(ws[i]->type, (uint64_t)ws[i]->n_in, &row);
        if (o < lo) lo = o;
        if (o + row * (uint64_t)ws[i]->n_out > hi) hi = o + row * (uint64_t)ws[i]->n_out;
    }
    *off = lo;
    *len = hi - lo;
}

/* Residency, largest units first, while the rest still fits with n_buf
 * buffers for the largest unit left streaming. Returns false if even
 * everything streamed does not fit in avail. */
static bool choose_resident(mf_plan *pl, uint64_t avail) {
    memset(pl->resident_unit, 0, sizeof(bool) * (size_t)pl->n_units);
    pl->resident = 0;
    for (;;) {
        int best = -1;
        uint64_t max_left = 0, second = 0;
        for (int u = 0; u < pl->n_units; u++) {
            if (pl->resident_unit[u]) continue;
            if (best < 0 || pl->unit_len[u] > pl->unit_len[best]) {
                second = max_left;
                best = u;
                max_left = pl->unit_len[u];
            } else if (pl->unit_len[u] > second) second = pl->unit_len[u];
        }
        if (best < 0) break; /* all resident */
        uint64_t with = pl->resident + resident_cost(pl->unit_len[best]);
        uint64_t bufs = second ? (uint64_t)pl->n_buf * mf_stream_buffer_bytes(second) : 0;
        if (with + bufs > avail) break;
        pl->resident_unit[best] = true;
        pl->resident = with;
    }
    uint64_t max_streamed = 0;
    pl->n_streamed = 0;
    pl->streamed_bytes = 0;
    for (int u = 0; u < pl->n_units; u++) {
        if (pl->resident_unit[u]) continue;
        pl->n_streamed++;
        pl->streamed_bytes += pl->unit_len[u];
        if (pl->unit_len[u] > max_streamed) max_streamed = pl->unit_len[u];
    }
    pl->stream_bufs = pl->n_streamed ? (uint64_t)pl->n_buf * mf_stream_buffer_bytes(max_streamed) : 0;
    return pl->resident + pl->stream_bufs <= avail;
}

static void predict(mf_plan *pl, const mf_model *m) {
    mf_machine_load(&pl->disk_gbs, &pl->mem_gbs, &pl->gflops);
    double stream_s = (double)pl->streamed_bytes / (pl->disk_gbs * 1e9);
    double mem_s = (double)pl->weight_bytes / (pl->mem_gbs * 1e9);
    /* one decoding step evaluates a token of every sequence in one pass */
    double n_seq = pl->eff.n_seq > 0 ? pl->eff.n_seq : 1;
    pl->pred_decode = n_seq / (stream_s > mem_s ? stream_s : mem_s);
    double flops = 0;
    for (int u = 0; u < m->hp.n_layers; u++) {
        const mf_layer *L = &m->layers[u];
        const mf_weight *ws[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) flops += 2.0 * (double)ws[i]->n_in * (double)ws[i]->n_out;
    }
    flops += 2.0 * (double)m->output.n_in * (double)m->output.n_out;
    double B = pl->eff.n_batch, compute_s = B * flops / (pl->gflops * 1e9) + mem_s;
    pl->pred_prefill = B / (stream_s > compute_s ? stream_s : compute_s);
}

static mf_status no_fit(const mf_plan *pl, uint64_t fixed, uint64_t max_unit) {
    uint64_t need = fixed + (uint64_t)pl->n_buf * mf_stream_buffer_bytes(max_unit);
    const char *what = "the stream buffers (two copies of the largest layer)";
    uint64_t part = (uint64_t)pl->n_buf * mf_stream_buffer_bytes(max_unit);
    if (pl->kv > part) what = "the KV cache (lower -c or use --kv-type f16/q8_0)", part = pl->kv;
    if (pl->base > part) what = "the process itself (code, model metadata, tokenizer)", part = pl->base;
    return mf_errorf(MF_E_BUDGET, "a budget of %.1f MiB is too small: the smallest that works "
                     "is %.1f MiB, dominated by %s (%.1f MiB)", pl->budget / MIB, need / MIB,
                     what, part / MIB);
}

/* Session buffers for batch B; shrinks B until the fixed parts leave room. */
static mf_status fit_batch(mf_plan *pl, mf_model *m, const mf_session_params *p,
                           uint64_t max_unit, uint64_t *fixed) {
    mf_session_params q = *p;
    for (;;) {
        TRY(mf_session_measure(m, &q, &pl->session, &pl->eff));
        *fixed = pl->base + pl->session + pl->slack;
        uint64_t bufs = (uint64_t)pl->n_buf * mf_stream_buffer_bytes(max_unit);
        if (*fixed + bufs <= pl->budget || pl->eff.n_batch <= 1) return MF_OK;
        q.n_batch = pl->eff.n_batch / 2;
    }
}

mf_status mf_plan_make(mf_model *m, const mf_session_params *p, mf_plan *pl) {
    memset(pl, 0, sizeof *pl);
    pl->budget = p->mem_budget;
    pl->n_units = m->hp.n_layers + 1;
    pl->n_buf = 2;
    pl->unit_off = calloc((size_t)pl->n_units, sizeof(uint64_t));
    pl->unit_len = calloc((size_t)pl->n_units, sizeof(uint64_t));
    pl->resident_unit = calloc((size_t)pl->n_units, sizeof(bool));
    if (!pl->unit_off || !pl->unit_len || !pl->resident_unit)
        return mf_errorf(MF_E_NOMEM, "out of memory");
    uint64_t max_unit = 0;
    for (int u = 0; u < pl->n_units; u++) {
        unit_range(m, u, &pl->unit_off[u], &pl->unit_len[u]);
        pl->weight_bytes += pl->unit_len[u];
        if (pl->unit_len[u] > max_unit) max_unit = pl->unit_len[u];
    }
    pl->base = mf_current_rss();
    int nth = p->n_threads ? p->n_threads : mf_n_cores();
    pl->slack = (uint64_t)(1 << 20) + (uint64_t)(nth + 1) * (128u << 10);
    uint64_t fixed;
    TRY(fit_batch(pl, m, p, max_unit, &fixed));
    uint64_t head = 0;
    mf_type_row_bytes(mf_type_from_name(p->kv_type ? p->kv_type : "f32"),
                      (uint64_t)m->hp.head_dim, &head);
    pl->kv = 2 * (uint64_t)m->hp.n_layers * (uint64_t)pl->eff.n_ctx * head *
             (uint64_t)m->hp.n_kv_heads * (uint64_t)(p->n_seq > 0 ? p->n_seq : 1);
    if (fixed > pl->budget || !choose_resident(pl, pl->budget - fixed))
        return no_fit(pl, fixed, max_unit);
    pl->peak = fixed + pl->resident + pl->stream_bufs;
    predict(pl, m);
    return MF_OK;
}

void mf_plan_clear(mf_plan *pl) {
    free(pl->unit_off);
    free(pl->unit_len);
    free(pl->resident_unit);
    memset(pl, 0, sizeof *pl);
}
