/* calib.h — running a model over calibration text to collect activation
 * statistics (internal).
 *
 * The forward pass reports the input rows of every matrix product to a
 * session observer (model/session.h); calibration turns those rows into an
 * importance matrix (quant/quant.h), which the quantizer reads. The public
 * entry point is mf_imatrix_collect (memfit.h). */
#ifndef MF_CALIB_H
#define MF_CALIB_H

#include "model/session.h"
#include "quant/quant.h"

/* Make session s add every matrix input it computes to im (NULL detaches).
 * Errors inside the observer (out of memory) are kept in the attachment and
 * returned by mf_calib_status. */
typedef struct mf_calib_hook {
    mf_imatrix *im;    /* borrowed */
    mf_status status;  /* first failure while observing */
} mf_calib_hook;

void mf_calib_attach(mf_session *s, mf_calib_hook *hook);

#endif
