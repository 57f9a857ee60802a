/* dtype.c — the table of tensor type layouts (GGML's ids, block sizes and
 * block bytes; see docs/formats.md for the block structs they come from). */
#include "dtype.h"

#include <stddef.h>
#include <strings.h>

static const mf_type_layout layouts[MF_TYPE_COUNT] = {
    [MF_TYPE_F32] = {"f32", 1, 4},          [MF_TYPE_F16] = {"f16", 1, 2},
    [MF_TYPE_Q4_0] = {"q4_0", 32, 18},      [MF_TYPE_Q4_1] = {"q4_1", 32, 20},
    [MF_TYPE_Q5_0] = {"q5_0", 32, 22},      [MF_TYPE_Q5_1] = {"q5_1", 32, 24},
    [MF_TYPE_Q8_0] = {"q8_0", 32, 34},      [MF_TYPE_Q8_1] = {"q8_1", 32, 36},
    [MF_TYPE_Q2_K] = {"q2_K", 256, 84},     [MF_TYPE_Q3_K] = {"q3_K", 256, 110},
    [MF_TYPE_Q4_K] = {"q4_K", 256, 144},    [MF_TYPE_Q5_K] = {"q5_K", 256, 176},
    [MF_TYPE_Q6_K] = {"q6_K", 256, 210},    [MF_TYPE_Q8_K] = {"q8_K", 256, 292},
    [MF_TYPE_IQ2_XXS] = {"iq2_xxs", 256, 66}, [MF_TYPE_IQ2_XS] = {"iq2_xs", 256, 74},
    [MF_TYPE_IQ3_XXS] = {"iq3_xxs", 256, 98}, [MF_TYPE_IQ1_S] = {"iq1_s", 256, 50},
    [MF_TYPE_IQ4_NL] = {"iq4_nl", 32, 18},  [MF_TYPE_IQ3_S] = {"iq3_s", 256, 110},
    [MF_TYPE_IQ2_S] = {"iq2_s", 256, 82},   [MF_TYPE_IQ4_XS] = {"iq4_xs", 256, 136},
    [MF_TYPE_I8] = {"i8", 1, 1},            [MF_TYPE_I16] = {"i16", 1, 2},
    [MF_TYPE_I32] = {"i32", 1, 4},          [MF_TYPE_I64] = {"i64", 1, 8},
    [MF_TYPE_F64] = {"f64", 1, 8},          [MF_TYPE_IQ1_M] = {"iq1_m", 256, 56},
    [MF_TYPE_BF16] = {"bf16", 1, 2},        [MF_TYPE_TQ1_0] = {"tq1_0", 256, 54},
    [MF_TYPE_TQ2_0] = {"tq2_0", 256, 66},
};

const mf_type_layout *mf_type_layout_of(int t) {
    if (t < 0 || t >= MF_TYPE_COUNT || !layouts[t].name) return NULL;
    return &layouts[t];
}

const char *mf_type_name(int t) {
    const mf_type_layout *l = mf_type_layout_of(t);
    return l ? l->name : "?";
}

int mf_type_from_name(const char *name) {
    for (int t = 0; t < MF_TYPE_COUNT; t++)
        if (layouts[t].name && strcasecmp(layouts[t].name, name) == 0) return t;
    return -1;
}

bool mf_type_row_bytes(int t, uint64_t n, uint64_t *bytes) {
    const mf_type_layout *l = mf_type_layout_of(t);
    if (!l || n % (uint64_t)l->block) return false;
    return !__builtin_mul_overflow(n / (uint64_t)l->block, (uint64_t)l->bytes, bytes);
}
