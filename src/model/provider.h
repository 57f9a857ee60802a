/* provider.h — how the forward pass gets its weights (internal).
 *
 * The forward pass asks for each matrix right before multiplying by it and
 * gives it back after; it does not know whether the bytes live in the file
 * mapping, in a resident copy or in a stream buffer. A provider may split a
 * matrix into row ranges (parts) so that no buffer has to hold a whole big
 * matrix; the product is then computed part by part into the right columns.
 * src/model supplies the mapped provider; src/plan the budgeted one. */
#ifndef MF_PROVIDER_H
#define MF_PROVIDER_H

#include "model/model.h"

typedef struct mf_provider {
    void *ctx;
    int (*n_parts)(void *ctx, const mf_weight *w);
    /* Part p of w: *view is w restricted to rows [*row0, *row0 + view->n_out),
     * its data valid until release(w, p). */
    mf_status (*acquire)(void *ctx, const mf_weight *w, int p, mf_weight *view, int64_t *row0);
    void (*release)(void *ctx, const mf_weight *w, int p);
    /* Row `id` of token_embd as f32 (dim values). */
    mf_status (*embd_row)(void *ctx, int32_t id, float *dst);
    void (*destroy)(void *ctx);
    uint64_t packed_bytes;  /* weights held in a packed layout (tensor.h) */
} mf_provider;

/* Everything from the mapping (no budget): pages are faulted in on use.
 * pack: matrices with a packed layout on this CPU (mf_can_pack) are packed
 * now into provider-owned memory and their mapped pages released. */
mf_status mf_provider_mapped(mf_model *m, bool pack, mf_provider *out);

#endif
