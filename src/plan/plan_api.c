/* plan_api.c — the budget entry points of the public API: a planned
 * session, the plan as text, session statistics. */
#include "plan/plan.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024.0 * 1024.0)

static void plan_free(void *p) {
    mf_plan_clear(p);
    free(p);
}

mf_status mf_plan_session(mf_model *m, const mf_session_params *p, mf_session **out) {
    *out = NULL;
    mf_plan *pl = calloc(1, sizeof *pl);
    if (!pl) return mf_errorf(MF_E_NOMEM, "out of memory");
    mf_status st = mf_plan_make(m, p, pl);
    mf_session *s = NULL;
    mf_provider mapped = {0}, planned;
    if (st == MF_OK) st = mf_provider_mapped(m, false, &mapped);
    if (st == MF_OK) {
        /* the ledger's hard limit: the budget less what is not allocated here */
        mf_ledger led;
        mf_ledger_init(&led, pl->budget - pl->base - pl->slack);
        mf_session_params q = pl->eff;
        st = mf_session_new(m, &q, &mapped, &led, &s);
    }
    if (st == MF_OK) st = mf_provider_planned(m, pl, &s->ledger, &planned);
    if (st == MF_OK) mf_session_set_provider(s, &planned);
    if (st != MF_OK) {
        mf_session_free(s);
        plan_free(pl);
        return st;
    }
    s->plan = pl;
    s->plan_free = plan_free;
    *out = s;
    return MF_OK;
}

typedef struct { char *buf; size_t cap, len; } text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
    if (t->len >= t->cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n > 0) t->len = t->len + (size_t)n < t->cap ? t->len + (size_t)n : t->cap;
}

/* Per layer (and the output): how much is resident and how much streams. */
static void put_layers(text *t, const mf_plan *pl) {
    int n_layers = (pl->n_weights - 1) / MF_LAYER_MATS;
    for (int l = 0; l <= n_layers; l++) {
        uint64_t res = 0, str = 0;
        int parts = 0;
        int w0 = l * MF_LAYER_MATS, w1 = l < n_layers ? w0 + MF_LAYER_MATS : w0 + 1;
        for (int u = pl->w_first[w0]; u < pl->w_first[w1 - 1] + pl->w_parts[w1 - 1]; u++) {
            if (pl->resident_unit[u]) res += pl->unit_len[u];
            else str += pl->unit_len[u];
            parts++;
        }
        char name[32];
        if (l == n_layers) snprintf(name, sizeof name, "output");
        else snprintf(name, sizeof name, "layer %d", l);
        put(t, "  %-10s %-9s resident %8.1f MiB, streamed %8.1f MiB (%d units)\n", name,
            !str ? "resident" : !res ? "streamed" : "mixed", res / MIB, str / MIB, parts);
    }
}

mf_status mf_plan_report(mf_model *m, const mf_session_params *p, char *buf, size_t cap) {
    if (!p || !p->mem_budget) return mf_errorf(MF_E_INVALID, "plan: no memory budget given");
    mf_plan pl;
    mf_status st = mf_plan_make(m, p, &pl);
    if (st != MF_OK) {
        mf_plan_clear(&pl);
        return st;
    }
    text t = {buf, cap, 0};
    if (cap) buf[0] = 0;
    const char *kvt = p->kv_type ? p->kv_type : "f32";
    put(&t, "budget %.1f MiB, context %d, prefill chunk %d tokens, %d threads\n\n",
        pl.budget / MIB, pl.eff.n_ctx, pl.eff.n_batch, pl.eff.n_threads);
    put(&t, "  %-44s %9.1f MiB\n", "process now (code, metadata, tokenizer)", pl.base / MIB);
    put(&t, "  KV cache (%s, %d positions)%*s %9.1f MiB\n", kvt, pl.eff.n_ctx,
        (int)(44 - 24 - strlen(kvt) - snprintf(NULL, 0, "%d", pl.eff.n_ctx)), "", pl.kv / MIB);
    put(&t, "  %-44s %9.1f MiB\n", "activations, scratch, logits", (pl.session - pl.kv) / MIB);
    put(&t, "  resident weights (%2d of %2d units)%*s %9.1f MiB\n", pl.n_units - pl.n_streamed,
        pl.n_units, 10, "", pl.resident / MIB);
    put(&t, "  stream buffers (%d, units up to %4.1f MiB)%*s %9.1f MiB\n", pl.n_buf,
        pl.part_cap / MIB, 2, "", pl.stream_bufs / MIB);
    put(&t, "  %-44s %9.1f MiB\n", "slack (threads, small allocations, caller's)", pl.slack / MIB);
    put(&t, "  %-44s %9.1f MiB\n\n", "predicted peak (VmHWM)", pl.peak / MIB);
    put_layers(&t, &pl);
    put(&t, "\npredicted: decode %.2f tok/s (%.1f MiB streamed per token at %.2f GB/s; all "
        "weights %.1f MiB at %.1f GB/s), prefill %.1f tok/s\n", pl.pred_decode,
        pl.streamed_bytes / MIB, pl.disk_gbs, pl.weight_bytes / MIB, pl.mem_gbs, pl.pred_prefill);
    mf_plan_clear(&pl);
    return MF_OK;
}

void mf_session_get_stats(const mf_session *s, mf_session_stats *out) {
    memset(out, 0, sizeof *out);
    out->peak_rss = mf_peak_rss();
    out->n_batch = s->n_batch;
    out->packed_bytes = s->prov.packed_bytes;
    const mf_plan *pl = s->plan;
    if (!pl) return;
    out->budget = pl->budget;
    out->predicted_peak = pl->peak;
    out->resident_bytes = pl->resident;
    out->streamed_bytes_per_pass = pl->streamed_bytes;
    out->predicted_decode_tps = pl->pred_decode;
    out->predicted_prefill_tps = pl->pred_prefill;
    out->n_streamed_layers = pl->n_streamed;
    mf_stream_stats ss;
    mf_provider_planned_stats(&s->prov, &ss);
    out->bytes_read = ss.bytes_read;
    out->io_seconds = ss.io_seconds;
    out->wait_seconds = ss.wait_seconds;
    out->direct_io = ss.direct;
}
