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
    uint64_t mem_budget; /* bytes the process may use (VmHWM); 0: no limit */
    int n_seq;           /* independent sequences sharing the session; 0: 1 */
    uint64_t reserve;    /* bytes the caller allocates besides the session (samplers,
                            output buffers): the budget plan sets them aside */
} mf_session_params;

mf_status mf_session_create(mf_model *m, const mf_session_params *p, mf_session **out);
void mf_session_free(mf_session *s);
/* Evaluate n tokens at the next positions. Logits of every token of the
 * batch are kept when all_logits is set, else only the last one's. */
mf_status mf_session_eval(mf_session *s, const int32_t *ids, int n, int all_logits);
/* Logits of token i of the last batch (i = -1: the last one); NULL if not kept. */
const float *mf_session_logits(const mf_session *s, int i);
int mf_session_pos(const mf_session *s);
/* Several sequences at once: token i of the batch belongs to sequence
 * seq[i] (0 <= seq < n_seq) and goes at that sequence's next position. Every
 * weight is read once for the whole batch, so decoding one token of each of
 * S sequences costs about one pass over the weights, not S. Logits of every
 * token are kept (n <= n_batch). */
mf_status mf_session_eval_seqs(mf_session *s, const int32_t *ids, const int32_t *seq, int n);
int mf_session_seq_pos(const mf_session *s, int seq);
void mf_session_seq_reset(mf_session *s, int seq);
int mf_session_n_ctx(const mf_session *s);
int mf_session_n_batch(const mf_session *s);
/* Bytes of the KV cache (keys and values, all layers, the full context). */
uint64_t mf_session_kv_bytes(const mf_session *s);
void mf_session_reset(mf_session *s);

/* ---- memory budget ------------------------------------------------------ */

/* The plan for running m with p (p->mem_budget > 0) as text: per layer
 * resident or streamed, KV cache, activations, prefill chunk, predicted peak
 * and speed. MF_E_BUDGET (with the smallest budget that works, and what
 * dominates it, in mf_last_error()) if nothing fits. */
mf_status mf_plan_report(mf_model *m, const mf_session_params *p, char *buf, size_t cap);

typedef struct mf_session_stats {
    uint64_t budget, predicted_peak, peak_rss;
    uint64_t resident_bytes, streamed_bytes_per_pass;
    uint64_t bytes_read;           /* from disk by the streamer */
    double io_seconds, wait_seconds;
    double predicted_decode_tps, predicted_prefill_tps;
    int n_streamed_layers, n_batch;
    int direct_io;                 /* O_DIRECT in use */
    uint64_t packed_bytes;         /* weights repacked for this CPU's kernels */
} mf_session_stats;
void mf_session_get_stats(const mf_session *s, mf_session_stats *out);

/* Read every weight matrix the session multiplies by, as one decode step
 * does (each split over the session's threads, part by part), with plain
 * loads and no arithmetic; *gbs = bytes / seconds, best of `passes`. This is
 * the ceiling a memory-bound decode reaches on the memory these weights
 * actually occupy (on a VM, read bandwidth differs by allocation). */
mf_status mf_session_read_weights(mf_session *s, int passes, double *gbs);

/* Measure this machine's disk (reading `path`) and memory read bandwidth,
 * and record them for the planner's cost model (in $MEMFIT_CACHE or
 * ~/.cache/memfit/machine). Writes what it measured into *disk_gbs/mem_gbs. */
mf_status mf_measure_machine(const char *path, double *disk_gbs, double *mem_gbs);

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
/* Heap bytes a sampler takes (to reserve them in a memory budget). */
uint64_t mf_sampler_bytes(const mf_sampler_params *p, int n_vocab);
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

/* ---- quantization, calibration (memfit quantize, memfit kld) -------------
 * A file is quantized tensor by tensor: matrices get the type a mixture
 * ("q4_k_m", ...) names for their role and layer, as llama.cpp's
 * llama-quantize chooses; 1-D tensors (norms) are copied unchanged. An
 * importance matrix (mean squared activation of each input channel of every
 * matrix, collected over calibration text) lets quantizers that support it
 * spend precision where the activations are large. Formats and rules:
 * docs/quantization.md. */

typedef struct mf_imatrix mf_imatrix;

/* Run the model over ids in windows of n_ctx tokens (each from an empty
 * cache; the last window may be shorter) and collect, for every matrix
 * weight, the mean over tokens of x_j^2 of each input channel j. A tied
 * embedding is observed as token_embd.weight (it is the output matrix). */
mf_status mf_imatrix_collect(mf_model *m, const int32_t *ids, int n, int n_ctx, int n_threads,
                             mf_imatrix **out);
/* llama.cpp's legacy imatrix.dat layout (docs/formats.md), written atomically. */
mf_status mf_imatrix_save(const mf_imatrix *im, const char *path);
mf_status mf_imatrix_load(const char *path, mf_imatrix **out);
void mf_imatrix_free(mf_imatrix *im);
/* The n_in importances of a tensor, or NULL if absent or of another length. */
const float *mf_imatrix_get(const mf_imatrix *im, const char *tensor_name, int n_in);
int mf_imatrix_count(const mf_imatrix *im);        /* entries */
int mf_imatrix_chunks(const mf_imatrix *im);       /* windows it was collected over */
/* Entry i (0 <= i < count): its tensor name (borrowed) and length. */
mf_status mf_imatrix_entry(const mf_imatrix *im, int i, const char **name, int *n_in);
/* The calibration data's name, stored in the file (NULL: none). */
mf_status mf_imatrix_set_dataset(mf_imatrix *im, const char *name);
const char *mf_imatrix_dataset(const mf_imatrix *im);

/* What happened to one tensor, given to the report callback as it is written. */
typedef struct mf_quant_report {
    const char *name;         /* borrowed for the call */
    int index, n_tensors;     /* position in the file */
    int n_dims;
    int64_t ne[4];
    const char *type_name;    /* the type written */
    const char *wanted_name;  /* the mixture's choice; differs when fallback is set */
    int fallback;             /* 1: the row length is not a multiple of wanted's block */
    int copied;               /* 1: bytes copied unchanged (1-D, or already that type) */
    int used_imatrix;         /* 1: the quantizer was given importances */
    uint64_t n_elements, n_bytes;
    double rms;               /* sqrt(mean w^2) of the source weights */
    double rmse;              /* sqrt(mean (w - dequant(quant(w)))^2) */
    double wrmse;             /* the same weighted by the importances per column, */
                              /* sqrt(sum_ij imp_j e_ij^2 / (rows sum_j imp_j)); -1 without */
} mf_quant_report;

typedef void (*mf_quant_progress_fn)(void *user, uint64_t done, uint64_t total);
typedef void (*mf_quant_report_fn)(void *user, const mf_quant_report *r);

typedef struct mf_quantize_params {
    const char *type;           /* "q8_0", "q4_k_m", "f16", ... (mf_quantize_type_name) */
    const mf_imatrix *imatrix;  /* borrowed, or NULL */
    int n_threads;              /* 0: all cores */
    int pure;                   /* 1: every matrix in the base type (llama-quantize --pure) */
    mf_quant_progress_fn progress; /* elements done of total; may be NULL */
    mf_quant_report_fn report;  /* once per tensor, in file order; may be NULL */
    void *user;                 /* passed to both callbacks */
} mf_quantize_params;

/* Quantize the GGUF `in` into `out` (out.tmp, fsync, rename; nothing is left
 * on failure, and out may not be in). Metadata is copied, with
 * general.file_type set to llama.cpp's llama_ftype number and
 * general.quantization_version = 2. MF_E_UNSUPPORTED names a type whose
 * quantizer memfit does not have yet. */
mf_status mf_quantize_file(const char *in, const char *out, const mf_quantize_params *p);
/* The i-th accepted type name (NULL past the end), for help texts. */
const char *mf_quantize_type_name(int i);

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
