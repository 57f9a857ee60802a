/* fuzz_llama2c.c — libFuzzer target for llama2.c checkpoints and tokenizer.bin:
 * the input is parsed as a checkpoint (every mapped tensor's first and last
 * float is read) and as a tokenizer of a few vocabulary sizes (every token's
 * bytes are read), so the sanitizers see any size the parsers did not check. */
#include "io/llama2c.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static volatile uint64_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mf_gguf *g = NULL;
    if (mf_llama2c_parse(data, size, "fuzz.bin", &g) == MF_OK) {
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            const mf_gguf_tensor *t = &g->tensors[i];
            const uint8_t *p = t->data;
            if (t->n_bytes) sink += p[0] + p[t->n_bytes - 1];
        }
        for (uint64_t i = 0; i < g->n_kv; i++) sink += strlen(g->kv[i].key);
        mf_gguf_close(g);
    }
    static const int sizes[] = {1, 3, 4, 512};
    for (int k = 0; k < 4; k++) {
        mf_llama2c_vocab *v = NULL;
        if (mf_llama2c_vocab_parse(data, size, "fuzz-tok.bin", sizes[k], &v) != MF_OK) continue;
        for (int i = 0; i < v->n; i++) sink += strlen(v->tokens[i]) + (v->scores[i] != 0);
        mf_llama2c_vocab_free(v);
    }
    return 0;
}
