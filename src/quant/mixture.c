/* mixture.c — which type each tensor of a LLaMA file gets for a quantization
 * mixture, following llama.cpp's llama_tensor_get_type (src/llama-quant.cpp)
 * so that a file quantized here has the tensor types llama-quantize gives it.
 *
 * A mixture names a base type ("q4_k_m" -> Q4_K) plus rules that give more
 * bits where llama.cpp measured they pay: the output matrix (Q6_K), attn_v
 * and ffn_down in some layers, attn_output for the small K-mixtures. Layers
 * are counted in the order llama.cpp visits tensors (mf_quant_order), which
 * is also the order the file is written in. Only 2-D "*.weight"
 * tensors that are not norms are quantized; the rest keep their type. A type
 * whose block does not divide a row falls back to one that does (llama.cpp's
 * table; where llama.cpp gives up, on 32-blocks, memfit writes f16). The
 * rules for MoE, Falcon, the 70B-only attn_v bump and the IQ1/IQ2/IQ3 types
 * are left out: memfit has neither those models nor those types. */
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const mf_quant_mixture mixtures[] = {
    {"q4_0", MF_FTYPE_Q4_0, MF_TYPE_Q4_0},     {"q4_1", MF_FTYPE_Q4_1, MF_TYPE_Q4_1},
    {"q5_0", MF_FTYPE_Q5_0, MF_TYPE_Q5_0},     {"q5_1", MF_FTYPE_Q5_1, MF_TYPE_Q5_1},
    {"q8_0", MF_FTYPE_Q8_0, MF_TYPE_Q8_0},     {"q2_k", MF_FTYPE_Q2_K, MF_TYPE_Q2_K},
    {"q2_k_s", MF_FTYPE_Q2_K_S, MF_TYPE_Q2_K}, {"q3_k_s", MF_FTYPE_Q3_K_S, MF_TYPE_Q3_K},
    {"q3_k_m", MF_FTYPE_Q3_K_M, MF_TYPE_Q3_K}, {"q3_k_l", MF_FTYPE_Q3_K_L, MF_TYPE_Q3_K},
    {"q4_k_s", MF_FTYPE_Q4_K_S, MF_TYPE_Q4_K}, {"q4_k_m", MF_FTYPE_Q4_K_M, MF_TYPE_Q4_K},
    {"q5_k_s", MF_FTYPE_Q5_K_S, MF_TYPE_Q5_K}, {"q5_k_m", MF_FTYPE_Q5_K_M, MF_TYPE_Q5_K},
    {"q6_k", MF_FTYPE_Q6_K, MF_TYPE_Q6_K},     {"iq4_nl", MF_FTYPE_IQ4_NL, MF_TYPE_IQ4_NL},
    {"iq4_xs", MF_FTYPE_IQ4_XS, MF_TYPE_IQ4_XS},
    /* llama-quantize's aliases: a bare K type means its _M mixture */
    {"q3_k", MF_FTYPE_Q3_K_M, MF_TYPE_Q3_K},   {"q4_k", MF_FTYPE_Q4_K_M, MF_TYPE_Q4_K},
    {"q5_k", MF_FTYPE_Q5_K_M, MF_TYPE_Q5_K},
    {"f16", MF_FTYPE_F16, MF_TYPE_F16},        {"bf16", MF_FTYPE_BF16, MF_TYPE_BF16},
    {"f32", MF_FTYPE_ALL_F32, MF_TYPE_F32},
};
#define N_MIXTURES ((int)(sizeof mixtures / sizeof mixtures[0]))

const mf_quant_mixture *mf_quant_mixture_find(const char *name) {
    if (!name) return NULL;
    for (int i = 0; i < N_MIXTURES; i++)
        if (strcasecmp(name, mixtures[i].name) == 0) return &mixtures[i];
    return NULL;
}

const mf_quant_mixture *mf_quant_mixture_at(int i) {
    return i >= 0 && i < N_MIXTURES ? &mixtures[i] : NULL;
}

const char *mf_quantize_type_name(int i) {
    const mf_quant_mixture *m = mf_quant_mixture_at(i);
    return m ? m->name : NULL;
}

typedef enum {
    ROLE_OTHER, ROLE_OUTPUT, ROLE_TOKEN_EMBD, ROLE_ATTN_V, ROLE_ATTN_OUT, ROLE_ATTN_QKV,
    ROLE_FFN_DOWN
} role;

/* What llama.cpp quantizes at all: 2-D+ tensors named *weight, not norms. */
static bool is_matrix(const mf_gguf_tensor *t) {
    size_t n = strlen(t->name);
    if (t->n_dims < 2 || n < 6 || strcmp(t->name + n - 6, "weight") != 0) return false;
    static const char *const keep[] = {"_norm.weight", "ffn_gate_inp.weight",
                                       "position_embd.weight", "token_types.weight",
                                       "attn_rel_b.weight"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (strstr(t->name, keep[i])) return false;
    return true;
}

static role role_of(const char *name, bool has_output) {
    if (!strcmp(name, "output.weight")) return ROLE_OUTPUT;
    /* a tied embedding is the output matrix, and gets its type */
    if (!strcmp(name, "token_embd.weight")) return has_output ? ROLE_TOKEN_EMBD : ROLE_OUTPUT;
    if (strstr(name, "attn_v.weight")) return ROLE_ATTN_V;
    if (strstr(name, "attn_output.weight")) return ROLE_ATTN_OUT;
    if (strstr(name, "attn_qkv.weight")) return ROLE_ATTN_QKV;
    if (strstr(name, "ffn_down")) return ROLE_FFN_DOWN;
    return ROLE_OTHER;
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers and
 * every third one between get the bigger type. */
static bool use_more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

typedef struct plan_state {
    int ftype, base;
    bool has_imatrix;
    int n_gqa;              /* n_head / n_head_kv */
    int i_attn_v, n_attn_v; /* attn_v tensors seen so far / in the file */
    int i_ffn_down, n_layer;
} plan_state;

static int output_type(const plan_state *s, int64_t ne0) {
    /* a row that the base block does not divide goes to q8_0 straight away */
    if (ne0 % mf_type_layout_of(s->base)->block != 0) return MF_TYPE_Q8_0;
    return s->base == MF_TYPE_Q8_0 ? MF_TYPE_Q8_0 : MF_TYPE_Q6_K;
}

static int attn_v_type(plan_state *s) {
    int f = s->ftype, i = s->i_attn_v++, t = s->base;
    if (f == MF_FTYPE_Q2_K) t = s->n_gqa >= 4 ? MF_TYPE_Q4_K : MF_TYPE_Q3_K;
    else if (f == MF_FTYPE_Q2_K_S && s->n_gqa >= 4) t = MF_TYPE_Q4_K;
    else if (f == MF_FTYPE_Q3_K_M) t = i < 2 ? MF_TYPE_Q5_K : MF_TYPE_Q4_K;
    else if (f == MF_FTYPE_Q3_K_L) t = MF_TYPE_Q5_K;
    else if ((f == MF_FTYPE_IQ4_NL || f == MF_FTYPE_IQ4_XS) && s->n_gqa >= 4) t = MF_TYPE_Q5_K;
    else if ((f == MF_FTYPE_Q4_K_M || f == MF_FTYPE_Q5_K_M) && use_more_bits(i, s->n_attn_v))
        t = MF_TYPE_Q6_K;
    else if (f == MF_FTYPE_Q4_K_S && i < 4) t = MF_TYPE_Q5_K;
    return t;
}

static int ffn_down_type(plan_state *s) {
    int f = s->ftype, i = s->i_ffn_down++, n = s->n_layer, t = s->base;
    if (f == MF_FTYPE_Q2_K) t = MF_TYPE_Q3_K;
    else if (f == MF_FTYPE_Q2_K_S) t = i < n / 8 ? MF_TYPE_Q4_K : t;
    else if (f == MF_FTYPE_Q3_K_M) t = i < n / 16 ? MF_TYPE_Q5_K : MF_TYPE_Q4_K;
    else if (f == MF_FTYPE_Q3_K_L) t = MF_TYPE_Q5_K;
    else if (f == MF_FTYPE_Q4_K_M) t = use_more_bits(i, n) ? MF_TYPE_Q6_K : t;
    else if (i < n / 8 && (f == MF_FTYPE_IQ4_NL || f == MF_FTYPE_IQ4_XS) && !s->has_imatrix)
        t = MF_TYPE_Q5_K;
    else if (f == MF_FTYPE_Q5_K_M && use_more_bits(i, n)) t = MF_TYPE_Q6_K;
    else if (f == MF_FTYPE_Q4_K_S && i < n / 8) t = MF_TYPE_Q5_K;
    else if ((f == MF_FTYPE_Q4_0 || f == MF_FTYPE_Q5_0) && s->has_imatrix && i < n / 8)
        t = f == MF_FTYPE_Q4_0 ? MF_TYPE_Q4_1 : MF_TYPE_Q5_1;
    return t;
}

static int rule_type(plan_state *s, role r, int64_t ne0) {
    int f = s->ftype;
    switch (r) {
    case ROLE_OUTPUT: return output_type(s, ne0);
    case ROLE_ATTN_V: return attn_v_type(s);
    case ROLE_FFN_DOWN: return ffn_down_type(s);
    case ROLE_ATTN_OUT:
        if (f == MF_FTYPE_Q2_K) return MF_TYPE_Q3_K;
        if (f == MF_FTYPE_Q3_K_M) return MF_TYPE_Q4_K;
        if (f == MF_FTYPE_Q3_K_L) return MF_TYPE_Q5_K;
        return s->base;
    case ROLE_ATTN_QKV:
        if (f == MF_FTYPE_Q3_K_M || f == MF_FTYPE_Q3_K_L) return MF_TYPE_Q4_K;
        if (f == MF_FTYPE_Q4_K_M) return MF_TYPE_Q5_K;
        if (f == MF_FTYPE_Q5_K_M) return MF_TYPE_Q6_K;
        return s->base;
    default: return s->base;
    }
}

/* llama.cpp's fallback for a row the block does not divide; f16 fits all. */
static int fallback_type(int t, int64_t ne0) {
    switch (t) {
    case MF_TYPE_Q2_K: case MF_TYPE_Q3_K: case MF_TYPE_IQ4_XS: t = MF_TYPE_IQ4_NL; break;
    case MF_TYPE_Q4_K: t = MF_TYPE_Q5_0; break;
    case MF_TYPE_Q5_K: t = MF_TYPE_Q5_1; break;
    case MF_TYPE_Q6_K: t = MF_TYPE_Q8_0; break;
    default: t = MF_TYPE_F16; break;
    }
    return ne0 % mf_type_layout_of(t)->block == 0 ? t : MF_TYPE_F16;
}

static mf_status init_state(const mf_gguf *g, const mf_quant_mixture *mx, bool has_imatrix,
                            plan_state *s) {
    memset(s, 0, sizeof *s);
    s->ftype = mx->ftype;
    s->base = mx->base;
    s->has_imatrix = has_imatrix;
    int64_t heads = 1, kv = 0, layers = 0;
    mf_gguf_get_int(g, "llama.attention.head_count", &heads);
    if (!mf_gguf_get_int(g, "llama.attention.head_count_kv", &kv)) kv = heads;
    s->n_gqa = heads > 0 && kv > 0 ? (int)(heads / kv) : 1;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (strstr(g->tensors[i].name, "attn_v.weight")) s->n_attn_v++;
    if (!mf_gguf_get_int(g, "llama.block_count", &layers) || layers <= 0 || layers > (1 << 20))
        layers = s->n_attn_v;
    s->n_layer = (int)layers;
    return MF_OK;
}

static bool has_tensor(const mf_gguf *g, const char *name) {
    return mf_gguf_find_tensor(g, name) != NULL;
}

typedef struct named {
    int layer;        /* -1 outside the blocks */
    const char *name;
    int idx;
} named;

static int cmp_named(const void *pa, const void *pb) {
    const named *a = pa, *b = pb;
    if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
    return strcmp(a->name, b->name);
}

mf_status mf_quant_order(const mf_gguf *g, int *order) {
    if (g->n_tensors > (1u << 30)) return mf_errorf(MF_E_INVALID, "too many tensors");
    named *v = malloc(sizeof *v * (g->n_tensors ? g->n_tensors : 1));
    if (!v) return mf_errorf(MF_E_NOMEM, "out of memory");
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        v[i] = (named){-1, g->tensors[i].name, (int)i};
        if (sscanf(g->tensors[i].name, "blk.%d.", &v[i].layer) != 1) v[i].layer = -1;
    }
    qsort(v, g->n_tensors, sizeof *v, cmp_named);
    for (uint64_t i = 0; i < g->n_tensors; i++) order[i] = v[i].idx;
    free(v);
    return MF_OK;
}

mf_status mf_quant_plan(const mf_gguf *g, const int *order, const mf_quant_mixture *mx,
                        bool pure, bool has_imatrix, mf_quant_choice *out) {
    plan_state s;
    TRY(init_state(g, mx, has_imatrix, &s));
    bool has_output = has_tensor(g, "output.weight");
    /* the rules only refine quantized bases: f16/bf16/f32 apply as they are */
    bool rules = !pure && mx->base != MF_TYPE_F16 && mx->base != MF_TYPE_BF16 &&
                 mx->base != MF_TYPE_F32;
    for (uint64_t k = 0; k < g->n_tensors; k++) {
        const mf_gguf_tensor *t = &g->tensors[order[k]];
        mf_quant_choice *c = &out[order[k]];
        memset(c, 0, sizeof *c);
        if (!is_matrix(t)) {
            c->type = c->wanted = t->type;
            c->copy = true;
            continue;
        }
        role r = role_of(t->name, has_output);
        c->wanted = rules ? rule_type(&s, r, t->ne[0]) : mx->base;
        c->type = c->wanted;
        if (t->ne[0] % mf_type_layout_of(c->wanted)->block != 0) {
            c->type = fallback_type(c->wanted, t->ne[0]);
            c->fallback = true;
        }
        c->copy = c->type == t->type;
    }
    return MF_OK;
}
