/* plan.h — running a model inside a memory budget (internal).
 *
 * The planner works out, before anything big is allocated, what a session
 * will hold: the process as it is now (code, libraries, model metadata,
 * tokenizer: measured as VmRSS), the session's own buffers (KV cache,
 * activations, scratch, logits: sized exactly by mf_session_measure), the
 * resident weights, and the stream buffers for the rest. A unit is a row
 * range of one matrix (a contiguous file range of at most part_cap bytes),
 * in the order the forward pass uses them; units are resident or streamed. */
#ifndef MF_PLAN_H
#define MF_PLAN_H

#include "model/session.h"
#include "plan/stream.h"

typedef struct mf_plan {
    mf_session_params eff;     /* effective parameters (n_ctx, n_batch, threads) */
    uint64_t budget;
    uint64_t base;             /* VmRSS when planning */
    uint64_t session;          /* the session's buffers */
    uint64_t kv;               /* of which the KV cache */
    uint64_t resident;         /* copies of the resident units */
    uint64_t stream_bufs;      /* n_buf buffers */
    uint64_t slack;            /* thread stacks, malloc arenas, small allocations */
    uint64_t peak;             /* predicted: the sum of the above */
    int n_units, n_weights;    /* n_weights = n_layers * 7 + 1 (the output) */
    uint64_t part_cap;         /* most bytes in a unit */
    uint64_t *unit_off, *unit_len;
    int *unit_wid;             /* the matrix (mf_weight.id) a unit belongs to */
    int64_t *unit_row0, *unit_rows;
    int *w_first, *w_parts;    /* per matrix: its first unit and how many */
    bool *resident_unit;
    int n_streamed, n_buf;
    uint64_t streamed_bytes;   /* read from disk per pass over the layers */
    uint64_t weight_bytes;     /* all units */
    double disk_gbs, mem_gbs, gflops;
    double pred_decode, pred_prefill;
} mf_plan;

/* MF_E_BUDGET with the smallest workable budget in the message if the
 * budget cannot hold even two stream buffers next to the fixed parts. */
mf_status mf_plan_make(mf_model *m, const mf_session_params *p, mf_plan *out);
void mf_plan_clear(mf_plan *pl);
/* Create a session that runs under the plan (streaming provider). */
mf_status mf_plan_session(mf_model *m, const mf_session_params *p, mf_session **out);
/* The measured machine (bandwidths); defaults when never measured. */
void mf_machine_load(double *disk_gbs, double *mem_gbs, double *gflops);
/* Weight provider for a plan: resident units from the mapping, the others
 * through a stream whose buffers are charged to ledger. */
mf_status mf_provider_planned(mf_model *m, const mf_plan *pl, mf_ledger *ledger,
                              mf_provider *out);
void mf_provider_planned_stats(const mf_provider *p, mf_stream_stats *out);

#endif
