/* provider.c — the mapped weight provider: every tensor is read in place
 * from the file mapping, as llama.cpp's mmap loading does. */
#include "model/provider.h"

#include "tensor/tensor.h"

#include <stdlib.h>

typedef struct {
    mf_model *m;
    mf_layer out;  /* wq = the output matrix */
} mapped_ctx;

static mf_status mapped_acquire(void *vctx, int l, const mf_layer **out) {
    mapped_ctx *c = vctx;
    *out = l < c->m->hp.n_layers ? &c->m->layers[l] : &c->out;
    return MF_OK;
}

static void mapped_release(void *vctx, int l) {
    (void)vctx;
    (void)l;
}

static mf_status mapped_embd_row(void *vctx, int32_t id, float *dst) {
    mapped_ctx *c = vctx;
    mf_get_row(c->m->tok_embd.data, c->m->tok_embd.type, c->m->hp.dim, id, dst);
    return MF_OK;
}

mf_status mf_provider_mapped(mf_model *m, mf_provider *out) {
    mapped_ctx *c = calloc(1, sizeof *c);
    if (!c) return mf_errorf(MF_E_NOMEM, "out of memory");
    c->m = m;
    c->out.wq = m->output;
    *out = (mf_provider){c, mapped_acquire, mapped_release, mapped_embd_row, free};
    return MF_OK;
}
