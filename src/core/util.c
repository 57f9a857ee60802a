/* util.c — process helpers: time, peak RSS, size parsing, atomic file output.
 *
 * Peak memory is the kernel's VmHWM, which counts mapped file pages as well
 * as heap: it is what a user's memory budget is judged against. */
#define _POSIX_C_SOURCE 200809L
#include "core.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

uint64_t mf_read_sum(const void *p, uint64_t n) {
    const uint64_t *a = p;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (uint64_t i = 0; i < n / 8; i += 4) s0 += a[i], s1 += a[i + 1], s2 += a[i + 2], s3 += a[i + 3];
    return s0 + s1 + s2 + s3;
}

double mf_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t proc_status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    uint64_t kb = 0;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, n) == 0) {
            kb = strtoull(line + n, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb * 1024;
}

uint64_t mf_peak_rss(void) { return proc_status_kb("VmHWM:"); }
uint64_t mf_current_rss(void) { return proc_status_kb("VmRSS:"); }

mf_status mf_parse_size(const char *s, uint64_t *out) {
    if (!s || !*s) return mf_errorf(MF_E_INVALID, "empty size");
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0) || !isfinite(v))
        return mf_errorf(MF_E_INVALID, "bad size '%s' (expected e.g. 512M, 2G)", s);
    while (isspace((unsigned char)*end)) end++;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 0: break;
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1024.0 * 1024; end++; break;
    case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    case 'B': break;
    default: return mf_errorf(MF_E_INVALID, "bad size suffix in '%s' (use K, M, G or T)", s);
    }
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'b' || *end == 'B') end++;
    if (*end) return mf_errorf(MF_E_INVALID, "bad size '%s' (expected e.g. 512M, 2G)", s);
    v *= mul;
    if (v >= 18446744073709551615.0) return mf_errorf(MF_E_INVALID, "size '%s' is too large", s);
    *out = (uint64_t)v;
    return MF_OK;
}

bool mf_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

mf_status mf_outfile_open(mf_outfile *f, const char *path) {
    memset(f, 0, sizeof *f);
    size_t n = strlen(path);
    f->path = malloc(n + 1);
    f->tmp = malloc(n + 5);
    if (!f->path || !f->tmp) {
        free(f->path);
        free(f->tmp);
        return mf_errorf(MF_E_NOMEM, "out of memory");
    }
    memcpy(f->path, path, n + 1);
    snprintf(f->tmp, n + 5, "%s.tmp", path);
    f->fp = fopen(f->tmp, "wb");
    if (!f->fp) {
        mf_status st = mf_errorf(MF_E_IO, "cannot create '%s': %s", f->tmp, strerror(errno));
        free(f->path);
        free(f->tmp);
        f->path = f->tmp = NULL;
        return st;
    }
    return MF_OK;
}

mf_status mf_outfile_write(mf_outfile *f, const void *data, size_t n) {
    if (f->failed) return MF_E_IO;
    if (n && fwrite(data, 1, n, f->fp) != n) {
        f->failed = true;
        return mf_errorf(MF_E_IO, "write to '%s' failed: %s", f->tmp, strerror(errno));
    }
    return MF_OK;
}

static void outfile_release(mf_outfile *f) {
    free(f->path);
    free(f->tmp);
    f->path = f->tmp = NULL;
    f->fp = NULL;
}

mf_status mf_outfile_commit(mf_outfile *f) {
    FILE *fp = f->fp;
    mf_status st = MF_OK;
    if (f->failed) st = MF_E_IO;
    else if (fflush(fp) != 0 || fsync(fileno(fp)) != 0)
        st = mf_errorf(MF_E_IO, "flushing '%s' failed: %s", f->tmp, strerror(errno));
    if (fclose(fp) != 0 && st == MF_OK)
        st = mf_errorf(MF_E_IO, "closing '%s' failed: %s", f->tmp, strerror(errno));
    if (st == MF_OK && rename(f->tmp, f->path) != 0)
        st = mf_errorf(MF_E_IO, "renaming '%s' to '%s' failed: %s", f->tmp, f->path,
                       strerror(errno));
    if (st != MF_OK) remove(f->tmp);
    outfile_release(f);
    return st;
}

void mf_outfile_abort(mf_outfile *f) {
    if (!f->tmp) return;
    if (f->fp) fclose(f->fp);
    remove(f->tmp);
    outfile_release(f);
}

mf_status mf_write_file(const char *path, const void *data, size_t n) {
    mf_outfile f;
    TRY(mf_outfile_open(&f, path));
    mf_status st = mf_outfile_write(&f, data, n);
    if (st != MF_OK) {
        mf_outfile_abort(&f);
        return st;
    }
    return mf_outfile_commit(&f);
}

mf_status mf_pread_full(int fd, void *dst, uint64_t len, uint64_t off, uint64_t *got) {
    uint64_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (char *)dst + done, (size_t)(len - done), (off_t)(off + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            return mf_errorf(MF_E_IO, "read at offset %llu failed: %s",
                             (unsigned long long)(off + done), strerror(errno));
        if (n == 0) break;
        done += (uint64_t)n;
    }
    *got = done;
    return MF_OK;
}
