/* session.h — the state of one sequence being evaluated (internal).
 *
 * A session owns the KV cache and every activation buffer of a forward pass
 * for up to n_batch tokens; all of it is charged to the session's ledger and
 * allocated once at creation. Shapes are written (rows, cols) row-major. */
#ifndef MF_SESSION_H
#define MF_SESSION_H

#include "model/model.h"
#include "model/provider.h"

/* Called before each matrix product with its input activations x
 * (n_tok rows of w->n_in floats); used to collect calibration statistics. */
typedef void (*mf_observe_fn)(void *user, const mf_weight *w, const float *x, int n_tok);

struct mf_session {
    mf_model *m;              /* borrowed */
    mf_provider prov;         /* owned: where the weights come from */
    mf_pool *pool;
    int nth;                  /* threads of the pool */
    bool measure;             /* sizing only: count bytes, allocate nothing */
    uint64_t measured;
    mf_ledger ledger;
    int n_ctx, n_batch, pos;  /* pos: sequence 0's next position */
    int n_seq;
    int *seq_pos;             /* (n_seq) next position of each sequence */
    int *tok_seq, *tok_pos;   /* (B) sequence and position of each token of a batch */
    int kv_dim;               /* n_kv_heads * head_dim */
    int kv_type;              /* mf_type of the cache: f32, f16 or q8_0 */
    uint64_t kv_row;          /* bytes of one position's kv_dim values */
    uint64_t kv_head;         /* bytes of one head's head_dim values */
    uint8_t *k_cache;         /* (n_layers, n_seq, n_ctx, kv_dim) of kv_type */
    uint8_t *v_cache;         /* (n_layers, n_seq, n_ctx, kv_dim) of kv_type */
    float *x;                 /* (B, dim) residual stream */
    float *xb;                /* (B, dim) normed input of a block */
    float *q;                 /* (B, n_heads*head_dim) */
    float *k, *v;             /* (B, kv_dim) */
    float *att;               /* (B, n_heads*head_dim) attention output */
    float *hb, *hb2;          /* (B, n_ff) */
    float *rope;              /* (B, rope_dim): cos, sin interleaved per pair */
    float *scores;            /* (n_threads, n_ctx) */
    float *lanes;             /* (n_threads, 16, head_dim) attention accumulators */
    float *vrow;              /* (n_threads, head_dim) a V row widened to f32 */
    uint8_t *qconv;           /* (n_threads, kv_head) a q head in the K cache's dot type */
    float *logits;            /* (B, n_vocab) */
    void *mm_scratch;         /* activations converted for the matmul */
    int n_last;               /* tokens in the last eval */
    int logits_rows;          /* rows of logits kept: n_last or 1 */
    mf_status fwd_error;      /* first failure inside the current forward pass */
    void *plan;               /* the budget plan (src/plan), NULL without a budget */
    void (*plan_free)(void *plan);
    mf_observe_fn observe;    /* NULL: none */
    void *observe_user;
};

void mf_session_set_observer(mf_session *s, mf_observe_fn fn, void *user);

/* One forward pass over n <= n_batch tokens; token t is at position
 * tok_pos[t] of sequence tok_seq[t]. */
mf_status mf_forward(mf_session *s, const int32_t *ids, int n, bool all_logits);

/* Create a session that takes its weights from prov (owned from here on,
 * destroyed with the session, also on failure). */
mf_status mf_session_new(mf_model *m, const mf_session_params *p, const mf_provider *prov,
                         mf_ledger *ledger_init, mf_session **out);
/* Replace the provider (the old one is destroyed). */
void mf_session_set_provider(mf_session *s, const mf_provider *prov);
/* The bytes mf_session_new would allocate for these parameters (with the
 * n_ctx and n_batch defaults applied into *eff). */
mf_status mf_session_measure(mf_model *m, const mf_session_params *p, uint64_t *bytes,
                             mf_session_params *eff);

#endif
