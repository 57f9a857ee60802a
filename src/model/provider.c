/* provider.c — the mapped weight provider: every matrix is used from the
 * file mapping, whole, as llama.cpp's mmap loading does, except the
 * matrices this CPU multiplies faster in a packed layout (tensor.h): those
 * are packed once into memory the provider owns, and their mapped pages
 * are given back, as llama.cpp's repacking CPU buffers do. */
#include "model/provider.h"

#include "tensor/tensor.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    mf_model *m;
    int n_weights;
    void **packed;  /* (n_weights): packed copy of weight id (in the arena), or NULL */
    uint8_t *arena; /* one anonymous mapping holding every packed copy */
    uint64_t packed_bytes;
} mapped_ctx;

static int mapped_n_parts(void *ctx, const mf_weight *w) {
    (void)ctx;
    (void)w;
    return 1;
}

static mf_status mapped_acquire(void *vctx, const mf_weight *w, int p, mf_weight *view,
                                int64_t *row0) {
    const mapped_ctx *c = vctx;
    (void)p;
    *view = *w;
    if (c->packed && w->id >= 0 && w->id < c->n_weights && c->packed[w->id]) {
        view->data = c->packed[w->id];
        view->packed = true;
    }
    *row0 = 0;
    return MF_OK;
}

static void mapped_release(void *ctx, const mf_weight *w, int p) {
    (void)ctx;
    (void)w;
    (void)p;
}

static mf_status mapped_embd_row(void *vctx, int32_t id, float *dst) {
    const mf_model *m = ((const mapped_ctx *)vctx)->m;
    mf_get_row(m->tok_embd.data, m->tok_embd.type, m->hp.dim, id, dst);
    return MF_OK;
}

static void mapped_destroy(void *vctx) {
    mapped_ctx *c = vctx;
    if (!c) return;
    if (c->arena) munmap(c->arena, (size_t)c->packed_bytes);
    free(c->packed);
    free(c);
}

/* Drop the mapped pages wholly inside [p, p + len) from this process (they
 * are re-read from the page cache if touched again). */
static void unmap_pages(const void *p, uint64_t len) {
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), a = (uintptr_t)p, e = a + len;
    uintptr_t lo = (a + pg - 1) / pg * pg, hi = e / pg * pg;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* Bytes of w's packed copy; 0 if it is not packed. */
static uint64_t packed_size(const mf_weight *w) {
    uint64_t row;
    if (!mf_can_pack(w->type, w->n_in, w->n_out) ||
        !mf_type_row_bytes(w->type, (uint64_t)w->n_in, &row))
        return 0;
    return row * (uint64_t)w->n_out; /* rows are whole 64-byte multiples (q4_K: 144 x 16) */
}

/* Pack every eligible matrix into one arena. The arena asks for
 * transparent huge pages: decoding walks all of it once per token, and
 * with 4 KiB pages every page is a TLB miss (a two-level walk under a
 * hypervisor) that the kernel's loads, unlike a plain read loop's, are too
 * few to overlap. */
static mf_status pack_all(mapped_ctx *c) {
    uint64_t total = 0;
    for (int id = 0; id < c->n_weights; id++) total += packed_size(mf_model_weight(c->m, id));
    if (!total) return MF_OK;
    void *a = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        return mf_errorf(MF_E_NOMEM, "out of memory packing the weights (%llu bytes)",
                         (unsigned long long)total);
#ifdef MADV_HUGEPAGE
    madvise(a, (size_t)total, MADV_HUGEPAGE); /* a hint: ignored where THP is off */
#endif
    c->arena = a;
    c->packed_bytes = total;
    uint64_t off = 0;
    for (int id = 0; id < c->n_weights; id++) {
        const mf_weight *w = mf_model_weight(c->m, id);
        uint64_t bytes = packed_size(w);
        if (!bytes) continue;
        c->packed[id] = c->arena + off;
        off += bytes;
        if (!mf_pack_rows(w->type, w->data, c->packed[id], w->n_in, w->n_out))
            return mf_errorf(MF_E_NOMEM, "out of memory packing '%s'", w->name);
        /* the tied output matrix is also the embedding table, read by rows */
        if (!(c->m->tied && w == &c->m->output)) unmap_pages(w->data, bytes);
    }
    return MF_OK;
}

mf_status mf_provider_mapped(mf_model *m, bool pack, mf_provider *out) {
    mapped_ctx *c = calloc(1, sizeof *c);
    if (!c) return mf_errorf(MF_E_NOMEM, "out of memory");
    c->m = m;
    c->n_weights = m->hp.n_layers * MF_LAYER_MATS + 1;
    mf_status st = MF_OK;
    if (pack) {
        c->packed = calloc((size_t)c->n_weights, sizeof *c->packed);
        if (!c->packed) st = mf_errorf(MF_E_NOMEM, "out of memory");
        if (st == MF_OK) st = pack_all(c);
    }
    if (st != MF_OK) {
        mapped_destroy(c);
        return st;
    }
    *out = (mf_provider){c, mapped_n_parts, mapped_acquire, mapped_release, mapped_embd_row,
                         mapped_destroy, c->packed_bytes};
    return MF_OK;
}
