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

static mf_status alloc_units(mf_plan *pl, int n) {
    free(pl->unit_off), free(pl->unit_len), free(pl->unit_wid), free(pl->unit_row0);
    free(pl->unit_rows), free(pl->resident_unit);
    pl->unit_off = calloc((size_t)n, sizeof(uint64_t));
    pl->unit_len = calloc((size_t)n, sizeof(uint64_t));
    pl->unit_wid = calloc((size_t)n, sizeof(int));
    pl->unit_row0 = calloc((size_t)n, sizeof(int64_t));
    pl->unit_rows = calloc((size_t)n, sizeof(int64_t));
    pl->resident_unit = calloc((size_t)n, sizeof(bool));
    if (!pl->unit_off || !pl->unit_len || !pl->unit_wid || !pl->unit_row0 || !pl->unit_rows ||
        !pl->resident_unit)
        return mf_errorf(MF_E_NOMEM, "out of memory");
    return MF_OK;
}

/* Split every matrix into row ranges of at most cap bytes (at least a row). */
static mf_status build_units(mf_plan *pl, const mf_model *m, uint64_t cap) {
    int n = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) TRY(alloc_units(pl, n));
        n = 0;
        pl->weight_bytes = 0;
        for (int id = 0; id < pl->n_weights; id++) {
            const mf_weight *w = mf_model_weight(m, id);
            uint64_t row;
            mf_type_row_bytes(w->type, (uint64_t)w->n_in, &row);
            int64_t per = cap / row ? (int64_t)(cap / row) : 1;
            /* whole groups of the packed layout, so resident parts can be packed */
            int pr = mf_traits(w->type) ? mf_traits(w->type)->pack_rows : 0;
            if (pr > 0 && per >= pr) per -= per % pr;
            uint64_t off = (uint64_t)((const uint8_t *)w->data - m->file->base);
            pl->w_first[id] = n;
            for (int64_t r = 0; r < w->n_out; r += per, n++) {
                int64_t rows = w->n_out - r < per ? w->n_out - r : per;
                if (pass == 1) {
                    pl->unit_off[n] = off + (uint64_t)r * row;
                    pl->unit_len[n] = (uint64_t)rows * row;
                    pl->unit_wid[n] = id, pl->unit_row0[n] = r, pl->unit_rows[n] = rows;
                }
                pl->weight_bytes += (uint64_t)rows * row;
            }
            pl->w_parts[id] = n - pl->w_first[id];
        }
    }
    pl->n_units = n;
    pl->part_cap = cap;
    return MF_OK;
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
    for (int id = 0; id < pl->n_weights; id++) {
        const mf_weight *w = mf_model_weight(m, id);
        flops += 2.0 * (double)w->n_in * (double)w->n_out;
    }
    double B = pl->eff.n_batch, compute_s = B * flops / (pl->gflops * 1e9) + mem_s;
    pl->pred_prefill = B / (stream_s > compute_s ? stream_s : compute_s);
}

static mf_status no_fit(const mf_plan *pl, uint64_t fixed, uint64_t max_unit) {
    uint64_t need = fixed + (uint64_t)pl->n_buf * mf_stream_buffer_bytes(max_unit);
    const char *what = "the stream buffers";
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

static uint64_t largest_unit(const mf_plan *pl) {
    uint64_t mx = 0;
    for (int u = 0; u < pl->n_units; u++) mx = pl->unit_len[u] > mx ? pl->unit_len[u] : mx;
    return mx;
}

/* Units as big as possible (fewer, larger reads) while the stream buffers
 * stay under a quarter of the budget; smaller units when they must. */
static mf_status plan_units(mf_plan *pl, mf_model *m, const mf_session_params *p,
                            uint64_t *fixed) {
    for (uint64_t cap = 64ull << 20;; cap /= 2) {
        TRY(build_units(pl, m, cap));
        uint64_t mu = largest_unit(pl), bufs = (uint64_t)pl->n_buf * mf_stream_buffer_bytes(mu);
        TRY(fit_batch(pl, m, p, mu, fixed));
        bool last = cap <= (256u << 10);
        if (last || (*fixed + bufs <= pl->budget && bufs <= pl->budget / 4)) {
            if (*fixed > pl->budget || !choose_resident(pl, pl->budget - *fixed)) {
                if (last) return no_fit(pl, *fixed, mu);
                continue;
            }
            return MF_OK;
        }
    }
}

mf_status mf_plan_make(mf_model *m, const mf_session_params *p, mf_plan *pl) {
    memset(pl, 0, sizeof *pl);
    pl->budget = p->mem_budget;
    pl->n_weights = m->hp.n_layers * MF_LAYER_MATS + 1;
    pl->n_buf = 4;
    pl->w_first = calloc((size_t)pl->n_weights, sizeof(int));
    pl->w_parts = calloc((size_t)pl->n_weights, sizeof(int));
    if (!pl->w_first || !pl->w_parts) return mf_errorf(MF_E_NOMEM, "out of memory");
    pl->base = mf_current_rss();
    int nth = p->n_threads ? p->n_threads : mf_n_cores();
    pl->slack = (uint64_t)(1 << 20) + (uint64_t)(nth + 1) * (128u << 10) + p->reserve;
    uint64_t head = 0, fixed;
    mf_type_row_bytes(mf_type_from_name(p->kv_type ? p->kv_type : "f32"),
                      (uint64_t)m->hp.head_dim, &head);
    pl->kv = 2 * (uint64_t)m->hp.n_layers * (uint64_t)(p->n_ctx ? p->n_ctx : m->hp.n_ctx_train) *
             head * (uint64_t)m->hp.n_kv_heads * (uint64_t)(p->n_seq > 0 ? p->n_seq : 1);
    TRY(plan_units(pl, m, p, &fixed));
    pl->peak = fixed + pl->resident + pl->stream_bufs;
    predict(pl, m);
    return MF_OK;
}

void mf_plan_clear(mf_plan *pl) {
    free(pl->unit_off);
    free(pl->unit_len);
    free(pl->unit_wid);
    free(pl->unit_row0);
    free(pl->unit_rows);
    free(pl->w_first);
    free(pl->w_parts);
    free(pl->resident_unit);
    memset(pl, 0, sizeof *pl);
}
