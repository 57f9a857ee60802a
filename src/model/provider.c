/* provider.c — the mapped weight provider: every matrix is used in place
 * from the file mapping, whole, as llama.cpp's mmap loading does. */
#include "model/provider.h"

#include "tensor/tensor.h"

#include <stdlib.h>

static int mapped_n_parts(void *ctx, const mf_weight *w) {
    (void)ctx;
    (void)w;
    return 1;
}

static mf_status mapped_acquire(void *ctx, const mf_weight *w, int p, mf_weight *view,
                                int64_t *row0) {
    (void)ctx;
    (void)p;
    *view = *w;
    *row0 = 0;
    return MF_OK;
}

static void mapped_release(void *ctx, const mf_weight *w, int p) {
    (void)ctx;
    (void)w;
    (void)p;
}

static mf_status mapped_embd_row(void *ctx, int32_t id, float *dst) {
    const mf_model *m = ctx;
    mf_get_row(m->tok_embd.data, m->tok_embd.type, m->hp.dim, id, dst);
    return MF_OK;
}

mf_status mf_provider_mapped(mf_model *m, mf_provider *out) {
    *out = (mf_provider){m, mapped_n_parts, mapped_acquire, mapped_release, mapped_embd_row, NULL};
    return MF_OK;
}
