/* text.h — tokenizers and the sampler.
 *
 * Tokenizers: SentencePiece-style (tokenizer.ggml.model = "llama": scores,
 * token types, byte fallback <0xXX>, leading space) and GPT-2 byte-level BPE
 * ("gpt2": merges plus the pre-tokenizer named by tokenizer.ggml.pre), built
 * from a GGUF's tokenizer.* keys or a llama2.c tokenizer.bin. */
#ifndef MF_TEXT_H
#define MF_TEXT_H

#include "core/core.h"
#include "io/gguf.h"
#include "io/llama2c.h"

typedef struct mf_tokenizer mf_tokenizer;

/* MF_E_UNSUPPORTED if the GGUF has no tokenizer or an unknown model/pre. */
mf_status mf_tokenizer_from_gguf(const mf_gguf *g, mf_tokenizer **out);
mf_status mf_tokenizer_from_llama2c(const mf_llama2c_vocab *v, mf_tokenizer **out);
void mf_tokenizer_free(mf_tokenizer *t);

int mf_tokenizer_n_vocab(const mf_tokenizer *t);
int32_t mf_tokenizer_bos(const mf_tokenizer *t);   /* -1 if none */
int32_t mf_tokenizer_eos(const mf_tokenizer *t);
bool mf_tokenizer_add_bos(const mf_tokenizer *t);   /* the file's add_bos_token (default per model) */
const char *mf_tokenizer_model(const mf_tokenizer *t); /* "llama" or "gpt2" */

/* Encode len bytes of text. Writes at most cap ids; *n_out gets the full
 * count (if > cap, returns MF_E_INVALID and the caller retries bigger).
 * parse_special: text like "<s>" becomes the control token. */
mf_status mf_tokenizer_encode(const mf_tokenizer *t, const char *text, size_t len,
                              bool add_bos, bool parse_special, int32_t *ids, int cap,
                              int *n_out);
/* The bytes of token id when it follows prev (-1 at the start of text):
 * SentencePiece drops the leading space of the first piece, byte tokens
 * <0xXX> become the byte, GPT-2 byte-level symbols are mapped back to bytes.
 * Control tokens give "". Writes up to cap bytes; *len = full length. */
mf_status mf_tokenizer_piece(const mf_tokenizer *t, int32_t prev, int32_t id, char *buf,
                             size_t cap, size_t *len);
/* Decode a whole sequence into buf (NUL-terminated when it fits). */
mf_status mf_tokenizer_decode(const mf_tokenizer *t, const int32_t *ids, int n, char *buf,
                              size_t cap, size_t *len);

#endif
