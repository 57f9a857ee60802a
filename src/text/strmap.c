/* strmap.c — the string -> int32 hash map behind token and merge lookup,
 * and the growable id vector the encoders append to.
 *
 * Open addressing with linear probing and FNV-1a hashing. The table is sized
 * once (at least twice the number of keys) because a vocabulary never grows
 * after loading; keys are borrowed from the tokenizer's blob, so the map
 * costs one array of entries and no per-key allocation. */
#include "text/text_internal.h"

#include <stdlib.h>
#include <string.h>

static uint32_t fnv1a(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

mf_status strmap_init(strmap *m, uint32_t n_keys) {
    uint32_t cap = 16;
    while (cap < 2u * n_keys + 1u) {
        if (cap >= (1u << 30)) return mf_errorf(MF_E_INVALID, "strmap: %u keys is too many", n_keys);
        cap <<= 1;
    }
    m->e = calloc(cap, sizeof *m->e);
    if (!m->e) return mf_errorf(MF_E_NOMEM, "strmap: cannot allocate %u slots", cap);
    m->cap = cap;
    m->n = 0;
    return MF_OK;
}

void strmap_free(strmap *m) {
    free(m->e);
    m->e = NULL;
    m->cap = m->n = 0;
}

void strmap_put(strmap *m, const char *key, uint32_t len, int32_t val) {
    uint32_t mask = m->cap - 1;
    for (uint32_t i = fnv1a(key, len) & mask;; i = (i + 1) & mask) {
        strmap_entry *e = &m->e[i];
        if (!e->key) {
            /* Keep at least half the table empty so probes stay short and
             * a lookup always reaches an empty slot. */
            if (2u * (m->n + 1u) > m->cap) return;
            e->key = key;
            e->len = len;
            e->val = val;
            m->n++;
            return;
        }
        if (e->len == len && memcmp(e->key, key, len) == 0) {
            e->val = val;
            return;
        }
    }
}

int32_t strmap_get(const strmap *m, const char *key, size_t len) {
    if (!m->e || len > UINT32_MAX) return -1;
    uint32_t mask = m->cap - 1;
    for (uint32_t i = fnv1a(key, len) & mask;; i = (i + 1) & mask) {
        const strmap_entry *e = &m->e[i];
        if (!e->key) return -1;
        if (e->len == len && memcmp(e->key, key, len) == 0) return e->val;
    }
}

mf_status idvec_push(idvec *iv, int32_t id) {
    if (iv->n == iv->cap) {
        size_t cap = iv->cap ? iv->cap * 2 : 64;
        int32_t *v = realloc(iv->v, cap * sizeof *v);
        if (!v) return mf_errorf(MF_E_NOMEM, "tokenizer: cannot grow the id list to %zu", cap);
        iv->v = v;
        iv->cap = cap;
    }
    iv->v[iv->n++] = id;
    return MF_OK;
}
