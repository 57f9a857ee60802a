/* gguf.c — the GGUF reader: parsing a mapped file (or a buffer) into an
 * mf_gguf, and the getters the rest of memfit reads metadata through.
 *
 * Nothing from the file is trusted: every count and length is checked against
 * the bytes left before anything is allocated for it (so a 2^60-element array
 * in a 1 KB file fails at once), sizes are multiplied with overflow checks,
 * nested arrays are limited in depth, and each tensor's data must lie, aligned,
 * inside the file. Strings and numeric arrays point into the mapping; keys,
 * names and the tables are copied into the arena that mf_gguf_close frees. */
#include "io/io_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_MAX_DEPTH 8
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct parser {
    io_reader r;
    mf_gguf *g;
    io_arena *arena;
} parser;

static const uint8_t vtype_size[MF_GGUF_VTYPE_COUNT] = {
    [MF_GGUF_U8] = 1, [MF_GGUF_I8] = 1, [MF_GGUF_U16] = 2, [MF_GGUF_I16] = 2,
    [MF_GGUF_U32] = 4, [MF_GGUF_I32] = 4, [MF_GGUF_F32] = 4, [MF_GGUF_BOOL] = 1,
    [MF_GGUF_U64] = 8, [MF_GGUF_I64] = 8, [MF_GGUF_F64] = 8,
};

const char *mf_gguf_vtype_name(int t) {
    static const char *names[MF_GGUF_VTYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64",
        "f64"};
    return t >= 0 && t < MF_GGUF_VTYPE_COUNT ? names[t] : "?";
}

/* Decode one little-endian scalar of type t from b into v (v->type is set). */
static void decode_scalar(mf_gguf_vtype t, const uint8_t *b, mf_gguf_value *v) {
    uint64_t x = 0;
    for (unsigned i = 0; i < vtype_size[t]; i++) x |= (uint64_t)b[i] << (8 * i);
    v->type = t;
    switch (t) {
    case MF_GGUF_I8: v->v.i64 = (int8_t)x; break;
    case MF_GGUF_I16: v->v.i64 = (int16_t)x; break;
    case MF_GGUF_I32: v->v.i64 = (int32_t)x; break;
    case MF_GGUF_I64: v->v.i64 = (int64_t)x; break;
    case MF_GGUF_F32: {
        uint32_t u = (uint32_t)x;
        float f;
        memcpy(&f, &u, 4);
        v->v.f64 = f;
        break;
    }
    case MF_GGUF_F64: memcpy(&v->v.f64, &x, 8); break;
    default: v->v.u64 = x; break;
    }
}

static bool is_scalar(uint32_t t) {
    return t < MF_GGUF_VTYPE_COUNT && t != MF_GGUF_STRING && t != MF_GGUF_ARRAY;
}

static mf_status parse_str(parser *p, mf_gguf_str *s) {
    uint64_t len;
    const uint8_t *b = NULL;
    TRY(io_reader_u64(&p->r, &len));
    if (len > io_reader_left(&p->r))
        return io_reader_fail(&p->r, MF_E_FORMAT,
                              "string length %llu exceeds the %llu bytes left in the file",
                              (unsigned long long)len, (unsigned long long)io_reader_left(&p->r));
    TRY(io_reader_bytes(&p->r, len, &b));
    s->ptr = (const char *)b;
    s->len = len;
    return MF_OK;
}

/* A key or tensor name: copied, NUL-terminated, without embedded NULs. */
static mf_status parse_name(parser *p, const char *kind, char **out) {
    mf_gguf_str s;
    TRY(parse_str(p, &s));
    if (memchr(s.ptr, 0, (size_t)s.len))
        return io_reader_fail(&p->r, MF_E_FORMAT, "%s contains a NUL byte", kind);
    *out = io_arena_strndup(&p->arena, s.ptr, s.len);
    return *out ? MF_OK : MF_E_NOMEM;
}

static mf_status parse_value(parser *p, mf_gguf_vtype t, mf_gguf_value *v, int depth);

/* Check that n elements of at least min_bytes each can fit in what is left. */
static mf_status check_count(parser *p, uint64_t n, uint64_t min_bytes, const char *what) {
    if (n > io_reader_left(&p->r) / min_bytes)
        return io_reader_fail(&p->r, MF_E_FORMAT,
                              "%s count %llu cannot fit in the %llu bytes left in the file", what,
                              (unsigned long long)n, (unsigned long long)io_reader_left(&p->r));
    return MF_OK;
}

static mf_status parse_array(parser *p, mf_gguf_value *v, int depth) {
    uint32_t et;
    uint64_t n;
    if (depth >= GGUF_MAX_DEPTH)
        return io_reader_fail(&p->r, MF_E_FORMAT, "arrays nested deeper than %d", GGUF_MAX_DEPTH);
    TRY(io_reader_u32(&p->r, &et));
    TRY(io_reader_u64(&p->r, &n));
    if (et >= MF_GGUF_VTYPE_COUNT)
        return io_reader_fail(&p->r, MF_E_FORMAT, "unknown array element type %u", et);
    v->type = MF_GGUF_ARRAY;
    v->v.arr.type = (mf_gguf_vtype)et;
    v->v.arr.n = n;
    if (is_scalar(et)) {
        const uint8_t *b = NULL;
        TRY(check_count(p, n, vtype_size[et], "array element"));
        TRY(io_reader_bytes(&p->r, n * vtype_size[et], &b));
        v->v.arr.data = b;
        return MF_OK;
    }
    if (et == MF_GGUF_STRING) {
        TRY(check_count(p, n, 8, "string array element"));
        if (n && !(v->v.arr.strs = io_arena_alloc(&p->arena, n * sizeof(mf_gguf_str))))
            return MF_E_NOMEM;
        for (uint64_t i = 0; i < n; i++) TRY(parse_str(p, &v->v.arr.strs[i]));
        return MF_OK;
    }
    TRY(check_count(p, n, 12, "nested array"));
    if (n && !(v->v.arr.items = io_arena_alloc(&p->arena, n * sizeof(mf_gguf_value))))
        return MF_E_NOMEM;
    for (uint64_t i = 0; i < n; i++) TRY(parse_array(p, &v->v.arr.items[i], depth + 1));
    return MF_OK;
}

static mf_status parse_value(parser *p, mf_gguf_vtype t, mf_gguf_value *v, int depth) {
    if (t == MF_GGUF_STRING) {
        v->type = t;
        return parse_str(p, &v->v.str);
    }
    if (t == MF_GGUF_ARRAY) return parse_array(p, v, depth);
    const uint8_t *b = NULL;
    TRY(io_reader_bytes(&p->r, vtype_size[t], &b));
    decode_scalar(t, b, v);
    return MF_OK;
}

static mf_status parse_header(parser *p) {
    const uint8_t *magic = NULL;
    uint32_t version;
    TRY(io_reader_bytes(&p->r, 4, &magic));
    if (memcmp(magic, "GGUF", 4) != 0)
        return mf_errorf(MF_E_FORMAT, "%s: not a GGUF file (bad magic %02x %02x %02x %02x)",
                         p->r.name, magic[0], magic[1], magic[2], magic[3]);
    TRY(io_reader_u32(&p->r, &version));
    if (version && (version & 0xffffu) == 0) /* a small version number, byte-swapped */
        return mf_errorf(MF_E_UNSUPPORTED, "%s: big-endian GGUF files are not supported",
                         p->r.name);
    if (version != 2 && version != 3)
        return mf_errorf(MF_E_UNSUPPORTED,
                         "%s: GGUF version %u is not supported (only versions 2 and 3)",
                         p->r.name, version);
    p->g->version = version;
    TRY(io_reader_u64(&p->r, &p->g->n_tensors));
    TRY(io_reader_u64(&p->r, &p->g->n_kv));
    return MF_OK;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sort a copy of the names and look at neighbours: O(n log n) for any count. */
static mf_status check_unique(parser *p, uint64_t n, size_t stride, const void *base,
                              const char *kind) {
    if (n < 2) return MF_OK;
    const char **names = malloc((size_t)n * sizeof *names);
    if (!names) return mf_errorf(MF_E_NOMEM, "out of memory");
    for (uint64_t i = 0; i < n; i++)
        memcpy(&names[i], (const char *)base + i * stride, sizeof(char *));
    qsort(names, (size_t)n, sizeof *names, cmp_names);
    mf_status st = MF_OK;
    for (uint64_t i = 1; i < n && st == MF_OK; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            st = mf_errorf(MF_E_FORMAT, "%s: duplicate %s '%s'", p->r.name, kind, names[i]);
    free(names);
    return st;
}

static mf_status parse_kvs(parser *p) {
    mf_gguf *g = p->g;
    snprintf(p->r.what, sizeof p->r.what, "header");
    TRY(check_count(p, g->n_kv, 13, "key-value"));
    if (g->n_kv && !(g->kv = io_arena_alloc(&p->arena, g->n_kv * sizeof(mf_gguf_kv))))
        return MF_E_NOMEM;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        mf_gguf_kv *kv = &g->kv[i];
        uint32_t t;
        snprintf(p->r.what, sizeof p->r.what, "key %llu", (unsigned long long)i);
        TRY(parse_name(p, "key", &kv->key));
        snprintf(p->r.what, sizeof p->r.what, "key '%.100s'", kv->key);
        TRY(io_reader_u32(&p->r, &t));
        if (t >= MF_GGUF_VTYPE_COUNT)
            return io_reader_fail(&p->r, MF_E_FORMAT, "unknown value type %u", t);
        TRY(parse_value(p, (mf_gguf_vtype)t, &kv->value, 0));
    }
    return g->n_kv ? check_unique(p, g->n_kv, sizeof(mf_gguf_kv), &g->kv[0].key, "key") : MF_OK;
}

/* Shape, type and size of one tensor info (the offset is checked later). */
static mf_status parse_tensor_shape(parser *p, mf_gguf_tensor *t) {
    uint32_t n_dims, type;
    TRY(io_reader_u32(&p->r, &n_dims));
    if (n_dims < 1 || n_dims > 4)
        return io_reader_fail(&p->r, MF_E_FORMAT, "%u dimensions (must be 1 to 4)", n_dims);
    t->n_dims = (int)n_dims;
    uint64_t n_elems = 1;
    for (int d = 0; d < 4; d++) {
        uint64_t ne = 1;
        if (d < (int)n_dims) TRY(io_reader_u64(&p->r, &ne));
        if (ne > (uint64_t)INT64_MAX || !mf_mul_ok(n_elems, ne, &n_elems) ||
            n_elems > (uint64_t)INT64_MAX)
            return io_reader_fail(&p->r, MF_E_FORMAT, "dimension %d (%llu) is too large", d,
                                  (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
    }
    TRY(io_reader_u32(&p->r, &type));
    if (!mf_type_layout_of((int)type))
        return io_reader_fail(&p->r, MF_E_UNSUPPORTED, "unknown tensor type %u", type);
    t->type = (int)type;
    uint64_t row;
    if (!mf_type_row_bytes(t->type, (uint64_t)t->ne[0], &row))
        return io_reader_fail(&p->r, MF_E_FORMAT,
                              "row length %lld is not a multiple of the %s block size %d",
                              (long long)t->ne[0], mf_type_name(t->type),
                              mf_type_layout_of(t->type)->block);
    uint64_t rows = (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
    if (!mf_mul_ok(row, rows, &t->n_bytes))
        return io_reader_fail(&p->r, MF_E_FORMAT, "data size overflows");
    return MF_OK;
}

static mf_status parse_tensor_infos(parser *p) {
    mf_gguf *g = p->g;
    snprintf(p->r.what, sizeof p->r.what, "tensor infos");
    TRY(check_count(p, g->n_tensors, 32, "tensor"));
    if (g->n_tensors &&
        !(g->tensors = io_arena_alloc(&p->arena, g->n_tensors * sizeof(mf_gguf_tensor))))
        return MF_E_NOMEM;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        mf_gguf_tensor *t = &g->tensors[i];
        snprintf(p->r.what, sizeof p->r.what, "tensor %llu", (unsigned long long)i);
        TRY(parse_name(p, "tensor name", &t->name));
        snprintf(p->r.what, sizeof p->r.what, "tensor '%.100s'", t->name);
        TRY(parse_tensor_shape(p, t));
        TRY(io_reader_u64(&p->r, &t->offset));
    }
    if (!g->n_tensors) return MF_OK;
    return check_unique(p, g->n_tensors, sizeof(mf_gguf_tensor), &g->tensors[0].name,
                        "tensor name");
}

static mf_status read_alignment(parser *p) {
    const mf_gguf_value *v = mf_gguf_get(p->g, "general.alignment");
    p->g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!v) return MF_OK;
    if (v->type != MF_GGUF_U32)
        return mf_errorf(MF_E_FORMAT, "%s: key 'general.alignment' has type %s (must be u32)",
                         p->r.name, mf_gguf_vtype_name(v->type));
    uint64_t a = v->v.u64;
    if (a == 0 || (a & (a - 1)) != 0)
        return mf_errorf(MF_E_FORMAT,
                         "%s: key 'general.alignment' is %llu (must be a nonzero power of two)",
                         p->r.name, (unsigned long long)a);
    p->g->alignment = a;
    return MF_OK;
}

/* The data section starts after the tensor infos, padded to the alignment;
 * each tensor must start aligned in it and end inside the file. */
static mf_status place_tensors(parser *p) {
    mf_gguf *g = p->g;
    uint64_t a = g->alignment, end = p->r.pos, start;
    if (!mf_add_ok(end, a - 1, &start))
        return mf_errorf(MF_E_FORMAT, "%s: data section offset overflows", p->r.name);
    start &= ~(a - 1);
    if (start > g->size) {
        if (g->n_tensors)
            return mf_errorf(MF_E_FORMAT,
                             "%s: the data section (at offset %llu) starts past the end of the "
                             "file (size %llu)",
                             p->r.name, (unsigned long long)start, (unsigned long long)g->size);
        start = g->size; /* a tensor-less file may end without padding */
    }
    g->data_offset = start;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        mf_gguf_tensor *t = &g->tensors[i];
        uint64_t at, last;
        if (t->offset % a)
            return mf_errorf(MF_E_FORMAT,
                             "%s: tensor '%s': data offset %llu is not a multiple of the "
                             "alignment %llu",
                             p->r.name, t->name, (unsigned long long)t->offset,
                             (unsigned long long)a);
        if (!mf_add_ok(start, t->offset, &at) || !mf_add_ok(at, t->n_bytes, &last) ||
            last > g->size)
            return mf_errorf(MF_E_FORMAT,
                             "%s: tensor '%s': data [offset %llu, %llu bytes] runs past the end "
                             "of the file (size %llu)",
                             p->r.name, t->name, (unsigned long long)(start + t->offset),
                             (unsigned long long)t->n_bytes, (unsigned long long)g->size);
        t->data = g->base + at;
    }
    return MF_OK;
}

mf_status mf_gguf_parse(const void *data, uint64_t size, const char *name, mf_gguf **out) {
    *out = NULL;
    if (!data && size) return mf_errorf(MF_E_INVALID, "mf_gguf_parse: NULL data");
    static const uint8_t empty[1];
    mf_gguf *g = calloc(1, sizeof *g);
    if (!g) return mf_errorf(MF_E_NOMEM, "out of memory");
    parser p = {.g = g};
    io_reader_init(&p.r, data ? data : empty, size, name);
    g->base = data;
    g->size = size;
    mf_status st;
    if ((st = parse_header(&p)) != MF_OK) goto fail;
    if ((st = parse_kvs(&p)) != MF_OK) goto fail;
    if ((st = parse_tensor_infos(&p)) != MF_OK) goto fail;
    if ((st = read_alignment(&p)) != MF_OK) goto fail;
    if ((st = place_tensors(&p)) != MF_OK) goto fail;
    g->arena = p.arena;
    *out = g;
    return MF_OK;
fail:
    io_arena_free(p.arena);
    free(g);
    return st;
}

mf_status mf_gguf_open(const char *path, mf_gguf **out) {
    void *map;
    uint64_t size;
    *out = NULL;
    TRY(io_map_file(path, &map, &size));
    mf_status st = mf_gguf_parse(map, size, path, out);
    if (st != MF_OK) {
        io_unmap(map, size);
        return st;
    }
    (*out)->map = map;
    return MF_OK;
}

void mf_gguf_close(mf_gguf *g) {
    if (!g) return;
    io_unmap(g->map, g->size);
    io_arena_free(g->arena);
    free(g);
}

/* ---- getters ---- */

const mf_gguf_value *mf_gguf_get(const mf_gguf *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i].value;
    return NULL;
}

static bool value_int(const mf_gguf_value *v, int64_t *out) {
    switch (v->type) {
    case MF_GGUF_U8: case MF_GGUF_U16: case MF_GGUF_U32: case MF_GGUF_U64:
        if (v->v.u64 > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)v->v.u64;
        return true;
    case MF_GGUF_I8: case MF_GGUF_I16: case MF_GGUF_I32: case MF_GGUF_I64:
        *out = v->v.i64;
        return true;
    default: return false;
    }
}

bool mf_gguf_get_int(const mf_gguf *g, const char *key, int64_t *out) {
    const mf_gguf_value *v = mf_gguf_get(g, key);
    return v && value_int(v, out);
}

bool mf_gguf_get_float(const mf_gguf *g, const char *key, double *out) {
    const mf_gguf_value *v = mf_gguf_get(g, key);
    if (!v || (v->type != MF_GGUF_F32 && v->type != MF_GGUF_F64)) return false;
    *out = v->v.f64;
    return true;
}

bool mf_gguf_get_bool(const mf_gguf *g, const char *key, bool *out) {
    const mf_gguf_value *v = mf_gguf_get(g, key);
    if (!v || v->type != MF_GGUF_BOOL) return false;
    *out = v->v.u64 != 0;
    return true;
}

const mf_gguf_str *mf_gguf_get_str(const mf_gguf *g, const char *key) {
    const mf_gguf_value *v = mf_gguf_get(g, key);
    return v && v->type == MF_GGUF_STRING ? &v->v.str : NULL;
}

const mf_gguf_value *mf_gguf_get_arr(const mf_gguf *g, const char *key, mf_gguf_vtype elem) {
    const mf_gguf_value *v = mf_gguf_get(g, key);
    return v && v->type == MF_GGUF_ARRAY && v->v.arr.type == elem ? v : NULL;
}

const mf_gguf_tensor *mf_gguf_find_tensor(const mf_gguf *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
    return NULL;
}

static bool arr_elem(const mf_gguf_value *arr, uint64_t i, mf_gguf_value *e) {
    if (arr->type != MF_GGUF_ARRAY || !is_scalar(arr->v.arr.type) || i >= arr->v.arr.n)
        return false;
    unsigned sz = vtype_size[arr->v.arr.type];
    decode_scalar(arr->v.arr.type, (const uint8_t *)arr->v.arr.data + i * sz, e);
    return true;
}

double mf_gguf_arr_f64(const mf_gguf_value *arr, uint64_t i) {
    mf_gguf_value e;
    int64_t x;
    if (!arr_elem(arr, i, &e)) return 0.0;
    if (e.type == MF_GGUF_F32 || e.type == MF_GGUF_F64) return e.v.f64;
    if (e.type == MF_GGUF_U64 || e.type == MF_GGUF_BOOL || !value_int(&e, &x))
        return (double)e.v.u64;
    return (double)x;
}

int64_t mf_gguf_arr_i64(const mf_gguf_value *arr, uint64_t i) {
    mf_gguf_value e;
    int64_t x;
    if (!arr_elem(arr, i, &e)) return 0;
    if (e.type == MF_GGUF_F32 || e.type == MF_GGUF_F64) {
        double d = e.v.f64;
        if (!(d == d)) return 0;
        if (d >= 9223372036854775807.0) return INT64_MAX;
        if (d <= -9223372036854775808.0) return INT64_MIN;
        return (int64_t)d;
    }
    if (e.type == MF_GGUF_BOOL) return e.v.u64 != 0;
    return value_int(&e, &x) ? x : INT64_MAX; /* a u64 above INT64_MAX saturates */
}
