/* provider_stream.c — the weight provider of a budgeted session: resident
 * units are read once into ledger memory, streamed units come through
 * mf_stream, and embedding rows are read with pread. Nothing is used through
 * the file mapping: touching it faults in whole large folios around what is
 * touched, memory the plan could not predict. */
#include "plan/plan.h"

#include "tensor/tensor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    mf_model *m;
    const bool *resident;     /* borrowed from the plan */
    const uint64_t *unit_off; /* borrowed from the plan */
    int *stream_idx;          /* unit -> index in the stream, -1 if resident */
    mf_stream *st;
    mf_layer *views;          /* (n_units) weights pointing into stream buffers */
    mf_layer out_view;        /* the output matrix as a layer's wq */
    uint8_t **res;            /* (n_units) resident copies, NULL if streamed */
    mf_ledger *ledger;
    int n_units;
    int fd;
    uint8_t *row;             /* one embedding row in its file type */
    uint64_t row_bytes;
} planned_ctx;

static mf_status read_at(int fd, uint8_t *dst, uint64_t off, uint64_t len) {
    for (uint64_t done = 0; done < len;) {
        ssize_t n = pread(fd, dst + done, (size_t)(len - done), (off_t)(off + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return mf_errorf(MF_E_IO, "reading weights at offset %llu: %s",
                                     (unsigned long long)(off + done),
                                     n < 0 ? strerror(errno) : "unexpected end of file");
        done += (uint64_t)n;
    }
    posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
    return MF_OK;
}

static void repoint(const planned_ctx *c, mf_weight *w, const uint8_t *data, uint64_t unit_off) {
    uint64_t o = (uint64_t)((const uint8_t *)w->data - c->m->file->base);
    w->data = data + (o - unit_off);
}

static mf_status planned_acquire(void *vctx, int l, const mf_layer **out) {
    planned_ctx *c = vctx;
    bool is_out = l == c->m->hp.n_layers;
    const uint8_t *data = c->res[l];
    if (c->stream_idx[l] >= 0) TRY(mf_stream_acquire(c->st, c->stream_idx[l], &data));
    mf_layer *v = &c->views[l];
    *v = is_out ? c->out_view : c->m->layers[l];
    mf_weight *ws[7] = {&v->wq, &v->wk, &v->wv, &v->wo, &v->w_gate, &v->w_up, &v->w_down};
    for (int i = 0; i < (is_out ? 1 : 7); i++) repoint(c, ws[i], data, c->unit_off[l]);
    *out = v;
    return MF_OK;
}

static void planned_release(void *vctx, int l) {
    planned_ctx *c = vctx;
    if (c->stream_idx[l] >= 0) mf_stream_release(c->st, c->stream_idx[l]);
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
    for (int u = 0; c->res && u < c->n_units; u++) mf_free(c->ledger, c->res[u]);
    free(c->res);
    if (c->fd >= 0) close(c->fd);
    free(c->stream_idx);
    free(c->views);
    free(c->row);
    free(c);
}

/* Resident units: one ledger allocation each, filled now. */
static mf_status load_resident(planned_ctx *c, const mf_plan *pl) {
    if (pl->n_units <= 0) return mf_errorf(MF_E_INVALID, "plan without units");
    c->res = calloc((size_t)pl->n_units, sizeof *c->res);
    if (!c->res) return mf_errorf(MF_E_NOMEM, "out of memory");
    for (int u = 0; u < pl->n_units; u++) {
        if (!pl->resident_unit[u]) continue;
        TRY(mf_alloc_p(c->ledger, pl->unit_len[u], MF_TAG_WEIGHTS, (void **)&c->res[u]));
        TRY(read_at(c->fd, c->res[u], pl->unit_off[u], pl->unit_len[u]));
    }
    return MF_OK;
}

static mf_status planned_setup(planned_ctx *c, const mf_plan *pl, mf_ledger *ledger) {
    mf_model *m = c->m;
    c->fd = open(m->path, O_RDONLY);
    if (c->fd < 0) return mf_errorf(MF_E_IO, "cannot open '%s': %s", m->path, strerror(errno));
    mf_type_row_bytes(m->tok_embd.type, (uint64_t)m->tok_embd.n_in, &c->row_bytes);
    c->row = malloc((size_t)c->row_bytes);
    c->stream_idx = malloc(sizeof(int) * (size_t)pl->n_units);
    c->views = calloc((size_t)pl->n_units, sizeof(mf_layer));
    uint64_t *off = malloc(sizeof(uint64_t) * (size_t)pl->n_units);
    uint64_t *len = malloc(sizeof(uint64_t) * (size_t)pl->n_units);
    mf_status st = MF_OK;
    if (!c->row || !c->stream_idx || !c->views || !off || !len)
        st = mf_errorf(MF_E_NOMEM, "out of memory");
    int n = 0;
    for (int u = 0; st == MF_OK && u < pl->n_units; u++) {
        c->stream_idx[u] = pl->resident_unit[u] ? -1 : n;
        if (!pl->resident_unit[u]) off[n] = pl->unit_off[u], len[n++] = pl->unit_len[u];
    }
    if (st == MF_OK && n) st = mf_stream_open(m->path, n, off, len, pl->n_buf, ledger, &c->st);
    if (st == MF_OK) st = load_resident(c, pl);
    free(off);
    free(len);
    return st;
}

mf_status mf_provider_planned(mf_model *m, const mf_plan *pl, mf_ledger *ledger,
                              mf_provider *out) {
    planned_ctx *c = calloc(1, sizeof *c);
    if (!c) return mf_errorf(MF_E_NOMEM, "out of memory");
    c->m = m;
    c->fd = -1;
    c->ledger = ledger;
    c->n_units = pl->n_units;
    c->resident = pl->resident_unit;
    c->unit_off = pl->unit_off;
    c->out_view.wq = m->output;
    mf_status st = planned_setup(c, pl, ledger);
    if (st != MF_OK) {
        planned_destroy(c);
        return st;
    }
    *out = (mf_provider){c, planned_acquire, planned_release, planned_embd_row, planned_destroy};
    return MF_OK;
}

void mf_provider_planned_stats(const mf_provider *p, mf_stream_stats *out) {
    const planned_ctx *c = p->ctx;
    memset(out, 0, sizeof *out);
    if (c && c->st) mf_stream_get_stats(c->st, out);
}
