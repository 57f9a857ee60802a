/* fuzz_tokenizer.c — libFuzzer target: arbitrary bytes through both tokenizers.
 *
 * Loads the GPT-2 (byte-level BPE) and Llama (SentencePiece) vocabularies
 * from $MF_SHARED/vocab or ../shared/vocab once, then encodes every input
 * (any bytes: invalid UTF-8, NULs, special-token text) with and without
 * parse_special and decodes the ids back. Without parse_special the decoded
 * bytes must equal the input (both tokenizers are lossless on any bytes, up
 * to the rare literal U+2581 that SentencePiece reads as a space); with it,
 * only "no crash, no leak" is checked. */
#include "text/text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static mf_tokenizer *tok_bpe, *tok_spm;

static void free_all(void) {
    mf_tokenizer_free(tok_bpe);
    mf_tokenizer_free(tok_spm);
}

static mf_tokenizer *load(const char *name) {
    const char *dir = getenv("MF_SHARED");
    char path[1024];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf", dir ? dir : "../shared", name);
    mf_gguf *g = NULL;
    mf_tokenizer *t = NULL;
    if (mf_gguf_open(path, &g) != MF_OK || mf_tokenizer_from_gguf(g, &t) != MF_OK) {
        fprintf(stderr, "fuzz_tokenizer: cannot load %s: %s\n", path, mf_last_error());
        abort();
    }
    mf_gguf_close(g);
    return t;
}

static void roundtrip(const mf_tokenizer *t, const uint8_t *data, size_t size, bool special) {
    int n = 0;
    /* ask for the count first, then encode into a buffer of that size */
    mf_status st = mf_tokenizer_encode(t, (const char *)data, size, false, special, NULL, 0, &n);
    if (st != MF_OK && st != MF_E_INVALID) abort();
    int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    if (mf_tokenizer_encode(t, (const char *)data, size, false, special, ids, n, &n) != MF_OK)
        abort();
    size_t len = 0, len2 = 0;
    if (mf_tokenizer_decode(t, ids, n, NULL, 0, &len) != MF_OK) abort();
    char *buf = malloc(len + 1);
    if (mf_tokenizer_decode(t, ids, n, buf, len + 1, &len2) != MF_OK || len2 != len) abort();
    bool has_space_sym = memmem(data, size, "\xE2\x96\x81", 3) != NULL;
    if (!special && !has_space_sym && (len != size || memcmp(buf, data, size) != 0)) abort();
    free(buf);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!tok_bpe) {
        tok_bpe = load("gpt-2");
        tok_spm = load("llama-spm");
        atexit(free_all);
    }
    if (size > 4096) return 0; /* long inputs add time, not coverage */
    roundtrip(tok_bpe, data, size, false);
    roundtrip(tok_bpe, data, size, true);
    roundtrip(tok_spm, data, size, false);
    roundtrip(tok_spm, data, size, true);
    return 0;
}
