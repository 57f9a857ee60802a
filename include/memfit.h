/* memfit.h — the public API of libmemfit.
 *
 * Everything a program needs to load a model, tokenize text, evaluate tokens,
 * read logits and sample: opaque handles, status codes, plain parameter structs.
 * Every function that can fail returns an mf_status; the human-readable detail
 * (file, offset, tensor name) is kept for mf_last_error() in the calling thread.
 * The library never prints and never exits. */
#ifndef MEMFIT_H
#define MEMFIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mf_status {
    MF_OK = 0,
    MF_E_IO,           /* open/read/write/mmap failed */
    MF_E_FORMAT,       /* the file is truncated, corrupt or inconsistent */
    MF_E_UNSUPPORTED,  /* valid but not handled: unknown type, architecture */
    MF_E_NOMEM,        /* the system allocator failed */
    MF_E_BUDGET,       /* an allocation would exceed the memory budget */
    MF_E_INVALID,      /* a bad argument from the caller */
    MF_E_CONTEXT_FULL  /* no room left in the session's context */
} mf_status;

const char *mf_status_str(mf_status s);
/* The message of the last failure in this thread ("" if none). */
const char *mf_last_error(void);

/* Logging: the library reports progress through this callback only. */
typedef enum { MF_LOG_DEBUG, MF_LOG_INFO, MF_LOG_WARN } mf_log_level;
typedef void (*mf_log_fn)(mf_log_level level, const char *msg, void *user);
void mf_set_log(mf_log_fn fn, void *user);

/* ---- models ---------------------------------------------------------- */

typedef struct mf_model mf_model;

typedef struct mf_model_params {
    const char *tokenizer_path; /* llama2.c tokenizer.bin for .bin checkpoints, or NULL */
} mf_model_params;

typedef struct mf_model_info {
    char arch[32];
    char file_format[16];   /* "gguf" or "llama2c" */
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, n_ff;
    int n_ctx_train, rope_dim;
    float rope_base, norm_eps;
    int tied_embeddings;    /* 1 when output.weight is absent */
    uint64_t n_params;      /* elements in all tensors */
    uint64_t n_bytes;       /* bytes of all tensor data */
    int n_tensors;
    char tokenizer[16];     /* "llama", "gpt2", "none" */
} mf_model_info;

typedef struct mf_tensor_info {
    const char *name;       /* borrowed from the model */
    int n_dims;
    int64_t ne[4];          /* ne[0] is the row length, as in GGUF */
    const char *type_name;  /* "f16", "q8_0", ... */
    uint64_t n_bytes;
} mf_tensor_info;

mf_status mf_model_load(const char *path, const mf_model_params *params, mf_model **out);
void mf_model_free(mf_model *m);
void mf_model_get_info(const mf_model *m, mf_model_info *info);
mf_status mf_model_tensor(const mf_model *m, int i, mf_tensor_info *out);

/* ---- tokens ----------------------------------------------------------- */

int32_t mf_token_bos(const mf_model *m); /* -1 if none */
int32_t mf_token_eos(const mf_model *m); /* -1 if none */
/* Encode text. *n_out receives the number of ids; if it exceeds cap the ids
 * are not all written and MF_E_INVALID is returned (call again bigger). */
mf_status mf_tokenize(const mf_model *m, const char *text, size_t len, int add_bos,
                      int32_t *ids, int cap, int *n_out);
/* The bytes a token stands for when it follows `prev` (-1 at the start);
 * writes up to cap bytes, sets *len to the full length. */
mf_status mf_token_to_piece(const mf_model *m, int32_t prev, int32_t id,
                            char *buf, size_t cap, size_t *len);

/* ---- sessions: a KV cache and the buffers of one forward pass ---------- */

typedef struct mf_session mf_session;

typedef struct mf_session_params {
    int n_ctx;     /* 0: the model's training context */
    int n_threads; /* 0: all cores */
    int n_batch;   /* most tokens evaluated in one pass; 0: 512 */
    const char *kv_type; /* KV cache: "f32" (NULL), "f16" or "q8_0" */
} mf_session_params;

mf_status mf_session_create(mf_model *m, const mf_session_params *p, mf_session **out);
void mf_session_free(mf_session *s);
/* Evaluate n tokens at the next positions. Logits of every token of the
 * batch are kept when all_logits is set, else only the last one's. */
mf_status mf_session_eval(mf_session *s, const int32_t *ids, int n, int all_logits);
/* Logits of token i of the last batch (i = -1: the last one); NULL if not kept. */
const float *mf_session_logits(const mf_session *s, int i);
int mf_session_pos(const mf_session *s);
int mf_session_n_ctx(const mf_session *s);
int mf_session_n_batch(const mf_session *s);
/* Bytes of the KV cache (keys and values, all layers, the full context). */
uint64_t mf_session_kv_bytes(const mf_session *s);
void mf_session_reset(mf_session *s);

/* ---- sampling ----------------------------------------------------------- */

typedef struct mf_sampler mf_sampler;

typedef struct mf_sampler_params {
    float temp;            /* <= 0: greedy */
    int top_k;             /* <= 0: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off */
    float repeat_penalty;  /* 1: off */
    int repeat_last_n;     /* tokens looked back for the penalty */
    uint64_t seed;
} mf_sampler_params;

mf_sampler_params mf_sampler_defaults(void);
mf_status mf_sampler_create(const mf_sampler_params *p, int n_vocab, mf_sampler **out);
void mf_sampler_free(mf_sampler *s);
/* Choose the next token from logits (not modified). */
int32_t mf_sampler_sample(mf_sampler *s, const float *logits);
/* Tell the sampler a token was emitted (for the repetition penalty). */
void mf_sampler_accept(mf_sampler *s, int32_t id);

/* ---- synthetic models ---------------------------------------------------- */

typedef struct mf_synth_params {
    int dim, n_layers, n_heads, n_kv_heads, n_ff, n_vocab, n_ctx;
    const char *type;        /* matrix type: "f16" (NULL), "f32", "bf16" or "q8_0" */
    uint64_t seed;
    const char *vocab_from;  /* GGUF whose tokenizer is copied, or NULL */
} mf_synth_params;

/* Write a random-weight LLaMA model to path (atomically). */
mf_status mf_synth(const mf_synth_params *p, const char *path);

/* ---- process statistics -------------------------------------------------- */

/* Peak resident set (VmHWM) of this process in bytes, 0 if unknown. */
uint64_t mf_peak_rss(void);
/* Write n bytes to path atomically (path.tmp, fsync, rename). */
mf_status mf_write_file(const char *path, const void *data, size_t n);
/* Parse "512M", "2G", "1.5GiB", "1000000" into bytes. */
mf_status mf_parse_size(const char *s, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif
