/* machine.c — the cost model's inputs: disk read bandwidth, memory read
 * bandwidth and matmul GFLOP/s of this machine, measured by
 * `memfit plan --measure` and kept in a small text file
 * ($MEMFIT_CACHE, else ~/.cache/memfit/machine). Without a measurement the
 * planner assumes 2 GB/s disk, 20 GB/s memory, 100 GFLOP/s. */
#include "plan/plan.h"

#include "tensor/tensor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void machine_path(char *buf, size_t n) {
    const char *c = getenv("MEMFIT_CACHE"), *home = getenv("HOME");
    if (c && *c) snprintf(buf, n, "%s", c);
    else snprintf(buf, n, "%s/.cache/memfit/machine", home && *home ? home : "/tmp");
}

void mf_machine_load(double *disk_gbs, double *mem_gbs, double *gflops) {
    *disk_gbs = 2.0;
    *mem_gbs = 20.0;
    *gflops = 100.0;
    char path[1024], key[32];
    machine_path(path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f) return;
    double v;
    while (fscanf(f, "%31s %lf", key, &v) == 2) {
        if (!(v > 0 && v < 1e6)) continue;
        if (!strcmp(key, "disk_gbs")) *disk_gbs = v;
        else if (!strcmp(key, "mem_gbs")) *mem_gbs = v;
        else if (!strcmp(key, "gflops")) *gflops = v;
    }
    fclose(f);
}

/* Read up to 1 GiB of the file, bypassing the page cache where possible. */
static mf_status measure_disk(const char *path, double *gbs) {
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0) fd = open(path, O_RDONLY);
    if (fd < 0) return mf_errorf(MF_E_IO, "cannot open '%s': %s", path, strerror(errno));
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    const size_t chunk = 8u << 20;
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, chunk) != 0) {
        close(fd);
        return mf_errorf(MF_E_NOMEM, "out of memory");
    }
    uint64_t total = 0;
    double t0 = mf_time_s();
    ssize_t n;
    while (total < (1ull << 30) && (n = pread(fd, buf, chunk, (off_t)total)) > 0) total += (uint64_t)n;
    double dt = mf_time_s() - t0;
    free(buf);
    close(fd);
    if (total < chunk) return mf_errorf(MF_E_INVALID, "'%s' is too small to measure a disk", path);
    *gbs = (double)total / dt / 1e9;
    return MF_OK;
}

static double measure_mem(void) {
    const size_t n = (256u << 20) / sizeof(uint64_t);
    uint64_t *a = malloc(n * sizeof *a);
    if (!a) return 0;
    for (size_t i = 0; i < n; i++) a[i] = i;
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = mf_time_s();
        uint64_t s = mf_read_sum(a, n * sizeof *a);
        double g = (double)(n * sizeof *a) / (mf_time_s() - t0) / 1e9;
        /* keep the sum (and so the reads) from being optimized away */
        __asm__ volatile("" : : "r"(s));
        if (g > best) best = g;
    }
    free(a);
    return best;
}

static double measure_gflops(void) {
    const int64_t n_in = 2048, n_out = 2048, T = 64;
    mf_pool *pool;
    if (mf_pool_create(0, &pool) != MF_OK) return 0;
    uint64_t wb = 2 * (uint64_t)(n_in * n_out);
    void *w = calloc(1, wb), *scratch = malloc(mf_matmul_scratch_bytes(MF_TYPE_F16, n_in, T) + 64);
    float *x = calloc((size_t)(T * n_in), sizeof(float)), *y = malloc(sizeof(float) * (size_t)(T * n_out));
    double best = 0;
    for (int r = 0; w && scratch && x && y && r < 3; r++) {
        double t0 = mf_time_s();
        mf_matmul(pool, w, MF_TYPE_F16, n_in, n_out, x, T, y, scratch);
        double g = 2.0 * (double)(n_in * n_out * T) / (mf_time_s() - t0) / 1e9;
        if (g > best) best = g;
    }
    free(w);
    free(scratch);
    free(x);
    free(y);
    mf_pool_free(pool);
    return best;
}

mf_status mf_measure_machine(const char *path, double *disk_gbs, double *mem_gbs) {
    TRY(measure_disk(path, disk_gbs));
    *mem_gbs = measure_mem();
    double gf = measure_gflops();
    char file[1024], text[256];
    machine_path(file, sizeof file);
    char *slash = strrchr(file, '/');
    if (slash) {
        *slash = 0;
        char cmd_dir[1024];
        snprintf(cmd_dir, sizeof cmd_dir, "%s", file);
        for (char *p = cmd_dir + 1; *p; p++)
            if (*p == '/') *p = 0, mkdir(cmd_dir, 0755), *p = '/';
        mkdir(cmd_dir, 0755);
        *slash = '/';
    }
    int n = snprintf(text, sizeof text, "disk_gbs %.3f\nmem_gbs %.3f\ngflops %.1f\n", *disk_gbs,
                     *mem_gbs, gf);
    return mf_write_file(file, text, (size_t)n);
}
