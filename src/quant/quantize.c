/* quantize.c — mf_quantize_file: a GGUF in, the same model in other tensor
 * types out (memfit quantize).
 *
 * The plan (mixture.c) fixes every tensor's type before a byte is written,
 * so a type memfit cannot write yet fails at once, naming it. Tensors then
 * stream through the GGUF writer's fill callback, in the order llama.cpp
 * writes them (so a q8_0 file comes out byte for byte as llama-quantize's): each one's
 * rows are split across the pool, and every thread converts a few rows at a
 * time to f32, quantizes them straight into the writer's buffer and
 * dequantizes them again to measure the error. So the process holds one
 * output tensor and a few rows per thread, never a whole f32 copy of a
 * tensor. The errors are summed per row and added up in row order, so the
 * report, like the bytes, is the same for any thread count. */
#include "quant/quant.h"

#include "tensor/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_FLOATS 32768 /* rows converted at a time per thread, in floats */

typedef struct qfile {
    const mf_quantize_params *p;
    const mf_quant_mixture *mx;
    mf_gguf *g;
    mf_quant_choice *plan;     /* (n_tensors) by source index */
    int *order;                /* (n_tensors) source index of each written tensor */
    mf_pool *pool;
    int nth;
    int64_t max_row, chunk_rows, max_rows;
    float *scratch;            /* (nth, chunk_rows + 1, max_row): rows in, one row back */
    double *row_sq, *row_err, *row_werr; /* (max_rows) sums of one tensor's rows */
    bool *failed;              /* (nth) */
    uint64_t done, total;      /* elements, for progress */
    /* the tensor in flight */
    const mf_gguf_tensor *t;
    int type;
    uint8_t *dst;
    uint64_t row_bytes, src_row_bytes;
    int64_t n_rows;
    const float *imp;          /* (ne[0]) importances or NULL */
} qfile;

static void row_stats(qfile *q, int64_t row, const float *x, const float *d, int64_t n) {
    double sq = 0, err = 0, werr = 0;
    for (int64_t j = 0; j < n; j++) {
        double e = (double)x[j] - d[j];
        sq += (double)x[j] * x[j];
        err += e * e;
        if (q->imp) werr += (double)q->imp[j] * e * e;
    }
    q->row_sq[row] = sq;
    q->row_err[row] = err;
    q->row_werr[row] = werr;
}

static void quant_task(void *ctx, int ith, int nth) {
    qfile *q = ctx;
    int64_t lo, hi, n = q->t->ne[0];
    mf_split(q->n_rows, ith, nth, &lo, &hi);
    float *src = q->scratch + (size_t)ith * (size_t)(q->chunk_rows + 1) * (size_t)q->max_row;
    float *deq = src + (size_t)q->chunk_rows * (size_t)q->max_row;
    const mf_type_traits *in_t = mf_traits(q->t->type), *out_t = mf_traits(q->type);
    const uint8_t *in = q->t->data;
    for (int64_t r0 = lo; r0 < hi; r0 += q->chunk_rows) {
        int64_t nr = hi - r0 < q->chunk_rows ? hi - r0 : q->chunk_rows;
        for (int64_t r = 0; r < nr; r++)
            in_t->to_float(in + (uint64_t)(r0 + r) * q->src_row_bytes, src + r * n, n);
        uint8_t *out = q->dst + (uint64_t)r0 * q->row_bytes;
        if (mf_quantize_rows(q->type, src, out, nr, n, q->imp) != (uint64_t)nr * q->row_bytes) {
            q->failed[ith] = true;
            return;
        }
        for (int64_t r = 0; r < nr; r++) {
            out_t->to_float(out + (uint64_t)r * q->row_bytes, deq, n);
            row_stats(q, r0 + r, src + r * n, deq, n);
        }
    }
}

static uint64_t n_elements(const mf_gguf_tensor *t) {
    return (uint64_t)t->ne[0] * (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
}

/* Quantize tensor t into dst and fill the error fields of r. */
static mf_status quantize_tensor(qfile *q, const mf_gguf_tensor *t, int type, void *dst,
                                 mf_quant_report *r) {
    q->t = t;
    q->type = type;
    q->dst = dst;
    q->n_rows = t->ne[1] * t->ne[2] * t->ne[3];
    if (!mf_type_row_bytes(type, (uint64_t)t->ne[0], &q->row_bytes) ||
        !mf_type_row_bytes(t->type, (uint64_t)t->ne[0], &q->src_row_bytes))
        return mf_errorf(MF_E_INVALID, "tensor '%s': bad row length", t->name);
    q->imp = q->p->imatrix && t->ne[2] == 1 && t->ne[3] == 1
                 ? mf_imatrix_get(q->p->imatrix, t->name, (int)t->ne[0]) : NULL;
    memset(q->failed, 0, sizeof *q->failed * (size_t)q->nth);
    mf_pool_run(q->pool, quant_task, q);
    for (int i = 0; i < q->nth; i++)
        if (q->failed[i])
            return mf_errorf(MF_E_UNSUPPORTED, "tensor '%s': quantizing to %s failed", t->name,
                             mf_type_name(type));
    double sq = 0, err = 0, werr = 0, isum = 0;
    for (int64_t i = 0; i < q->n_rows; i++) {
        sq += q->row_sq[i];
        err += q->row_err[i];
        werr += q->row_werr[i];
    }
    for (int64_t j = 0; q->imp && j < t->ne[0]; j++) isum += q->imp[j];
    double n = (double)n_elements(t);
    r->rms = sqrt(sq / n);
    r->rmse = sqrt(err / n);
    r->wrmse = q->imp && isum > 0 ? sqrt(werr / ((double)q->n_rows * isum)) : -1.0;
    const mf_type_traits *tr = mf_traits(type);
    r->used_imatrix = q->imp && tr && tr->quantize;
    return MF_OK;
}

/* The writer's callback: produce tensor idx, then report it. */
static mf_status fill(void *ctx, int idx, void *dst, uint64_t n_bytes) {
    qfile *q = ctx;
    const mf_gguf_tensor *t = &q->g->tensors[q->order[idx]];
    const mf_quant_choice *c = &q->plan[q->order[idx]];
    mf_quant_report r = {.name = t->name, .index = idx, .n_tensors = (int)q->g->n_tensors,
                         .n_dims = t->n_dims, .type_name = mf_type_name(c->type),
                         .wanted_name = mf_type_name(c->wanted), .fallback = c->fallback,
                         .copied = c->copy, .n_elements = n_elements(t), .n_bytes = n_bytes,
                         .wrmse = -1.0};
    memcpy(r.ne, t->ne, sizeof r.ne);
    if (c->copy) {
        if (n_bytes != t->n_bytes)
            return mf_errorf(MF_E_INVALID, "tensor '%s': size changed in a copy", t->name);
        memcpy(dst, t->data, (size_t)n_bytes);
    } else {
        TRY(quantize_tensor(q, t, c->type, dst, &r));
    }
    q->done += r.n_elements;
    if (q->p->report) q->p->report(q->p->user, &r);
    if (q->p->progress) q->p->progress(q->p->user, q->done, q->total);
    return MF_OK;
}

/* Every type the plan reads or writes must have its conversions. */
static mf_status check_types(const qfile *q) {
    for (uint64_t i = 0; i < q->g->n_tensors; i++) {
        const mf_gguf_tensor *t = &q->g->tensors[i];
        const mf_quant_choice *c = &q->plan[i];
        if (c->copy) continue;
        const mf_type_traits *in = mf_traits(t->type), *out = mf_traits(c->type);
        if (!in || !in->to_float)
            return mf_errorf(MF_E_UNSUPPORTED, "tensor '%s' has type %s, which memfit cannot "
                             "read", t->name, mf_type_name(t->type));
        if (!out || (!out->from_float && !out->quantize))
            return mf_errorf(MF_E_UNSUPPORTED, "type %s (for tensor '%s' in mixture %s) cannot "
                             "be written yet: memfit has no quantizer for it", mf_type_name(c->type),
                             t->name, q->mx->name);
    }
    return MF_OK;
}

static mf_status alloc_work(qfile *q) {
    for (uint64_t i = 0; i < q->g->n_tensors; i++) {
        const mf_gguf_tensor *t = &q->g->tensors[i];
        q->total += n_elements(t);
        if (q->plan[i].copy) continue;
        int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        if (t->ne[0] > q->max_row) q->max_row = t->ne[0];
        if (rows > q->max_rows) q->max_rows = rows;
    }
    TRY(mf_pool_create(q->p->n_threads, &q->pool));
    q->nth = mf_pool_size(q->pool);
    int64_t row = q->max_row ? q->max_row : 1;
    q->chunk_rows = CHUNK_FLOATS / row < 1 ? 1 : CHUNK_FLOATS / row > 32 ? 32 : CHUNK_FLOATS / row;
    size_t nf = (size_t)q->nth * (size_t)(q->chunk_rows + 1) * (size_t)row;
    size_t nr = (size_t)(q->max_rows ? q->max_rows : 1);
    q->scratch = malloc(nf * sizeof(float));
    q->row_sq = malloc(nr * sizeof(double));
    q->row_err = malloc(nr * sizeof(double));
    q->row_werr = malloc(nr * sizeof(double));
    q->failed = calloc((size_t)q->nth, sizeof(bool));
    if (!q->scratch || !q->row_sq || !q->row_err || !q->row_werr || !q->failed)
        return mf_errorf(MF_E_NOMEM, "out of memory for quantization buffers");
    return MF_OK;
}

static mf_status setup_writer(const qfile *q, mf_gguf_writer *w, const char *in) {
    TRY(mf_gguf_writer_protect(w, in));
    for (uint64_t i = 0; i < q->g->n_kv; i++) {
        const char *k = q->g->kv[i].key;
        /* an earlier quantization's imatrix record would no longer be true;
         * the two keys set below go last, where llama.cpp puts them */
        if (strncmp(k, "quantize.imatrix.", 17) == 0 || !strcmp(k, "general.file_type") ||
            !strcmp(k, "general.quantization_version"))
            continue;
        TRY(mf_gguf_writer_set_value(w, k, &q->g->kv[i].value));
    }
    TRY(mf_gguf_writer_set_u32(w, "general.quantization_version", 2));
    TRY(mf_gguf_writer_set_u32(w, "general.file_type", (uint32_t)q->mx->ftype));
    const mf_imatrix *im = q->p->imatrix;
    if (im) {
        const char *ds = mf_imatrix_dataset(im);
        if (ds) TRY(mf_gguf_writer_set_str(w, "quantize.imatrix.dataset", ds));
        TRY(mf_gguf_writer_set_i32(w, "quantize.imatrix.entries_count", mf_imatrix_count(im)));
        TRY(mf_gguf_writer_set_i32(w, "quantize.imatrix.chunks_count", mf_imatrix_chunks(im)));
    }
    for (uint64_t i = 0; i < q->g->n_tensors; i++) {
        const mf_gguf_tensor *t = &q->g->tensors[q->order[i]];
        TRY(mf_gguf_writer_add_tensor(w, t->name, t->n_dims, t->ne, q->plan[q->order[i]].type,
                                      NULL));
    }
    return MF_OK;
}

static mf_status check_args(const char *in, const char *out, const mf_quantize_params *p,
                            const mf_quant_mixture **mx) {
    if (!in || !out || !p || !p->type)
        return mf_errorf(MF_E_INVALID, "quantize: input, output and type are required");
    if (!(*mx = mf_quant_mixture_find(p->type))) {
        char names[512] = "";
        for (int i = 0; mf_quantize_type_name(i); i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? " " : "",
                     mf_quantize_type_name(i));
        return mf_errorf(MF_E_INVALID, "unknown quantization type '%s' (one of: %s)", p->type,
                         names);
    }
    if (mf_same_file(in, out))
        return mf_errorf(MF_E_INVALID, "refusing to write '%s': it is the input file", out);
    return MF_OK;
}

static void qfile_free(qfile *q) {
    mf_pool_free(q->pool);
    free(q->scratch);
    free(q->row_sq);
    free(q->row_err);
    free(q->row_werr);
    free(q->failed);
    free(q->plan);
    free(q->order);
    mf_gguf_close(q->g);
}

mf_status mf_quantize_file(const char *in, const char *out, const mf_quantize_params *p) {
    qfile q = {.p = p};
    mf_gguf_writer *w = NULL;
    TRY(check_args(in, out, p, &q.mx));
    mf_status st = mf_gguf_open(in, &q.g);
    if (st != MF_OK) return st;
    size_t nt = q.g->n_tensors ? (size_t)q.g->n_tensors : 1;
    q.plan = calloc(nt, sizeof *q.plan);
    q.order = calloc(nt, sizeof *q.order);
    if (!q.plan || !q.order) st = mf_errorf(MF_E_NOMEM, "out of memory");
    if (st == MF_OK) st = mf_quant_order(q.g, q.order);
    if (st == MF_OK) st = mf_quant_plan(q.g, q.order, q.mx, p->pure, p->imatrix != NULL, q.plan);
    if (st == MF_OK) st = check_types(&q);
    if (st == MF_OK) st = alloc_work(&q);
    if (st == MF_OK) st = mf_gguf_writer_create(&w);
    if (st == MF_OK) st = setup_writer(&q, w, in);
    if (st == MF_OK) st = mf_gguf_writer_write(w, out, fill, &q);
    mf_gguf_writer_free(w);
    qfile_free(&q);
    return st;
}
