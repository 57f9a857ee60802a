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
 * then f32 weights; the legacy RoPE tables are skipped. */
mf_status mf_llama2c_open(const char *path, mf_gguf **out);
/* True if the file starts like a llama2.c checkpoint rather than a GGUF. */
bool mf_llama2c_sniff(const char *path);

typedef struct mf_llama2c_vocab {
    int n;
    char **tokens;     /* owned, NUL-terminated (bytes as in the file) */
    float *scores;
    int max_token_len;
} mf_llama2c_vocab;

/* tokenizer.bin: int32 max_token_length, then n x { f32 score, int32 len, bytes }. */
mf_status mf_llama2c_vocab_load(const char *path, int n_vocab, mf_llama2c_vocab **out);
void mf_llama2c_vocab_free(mf_llama2c_vocab *v);

#endif
