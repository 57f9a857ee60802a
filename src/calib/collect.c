/* collect.c — collecting an importance matrix: the model runs over windows
 * of calibration tokens, each from an empty cache as llama.cpp's imatrix
 * tool runs them, and every matrix product's input rows are squared and
 * summed per column through the session observer. All logits are requested
 * so the output matrix sees every token, not only the last of a batch. */
#include "calib/calib.h"

static void observe(void *user, const mf_weight *w, const float *x, int n_tok) {
    mf_calib_hook *h = user;
    if (h->status != MF_OK) return;
    h->status = mf_imatrix_add(h->im, w->name, x, w->n_in, n_tok);
}

void mf_calib_attach(mf_session *s, mf_calib_hook *hook) {
    mf_session_set_observer(s, hook ? observe : NULL, hook);
}

static mf_status run_windows(mf_session *s, mf_calib_hook *h, const int32_t *ids, int n,
                             int n_ctx) {
    int B = mf_session_n_batch(s);
    for (int w0 = 0; w0 < n; w0 += n_ctx) {
        int len = n - w0 < n_ctx ? n - w0 : n_ctx;
        mf_session_reset(s);
        for (int done = 0; done < len; done += B) {
            int k = len - done < B ? len - done : B;
            TRY(mf_session_eval(s, ids + w0 + done, k, 1));
            if (h->status != MF_OK) return h->status;
        }
        mf_imatrix_end_chunk(h->im);
    }
    return MF_OK;
}

mf_status mf_imatrix_collect(mf_model *m, const int32_t *ids, int n, int n_ctx, int n_threads,
                             mf_imatrix **out) {
    if (!out) return mf_errorf(MF_E_INVALID, "imatrix collect: NULL output");
    *out = NULL;
    if (!m || !ids || n <= 0 || n_ctx <= 0)
        return mf_errorf(MF_E_INVALID, "imatrix collect: no tokens or no context");
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->hp.n_vocab)
            return mf_errorf(MF_E_INVALID, "calibration token %d (id %d) is outside the "
                             "vocabulary of %d", i, ids[i], m->hp.n_vocab);
    mf_session_params sp = {.n_ctx = n_ctx, .n_threads = n_threads};
    mf_session *s = NULL;
    mf_calib_hook h = {0};
    mf_status st = mf_imatrix_create(&h.im);
    if (st == MF_OK) st = mf_session_create(m, &sp, &s);
    if (st == MF_OK) {
        mf_calib_attach(s, &h);
        st = run_windows(s, &h, ids, n, n_ctx);
    }
    mf_session_free(s);
    if (st != MF_OK) {
        mf_imatrix_free(h.im);
        return st;
    }
    mf_imatrix_finish(h.im);
    *out = h.im;
    return MF_OK;
}
