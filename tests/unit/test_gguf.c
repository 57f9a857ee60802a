/* test_gguf.c — the GGUF reader and writer.
 *
 * Oracles: llama.cpp's own files in ../shared (they must parse, with every
 * tensor inside the file and known keys holding the values the README states);
 * a write/read round trip of every value type, nested and string arrays and
 * tensors of several types, compared field by field and byte by byte; and one
 * corrupt input per rejection rule (hand-built, truncated or patched files),
 * each of which must fail with a status and a message, never a crash. */
#include "io/gguf.h"
#include "test.h"

#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>

static char tmpdir[256];

/* ---- parsing the shared files ---- */

static bool tensors_inside(const mf_gguf *g) {
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const mf_gguf_tensor *t = &g->tensors[i];
        const uint8_t *p = t->data;
        if (p < g->base + g->data_offset || p + t->n_bytes > g->base + g->size) return false;
        if (t->offset % g->alignment) return false;
    }
    return true;
}

static void check_shared_file(const char *dir, const char *file) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    mf_gguf *g = NULL;
    mf_status st = mf_gguf_open(path, &g);
    CHECK(st == MF_OK, "%s: %s", path, mf_last_error());
    if (st != MF_OK) return;
    bool vocab = strstr(dir, "vocab") != NULL;
    printf("  %-32s v%u %3llu kv %3llu tensors data at %llu\n", file, g->version,
           (unsigned long long)g->n_kv, (unsigned long long)g->n_tensors,
           (unsigned long long)g->data_offset);
    CHECK(g->version == 3, "%s version %u", file, g->version);
    CHECK(vocab ? g->n_tensors == 0 : g->n_tensors > 0, "%s tensors", file);
    CHECK(tensors_inside(g), "%s: tensor outside the file", file);
    const mf_gguf_value *toks = mf_gguf_get_arr(g, "tokenizer.ggml.tokens", MF_GGUF_STRING);
    CHECK(toks && toks->v.arr.n > 0, "%s: tokenizer.ggml.tokens", file);
    if (!vocab) {
        const mf_gguf_str *arch = mf_gguf_get_str(g, "general.architecture");
        CHECK(arch && arch->len == 5 && memcmp(arch->ptr, "llama", 5) == 0, "%s arch", file);
    }
    int64_t n;
    if (strstr(file, "synth-512")) {
        CHECK(mf_gguf_get_int(g, "llama.block_count", &n) && n == 4, "%s block_count", file);
        CHECK(mf_gguf_get_int(g, "llama.embedding_length", &n) && n == 256, "%s dim", file);
        CHECK(mf_gguf_get_int(g, "llama.attention.head_count_kv", &n) && n == 4, "%s kv", file);
        CHECK(g->n_tensors == 39, "%s: %llu tensors", file, (unsigned long long)g->n_tensors);
        CHECK(mf_gguf_find_tensor(g, "output.weight") != NULL, "%s untied", file);
    }
    if (strstr(file, "synth-mini")) {
        CHECK(mf_gguf_find_tensor(g, "output.weight") == NULL, "%s tied", file);
        CHECK(toks && toks->v.arr.n == 32000, "%s vocab", file);
    }
    if (strcmp(file, "stories260K.gguf") == 0) {
        const mf_gguf_tensor *t = mf_gguf_find_tensor(g, "blk.4.ffn_down.weight");
        CHECK(t && t->ne[0] == 172 && t->ne[1] == 64 && t->type == MF_TYPE_F32, "ffn_down");
        double eps;
        CHECK(mf_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &eps) &&
                  fabs(eps - 1e-5) < 1e-9, "eps");
    }
    mf_gguf_close(g);
}

static void test_shared_files(void) {
    const char *dirs[] = {"models", "models/quantized", "vocab"};
    int n_files = 0;
    for (int d = 0; d < 3; d++) {
        char dir[512];
        test_path(dir, sizeof dir, dirs[d]);
        DIR *dp = opendir(dir);
        CHECK(dp != NULL, "cannot open %s", dir);
        if (!dp) continue;
        struct dirent *e;
        while ((e = readdir(dp))) {
            size_t len = strlen(e->d_name);
            if (len > 5 && strcmp(e->d_name + len - 5, ".gguf") == 0) {
                check_shared_file(dir, e->d_name);
                n_files++;
            }
        }
        closedir(dp);
    }
    CHECK(n_files >= 26, "only %d gguf files found", n_files);
}

/* ---- round trip ---- */

static bool str_eq(mf_gguf_str a, mf_gguf_str b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, (size_t)a.len) == 0);
}

static bool value_eq(const mf_gguf_value *a, const mf_gguf_value *b);

static bool array_eq(const mf_gguf_value *a, const mf_gguf_value *b) {
    static const int esz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (a->v.arr.type != b->v.arr.type || a->v.arr.n != b->v.arr.n) return false;
    uint64_t n = a->v.arr.n;
    if (n == 0) return true;
    switch (a->v.arr.type) {
    case MF_GGUF_STRING:
        for (uint64_t i = 0; i < n; i++)
            if (!str_eq(a->v.arr.strs[i], b->v.arr.strs[i])) return false;
        return true;
    case MF_GGUF_ARRAY:
        for (uint64_t i = 0; i < n; i++)
            if (!value_eq(&a->v.arr.items[i], &b->v.arr.items[i])) return false;
        return true;
    default: return memcmp(a->v.arr.data, b->v.arr.data, n * esz[a->v.arr.type]) == 0;
    }
}

static bool value_eq(const mf_gguf_value *a, const mf_gguf_value *b) {
    if (a->type != b->type) return false;
    switch (a->type) {
    case MF_GGUF_STRING: return str_eq(a->v.str, b->v.str);
    case MF_GGUF_ARRAY: return array_eq(a, b);
    case MF_GGUF_F32: case MF_GGUF_F64: return memcmp(&a->v.f64, &b->v.f64, 8) == 0;
    case MF_GGUF_I8: case MF_GGUF_I16: case MF_GGUF_I32: case MF_GGUF_I64:
        return a->v.i64 == b->v.i64;
    default: return a->v.u64 == b->v.u64;
    }
}

static mf_gguf_value arr_of(mf_gguf_vtype t, uint64_t n, const void *data) {
    mf_gguf_value v = {.type = MF_GGUF_ARRAY};
    v.v.arr.type = t;
    v.v.arr.n = n;
    if (t == MF_GGUF_STRING) v.v.arr.strs = (mf_gguf_str *)data;
    else if (t == MF_GGUF_ARRAY) v.v.arr.items = (mf_gguf_value *)data;
    else v.v.arr.data = data;
    return v;
}

static mf_gguf_value scalar(mf_gguf_vtype t, uint64_t u, int64_t i, double f) {
    mf_gguf_value v = {.type = t};
    if (t == MF_GGUF_F32 || t == MF_GGUF_F64) v.v.f64 = f;
    else if (t == MF_GGUF_I8 || t == MF_GGUF_I16 || t == MF_GGUF_I32 || t == MF_GGUF_I64)
        v.v.i64 = i;
    else v.v.u64 = u;
    return v;
}

/* Values of every type, set through set_value; the typed setters add more. */
static int add_all_values(mf_gguf_writer *w, mf_gguf_value *vals, char keys[][32]) {
    static const uint8_t u8s[] = {0, 1, 255};
    static const int8_t i8s[] = {-128, 0, 127};
    static const uint16_t u16s[] = {0, 65535, 7};
    static const int16_t i16s[] = {-32768, 32767};
    static const uint32_t u32s[] = {0, 4294967295u, 12345};
    static const int32_t i32s[] = {INT32_MIN, -1, 0, INT32_MAX, 5};
    static const float f32s[] = {0.0f, -1.5f, 3.25e-7f, INFINITY};
    static const uint8_t bools[] = {1, 0, 1};
    static const uint64_t u64s[] = {UINT64_MAX, 0};
    static const int64_t i64s[] = {INT64_MIN, INT64_MAX, -3};
    static const double f64s[] = {-0.0, 1e300, 3.141592653589793};
    static mf_gguf_str strs[] = {{"", 0}, {"hello", 5}, {"nul\0inside", 10}, {"\xe2\x96\x81x", 4}};
    static mf_gguf_value inner[3], inner2[2], outer[2], deep[8];
    int n = 0;
#define ADD(K, V) (snprintf(keys[n], 32, "%s", K), vals[n++] = (V))
    ADD("t.u8", scalar(MF_GGUF_U8, 200, 0, 0));
    ADD("t.i8", scalar(MF_GGUF_I8, 0, -100, 0));
    ADD("t.u16", scalar(MF_GGUF_U16, 60000, 0, 0));
    ADD("t.i16", scalar(MF_GGUF_I16, 0, -30000, 0));
    ADD("t.u64", scalar(MF_GGUF_U64, UINT64_MAX - 1, 0, 0));
    ADD("t.i64", scalar(MF_GGUF_I64, 0, INT64_MIN + 1, 0));
    ADD("t.f64", scalar(MF_GGUF_F64, 0, 0, -2.5e-300));
    ADD("t.bool0", scalar(MF_GGUF_BOOL, 0, 0, 0));
    ADD("a.u8", arr_of(MF_GGUF_U8, 3, u8s));
    ADD("a.i8", arr_of(MF_GGUF_I8, 3, i8s));
    ADD("a.u16", arr_of(MF_GGUF_U16, 3, u16s));
    ADD("a.i16", arr_of(MF_GGUF_I16, 2, i16s));
    ADD("a.u32", arr_of(MF_GGUF_U32, 3, u32s));
    ADD("a.i32", arr_of(MF_GGUF_I32, 5, i32s));
    ADD("a.f32", arr_of(MF_GGUF_F32, 4, f32s));
    ADD("a.bool", arr_of(MF_GGUF_BOOL, 3, bools));
    ADD("a.u64", arr_of(MF_GGUF_U64, 2, u64s));
    ADD("a.i64", arr_of(MF_GGUF_I64, 3, i64s));
    ADD("a.f64", arr_of(MF_GGUF_F64, 3, f64s));
    ADD("a.str", arr_of(MF_GGUF_STRING, 4, strs));
    ADD("a.empty_i32", arr_of(MF_GGUF_I32, 0, NULL));
    ADD("a.empty_str", arr_of(MF_GGUF_STRING, 0, NULL));
    inner[0] = arr_of(MF_GGUF_I32, 5, i32s);
    inner[1] = arr_of(MF_GGUF_STRING, 4, strs);
    inner[2] = arr_of(MF_GGUF_F64, 0, NULL);
    ADD("a.nested", arr_of(MF_GGUF_ARRAY, 3, inner));
    inner2[0] = arr_of(MF_GGUF_ARRAY, 3, inner);
    inner2[1] = arr_of(MF_GGUF_ARRAY, 0, NULL);
    outer[0] = arr_of(MF_GGUF_ARRAY, 2, inner2);
    outer[1] = arr_of(MF_GGUF_U8, 3, u8s);
    ADD("a.nested3", arr_of(MF_GGUF_ARRAY, 2, outer));
    deep[0] = arr_of(MF_GGUF_U8, 1, u8s); /* 8 levels: the most the reader accepts */
    for (int i = 1; i < 7; i++) deep[i] = arr_of(MF_GGUF_ARRAY, 1, &deep[i - 1]);
    ADD("a.deep8", arr_of(MF_GGUF_ARRAY, 1, &deep[6]));
#undef ADD
    for (int i = 0; i < n; i++) {
        mf_status st = mf_gguf_writer_set_value(w, keys[i], &vals[i]);
        CHECK(st == MF_OK, "set %s: %s", keys[i], mf_last_error());
    }
    return n;
}

typedef struct fill_ctx {
    int calls;
    int fail_idx; /* -1: never fail */
} fill_ctx;

static mf_status fill_pattern(void *ctx, int idx, void *dst, uint64_t n) {
    fill_ctx *f = ctx;
    f->calls++;
    if (idx == f->fail_idx) return mf_errorf(MF_E_IO, "fill failed on purpose");
    for (uint64_t i = 0; i < n; i++) ((uint8_t *)dst)[i] = (uint8_t)(i * 7 + (uint64_t)idx);
    return MF_OK;
}

typedef struct tspec {
    const char *name;
    int n_dims;
    int64_t ne[4];
    int type;
    uint64_t bytes;
    bool filled;
} tspec;

static const tspec tensors[] = {
    {"f32.2d", 2, {5, 3, 1, 1}, MF_TYPE_F32, 60, false},
    {"f16.1d", 1, {7, 1, 1, 1}, MF_TYPE_F16, 14, false},
    {"q8_0", 2, {64, 3, 1, 1}, MF_TYPE_Q8_0, 6 * 34, false},
    {"q4_k.3d", 3, {256, 1, 2, 1}, MF_TYPE_Q4_K, 2 * 144, true},
    {"i8.4d", 4, {3, 1, 1, 2}, MF_TYPE_I8, 6, false},
    {"empty", 2, {4, 0, 1, 1}, MF_TYPE_F32, 0, false},
    {"bf16.filled", 1, {33, 1, 1, 1}, MF_TYPE_BF16, 66, true},
};
enum { N_TENSORS = sizeof tensors / sizeof tensors[0] };

static uint8_t tensor_bytes[N_TENSORS][512];

static void add_tensors(mf_gguf_writer *w) {
    for (int i = 0; i < N_TENSORS; i++) {
        for (int b = 0; b < 512; b++) tensor_bytes[i][b] = (uint8_t)(b * 7 + i);
        mf_status st = mf_gguf_writer_add_tensor(w, tensors[i].name, tensors[i].n_dims,
                                                 tensors[i].ne, tensors[i].type,
                                                 tensors[i].filled ? NULL : tensor_bytes[i]);
        CHECK(st == MF_OK, "add %s: %s", tensors[i].name, mf_last_error());
    }
}

static void check_tensors(const mf_gguf *g, uint64_t align) {
    CHECK(g->n_tensors == N_TENSORS, "%llu tensors", (unsigned long long)g->n_tensors);
    for (int i = 0; i < N_TENSORS && (uint64_t)i < g->n_tensors; i++) {
        const mf_gguf_tensor *t = &g->tensors[i];
        CHECK(strcmp(t->name, tensors[i].name) == 0, "tensor %d name %s", i, t->name);
        CHECK(t->n_dims == tensors[i].n_dims && t->type == tensors[i].type, "%s dims/type", t->name);
        CHECK(memcmp(t->ne, tensors[i].ne, sizeof t->ne) == 0, "%s shape", t->name);
        CHECK(t->n_bytes == tensors[i].bytes, "%s bytes %llu", t->name,
              (unsigned long long)t->n_bytes);
        CHECK(t->offset % align == 0 && (g->data_offset + t->offset) % align == 0, "%s aligned",
              t->name);
        CHECK(t->n_bytes == 0 || memcmp(t->data, tensor_bytes[i], t->n_bytes) == 0, "%s data",
              t->name);
    }
    CHECK(g->size % align == 0, "file size %llu not padded", (unsigned long long)g->size);
}

static void check_getters(const mf_gguf *g) {
    int64_t i;
    double f;
    bool b;
    CHECK(mf_gguf_get_int(g, "s.u32", &i) && i == 4000000000LL, "u32");
    CHECK(mf_gguf_get_int(g, "s.i32", &i) && i == -7, "i32");
    CHECK(mf_gguf_get_int(g, "t.i8", &i) && i == -100, "i8");
    CHECK(!mf_gguf_get_int(g, "t.u64", &i), "u64 above INT64_MAX does not convert");
    CHECK(!mf_gguf_get_int(g, "s.str", &i) && !mf_gguf_get_int(g, "missing", &i), "int misuse");
    CHECK(mf_gguf_get_float(g, "s.f32", &f) && f == 0.1f, "f32");
    CHECK(mf_gguf_get_float(g, "t.f64", &f) && f == -2.5e-300, "f64");
    CHECK(!mf_gguf_get_float(g, "s.u32", &f), "float of int");
    CHECK(mf_gguf_get_bool(g, "s.bool", &b) && b, "bool");
    CHECK(mf_gguf_get_bool(g, "t.bool0", &b) && !b, "bool0");
    const mf_gguf_str *s = mf_gguf_get_str(g, "s.str");
    CHECK(s && s->len == 6 && memcmp(s->ptr, "memfit", 6) == 0, "str");
    CHECK(mf_gguf_get_str(g, "s.u32") == NULL, "str of int");
    const mf_gguf_value *a = mf_gguf_get_arr(g, "a.i32", MF_GGUF_I32);
    CHECK(a && mf_gguf_arr_i64(a, 0) == INT32_MIN && mf_gguf_arr_f64(a, 3) == INT32_MAX, "i32 arr");
    CHECK(mf_gguf_get_arr(g, "a.i32", MF_GGUF_F32) == NULL, "arr of wrong type");
    a = mf_gguf_get_arr(g, "a.f32", MF_GGUF_F32);
    CHECK(a && mf_gguf_arr_f64(a, 1) == -1.5 && mf_gguf_arr_i64(a, 1) == -1 &&
              mf_gguf_arr_i64(a, 3) == INT64_MAX, "f32 arr");
    a = mf_gguf_get_arr(g, "a.u16", MF_GGUF_U16);
    CHECK(a && mf_gguf_arr_i64(a, 1) == 65535, "u16 arr");
    a = mf_gguf_get_arr(g, "a.i8", MF_GGUF_I8);
    CHECK(a && mf_gguf_arr_i64(a, 0) == -128 && mf_gguf_arr_f64(a, 2) == 127, "i8 arr");
    a = mf_gguf_get_arr(g, "a.u64", MF_GGUF_U64);
    CHECK(a && mf_gguf_arr_f64(a, 0) == 18446744073709551615.0, "u64 arr");
    CHECK(strcmp(mf_gguf_vtype_name(MF_GGUF_ARRAY), "array") == 0 &&
              strcmp(mf_gguf_vtype_name(99), "?") == 0, "vtype names");
}

static void test_round_trip(uint32_t align) {
    char path[512];
    snprintf(path, sizeof path, "%s/rt%u.gguf", tmpdir, align);
    mf_gguf_writer *w = NULL;
    CHECK(mf_gguf_writer_create(&w) == MF_OK, "create");
    mf_gguf_value vals[40];
    char keys[40][32];
    CHECK(mf_gguf_writer_set_str(w, "s.str", "placeholder") == MF_OK, "str");
    CHECK(mf_gguf_writer_set_u32(w, "s.u32", 4000000000u) == MF_OK, "u32");
    CHECK(mf_gguf_writer_set_i32(w, "s.i32", -7) == MF_OK, "i32");
    CHECK(mf_gguf_writer_set_f32(w, "s.f32", 0.1f) == MF_OK, "f32");
    CHECK(mf_gguf_writer_set_bool(w, "s.bool", true) == MF_OK, "bool");
    CHECK(mf_gguf_writer_set_str(w, "s.str", "memfit") == MF_OK, "str replaced");
    if (align != 32) CHECK(mf_gguf_writer_set_u32(w, "general.alignment", align) == MF_OK, "al");
    int n = add_all_values(w, vals, keys);
    add_tensors(w);
    fill_ctx fc = {0, -1};
    mf_status st = mf_gguf_writer_write(w, path, fill_pattern, &fc);
    CHECK(st == MF_OK, "write: %s", mf_last_error());
    CHECK(fc.calls == 2, "fill called %d times", fc.calls);
    mf_gguf_writer_free(w);
    mf_gguf *g = NULL;
    st = mf_gguf_open(path, &g);
    CHECK(st == MF_OK, "read back: %s", mf_last_error());
    if (st != MF_OK) return;
    uint64_t n_kv = 5 + (align != 32) + (uint64_t)n;
    CHECK(g->n_kv == n_kv, "n_kv %llu", (unsigned long long)g->n_kv);
    CHECK(g->alignment == align, "alignment %llu", (unsigned long long)g->alignment);
    CHECK(g->n_kv > 0 && strcmp(g->kv[0].key, "s.str") == 0, "replaced key keeps its place");
    for (int i = 0; i < n; i++) {
        const mf_gguf_value *v = mf_gguf_get(g, keys[i]);
        CHECK(v && value_eq(v, &vals[i]), "value %s differs after the round trip", keys[i]);
    }
    check_getters(g);
    for (int i = 0; i < N_TENSORS; i++) /* the filled ones: make the expected bytes */
        if (tensors[i].filled)
            for (uint64_t b = 0; b < tensors[i].bytes; b++)
                tensor_bytes[i][b] = (uint8_t)(b * 7 + (uint64_t)i);
    check_tensors(g, align);
    mf_gguf_close(g);
    remove(path);
}

/* Every kv and tensor of a real file through set_value/add_tensor: the copy
 * must read back identical (values deep-equal, tensor bytes equal). */
static void test_copy_file(const char *rel) {
    char src[512], dst[512];
    test_path(src, sizeof src, rel);
    snprintf(dst, sizeof dst, "%s/copy.gguf", tmpdir);
    mf_gguf *a = NULL, *b = NULL;
    mf_gguf_writer *w = NULL;
    CHECK(mf_gguf_open(src, &a) == MF_OK, "%s: %s", src, mf_last_error());
    CHECK(mf_gguf_writer_create(&w) == MF_OK, "create");
    if (!a || !w) goto fail;
    CHECK(mf_gguf_writer_protect(w, src) == MF_OK, "protect");
    for (uint64_t i = 0; i < a->n_kv; i++)
        CHECK(mf_gguf_writer_set_value(w, a->kv[i].key, &a->kv[i].value) == MF_OK, "copy kv");
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        const mf_gguf_tensor *t = &a->tensors[i];
        CHECK(mf_gguf_writer_add_tensor(w, t->name, t->n_dims, t->ne, t->type, t->data) == MF_OK,
              "copy tensor %s: %s", t->name, mf_last_error());
    }
    CHECK(mf_gguf_writer_write(w, src, NULL, NULL) == MF_E_INVALID, "overwrote the input");
    CHECK(strstr(mf_last_error(), "input") != NULL, "message: %s", mf_last_error());
    CHECK(mf_gguf_writer_write(w, dst, NULL, NULL) == MF_OK, "write copy: %s", mf_last_error());
    CHECK(mf_gguf_open(dst, &b) == MF_OK, "read copy: %s", mf_last_error());
    if (!b) goto fail;
    CHECK(a->n_kv == b->n_kv && a->n_tensors == b->n_tensors, "%s copy counts", rel);
    for (uint64_t i = 0; i < a->n_kv && i < b->n_kv; i++)
        CHECK(strcmp(a->kv[i].key, b->kv[i].key) == 0 && value_eq(&a->kv[i].value, &b->kv[i].value),
              "%s: kv %s differs in the copy", rel, a->kv[i].key);
    for (uint64_t i = 0; i < a->n_tensors && i < b->n_tensors; i++) {
        const mf_gguf_tensor *x = &a->tensors[i], *y = &b->tensors[i];
        CHECK(strcmp(x->name, y->name) == 0 && x->type == y->type && x->n_bytes == y->n_bytes &&
                  memcmp(x->ne, y->ne, sizeof x->ne) == 0 && x->offset == y->offset &&
                  memcmp(x->data, y->data, x->n_bytes) == 0, "%s: tensor %s differs", rel, x->name);
    }
    /* llama.cpp lays tensors out the same way, so the data sections match too. */
    CHECK(a->size - a->data_offset == b->size - b->data_offset, "%s data section size", rel);
fail:
    mf_gguf_close(a);
    mf_gguf_close(b);
    mf_gguf_writer_free(w);
    remove(dst);
}

static bool exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void test_writer_errors(void) {
    char path[512], tmp[520];
    snprintf(path, sizeof path, "%s/bad.gguf", tmpdir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    mf_gguf_writer *w = NULL;
    CHECK(mf_gguf_writer_create(&w) == MF_OK, "create");
    int64_t ne[4] = {16, 2, 1, 1};
    float data[64] = {0};
    CHECK(mf_gguf_writer_add_tensor(w, "a", 2, ne, MF_TYPE_F32, data) == MF_OK, "add a");
    CHECK(mf_gguf_writer_add_tensor(w, "a", 2, ne, MF_TYPE_F32, data) == MF_E_INVALID, "dup");
    CHECK(mf_gguf_writer_add_tensor(w, "b", 0, ne, MF_TYPE_F32, data) == MF_E_INVALID, "0 dims");
    CHECK(mf_gguf_writer_add_tensor(w, "b", 5, ne, MF_TYPE_F32, data) == MF_E_INVALID, "5 dims");
    CHECK(mf_gguf_writer_add_tensor(w, "b", 2, ne, 4, data) == MF_E_INVALID, "type 4");
    CHECK(mf_gguf_writer_add_tensor(w, "b", 2, ne, MF_TYPE_Q8_0, data) == MF_E_INVALID, "block");
    int64_t neg[2] = {-1, 2};
    CHECK(mf_gguf_writer_add_tensor(w, "b", 2, neg, MF_TYPE_F32, data) == MF_E_INVALID, "neg");
    CHECK(mf_gguf_writer_add_tensor(w, "a.name.that.is.much.longer.than.sixty.three.bytes.so.llama.cpp.rejects",
                                    1, ne, MF_TYPE_F32, data) == MF_E_INVALID, "long name");
    CHECK(mf_gguf_writer_add_tensor(w, "nodata", 1, ne, MF_TYPE_F32, NULL) == MF_OK, "add nodata");
    CHECK(mf_gguf_writer_write(w, path, NULL, NULL) == MF_E_INVALID, "no data, no fill");
    fill_ctx fc = {0, 1};
    CHECK(mf_gguf_writer_write(w, path, fill_pattern, &fc) == MF_E_IO, "fill error propagates");
    CHECK(!exists(path) && !exists(tmp), "a failed write left a file behind");
    CHECK(mf_gguf_writer_set_u32(w, "general.alignment", 3) == MF_OK, "set");
    fc.fail_idx = -1;
    CHECK(mf_gguf_writer_write(w, path, fill_pattern, &fc) == MF_E_INVALID, "alignment 3");
    CHECK(mf_gguf_writer_set_u32(w, "general.alignment", 64) == MF_OK, "set");
    char dir_path[520];
    snprintf(dir_path, sizeof dir_path, "%s/no/such/dir.gguf", tmpdir);
    CHECK(mf_gguf_writer_write(w, dir_path, fill_pattern, &fc) == MF_E_IO, "bad dir");
    CHECK(mf_gguf_writer_write(w, path, fill_pattern, &fc) == MF_OK, "write: %s", mf_last_error());
    mf_gguf *g = NULL;
    CHECK(mf_gguf_open(path, &g) == MF_OK && g->alignment == 64 && g->data_offset % 64 == 0,
          "alignment 64");
    mf_gguf_close(g);
    /* The protected input may also not be the temporary file. */
    rename(path, tmp);
    mf_gguf_writer *w2 = NULL;
    CHECK(mf_gguf_writer_create(&w2) == MF_OK, "create");
    CHECK(mf_gguf_writer_protect(w2, tmp) == MF_OK, "protect");
    CHECK(mf_gguf_writer_write(w2, path, NULL, NULL) == MF_E_INVALID, "tmp is the input");
    CHECK(exists(tmp), "input clobbered");
    mf_gguf_writer_free(w2);
    remove(tmp);
    mf_gguf_writer_free(w);
    mf_gguf_writer_free(NULL);
    mf_gguf_close(NULL);
}

/* ---- corrupt inputs ---- */

typedef struct buf {
    uint8_t d[4096];
    size_t n;
} buf;

static void put(buf *b, const void *p, size_t n) {
    memcpy(b->d + b->n, p, n);
    b->n += n;
}
static void put32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put64(buf *b, uint64_t v) { put(b, &v, 8); }
static void putstr(buf *b, const char *s) {
    put64(b, strlen(s));
    put(b, s, strlen(s));
}

/* Knobs for a small hand-built file; the defaults make a valid one. */
typedef struct spec {
    const char *magic;
    uint32_t version;
    uint64_t n_kv, n_tensors;      /* 0: the real counts */
    int align_type;                /* -1: no alignment key; else its vtype */
    uint64_t align;
    uint64_t str_len, arr_len, strarr_len; /* 0: the real ones */
    uint32_t kv_type, arr_elem;   /* override the value type / array element type */
    int depth;                     /* nesting of the "nest" array */
    const char *key2, *name_b;
    uint32_t n_dims_a, type_a;
    uint64_t offset_a, ne0_a;      /* ~0: computed */
} spec;

static spec spec_default(void) {
    return (spec){"GGUF", 3, 0, 0, -1, 32, 0, 0, 0, MF_GGUF_STRING, MF_GGUF_I32, 2,
                  "general.name", "b", 2, MF_TYPE_F32, ~0ull, ~0ull};
}

static void put_nest(buf *b, int depth) {
    if (depth <= 1) {
        put32(b, MF_GGUF_U8);
        put64(b, 2);
        put(b, "\x01\x02", 2);
        return;
    }
    put32(b, MF_GGUF_ARRAY);
    put64(b, 1);
    put_nest(b, depth - 1);
}

static void build(const spec *s, buf *b) {
    b->n = 0;
    put(b, s->magic, 4);
    put32(b, s->version);
    put64(b, s->n_tensors ? s->n_tensors : 2);
    put64(b, s->n_kv ? s->n_kv : (s->align_type >= 0 ? 6 : 5));
    putstr(b, "general.architecture");
    put32(b, MF_GGUF_STRING);
    putstr(b, "llama");
    putstr(b, s->key2);
    put32(b, s->kv_type);
    put64(b, s->str_len ? s->str_len : 3);
    put(b, "abc", 3);
    putstr(b, "arr");
    put32(b, MF_GGUF_ARRAY);
    put32(b, s->arr_elem);
    put64(b, s->arr_len ? s->arr_len : 3);
    put(b, "\1\0\0\0\2\0\0\0\3\0\0\0", 12);
    putstr(b, "strarr");
    put32(b, MF_GGUF_ARRAY);
    put32(b, MF_GGUF_STRING);
    put64(b, s->strarr_len ? s->strarr_len : 2);
    putstr(b, "x");
    putstr(b, "yz");
    putstr(b, "nest");
    put32(b, MF_GGUF_ARRAY);
    put_nest(b, s->depth);
    if (s->align_type >= 0) {
        putstr(b, "general.alignment");
        put32(b, (uint32_t)s->align_type);
        if (s->align_type == MF_GGUF_U64) put64(b, s->align);
        else put32(b, (uint32_t)s->align);
    }
    putstr(b, "a");
    put32(b, s->n_dims_a);
    for (uint32_t d = 0; d < s->n_dims_a && d < 8; d++) put64(b, d == 0 && s->ne0_a != ~0ull ? s->ne0_a : 4);
    put32(b, s->type_a);
    put64(b, s->offset_a != ~0ull ? s->offset_a : 0);
    putstr(b, s->name_b);
    put32(b, 1);
    put64(b, 8);
    put32(b, MF_TYPE_F32);
    put64(b, 64);
    uint64_t al = s->align_type == MF_GGUF_U32 && s->align && !(s->align & (s->align - 1)) ? s->align : 32;
    while (b->n % al) b->d[b->n++] = 0;
    for (int i = 0; i < 96; i++) b->d[b->n++] = (uint8_t)i;
}

/* Parse an exact-size heap copy so the sanitizer sees any read past the end. */
static mf_status parse_copy(const void *data, size_t n, mf_gguf **g) {
    void *copy = malloc(n ? n : 1);
    memcpy(copy, data, n);
    mf_status st = mf_gguf_parse(copy, n, "corrupt.gguf", g);
    if (st == MF_OK) mf_gguf_close(*g);
    free(copy);
    return st;
}

static void expect_fail(const spec *s, mf_status want, const char *needle, const char *what) {
    buf b;
    mf_gguf *g = NULL;
    build(s, &b);
    mf_clear_error();
    mf_status st = parse_copy(b.d, b.n, &g);
    CHECK(st == want, "%s: status %d (%s), want %d", what, st, mf_last_error(), want);
    CHECK(mf_last_error()[0] != 0, "%s: no message", what);
    CHECK(!needle || strstr(mf_last_error(), needle), "%s: message '%s' lacks '%s'", what,
          mf_last_error(), needle);
}

static void test_corrupt_built(void) {
    spec s = spec_default();
    buf b;
    mf_gguf *g = NULL;
    build(&s, &b);
    mf_status st = mf_gguf_parse(b.d, b.n, "ok.gguf", &g);
    CHECK(st == MF_OK, "the hand-built file must parse: %s", mf_last_error());
    if (st == MF_OK) {
        const mf_gguf_value *v = mf_gguf_get(g, "nest");
        CHECK(v && v->v.arr.type == MF_GGUF_ARRAY && v->v.arr.items[0].v.arr.n == 2, "nest");
        CHECK(g->tensors[1].offset == 64 && g->data_offset % 32 == 0, "offsets");
        mf_gguf_close(g);
    }
    s = spec_default(); s.depth = 8;
    build(&s, &b);
    CHECK(parse_copy(b.d, b.n, &g) == MF_OK, "depth 8 parses: %s", mf_last_error());
    s = spec_default(); s.magic = "GGUG";
    expect_fail(&s, MF_E_FORMAT, "magic", "bad magic");
    s = spec_default(); s.version = 1;
    expect_fail(&s, MF_E_UNSUPPORTED, "version 1", "version 1");
    s.version = 99;
    expect_fail(&s, MF_E_UNSUPPORTED, "version 99", "version 99");
    s.version = 0x03000000;
    expect_fail(&s, MF_E_UNSUPPORTED, "big-endian", "big-endian");
    const uint64_t huge[] = {1ull << 60, UINT64_MAX, 1000000, 300};
    for (int i = 0; i < 4; i++) {
        s = spec_default(); s.n_tensors = huge[i];
        expect_fail(&s, MF_E_FORMAT, NULL, "huge n_tensors");
        s = spec_default(); s.n_kv = huge[i];
        expect_fail(&s, MF_E_FORMAT, NULL, "huge n_kv");
        s = spec_default(); s.arr_len = huge[i];
        expect_fail(&s, MF_E_FORMAT, "'arr'", "huge array");
        s = spec_default(); s.strarr_len = huge[i];
        expect_fail(&s, MF_E_FORMAT, "'strarr'", "huge string array");
        s = spec_default(); s.str_len = huge[i] + 3000;
        expect_fail(&s, MF_E_FORMAT, "'general.name'", "huge string");
    }
    s = spec_default(); s.offset_a = 4096;
    expect_fail(&s, MF_E_FORMAT, "runs past the end", "offset past the end");
    s.offset_a = UINT64_MAX - 31;
    expect_fail(&s, MF_E_FORMAT, "tensor 'a'", "offset overflow");
    s = spec_default(); s.offset_a = 4;
    expect_fail(&s, MF_E_FORMAT, "not a multiple of the alignment", "misaligned offset");
    s = spec_default(); s.type_a = 4;
    expect_fail(&s, MF_E_UNSUPPORTED, "unknown tensor type 4", "type 4");
    s.type_a = 99;
    expect_fail(&s, MF_E_UNSUPPORTED, "unknown tensor type 99", "type 99");
    s = spec_default(); s.type_a = MF_TYPE_Q8_0;
    expect_fail(&s, MF_E_FORMAT, "block size", "row not whole blocks");
    s = spec_default(); s.ne0_a = 1ull << 63;
    expect_fail(&s, MF_E_FORMAT, "too large", "ne over int64");
    s = spec_default(); s.ne0_a = 1ull << 40;
    expect_fail(&s, MF_E_FORMAT, "runs past the end", "huge tensor");
    s = spec_default(); s.align_type = MF_GGUF_U32; s.align = 0;
    expect_fail(&s, MF_E_FORMAT, "power of two", "alignment 0");
    s.align = 3;
    expect_fail(&s, MF_E_FORMAT, "power of two", "alignment 3");
    s.align_type = MF_GGUF_U64; s.align = 32;
    expect_fail(&s, MF_E_FORMAT, "u32", "alignment as u64");
    s = spec_default(); s.n_dims_a = 0;
    expect_fail(&s, MF_E_FORMAT, "dimensions", "n_dims 0");
    s.n_dims_a = 5;
    expect_fail(&s, MF_E_FORMAT, "dimensions", "n_dims 5");
    s = spec_default(); s.name_b = "a";
    expect_fail(&s, MF_E_FORMAT, "duplicate tensor name 'a'", "duplicate tensor");
    s = spec_default(); s.key2 = "arr";
    expect_fail(&s, MF_E_FORMAT, "duplicate key 'arr'", "duplicate key");
    s = spec_default(); s.kv_type = 13;
    expect_fail(&s, MF_E_FORMAT, "unknown value type 13", "value type 13");
    s = spec_default(); s.arr_elem = 200;
    expect_fail(&s, MF_E_FORMAT, "element type 200", "element type");
    s = spec_default(); s.depth = 9;
    expect_fail(&s, MF_E_FORMAT, "nested", "depth 9");
    s.depth = 100;
    expect_fail(&s, MF_E_FORMAT, "nested", "depth 100");
    /* A NUL byte inside a key would make it unfindable: rejected. */
    s = spec_default();
    build(&s, &b);
    uint8_t *k = memmem(b.d, b.n, "general.name", 12);
    k[3] = 0;
    CHECK(parse_copy(b.d, b.n, &g) == MF_E_FORMAT && strstr(mf_last_error(), "NUL"), "NUL key");
}

/* Truncate at every length through the tensor infos and a sample through
 * the data; every prefix that cuts a tensor's data must be rejected. */
static void test_truncation(const uint8_t *data, size_t size, const char *what) {
    mf_gguf *g = NULL;
    CHECK(mf_gguf_parse(data, size, what, &g) == MF_OK, "%s: %s", what, mf_last_error());
    if (!g) return;
    uint64_t data_end = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        uint64_t e = g->data_offset + g->tensors[i].offset + g->tensors[i].n_bytes;
        if (e > data_end) data_end = e;
    }
    uint64_t header_end = g->data_offset;
    mf_gguf_close(g);
    int n_bad = 0, n_tried = 0;
    uint64_t step = (data_end - header_end) / 97 + 1;
    for (uint64_t len = 0; len < data_end; len = len < header_end ? len + 1 : len + step) {
        mf_clear_error();
        mf_status st = parse_copy(data, (size_t)len, &g);
        n_tried++;
        if (st == MF_OK || !mf_last_error()[0]) n_bad++;
    }
    CHECK(parse_copy(data, (size_t)data_end - 1, &g) != MF_OK, "%s: cut last byte", what);
    CHECK(n_bad == 0, "%s: %d of %d truncations accepted or silent", what, n_bad, n_tried);
    printf("  %s: %d truncations rejected (header %llu bytes)\n", what, n_tried,
           (unsigned long long)header_end);
}

/* Patch fields of a real file in place: each must be caught. */
static void test_patch_real(const uint8_t *data, size_t size) {
    uint8_t *p = malloc(size);
    mf_gguf *g = NULL;
    memcpy(p, data, size);
    CHECK(mf_gguf_parse(p, size, "real", &g) == MF_OK, "real");
    if (!g) goto fail;
    /* The first tensor info: name string, then n_dims, ne..., type, offset. */
    const mf_gguf_tensor *t = &g->tensors[g->n_tensors - 1];
    uint8_t *info = memmem(p, g->data_offset, t->name, strlen(t->name));
    size_t at = (size_t)(info - p) + strlen(t->name);
    size_t type_at = at + 4 + 8 * (size_t)t->n_dims, off_at = type_at + 4;
    mf_gguf_close(g);
    struct { size_t at; uint64_t v; int n; mf_status want; const char *what; } patches[] = {
        {4, 1, 4, MF_E_UNSUPPORTED, "version 1"},
        {8, 1ull << 60, 8, MF_E_FORMAT, "n_tensors"},
        {16, 1ull << 40, 8, MF_E_FORMAT, "n_kv"},
        {at, 0, 4, MF_E_FORMAT, "n_dims 0"},
        {at, 5, 4, MF_E_FORMAT, "n_dims 5"},
        {type_at, 4, 4, MF_E_UNSUPPORTED, "type 4"},
        {type_at, 99, 4, MF_E_UNSUPPORTED, "type 99"},
        {off_at, size, 8, MF_E_FORMAT, "offset past the end"},
        {off_at, 16, 8, MF_E_FORMAT, "misaligned offset"},
        {24, UINT64_MAX, 8, MF_E_FORMAT, "first key length"},
    };
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        memcpy(p, data, size);
        memcpy(p + patches[i].at, &patches[i].v, (size_t)patches[i].n);
        mf_clear_error();
        mf_status st = parse_copy(p, size, &g);
        CHECK(st == patches[i].want && mf_last_error()[0], "real file, %s: %d %s", patches[i].what,
              st, mf_last_error());
    }
fail:
    free(p);
}

static void test_corrupt_files(void) {
    char path[512];
    size_t n;
    uint8_t *real = test_read_file(test_path(path, sizeof path, "models/stories260K.gguf"), &n);
    CHECK(real != NULL, "read %s", path);
    if (real) {
        test_truncation(real, n, "stories260K.gguf");
        test_patch_real(real, n);
        free(real);
    }
    /* A file written here, with every value type. */
    mf_gguf_writer *w = NULL;
    mf_gguf_value vals[40];
    char keys[40][32];
    snprintf(path, sizeof path, "%s/trunc.gguf", tmpdir);
    CHECK(mf_gguf_writer_create(&w) == MF_OK, "create");
    add_all_values(w, vals, keys);
    add_tensors(w);
    fill_ctx fc = {0, -1};
    CHECK(mf_gguf_writer_write(w, path, fill_pattern, &fc) == MF_OK, "write");
    mf_gguf_writer_free(w);
    uint8_t *mine = test_read_file(path, &n);
    CHECK(mine != NULL, "read back");
    if (mine) test_truncation(mine, n, "written.gguf");
    free(mine);
    remove(path);
    mf_gguf *g = NULL;
    CHECK(mf_gguf_open("/nonexistent/x.gguf", &g) == MF_E_IO && g == NULL, "missing file");
    CHECK(strstr(mf_last_error(), "/nonexistent/x.gguf") != NULL, "message names the file");
    CHECK(mf_gguf_open(tmpdir, &g) == MF_E_IO, "a directory");
    snprintf(path, sizeof path, "%s/empty.gguf", tmpdir);
    FILE *f = fopen(path, "wb");
    if (f) fclose(f);
    CHECK(mf_gguf_open(path, &g) == MF_E_FORMAT && strstr(mf_last_error(), "empty.gguf"),
          "empty file: %s", mf_last_error());
    remove(path);
    CHECK(mf_gguf_parse(NULL, 0, "null", &g) == MF_E_FORMAT, "NULL buffer");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/memfit_test_gguf_%d", (int)getpid());
    mkdir(tmpdir, 0700);
    if (test_shared()) {
        test_shared_files();
        test_copy_file("models/llama-2-tiny-random.gguf");
        test_copy_file("models/quantized/synth-512-Q4_K_M.gguf");
        test_corrupt_files();
    } else {
        printf("SKIP shared-file tests: ../shared not found (set MF_SHARED)\n");
    }
    test_round_trip(32);
    test_round_trip(64);
    test_round_trip(1);
    test_writer_errors();
    test_corrupt_built();
    rmdir(tmpdir);
    return test_report("gguf");
}
