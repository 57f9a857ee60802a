/* quant_search.c — ggml's make_qkx2_quants scale/min search, shared by the
 * K-quant quantizers (q2_K with 16-value sub-blocks and |error|, q4_K/q5_K
 * with 32-value sub-blocks and error^2). Same float operations in the same
 * order as ggml, so unweighted blocks come out byte-identical. */
#include "tensor/kernels.h"

#include <math.h>
#include <string.h>

/* Initial L for x ~ scale*L - the_min (ggml's make_qkx2_quants, same float
 * operations in the same order): returns the best error seen. */
static float qkx2_init(int n, int nmax, const float *x, const float *w, float min, float max,
                       bool use_mad, uint8_t *L) {
    float iscale = (float)nmax / (max - min), scale = 1 / iscale, err = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)mf_clampi(mf_nearest_int(iscale * (x[i] - min)), 0, nmax);
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        err += w[i] * diff;
    }
    return err;
}

/* ggml's make_qkx2_quants: the best (scale, min <= 0) over candidate
 * iscales, each refined by weighted least squares. *the_min = -min. */
float mf_qkx2_quants(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min,
                     const mf_qkx_search *sp) {
    uint8_t Laux[32];
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float best = qkx2_init(n, nmax, x, w, min, max, sp->use_mad, L), scale = 1 / ((float)nmax / (max - min));
    for (int is = 0; is <= sp->nstep; is++) {
        float iscale = (sp->rmin + sp->rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = mf_clampi(mf_nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * (float)Laux[i] + this_min - x[i];
            diff = sp->use_mad ? fabsf(diff) : diff * diff;
            err += w[i] * diff;
        }
        if (err < best) {
            memcpy(L, Laux, (size_t)n);
            best = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *the_min = -min;
    return scale;
}

