/* text_internal.h — what the tokenizer files share and nobody else sees.
 *
 * The tokenizer struct (vocabulary, lookup tables, special tokens, the
 * compiled pre-tokenizer), the string -> int hash map used for token and
 * merge lookup, a growable id vector, and the two encoders' entry points:
 * spm_encode (tok_spm.c) and bpe_encode (tok_bpe.c). tokenizer.c builds the
 * struct, splits text around special tokens and calls one of them per piece. */
#ifndef MF_TEXT_INTERNAL_H
#define MF_TEXT_INTERNAL_H

#include "text/text.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Token types as GGUF stores them (tokenizer.ggml.token_type). */
enum {
    TT_UNDEFINED = 0, TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3,
    TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6
};

/* Per-token flags beyond the type (llama.cpp's LSTRIP/RSTRIP attributes):
 * strip whitespace left/right of a special token found in the text. */
enum { TF_LSTRIP = 1, TF_RSTRIP = 2 };

enum { TOK_SPM = 0, TOK_BPE = 1 };

/* ---- string -> int32 hash map (open addressing, keys borrowed) ---------- */

typedef struct strmap_entry {
    const char *key;   /* borrowed: points into the tokenizer's blob */
    uint32_t len;
    int32_t val;
} strmap_entry;

typedef struct strmap {
    strmap_entry *e;   /* cap entries; key == NULL marks an empty slot */
    uint32_t cap;      /* a power of two, at least twice the keys it holds */
    uint32_t n;
} strmap;

mf_status strmap_init(strmap *m, uint32_t n_keys);
void strmap_free(strmap *m);
/* Insert or overwrite (the last value for a key wins, as in llama.cpp). */
void strmap_put(strmap *m, const char *key, uint32_t len, int32_t val);
int32_t strmap_get(const strmap *m, const char *key, size_t len); /* -1 if absent */

/* ---- growable id vector --------------------------------------------------- */

typedef struct idvec {
    int32_t *v;
    size_t n, cap;
} idvec;

mf_status idvec_push(idvec *iv, int32_t id);

/* ---- the tokenizer ------------------------------------------------------ */

typedef struct bpe_pre bpe_pre; /* compiled pre-tokenizer regexes (tok_bpe.c) */

struct mf_tokenizer {
    int kind;                 /* TOK_SPM or TOK_BPE */
    int n_vocab;
    char *blob;               /* owned: every token text, then every merge text */
    const char **text;        /* (n_vocab) into blob, NUL-terminated */
    uint32_t *len;            /* (n_vocab) */
    float *score;             /* (n_vocab) SPM merge priority; 0 for BPE */
    uint8_t *type;            /* (n_vocab) TT_* */
    uint8_t *flags;           /* (n_vocab) TF_* */
    strmap tokens;            /* text -> id */
    strmap merges;            /* BPE: "left right" -> rank */
    int32_t *special;         /* ids matched as whole pieces, longest text first */
    int n_special;
    int32_t bos, eos, unk;    /* -1 if none */
    bool add_bos, add_space_prefix, ignore_merges;
    const char *space;        /* SPM space symbol: U+2581, or " " for llama2.c vocabs */
    int32_t byte_id[256];     /* SPM byte fallback id per byte, -1 if the vocab lacks it */
    char bpe_sym[256][3];     /* BPE: the GPT-2 byte -> unicode symbol, as UTF-8 */
    uint8_t bpe_sym_len[256];
    int16_t bpe_byte[0x144];  /* BPE: symbol code point -> byte, -1 if not a byte symbol */
    bpe_pre *pre;             /* BPE only */
};

/* tok_spm.c: encode one text fragment (no special tokens in it) and append
 * the ids. prefix: prepend the space symbol (text start or after a special). */
mf_status spm_encode(const mf_tokenizer *t, const char *text, size_t len, bool prefix,
                     idvec *out);

/* tok_bpe.c */
void bpe_init_bytes(mf_tokenizer *t);
/* Compile the regex sequence for tokenizer.ggml.pre (NULL: "default"). */
mf_status bpe_pre_create(const char *pre, size_t pre_len, bpe_pre **out, bool *ignore_merges);
void bpe_pre_free(bpe_pre *p);
mf_status bpe_encode(const mf_tokenizer *t, const char *text, size_t len, idvec *out);
/* Append the bytes a BPE token's symbols stand for. */
size_t bpe_decode_piece(const mf_tokenizer *t, int32_t id, char *buf, size_t cap);

#endif
