/* imatrix.c — the importance matrix: for each matrix weight (by tensor name),
 * the mean over calibration tokens of x_j^2 for every input channel j, kept
 * and stored as llama.cpp's legacy imatrix.dat so files move between tools.
 *
 * File layout (little-endian, docs/formats.md):
 *   int32 n_entries
 *   n_entries x { int32 len; char name[len]; int32 ncall; int32 nval;
 *                 float32 value[nval] }      value = mean(x_j^2) * ncall
 *   int32 last_call; int32 len; char dataset[len]   (optional tail)
 * A reader divides by ncall (llama.cpp's quantize does). The means handed out
 * by mf_imatrix_get are always that quotient of the stored floats, computed
 * once, so a collected matrix and the same matrix saved and loaded give
 * bit-identical importances. Sums are kept in double while collecting. */
#include "quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NAME 4096

typedef struct im_entry {
    char *name;
    int64_t n_in;
    int32_t ncall;     /* observations (calls) that added to it */
    int64_t count;     /* tokens added */
    double *sum;       /* (n_in) sum of x^2 while collecting; NULL once loaded */
    float *stored;     /* (n_in) what the file holds: mean * ncall */
    float *mean;       /* (n_in) stored / ncall: what mf_imatrix_get gives */
} im_entry;

struct mf_imatrix {
    im_entry *e;
    int n, cap;
    int32_t chunks;
    char *dataset;
    int last;          /* entry found by the last lookup: calls come in the same order */
};

mf_status mf_imatrix_create(mf_imatrix **out) {
    *out = calloc(1, sizeof **out);
    return *out ? MF_OK : mf_errorf(MF_E_NOMEM, "out of memory");
}

void mf_imatrix_free(mf_imatrix *im) {
    if (!im) return;
    for (int i = 0; i < im->n; i++) {
        free(im->e[i].name);
        free(im->e[i].sum);
        free(im->e[i].stored);
        free(im->e[i].mean);
    }
    free(im->e);
    free(im->dataset);
    free(im);
}

static int find(const mf_imatrix *im, const char *name, int hint) {
    if (im->n == 0) return -1;
    for (int k = 0; k < im->n; k++) {
        int i = (hint + k) % im->n;
        if (strcmp(im->e[i].name, name) == 0) return i;
    }
    return -1;
}

static mf_status add_entry(mf_imatrix *im, const char *name, int64_t n_in, bool sums) {
    if (im->n == im->cap) {
        int cap = im->cap ? im->cap * 2 : 64;
        im_entry *e = realloc(im->e, sizeof *e * (size_t)cap);
        if (!e) return mf_errorf(MF_E_NOMEM, "out of memory");
        im->e = e;
        im->cap = cap;
    }
    im_entry *e = &im->e[im->n];
    memset(e, 0, sizeof *e);
    e->n_in = n_in;
    e->name = strdup(name);
    e->stored = calloc((size_t)n_in + 1, sizeof(float));
    e->mean = calloc((size_t)n_in + 1, sizeof(float));
    if (sums) e->sum = calloc((size_t)n_in + 1, sizeof(double));
    im->n++; /* counted now so that mf_imatrix_free releases a partial entry */
    if (!e->name || !e->stored || !e->mean || (sums && !e->sum))
        return mf_errorf(MF_E_NOMEM, "out of memory for imatrix entry '%s'", name);
    return MF_OK;
}

mf_status mf_imatrix_add(mf_imatrix *im, const char *name, const float *x, int64_t n_in,
                         int n_tok) {
    if (!im || !name || !x || n_in <= 0 || n_in > (1 << 26) || n_tok < 0)
        return mf_errorf(MF_E_INVALID, "imatrix: bad observation");
    int i = find(im, name, im->last + 1);
    if (i < 0) {
        TRY(add_entry(im, name, n_in, true));
        i = im->n - 1;
    }
    im_entry *e = &im->e[i];
    im->last = i;
    if (e->n_in != n_in || !e->sum)
        return mf_errorf(MF_E_INVALID, "imatrix: tensor '%s' seen with %lld and %lld inputs",
                         name, (long long)e->n_in, (long long)n_in);
    for (int t = 0; t < n_tok; t++) {
        const float *r = x + (size_t)t * (size_t)n_in;
        for (int64_t j = 0; j < n_in; j++) e->sum[j] += (double)r[j] * r[j];
    }
    e->count += n_tok;
    e->ncall++;
    return MF_OK;
}

void mf_imatrix_end_chunk(mf_imatrix *im) {
    if (im) im->chunks++;
}

void mf_imatrix_finish(mf_imatrix *im) {
    for (int i = 0; im && i < im->n; i++) {
        im_entry *e = &im->e[i];
        if (!e->sum) continue;
        for (int64_t j = 0; j < e->n_in; j++) {
            double mean = e->count ? e->sum[j] / (double)e->count : 0.0;
            e->stored[j] = (float)(mean * e->ncall);
            e->mean[j] = e->ncall > 0 ? e->stored[j] / (float)e->ncall : e->stored[j];
        }
    }
}

mf_status mf_imatrix_set_dataset(mf_imatrix *im, const char *name) {
    char *d = name ? strdup(name) : NULL;
    if (name && !d) return mf_errorf(MF_E_NOMEM, "out of memory");
    free(im->dataset);
    im->dataset = d;
    return MF_OK;
}

const char *mf_imatrix_dataset(const mf_imatrix *im) { return im ? im->dataset : NULL; }
int mf_imatrix_count(const mf_imatrix *im) { return im ? im->n : 0; }
int mf_imatrix_chunks(const mf_imatrix *im) { return im ? im->chunks : 0; }

mf_status mf_imatrix_entry(const mf_imatrix *im, int i, const char **name, int *n_in) {
    if (!im || i < 0 || i >= im->n) return mf_errorf(MF_E_INVALID, "imatrix: no entry %d", i);
    *name = im->e[i].name;
    *n_in = (int)im->e[i].n_in;
    return MF_OK;
}

const float *mf_imatrix_get(const mf_imatrix *im, const char *tensor_name, int n_in) {
    if (!im || !tensor_name) return NULL;
    int i = find(im, tensor_name, 0);
    return i >= 0 && im->e[i].n_in == n_in ? im->e[i].mean : NULL;
}

/* ---- the file ---- */

static mf_status put_i32(mf_outfile *f, int32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return mf_outfile_write(f, b, 4);
}

static mf_status write_all(mf_outfile *f, const mf_imatrix *im) {
    TRY(put_i32(f, im->n));
    for (int i = 0; i < im->n; i++) {
        const im_entry *e = &im->e[i];
        TRY(put_i32(f, (int32_t)strlen(e->name)));
        TRY(mf_outfile_write(f, e->name, strlen(e->name)));
        TRY(put_i32(f, e->ncall));
        TRY(put_i32(f, (int32_t)e->n_in));
        /* floats are written as their bytes: the formats are little-endian,
         * as is every machine memfit builds for (x86-64, aarch64) */
        TRY(mf_outfile_write(f, e->stored, sizeof(float) * (size_t)e->n_in));
    }
    const char *ds = im->dataset ? im->dataset : "";
    TRY(put_i32(f, im->chunks));
    TRY(put_i32(f, (int32_t)strlen(ds)));
    return mf_outfile_write(f, ds, strlen(ds));
}

mf_status mf_imatrix_save(const mf_imatrix *im, const char *path) {
    if (!im || !path) return mf_errorf(MF_E_INVALID, "imatrix save: NULL argument");
    mf_outfile f;
    TRY(mf_outfile_open(&f, path));
    mf_status st = write_all(&f, im);
    if (st != MF_OK) {
        mf_outfile_abort(&f);
        return st;
    }
    return mf_outfile_commit(&f);
}

typedef struct rd {
    const uint8_t *p;
    uint64_t left;
    const char *name;
} rd;

static mf_status get_i32(rd *r, int32_t *v, const char *what) {
    if (r->left < 4)
        return mf_errorf(MF_E_FORMAT, "imatrix '%s': truncated at %s", r->name, what);
    *v = (int32_t)((uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
                   (uint32_t)r->p[3] << 24);
    r->p += 4;
    r->left -= 4;
    return MF_OK;
}

static mf_status get_name(rd *r, char *buf, const char *what) {
    int32_t len = 0;
    TRY(get_i32(r, &len, what));
    if (len < 0 || len >= MAX_NAME || (uint64_t)len > r->left)
        return mf_errorf(MF_E_FORMAT, "imatrix '%s': %s length %d is out of range", r->name,
                         what, len);
    memcpy(buf, r->p, (size_t)len);
    buf[len] = 0;
    r->p += len;
    r->left -= (uint64_t)len;
    if (strlen(buf) != (size_t)len)
        return mf_errorf(MF_E_FORMAT, "imatrix '%s': %s contains a NUL byte", r->name, what);
    return MF_OK;
}

static mf_status read_entry(rd *r, mf_imatrix *im) {
    char name[MAX_NAME];
    int32_t ncall, nval;
    TRY(get_name(r, name, "tensor name"));
    TRY(get_i32(r, &ncall, "a call count"));
    TRY(get_i32(r, &nval, "a value count"));
    if (!name[0] || find(im, name, 0) >= 0)
        return mf_errorf(MF_E_FORMAT, "imatrix '%s': empty or repeated tensor name '%s'",
                         r->name, name);
    if (nval <= 0 || (uint64_t)nval > r->left / 4 || ncall < 0)
        return mf_errorf(MF_E_FORMAT, "imatrix '%s': entry '%s' claims %d values and %d calls",
                         r->name, name, nval, ncall);
    TRY(add_entry(im, name, nval, false));
    im_entry *e = &im->e[im->n - 1];
    e->ncall = ncall;
    memcpy(e->stored, r->p, 4 * (size_t)nval);
    r->p += 4 * (uint64_t)nval;
    r->left -= 4 * (uint64_t)nval;
    for (int32_t j = 0; j < nval; j++) {
        if (!isfinite(e->stored[j]) || e->stored[j] < 0)
            return mf_errorf(MF_E_FORMAT, "imatrix '%s': entry '%s' value %d is %g", r->name,
                             name, j, (double)e->stored[j]);
        e->mean[j] = ncall > 0 ? e->stored[j] / (float)ncall : e->stored[j];
    }
    return MF_OK;
}

static mf_status parse_into(rd *r, mf_imatrix *im) {
    int32_t n;
    TRY(get_i32(r, &n, "the entry count"));
    /* an entry takes at least 16 bytes (three counts, a name byte, a value) */
    if (n < 0 || (uint64_t)n > r->left / 16)
        return mf_errorf(MF_E_FORMAT, "imatrix '%s': %d entries do not fit in the file",
                         r->name, n);
    for (int32_t i = 0; i < n; i++) TRY(read_entry(r, im));
    if (r->left == 0) return MF_OK; /* files from before the dataset tail */
    char ds[MAX_NAME];
    TRY(get_i32(r, &im->chunks, "the chunk count"));
    TRY(get_name(r, ds, "dataset name"));
    if (r->left)
        return mf_errorf(MF_E_FORMAT, "imatrix '%s': %llu unexpected bytes at the end", r->name,
                         (unsigned long long)r->left);
    return ds[0] ? mf_imatrix_set_dataset(im, ds) : MF_OK;
}

mf_status mf_imatrix_parse(const void *data, uint64_t size, const char *name, mf_imatrix **out) {
    *out = NULL;
    mf_imatrix *im;
    TRY(mf_imatrix_create(&im));
    rd r = {data, size, name ? name : "(memory)"};
    mf_status st = parse_into(&r, im);
    if (st != MF_OK) {
        mf_imatrix_free(im);
        return st;
    }
    *out = im;
    return MF_OK;
}

mf_status mf_imatrix_load(const char *path, mf_imatrix **out) {
    *out = NULL;
    if (!path) return mf_errorf(MF_E_INVALID, "imatrix load: NULL path");
    FILE *f = fopen(path, "rb");
    if (!f) return mf_errorf(MF_E_IO, "cannot open imatrix '%s'", path);
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    uint8_t *buf = n >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)n + 1) : NULL;
    bool ok = buf && fread(buf, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    mf_status st = ok ? mf_imatrix_parse(buf, (uint64_t)n, path, out)
                      : mf_errorf(MF_E_IO, "cannot read imatrix '%s'", path);
    free(buf);
    return st;
}
