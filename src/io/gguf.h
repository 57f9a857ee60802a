/* gguf.h — reading and writing GGUF files (v2 and v3).
 *
 * Layout (little-endian; v1 used 32-bit counts and is rejected):
 *   magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
 *   n_kv x { string key, u32 value_type, value },
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset },
 *   padding to general.alignment (default 32), then the data section;
 *   a tensor's data starts at data_offset + offset (offset a multiple of the alignment).
 *   string = u64 length + bytes (no NUL); array = u32 elem_type, u64 n, n x value.
 * The reader maps the file (no copy) and checks every count, size and offset
 * against the file before using it. Strings and numeric arrays point into the
 * mapping; keys and tensor names are copied and NUL-terminated. */
#ifndef MF_GGUF_H
#define MF_GGUF_H

#include "core/core.h"
#include "core/dtype.h"

typedef enum mf_gguf_vtype {
    MF_GGUF_U8 = 0, MF_GGUF_I8 = 1, MF_GGUF_U16 = 2, MF_GGUF_I16 = 3,
    MF_GGUF_U32 = 4, MF_GGUF_I32 = 5, MF_GGUF_F32 = 6, MF_GGUF_BOOL = 7,
    MF_GGUF_STRING = 8, MF_GGUF_ARRAY = 9, MF_GGUF_U64 = 10, MF_GGUF_I64 = 11,
    MF_GGUF_F64 = 12, MF_GGUF_VTYPE_COUNT = 13
} mf_gguf_vtype;

typedef struct mf_gguf_str {
    const char *ptr;   /* borrowed (mapping or owner), NOT NUL-terminated */
    uint64_t len;
} mf_gguf_str;

typedef struct mf_gguf_value mf_gguf_value;
struct mf_gguf_value {
    mf_gguf_vtype type;
    union {
        uint64_t u64;       /* U8, U16, U32, U64, BOOL */
        int64_t i64;        /* I8, I16, I32, I64 */
        double f64;         /* F32, F64 */
        mf_gguf_str str;    /* STRING */
        struct {
            mf_gguf_vtype type;     /* element type */
            uint64_t n;
            const void *data;       /* numeric/bool elements: raw little-endian bytes */
            mf_gguf_str *strs;      /* STRING elements (owned by the mf_gguf) */
            mf_gguf_value *items;   /* ARRAY elements, nested (owned) */
        } arr;
    } v;
};

typedef struct mf_gguf_kv {
    char *key;          /* owned, NUL-terminated */
    mf_gguf_value value;
} mf_gguf_kv;

typedef struct mf_gguf_tensor {
    char *name;         /* owned, NUL-terminated */
    int n_dims;
    int64_t ne[4];      /* unused dims are 1; ne[0] is the row length */
    int type;           /* mf_type id (known layout) */
    uint64_t offset;    /* from the start of the data section */
    uint64_t n_bytes;
    const void *data;   /* into the mapping */
} mf_gguf_tensor;

typedef struct mf_gguf {
    uint32_t version;
    uint64_t n_kv;
    mf_gguf_kv *kv;
    uint64_t n_tensors;
    mf_gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset;   /* start of the data section in the file */
    const uint8_t *base;    /* the whole file */
    uint64_t size;
    /* private to gguf.c */
    void *map;              /* mmap address if mapped, else NULL */
    void *arena;            /* owned allocations */
} mf_gguf;

/* Map and parse a file. Errors name the file and what is wrong. */
mf_status mf_gguf_open(const char *path, mf_gguf **out);
/* Parse a buffer in memory (borrowed; must outlive the result). */
mf_status mf_gguf_parse(const void *data, uint64_t size, const char *name, mf_gguf **out);
void mf_gguf_close(mf_gguf *g);

const mf_gguf_value *mf_gguf_get(const mf_gguf *g, const char *key);
/* Typed getters: false if absent or of an incompatible type (integers of
 * any width convert; floats accept F32/F64). */
bool mf_gguf_get_int(const mf_gguf *g, const char *key, int64_t *out);
bool mf_gguf_get_float(const mf_gguf *g, const char *key, double *out);
bool mf_gguf_get_bool(const mf_gguf *g, const char *key, bool *out);
const mf_gguf_str *mf_gguf_get_str(const mf_gguf *g, const char *key);
/* An array of the given element type, or NULL. */
const mf_gguf_value *mf_gguf_get_arr(const mf_gguf *g, const char *key, mf_gguf_vtype elem);
const mf_gguf_tensor *mf_gguf_find_tensor(const mf_gguf *g, const char *name);
/* Element i of a numeric array as double / int64 (caller checks i < n). */
double mf_gguf_arr_f64(const mf_gguf_value *arr, uint64_t i);
int64_t mf_gguf_arr_i64(const mf_gguf_value *arr, uint64_t i);
const char *mf_gguf_vtype_name(int t);

/* ---- writing ---- */

typedef struct mf_gguf_writer mf_gguf_writer;
/* Fill n_bytes of tensor idx's data into dst. */
typedef mf_status (*mf_gguf_fill_fn)(void *ctx, int idx, void *dst, uint64_t n_bytes);

mf_status mf_gguf_writer_create(mf_gguf_writer **out);
void mf_gguf_writer_free(mf_gguf_writer *w);
mf_status mf_gguf_writer_set_u32(mf_gguf_writer *w, const char *key, uint32_t v);
mf_status mf_gguf_writer_set_i32(mf_gguf_writer *w, const char *key, int32_t v);
mf_status mf_gguf_writer_set_f32(mf_gguf_writer *w, const char *key, float v);
mf_status mf_gguf_writer_set_bool(mf_gguf_writer *w, const char *key, bool v);
mf_status mf_gguf_writer_set_str(mf_gguf_writer *w, const char *key, const char *s);
/* Copy a value (any type, arrays included) read from another file. */
mf_status mf_gguf_writer_set_value(mf_gguf_writer *w, const char *key, const mf_gguf_value *v);
/* data: the tensor's bytes (borrowed until write), or NULL to use fill at write time. */
mf_status mf_gguf_writer_add_tensor(mf_gguf_writer *w, const char *name, int n_dims,
                                    const int64_t *ne, int type, const void *data);
/* Refuse to write to input_path (or to input_path being path.tmp): call it
 * with each file the tensors or values were read from. */
mf_status mf_gguf_writer_protect(mf_gguf_writer *w, const char *input_path);
/* Write atomically (path.tmp + fsync + rename). Refuses to overwrite an input
 * that is the same file. fill may be NULL if every tensor has data. */
mf_status mf_gguf_writer_write(mf_gguf_writer *w, const char *path, mf_gguf_fill_fn fill,
                               void *ctx);

#endif
