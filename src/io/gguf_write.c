/* gguf_write.c — the GGUF writer: key-values and tensor infos collected in
 * memory, then written as GGUF v3 in one pass through mf_outfile (path.tmp,
 * fsync, rename), so a failure never leaves a half-written file behind.
 *
 * Values are deep-copied into the writer's arena (a value read from another
 * file may outlive that file's mapping here). Tensor data is borrowed and
 * streamed at write time, or produced by the caller's fill callback one tensor
 * at a time. Small writes are gathered in a large staging buffer and large ones
 * go straight to the file, so writing gigabytes takes seconds. The layout is
 * llama.cpp's: every tensor's data is padded to the alignment, the last too. */
#include "io/io_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WRITER_DEFAULT_ALIGNMENT 32
#define WRITER_MAX_DEPTH 8
#define WRITER_MAX_NAME 63 /* llama.cpp rejects tensor names of 64 bytes or more */
#define STAGE_BYTES (8u << 20)

struct mf_gguf_writer {
    io_arena *arena;
    mf_gguf_kv *kv;          /* malloc'd table; keys and values in the arena */
    uint64_t n_kv, cap_kv;
    mf_gguf_tensor *tensors; /* malloc'd table; names in the arena, data borrowed */
    uint64_t n_tensors, cap_tensors;
    char **protect;          /* input paths never to write over (arena) */
    int n_protect;
};

static const uint8_t elem_size[MF_GGUF_VTYPE_COUNT] = {
    [MF_GGUF_U8] = 1, [MF_GGUF_I8] = 1, [MF_GGUF_U16] = 2, [MF_GGUF_I16] = 2,
    [MF_GGUF_U32] = 4, [MF_GGUF_I32] = 4, [MF_GGUF_F32] = 4, [MF_GGUF_BOOL] = 1,
    [MF_GGUF_U64] = 8, [MF_GGUF_I64] = 8, [MF_GGUF_F64] = 8,
};

mf_status mf_gguf_writer_create(mf_gguf_writer **out) {
    *out = calloc(1, sizeof **out);
    return *out ? MF_OK : mf_errorf(MF_E_NOMEM, "out of memory");
}

void mf_gguf_writer_free(mf_gguf_writer *w) {
    if (!w) return;
    io_arena_free(w->arena);
    free(w->kv);
    free(w->tensors);
    free(w);
}

/* Grow a malloc'd table to hold one more element. */
static mf_status grow(void **table, uint64_t *cap, uint64_t n, size_t elem) {
    if (n < *cap) return MF_OK;
    uint64_t ncap = *cap ? *cap * 2 : 16;
    void *t = realloc(*table, (size_t)ncap * elem);
    if (!t) return mf_errorf(MF_E_NOMEM, "out of memory");
    *table = t;
    *cap = ncap;
    return MF_OK;
}

/* ---- values ---- */

static mf_status copy_str(mf_gguf_writer *w, mf_gguf_str *dst, const mf_gguf_str *src) {
    if (src->len && !src->ptr) return mf_errorf(MF_E_INVALID, "string value with NULL bytes");
    char *p = io_arena_strndup(&w->arena, src->ptr, src->len);
    if (!p) return MF_E_NOMEM;
    dst->ptr = p;
    dst->len = src->len;
    return MF_OK;
}

static mf_status copy_value(mf_gguf_writer *w, mf_gguf_value *dst, const mf_gguf_value *src,
                            int depth);

static mf_status copy_array(mf_gguf_writer *w, mf_gguf_value *dst, const mf_gguf_value *src,
                            int depth) {
    mf_gguf_vtype et = src->v.arr.type;
    uint64_t n = src->v.arr.n, bytes;
    if ((unsigned)et >= MF_GGUF_VTYPE_COUNT)
        return mf_errorf(MF_E_INVALID, "array of unknown element type %d", (int)et);
    if (et == MF_GGUF_ARRAY && depth + 1 >= WRITER_MAX_DEPTH)
        return mf_errorf(MF_E_INVALID, "arrays nested deeper than %d", WRITER_MAX_DEPTH);
    dst->v.arr.type = et;
    dst->v.arr.n = n;
    if (n == 0) return MF_OK;
    size_t esz = elem_size[et] ? elem_size[et]
                 : et == MF_GGUF_STRING ? sizeof(mf_gguf_str) : sizeof(mf_gguf_value);
    if (!mf_mul_ok(n, esz, &bytes)) return mf_errorf(MF_E_INVALID, "array too large");
    const void *from = elem_size[et] ? src->v.arr.data
                       : et == MF_GGUF_STRING ? (const void *)src->v.arr.strs
                                              : (const void *)src->v.arr.items;
    if (!from) return mf_errorf(MF_E_INVALID, "array of %llu elements without data",
                                (unsigned long long)n);
    void *to = io_arena_alloc(&w->arena, bytes);
    if (!to) return MF_E_NOMEM;
    if (elem_size[et]) {
        memcpy(to, from, (size_t)bytes);
        dst->v.arr.data = to;
    } else if (et == MF_GGUF_STRING) {
        dst->v.arr.strs = to;
        for (uint64_t i = 0; i < n; i++) TRY(copy_str(w, &dst->v.arr.strs[i], &src->v.arr.strs[i]));
    } else {
        dst->v.arr.items = to;
        for (uint64_t i = 0; i < n; i++)
            TRY(copy_value(w, &dst->v.arr.items[i], &src->v.arr.items[i], depth + 1));
    }
    return MF_OK;
}

static mf_status copy_value(mf_gguf_writer *w, mf_gguf_value *dst, const mf_gguf_value *src,
                            int depth) {
    memset(dst, 0, sizeof *dst);
    dst->type = src->type;
    switch (src->type) {
    case MF_GGUF_STRING: return copy_str(w, &dst->v.str, &src->v.str);
    case MF_GGUF_ARRAY: return copy_array(w, dst, src, depth);
    default:
        if ((unsigned)src->type >= MF_GGUF_VTYPE_COUNT)
            return mf_errorf(MF_E_INVALID, "value of unknown type %d", (int)src->type);
        dst->v = src->v;
        return MF_OK;
    }
}

/* Set key to a copy of v, replacing an earlier value of the same key in place. */
mf_status mf_gguf_writer_set_value(mf_gguf_writer *w, const char *key, const mf_gguf_value *v) {
    if (!w || !key || !*key || !v) return mf_errorf(MF_E_INVALID, "gguf writer: empty key or value");
    mf_gguf_value copy;
    TRY(copy_value(w, &copy, v, 0));
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) {
            w->kv[i].value = copy;
            return MF_OK;
        }
    TRY(grow((void **)&w->kv, &w->cap_kv, w->n_kv, sizeof *w->kv));
    char *k = io_arena_strndup(&w->arena, key, strlen(key));
    if (!k) return MF_E_NOMEM;
    w->kv[w->n_kv].key = k;
    w->kv[w->n_kv].value = copy;
    w->n_kv++;
    return MF_OK;
}

static mf_status set_scalar(mf_gguf_writer *w, const char *key, mf_gguf_vtype t, uint64_t u,
                            int64_t i, double f) {
    mf_gguf_value v = {.type = t};
    if (t == MF_GGUF_I32) v.v.i64 = i;
    else if (t == MF_GGUF_F32) v.v.f64 = f;
    else v.v.u64 = u;
    return mf_gguf_writer_set_value(w, key, &v);
}

mf_status mf_gguf_writer_set_u32(mf_gguf_writer *w, const char *key, uint32_t v) {
    return set_scalar(w, key, MF_GGUF_U32, v, 0, 0);
}
mf_status mf_gguf_writer_set_i32(mf_gguf_writer *w, const char *key, int32_t v) {
    return set_scalar(w, key, MF_GGUF_I32, 0, v, 0);
}
mf_status mf_gguf_writer_set_f32(mf_gguf_writer *w, const char *key, float v) {
    return set_scalar(w, key, MF_GGUF_F32, 0, 0, v);
}
mf_status mf_gguf_writer_set_bool(mf_gguf_writer *w, const char *key, bool v) {
    return set_scalar(w, key, MF_GGUF_BOOL, v ? 1 : 0, 0, 0);
}
mf_status mf_gguf_writer_set_str(mf_gguf_writer *w, const char *key, const char *s) {
    if (!s) return mf_errorf(MF_E_INVALID, "gguf writer: NULL string for key '%s'", key ? key : "");
    mf_gguf_value v = {.type = MF_GGUF_STRING, .v.str = {s, strlen(s)}};
    return mf_gguf_writer_set_value(w, key, &v);
}

mf_status mf_gguf_writer_protect(mf_gguf_writer *w, const char *input_path) {
    if (!w || !input_path) return mf_errorf(MF_E_INVALID, "gguf writer: NULL input path");
    char **p = io_arena_alloc(&w->arena, (uint64_t)(w->n_protect + 1) * sizeof *p);
    if (!p) return MF_E_NOMEM;
    if (w->n_protect) memcpy(p, w->protect, (size_t)w->n_protect * sizeof *p);
    if (!(p[w->n_protect] = io_arena_strndup(&w->arena, input_path, strlen(input_path))))
        return MF_E_NOMEM;
    w->protect = p;
    w->n_protect++;
    return MF_OK;
}

/* ---- tensors ---- */

static mf_status tensor_shape(mf_gguf_tensor *t, int n_dims, const int64_t *ne, int type) {
    if (n_dims < 1 || n_dims > 4 || !ne)
        return mf_errorf(MF_E_INVALID, "tensor '%s': %d dimensions (must be 1 to 4)", t->name, n_dims);
    if (!mf_type_layout_of(type))
        return mf_errorf(MF_E_INVALID, "tensor '%s': unknown tensor type %d", t->name, type);
    uint64_t n = 1, rows = 1, row;
    for (int d = 0; d < 4; d++) {
        int64_t e = d < n_dims ? ne[d] : 1;
        if (e < 0 || !mf_mul_ok(n, (uint64_t)e, &n) || n > (uint64_t)INT64_MAX)
            return mf_errorf(MF_E_INVALID, "tensor '%s': bad dimension %d (%lld)", t->name, d,
                             (long long)e);
        t->ne[d] = e;
        if (d) rows *= (uint64_t)e;
    }
    t->n_dims = n_dims;
    t->type = type;
    if (!mf_type_row_bytes(type, (uint64_t)t->ne[0], &row))
        return mf_errorf(MF_E_INVALID, "tensor '%s': row length %lld is not a multiple of the %s "
                         "block size %d", t->name, (long long)t->ne[0], mf_type_name(type),
                         mf_type_layout_of(type)->block);
    if (!mf_mul_ok(row, rows, &t->n_bytes))
        return mf_errorf(MF_E_INVALID, "tensor '%s': size overflows", t->name);
    return MF_OK;
}

mf_status mf_gguf_writer_add_tensor(mf_gguf_writer *w, const char *name, int n_dims,
                                    const int64_t *ne, int type, const void *data) {
    if (!w || !name || !*name) return mf_errorf(MF_E_INVALID, "gguf writer: empty tensor name");
    if (strlen(name) > WRITER_MAX_NAME)
        return mf_errorf(MF_E_INVALID, "tensor '%s': name longer than %d bytes", name,
                         WRITER_MAX_NAME);
    for (uint64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return mf_errorf(MF_E_INVALID, "tensor '%s' added twice", name);
    mf_gguf_tensor t = {.name = (char *)name, .data = data};
    TRY(tensor_shape(&t, n_dims, ne, type));
    TRY(grow((void **)&w->tensors, &w->cap_tensors, w->n_tensors, sizeof *w->tensors));
    if (!(t.name = io_arena_strndup(&w->arena, name, strlen(name)))) return MF_E_NOMEM;
    w->tensors[w->n_tensors++] = t;
    return MF_OK;
}

/* ---- serialization ---- */

typedef struct stage {
    mf_outfile *f;
    uint8_t *buf;
    size_t len, cap;
    uint64_t written; /* bytes handed to the stage so far = file position */
} stage;

static mf_status stage_flush(stage *s) {
    mf_status st = mf_outfile_write(s->f, s->buf, s->len);
    s->len = 0;
    return st;
}

static mf_status stage_put(stage *s, const void *p, uint64_t n) {
    s->written += n;
    if (n >= s->cap) {
        TRY(stage_flush(s));
        return mf_outfile_write(s->f, p, (size_t)n);
    }
    if (s->len + n > s->cap) TRY(stage_flush(s));
    memcpy(s->buf + s->len, p, (size_t)n);
    s->len += (size_t)n;
    return MF_OK;
}

static mf_status put_le(stage *s, uint64_t x, unsigned n) {
    uint8_t b[8];
    for (unsigned i = 0; i < n; i++) b[i] = (uint8_t)(x >> (8 * i));
    return stage_put(s, b, n);
}

static mf_status put_str(stage *s, const char *p, uint64_t len) {
    TRY(put_le(s, len, 8));
    return stage_put(s, p, len);
}

static mf_status put_pad(stage *s, uint64_t align) {
    static const uint8_t zeros[256];
    uint64_t pad = (align - s->written % align) % align;
    while (pad) {
        uint64_t n = pad < sizeof zeros ? pad : sizeof zeros;
        TRY(stage_put(s, zeros, n));
        pad -= n;
    }
    return MF_OK;
}

static mf_status put_value(stage *s, const mf_gguf_value *v, bool with_type);

static mf_status put_array(stage *s, const mf_gguf_value *v) {
    mf_gguf_vtype et = v->v.arr.type;
    TRY(put_le(s, (uint64_t)et, 4));
    TRY(put_le(s, v->v.arr.n, 8));
    if (elem_size[et]) return v->v.arr.n ? stage_put(s, v->v.arr.data, v->v.arr.n * elem_size[et]) : MF_OK;
    for (uint64_t i = 0; i < v->v.arr.n; i++) {
        if (et == MF_GGUF_STRING) TRY(put_str(s, v->v.arr.strs[i].ptr, v->v.arr.strs[i].len));
        else TRY(put_value(s, &v->v.arr.items[i], false));
    }
    return MF_OK;
}

static mf_status put_value(stage *s, const mf_gguf_value *v, bool with_type) {
    if (with_type) TRY(put_le(s, (uint64_t)v->type, 4));
    switch (v->type) {
    case MF_GGUF_STRING: return put_str(s, v->v.str.ptr, v->v.str.len);
    case MF_GGUF_ARRAY: return put_array(s, v);
    case MF_GGUF_F32: {
        float f = (float)v->v.f64;
        uint32_t u;
        memcpy(&u, &f, 4);
        return put_le(s, u, 4);
    }
    case MF_GGUF_F64: {
        uint64_t u;
        memcpy(&u, &v->v.f64, 8);
        return put_le(s, u, 8);
    }
    case MF_GGUF_I8: case MF_GGUF_I16: case MF_GGUF_I32: case MF_GGUF_I64:
        return put_le(s, (uint64_t)v->v.i64, elem_size[v->type]);
    default: return put_le(s, v->v.u64, elem_size[v->type]);
    }
}

static mf_status writer_alignment(const mf_gguf_writer *w, uint64_t *align) {
    *align = WRITER_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0) continue;
        const mf_gguf_value *v = &w->kv[i].value;
        if (v->type != MF_GGUF_U32 || v->v.u64 == 0 || (v->v.u64 & (v->v.u64 - 1)))
            return mf_errorf(MF_E_INVALID, "general.alignment must be a u32 power of two");
        *align = v->v.u64;
    }
    return MF_OK;
}

/* Offsets of each tensor in the data section; false if they overflow. */
static bool layout_offsets(mf_gguf_writer *w, uint64_t align) {
    uint64_t off = 0;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        w->tensors[i].offset = off;
        if (!mf_add_ok(off, w->tensors[i].n_bytes, &off) || !mf_add_ok(off, align - 1, &off))
            return false;
        off &= ~(align - 1);
    }
    return true;
}

static mf_status put_header(stage *s, const mf_gguf_writer *w, uint64_t align) {
    TRY(stage_put(s, "GGUF", 4));
    TRY(put_le(s, 3, 4));
    TRY(put_le(s, w->n_tensors, 8));
    TRY(put_le(s, w->n_kv, 8));
    for (uint64_t i = 0; i < w->n_kv; i++) {
        TRY(put_str(s, w->kv[i].key, strlen(w->kv[i].key)));
        TRY(put_value(s, &w->kv[i].value, true));
    }
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        const mf_gguf_tensor *t = &w->tensors[i];
        TRY(put_str(s, t->name, strlen(t->name)));
        TRY(put_le(s, (uint64_t)t->n_dims, 4));
        for (int d = 0; d < t->n_dims; d++) TRY(put_le(s, (uint64_t)t->ne[d], 8));
        TRY(put_le(s, (uint64_t)t->type, 4));
        TRY(put_le(s, t->offset, 8));
    }
    return put_pad(s, align);
}

/* Tensor data: borrowed bytes, or the fill callback into one reused buffer. */
static mf_status put_tensors(stage *s, const mf_gguf_writer *w, uint64_t align,
                             mf_gguf_fill_fn fill, void *ctx) {
    uint8_t *buf = NULL;
    uint64_t buf_cap = 0;
    mf_status st = MF_OK;
    for (uint64_t i = 0; i < w->n_tensors && st == MF_OK; i++) {
        const mf_gguf_tensor *t = &w->tensors[i];
        const void *src = t->data;
        if (!src && t->n_bytes) {
            if (t->n_bytes > buf_cap) {
                free(buf);
                buf_cap = t->n_bytes;
                buf = t->n_bytes <= SIZE_MAX ? malloc((size_t)buf_cap) : NULL;
                if (!buf) {
                    st = mf_errorf(MF_E_NOMEM, "tensor '%s': cannot allocate %llu bytes",
                                   t->name, (unsigned long long)buf_cap);
                    goto fail;
                }
            }
            memset(buf, 0, (size_t)t->n_bytes);
            if ((st = fill(ctx, (int)i, buf, t->n_bytes)) != MF_OK) goto fail;
            src = buf;
        }
        if (t->n_bytes && (st = stage_put(s, src, t->n_bytes)) != MF_OK) goto fail;
        st = put_pad(s, align);
    }
fail:
    free(buf);
    return st;
}

static mf_status check_write_args(const mf_gguf_writer *w, const char *path, mf_gguf_fill_fn fill) {
    if (!w || !path || !*path) return mf_errorf(MF_E_INVALID, "gguf writer: no output path");
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    for (int i = 0; i < w->n_protect; i++)
        if (mf_same_file(path, w->protect[i]) || mf_same_file(tmp, w->protect[i]))
            return mf_errorf(MF_E_INVALID, "refusing to write '%s': it would overwrite the input '%s'",
                             path, w->protect[i]);
    for (uint64_t i = 0; i < w->n_tensors; i++)
        if (!w->tensors[i].data && w->tensors[i].n_bytes && !fill)
            return mf_errorf(MF_E_INVALID, "tensor '%s' has no data and no fill callback was given",
                             w->tensors[i].name);
    if (w->n_tensors > (uint64_t)INT32_MAX)
        return mf_errorf(MF_E_INVALID, "gguf writer: too many tensors");
    return MF_OK;
}

mf_status mf_gguf_writer_write(mf_gguf_writer *w, const char *path, mf_gguf_fill_fn fill,
                               void *ctx) {
    uint64_t align;
    TRY(check_write_args(w, path, fill));
    TRY(writer_alignment(w, &align));
    if (!layout_offsets(w, align)) return mf_errorf(MF_E_INVALID, "gguf writer: data too large");
    mf_outfile f;
    memset(&f, 0, sizeof f);
    stage s = {.f = &f, .cap = STAGE_BYTES};
    mf_status st = MF_OK;
    if (!(s.buf = malloc(s.cap))) {
        st = mf_errorf(MF_E_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = mf_outfile_open(&f, path)) != MF_OK) goto fail;
    if ((st = put_header(&s, w, align)) != MF_OK) goto fail;
    if ((st = put_tensors(&s, w, align, fill, ctx)) != MF_OK) goto fail;
    if ((st = stage_flush(&s)) != MF_OK) goto fail;
    free(s.buf);
    return mf_outfile_commit(&f);
fail:
    mf_outfile_abort(&f); /* no-op when the file was never opened */
    free(s.buf);
    return st;
}
