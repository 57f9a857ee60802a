/* llama2c.h — llama2.c checkpoints (.bin) and tokenizer.bin files.
 *
 * A checkpoint is presented as an mf_gguf with the metadata and tensor names
 * a GGUF of the same model would carry (general.architecture = "llama",
 * llama.embedding_length, ..., token_embd.weight, blk.N.attn_q.weight, ...),
 * tensors pointing into the mapped file, so the rest of memfit has one path. */
#ifndef MF_LLAMA2C_H
#define MF_LLAMA2C_H

#include "io/gguf.h"

/* Map a llama2.c checkpoint: 7 x int32 header (dim, hidden_dim, n_layers,
 * n_heads, n_kv_heads, vocab_size (negative: untied classifier), seq_len),
 * then f32 weights; the legacy RoPE tables are skipped. The result has
 * version 0 (not a GGUF), data_offset 28, alignment 4, all tensors f32, and
 * also llama.vocab_size (the checkpoint has no tokenizer). */
mf_status mf_llama2c_open(const char *path, mf_gguf **out);
/* The same from a buffer in memory (borrowed; must outlive the result). */
mf_status mf_llama2c_parse(const void *data, uint64_t size, const char *name, mf_gguf **out);
/* True if the file starts like a llama2.c checkpoint rather than a GGUF. */
bool mf_llama2c_sniff(const char *path);

typedef struct mf_llama2c_vocab {
    int n;
    char **tokens;     /* owned, NUL-terminated (bytes as in the file) */
    float *scores;
    int max_token_len; /* max of the header's value and the longest token */
} mf_llama2c_vocab;

/* tokenizer.bin: int32 max_token_length, then n x { f32 score, int32 len, bytes }.
 * The file must hold exactly n_vocab tokens (more bytes after them mean the
 * tokenizer of another model). The result is one allocation. */
mf_status mf_llama2c_vocab_load(const char *path, int n_vocab, mf_llama2c_vocab **out);
/* The same from a buffer in memory (copied). */
mf_status mf_llama2c_vocab_parse(const void *data, uint64_t size, const char *name, int n_vocab,
                                 mf_llama2c_vocab **out);
void mf_llama2c_vocab_free(mf_llama2c_vocab *v);

#endif
