/* error.c — status names and the per-thread last-error message.
 *
 * The message lives in thread-local storage so library calls from different
 * threads never see each other's errors; it is the only per-thread state. */
#include "core.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];

const char *mf_status_str(mf_status s) {
    switch (s) {
    case MF_OK: return "ok";
    case MF_E_IO: return "I/O error";
    case MF_E_FORMAT: return "bad file format";
    case MF_E_UNSUPPORTED: return "unsupported";
    case MF_E_NOMEM: return "out of memory";
    case MF_E_BUDGET: return "over the memory budget";
    case MF_E_INVALID: return "invalid argument";
    case MF_E_CONTEXT_FULL: return "context full";
    }
    return "unknown status";
}

const char *mf_last_error(void) { return last_error; }

void mf_clear_error(void) { last_error[0] = 0; }

mf_status mf_errorf(mf_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}
