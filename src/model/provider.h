/* provider.h — how the forward pass gets its weights (internal).
 *
 * The forward pass asks for a layer's matrices before using them and gives
 * them back after; it does not know whether they live in the file mapping
 * or were streamed into a buffer. src/model supplies the mapped provider;
 * src/plan supplies the budgeted one (resident + streamed with prefetch). */
#ifndef MF_PROVIDER_H
#define MF_PROVIDER_H

#include "model/model.h"

typedef struct mf_provider {
    void *ctx;
    /* Layer l's weights (l < n_layers), or with l == n_layers the output
     * matrix in ->wq (the other fields unused). Valid until release(l). */
    mf_status (*acquire)(void *ctx, int l, const mf_layer **out);
    void (*release)(void *ctx, int l);
    /* Row `id` of token_embd as f32 (dim values). */
    mf_status (*embd_row)(void *ctx, int32_t id, float *dst);
    void (*destroy)(void *ctx);
} mf_provider;

/* Everything from the mapping (no budget): pages are faulted in on use. */
mf_status mf_provider_mapped(mf_model *m, mf_provider *out);

#endif
