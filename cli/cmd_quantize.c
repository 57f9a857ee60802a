/* cmd_quantize.c — `memfit quantize`: write a model in other tensor types.
 *
 * Optionally first collects an importance matrix by running the input model
 * over calibration text or token ids (or loads one from a file), then lets
 * mf_quantize_file stream the tensors, drawing a progress bar on stderr and
 * printing one table row per tensor and the totals (size, bits per weight)
 * on stdout. Any failure prints its reason and exits 1; the library leaves
 * no output file behind. */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *usage_text =
    "usage: memfit quantize IN.gguf OUT.gguf --type TYPE [options]\n"
    "  --type TYPE           q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k_s q3_k_m q3_k_l q4_k_s\n"
    "                        q4_k_m q5_k_s q5_k_m q6_k iq4_nl iq4_xs f16 bf16 f32\n"
    "  --pure                every matrix in the base type (no mixture rules)\n"
    "  --calib TEXT.txt      collect an importance matrix over this text first\n"
    "  --calib-ids IDS       ... or over these token ids (whitespace/comma separated)\n"
    "  --calib-ctx N         calibration window in tokens (128)\n"
    "  --calib-chunks N      use at most N windows\n"
    "  --imatrix FILE        use a saved importance matrix (llama.cpp imatrix.dat)\n"
    "  --save-imatrix FILE   save the collected importance matrix\n"
    "  -t N                  threads (all cores)\n"
    "  -q, --quiet           no per-tensor table\n";

typedef struct q_opts {
    const char *in, *out, *type, *calib, *calib_ids, *imatrix, *save_imatrix;
    int calib_ctx, calib_chunks, n_threads, pure, quiet;
} q_opts;

static int parse_opt(int argc, char **argv, int *i, q_opts *o) {
    const char *v = NULL, *a = argv[*i];
    bool bad = false, miss = false;
    if (cli_opt(argc, argv, i, "--type", NULL, &v, &miss)) o->type = v;
    else if (cli_opt(argc, argv, i, "--calib", NULL, &v, &miss)) o->calib = v;
    else if (cli_opt(argc, argv, i, "--calib-ids", NULL, &v, &miss)) o->calib_ids = v;
    else if (cli_opt(argc, argv, i, "--imatrix", NULL, &v, &miss)) o->imatrix = v;
    else if (cli_opt(argc, argv, i, "--save-imatrix", NULL, &v, &miss)) o->save_imatrix = v;
    else if (cli_opt(argc, argv, i, "--calib-ctx", NULL, &v, &miss))
        bad = !miss && !cli_int(v, 1, 1 << 20, &o->calib_ctx);
    else if (cli_opt(argc, argv, i, "--calib-chunks", NULL, &v, &miss))
        bad = !miss && !cli_int(v, 1, 1 << 30, &o->calib_chunks);
    else if (cli_opt(argc, argv, i, "-t", "--threads", &v, &miss))
        bad = !miss && !cli_int(v, 1, 256, &o->n_threads);
    else if (!strcmp(a, "--pure")) o->pure = 1;
    else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) o->quiet = 1;
    else return cli_usage("quantize", "unknown option '%s'", a);
    if (bad || miss) return cli_usage("quantize", "bad or missing value for '%s'", a);
    return 0;
}

static int parse(int argc, char **argv, q_opts *o) {
    o->calib_ctx = 128;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (a[0] != '-') {
            if (!o->in) o->in = a;
            else if (!o->out) o->out = a;
            else return cli_usage("quantize", "unexpected argument '%s'", a);
        } else if (parse_opt(argc, argv, &i, o)) return 1;
    }
    if (!o->in || !o->out || !o->type)
        return cli_usage("quantize", "IN, OUT and --type are required");
    if ((o->calib != NULL) + (o->calib_ids != NULL) + (o->imatrix != NULL) > 1)
        return cli_usage("quantize", "give at most one of --calib, --calib-ids and --imatrix");
    if (o->save_imatrix && !o->calib && !o->calib_ids)
        return cli_usage("quantize", "--save-imatrix needs --calib or --calib-ids");
    return 0;
}

/* Calibration tokens from text (tokenized by the model) or an ids file. */
static int calib_tokens(const q_opts *o, const mf_model *m, int32_t **ids, int *n) {
    if (o->calib_ids) return cli_read_ids(o->calib_ids, ids, n) ? 0 : 1;
    char *text = cli_read_file(o->calib, NULL);
    if (!text) return 1;
    mf_status st = cli_tokenize(m, text, 1, ids, n);
    free(text);
    return st == MF_OK ? 0 : cli_fail("cannot tokenize the calibration text");
}

static int collect(const q_opts *o, mf_imatrix **im) {
    mf_model *m = NULL;
    int32_t *ids = NULL;
    int n = 0, rc = 1;
    if (mf_model_load(o->in, NULL, &m) != MF_OK) return cli_fail("cannot load the model to calibrate");
    if (calib_tokens(o, m, &ids, &n)) goto done;
    if (o->calib_chunks && (int64_t)o->calib_chunks * o->calib_ctx < n)
        n = o->calib_chunks * o->calib_ctx;
    if (n == 0) {
        fprintf(stderr, "memfit: no calibration tokens\n");
        goto done;
    }
    double t0 = cli_now();
    fprintf(stderr, "calibrating over %d tokens in windows of %d ...\n", n, o->calib_ctx);
    if (mf_imatrix_collect(m, ids, n, o->calib_ctx, o->n_threads, im) != MF_OK) {
        cli_fail("calibration failed");
        goto done;
    }
    const char *src = o->calib ? o->calib : o->calib_ids, *slash = strrchr(src, '/');
    mf_imatrix_set_dataset(*im, slash ? slash + 1 : src);
    fprintf(stderr, "importance matrix: %d tensors, %d windows, %.1f s\n", mf_imatrix_count(*im),
            mf_imatrix_chunks(*im), cli_now() - t0);
    rc = 0;
    if (o->save_imatrix && mf_imatrix_save(*im, o->save_imatrix) != MF_OK)
        rc = cli_fail("cannot save the importance matrix");
done:
    free(ids);
    mf_model_free(m);
    return rc;
}

/* ---- progress and the table ---- */

typedef struct q_state {
    const q_opts *o;
    uint64_t bytes, elems, q_elems;
    double err2, q_sq;          /* sum of squared errors / squared weights of quantized */
    int n_fallback, n_imatrix, shown, last_pct;
    double t0;
} q_state;

static void progress(void *user, uint64_t done, uint64_t total) {
    q_state *s = user;
    int w = 30, k = total ? (int)(w * done / total) : w, pct = total ? (int)(100 * done / total) : 100;
    if (pct == s->last_pct && done < total) return; /* redraw only when it moves */
    s->last_pct = pct;
    fprintf(stderr, "\r[%.*s%*s] %3d%%  %.1f s", k, "##############################", w - k, "",
            pct, cli_now() - s->t0);
    if (done >= total) fputc('\n', stderr);
    fflush(stderr);
}

static void report(void *user, const mf_quant_report *r) {
    q_state *s = user;
    s->bytes += r->n_bytes;
    s->elems += r->n_elements;
    s->n_fallback += r->fallback;
    s->n_imatrix += r->used_imatrix;
    if (!r->copied) {
        s->q_elems += r->n_elements;
        s->err2 += r->rmse * r->rmse * (double)r->n_elements;
        s->q_sq += r->rms * r->rms * (double)r->n_elements;
    }
    if (s->o->quiet) return;
    if (!s->shown++)
        printf("%-28s %-14s %-7s %10s %7s %10s %9s %10s\n", "tensor", "shape", "type", "bytes",
               "bpw", "rmse", "rel", "w-rmse");
    char shape[40], type[48], werr[16] = "-";
    snprintf(shape, sizeof shape, "%lld x %lld", (long long)r->ne[0], (long long)r->ne[1]);
    snprintf(type, sizeof type, "%s%s%s", r->type_name, r->fallback ? " <- " : "",
             r->fallback ? r->wanted_name : "");
    if (r->wrmse >= 0) snprintf(werr, sizeof werr, "%.3e", r->wrmse);
    printf("%-28s %-14s %-7s %10llu %7.3f %10.3e %9.5f %10s%s\n", r->name, shape, type,
           (unsigned long long)r->n_bytes, 8.0 * (double)r->n_bytes / (double)r->n_elements,
           r->rmse, r->rms > 0 ? r->rmse / r->rms : 0.0, werr,
           r->fallback ? "  (fallback: row length)" : "");
}

static void totals(const q_state *s, const char *in) {
    struct stat st;
    double mib = 1024.0 * 1024.0;
    printf("\ntotal: %llu tensor bytes (%.2f MiB), %.3f bits per weight over %llu weights",
           (unsigned long long)s->bytes, (double)s->bytes / mib,
           s->elems ? 8.0 * (double)s->bytes / (double)s->elems : 0.0,
           (unsigned long long)s->elems);
    if (stat(in, &st) == 0) printf("; input file %.2f MiB", (double)st.st_size / mib);
    printf("\nquantized weights: %llu, relative rmse %.5f; %d fallback(s), %d tensor(s) "
           "with importances\n", (unsigned long long)s->q_elems,
           s->q_sq > 0 ? sqrt(s->err2 / s->q_sq) : 0.0, s->n_fallback, s->n_imatrix);
}

int cmd_quantize(int argc, char **argv) {
    q_opts o = {0};
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    mf_imatrix *im = NULL;
    if (o.imatrix && mf_imatrix_load(o.imatrix, &im) != MF_OK)
        return cli_fail("cannot load the importance matrix");
    if ((o.calib || o.calib_ids) && collect(&o, &im)) {
        mf_imatrix_free(im);
        return 1;
    }
    q_state s = {.o = &o, .t0 = cli_now(), .last_pct = -1};
    mf_quantize_params p = {.type = o.type, .imatrix = im, .n_threads = o.n_threads,
                            .pure = o.pure, .progress = progress, .report = report, .user = &s};
    fprintf(stderr, "quantizing %s -> %s as %s%s\n", o.in, o.out, o.type,
            im ? " with importances" : "");
    mf_status st = mf_quantize_file(o.in, o.out, &p);
    mf_imatrix_free(im);
    if (st != MF_OK) {
        fputc('\n', stderr);
        return cli_fail("quantization failed");
    }
    totals(&s, o.in);
    return 0;
}
