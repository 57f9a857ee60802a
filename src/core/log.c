/* log.c — the logging callback.
 *
 * The library never prints; messages go to a callback the program sets once.
 * This (with the thread pool) is the only process-wide mutable state. */
#include "core.h"

#include <stdarg.h>
#include <stdio.h>

static mf_log_fn log_fn;
static void *log_user;

void mf_set_log(mf_log_fn fn, void *user) {
    log_fn = fn;
    log_user = user;
}

void mf_log(mf_log_level level, const char *fmt, ...) {
    if (!log_fn) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_fn(level, buf, log_user);
}
