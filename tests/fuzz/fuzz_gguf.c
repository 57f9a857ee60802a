/* fuzz_gguf.c — libFuzzer target for the GGUF reader: parse the input as a
 * file, then touch everything the parse claims is there (every key, string,
 * array element, nested array and the first and last byte of every tensor), so
 * the sanitizers see any pointer or count the reader let through unchecked. */
#include "io/gguf.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static volatile uint64_t sink;

static void touch_str(const mf_gguf_str *s) {
    if (s->len) sink += (uint8_t)s->ptr[0] + (uint8_t)s->ptr[s->len - 1];
}

static void touch_value(const mf_gguf_value *v) {
    if (v->type == MF_GGUF_STRING) touch_str(&v->v.str);
    if (v->type != MF_GGUF_ARRAY) return;
    for (uint64_t i = 0; i < v->v.arr.n; i++) {
        if (v->v.arr.type == MF_GGUF_STRING) touch_str(&v->v.arr.strs[i]);
        else if (v->v.arr.type == MF_GGUF_ARRAY) touch_value(&v->v.arr.items[i]);
        else sink += (uint64_t)mf_gguf_arr_i64(v, i) + (mf_gguf_arr_f64(v, i) != 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mf_gguf *g = NULL;
    if (mf_gguf_parse(data, size, "fuzz.gguf", &g) != MF_OK) return 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        sink += strlen(g->kv[i].key);
        touch_value(&g->kv[i].value);
        int64_t n;
        double f;
        bool b;
        sink += mf_gguf_get_int(g, g->kv[i].key, &n) + mf_gguf_get_float(g, g->kv[i].key, &f) +
                mf_gguf_get_bool(g, g->kv[i].key, &b) + (mf_gguf_get_str(g, g->kv[i].key) != NULL);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const mf_gguf_tensor *t = &g->tensors[i];
        if (mf_gguf_find_tensor(g, t->name) != t) __builtin_trap();
        if (t->n_bytes)
            sink += ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->n_bytes - 1];
    }
    mf_gguf_close(g);
    return 0;
}
