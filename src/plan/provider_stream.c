/* provider_stream.c — the weight provider of a budgeted session. Matrices
 * are handed out in the plan's units (row ranges): resident units were read
 * once into ledger memory, streamed ones come through mf_stream, and
 * embedding rows are read with pread. Resident units are packed where the
 * CPU has a packed kernel for them (streamed ones stay as read: the disk,
 * not the kernel, bounds them). Nothing is used through the file
 * mapping: touching it faults in whole large folios around what is touched,
 * memory the plan could not predict. */
#include "plan/plan.h"

#include "tensor/tensor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    mf_model *m;
    const mf_plan *pl;        /* borrowed: owned by the session */
    int *stream_idx;          /* unit -> index in the stream, -1 if resident */
    mf_stream *st;
    uint8_t **res;            /* (n_units) resident copies, NULL if streamed */
    bool *packed;             /* (n_units) resident copy in the packed layout */
    mf_ledger *ledger;
    int fd;
    uint8_t *row;             /* one embedding row in its file type */
    uint64_t row_bytes;
} planned_ctx;

static mf_status read_at(int fd, uint8_t *dst, uint64_t off, uint64_t len) {
    uint64_t got;
    TRY(mf_pread_full(fd, dst, len, off, &got));
    if (got < len) return mf_errorf(MF_E_IO, "weights at offset %llu: unexpected end of file",
                                    (unsigned long long)off);
    posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
    return MF_OK;
}

static int planned_n_parts(void *vctx, const mf_weight *w) {
    const planned_ctx *c = vctx;
    return c->pl->w_parts[w->id];
}

static mf_status planned_acquire(void *vctx, const mf_weight *w, int p, mf_weight *view,
                                 int64_t *row0) {
    planned_ctx *c = vctx;
    int u = c->pl->w_first[w->id] + p;
    const uint8_t *data = c->res[u];
    if (c->stream_idx[u] >= 0) TRY(mf_stream_acquire(c->st, c->stream_idx[u], &data));
    *view = *w;
    view->data = data;
    view->n_out = c->pl->unit_rows[u];
    view->packed = c->packed[u];
    *row0 = c->pl->unit_row0[u];
    return MF_OK;
}

static void planned_release(void *vctx, const mf_weight *w, int p) {
    planned_ctx *c = vctx;
    int u = c->pl->w_first[w->id] + p;
    if (c->stream_idx[u] >= 0) mf_stream_release(c->st, c->stream_idx[u]);
}

static mf_status planned_embd_row(void *vctx, int32_t id, float *dst) {
    planned_ctx *c = vctx;
    const mf_weight *e = &c->m->tok_embd;
    uint64_t off = (uint64_t)((const uint8_t *)e->data - c->m->file->base) +
                   (uint64_t)id * c->row_bytes;
    TRY(read_at(c->fd, c->row, off, c->row_bytes));
    mf_traits(e->type)->to_float(c->row, dst, e->n_in);
    return MF_OK;
}

static void planned_destroy(void *vctx) {
    planned_ctx *c = vctx;
    if (!c) return;
    mf_stream_close(c->st);
    for (int u = 0; c->res && u < c->pl->n_units; u++) mf_free(c->ledger, c->res[u]);
    free(c->res);
    free(c->packed);
    if (c->fd >= 0) close(c->fd);
    free(c->stream_idx);
    free(c->row);
    free(c);
}

/* Resident units: one ledger allocation each, filled now. */
static mf_status load_resident(planned_ctx *c) {
    const mf_plan *pl = c->pl;
    for (int u = 0; u < pl->n_units; u++) {
        if (!pl->resident_unit[u]) continue;
        TRY(mf_alloc_p(c->ledger, pl->unit_len[u], MF_TAG_WEIGHTS, (void **)&c->res[u]));
        TRY(read_at(c->fd, c->res[u], pl->unit_off[u], pl->unit_len[u]));
        const mf_weight *w = mf_model_weight(c->m, pl->unit_wid[u]);
        if (mf_can_pack(w->type, w->n_in, pl->unit_rows[u])) {
            if (!mf_pack_rows(w->type, c->res[u], c->res[u], w->n_in, pl->unit_rows[u]))
                return mf_errorf(MF_E_NOMEM, "out of memory packing '%s'", w->name);
            c->packed[u] = true;
        }
    }
    return MF_OK;
}

static mf_status planned_setup(planned_ctx *c) {
    const mf_plan *pl = c->pl;
    mf_model *m = c->m;
    if (pl->n_units <= 0) return mf_errorf(MF_E_INVALID, "plan without units");
    c->fd = open(m->path, O_RDONLY);
    if (c->fd < 0) return mf_errorf(MF_E_IO, "cannot open '%s': %s", m->path, strerror(errno));
    mf_type_row_bytes(m->tok_embd.type, (uint64_t)m->tok_embd.n_in, &c->row_bytes);
    size_t nu = (size_t)pl->n_units;
    c->row = malloc((size_t)c->row_bytes);
    c->stream_idx = malloc(sizeof(int) * nu);
    c->res = calloc(nu, sizeof *c->res);
    c->packed = calloc(nu, sizeof *c->packed);
    uint64_t *off = malloc(sizeof(uint64_t) * nu), *len = malloc(sizeof(uint64_t) * nu);
    mf_status st = MF_OK;
    if (!c->row || !c->stream_idx || !c->res || !c->packed || !off || !len)
        st = mf_errorf(MF_E_NOMEM, "out of memory");
    int n = 0;
    for (int u = 0; st == MF_OK && u < pl->n_units; u++) {
        c->stream_idx[u] = pl->resident_unit[u] ? -1 : n;
        if (!pl->resident_unit[u]) off[n] = pl->unit_off[u], len[n++] = pl->unit_len[u];
    }
    if (st == MF_OK && n) st = mf_stream_open(m->path, n, off, len, pl->n_buf, c->ledger, &c->st);
    if (st == MF_OK) st = load_resident(c);
    free(off);
    free(len);
    return st;
}

mf_status mf_provider_planned(mf_model *m, const mf_plan *pl, mf_ledger *ledger,
                              mf_provider *out) {
    planned_ctx *c = calloc(1, sizeof *c);
    if (!c) return mf_errorf(MF_E_NOMEM, "out of memory");
    c->m = m;
    c->pl = pl;
    c->fd = -1;
    c->ledger = ledger;
    mf_status st = planned_setup(c);
    if (st != MF_OK) {
        planned_destroy(c);
        return st;
    }
    uint64_t packed = 0;
    for (int u = 0; u < pl->n_units; u++) packed += c->packed[u] ? pl->unit_len[u] : 0;
    *out = (mf_provider){c, planned_n_parts, planned_acquire, planned_release, planned_embd_row,
                         planned_destroy, packed};
    return MF_OK;
}

void mf_provider_planned_stats(const mf_provider *p, mf_stream_stats *out) {
    const planned_ctx *c = p->ctx;
    memset(out, 0, sizeof *out);
    if (c && c->st) mf_stream_get_stats(c->st, out);
}
