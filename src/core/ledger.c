/* ledger.c — budgeted allocation.
 *
 * Every large buffer is charged to a ledger by tag (weights, KV cache,
 * activations, ...). The budget is hard: an allocation that would pass it
 * fails with MF_E_BUDGET instead of happening. A 64-byte header in front of
 * each block remembers its size and tag so mf_free can uncharge it; the
 * header also keeps the returned pointer 64-byte aligned for SIMD loads. */
#include "core.h"

#include <stdlib.h>
#include <string.h>

#define HDR 64

typedef struct { uint64_t bytes; uint32_t tag; uint32_t magic; } block_hdr;
#define BLOCK_MAGIC 0x6d66616cu

static const char *tag_names[MF_TAG_COUNT] = {
    "weights", "stream", "kv", "activations", "scratch", "logits", "vocab", "misc"};

const char *mf_tag_name(mf_tag t) { return t < MF_TAG_COUNT ? tag_names[t] : "?"; }

void mf_ledger_init(mf_ledger *l, uint64_t budget) {
    memset(l, 0, sizeof *l);
    l->budget = budget;
    /* tests make the Nth allocation of every new ledger fail to walk the
     * clean-up paths (read here, once per ledger, never inside kernels) */
    const char *f = getenv("MF_FAIL_ALLOC");
    if (f && *f) l->fail_at = strtol(f, NULL, 10);
}

void *mf_alloc(mf_ledger *l, uint64_t bytes, mf_tag tag) {
    void *p = NULL;
    mf_alloc_p(l, bytes, tag, &p);
    return p;
}

mf_status mf_alloc_p(mf_ledger *l, uint64_t bytes, mf_tag tag, void **out) {
    *out = NULL;
    uint64_t total;
    if (!mf_add_ok(bytes, HDR, &total) || total > (uint64_t)SIZE_MAX / 2) {
        return mf_errorf(MF_E_NOMEM, "allocation of %llu bytes (%s) is too large",
                         (unsigned long long)bytes, mf_tag_name(tag));
    }
    if (l) {
        l->n_allocs++;
        if (l->fail_at && l->n_allocs == l->fail_at) {
            return mf_errorf(MF_E_NOMEM, "injected failure at allocation %ld (%s)",
                             l->n_allocs, mf_tag_name(tag));
        }
        if (l->budget && l->total + bytes > l->budget) {
            return mf_errorf(MF_E_BUDGET,
                             "allocating %llu bytes for %s would exceed the budget of %llu "
                             "bytes (%llu in use)",
                             (unsigned long long)bytes, mf_tag_name(tag),
                             (unsigned long long)l->budget, (unsigned long long)l->total);
        }
    }
    /* round up so aligned_alloc's size is a multiple of the alignment */
    uint64_t size = (total + HDR - 1) / HDR * HDR;
    unsigned char *p = aligned_alloc(HDR, (size_t)size);
    if (!p) {
        return mf_errorf(MF_E_NOMEM, "out of memory allocating %llu bytes for %s",
                         (unsigned long long)bytes, mf_tag_name(tag));
    }
    memset(p, 0, (size_t)size);
    block_hdr *h = (block_hdr *)p;
    h->bytes = bytes;
    h->tag = tag;
    h->magic = BLOCK_MAGIC;
    if (l) {
        l->used[tag] += bytes;
        l->total += bytes;
        if (l->total > l->peak) l->peak = l->total;
    }
    *out = p + HDR;
    return MF_OK;
}

void mf_free(mf_ledger *l, void *ptr) {
    if (!ptr) return;
    unsigned char *p = (unsigned char *)ptr - HDR;
    block_hdr *h = (block_hdr *)p;
    if (l && h->magic == BLOCK_MAGIC && h->tag < MF_TAG_COUNT) {
        l->used[h->tag] -= h->bytes;
        l->total -= h->bytes;
    }
    h->magic = 0;
    free(p);
}

mf_status mf_ledger_charge(mf_ledger *l, int64_t bytes, mf_tag tag) {
    if (bytes >= 0) {
        uint64_t b = (uint64_t)bytes;
        if (l->budget && l->total + b > l->budget)
            return mf_errorf(MF_E_BUDGET, "%llu bytes of %s would exceed the budget of %llu "
                             "bytes (%llu in use)", (unsigned long long)b, mf_tag_name(tag),
                             (unsigned long long)l->budget, (unsigned long long)l->total);
        l->used[tag] += b;
        l->total += b;
        if (l->total > l->peak) l->peak = l->total;
    } else {
        l->used[tag] -= (uint64_t)-bytes;
        l->total -= (uint64_t)-bytes;
    }
    return MF_OK;
}
