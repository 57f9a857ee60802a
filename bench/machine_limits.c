/*
 * bench/machine_limits.c — this machine's limits, measured in the same run as
 * the benchmarks that are judged against them (bench/bench_qlinear.py builds
 * it with the system C compiler and loads it with ctypes):
 *
 *   lv_bench_read_gbs   DRAM read bandwidth: threads each sum their share of a
 *                       buffer much larger than the caches, in 4 KiB pages or
 *                       in 2 MiB pages (madvise(MADV_HUGEPAGE)), as weights
 *                       allocated by torch or by lowvram's huge-page allocator
 *                       live in;
 *   lv_bench_vnni_gops  int8 peak: independent vpdpbusd chains on registers
 *                       (64 u8 x s8 products per instruction = 128 ops).
 *
 * Not part of the library: benchmarks only.
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

__attribute__((target("avx2"))) static uint64_t sum_range(const uint8_t *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_loadu_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out, a0);
    return out[0] + out[1] + out[2] + out[3];
}

/* One pass of `threads` threads over [p, p + bytes) (each its contiguous
 * share), as the memory read alone: the time a kernel streaming the same
 * bytes cannot beat. Returns seconds. */
double lv_bench_read_once(const void *p, size_t bytes, int threads) {
    volatile uint64_t sink = 0;
    double t0 = now();
    uint64_t total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        size_t chunk = (bytes / nt) & ~(size_t)127;
        total += sum_range((const uint8_t *)p + (size_t)t * chunk, chunk);
    }
    double dt = now() - t0;
    sink += total;
    (void)sink;
    return dt;
}

/* Median-free best of `reps` passes over a fresh buffer of `bytes`; GB/s (1e9). */
double lv_bench_read_gbs(size_t bytes, int threads, int hugepages, int reps) {
    uint8_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) return -1.0;
    if (hugepages) madvise(buf, bytes, MADV_HUGEPAGE);
    else madvise(buf, bytes, MADV_NOHUGEPAGE);
    memset(buf, 1, bytes);
    double best = 0.0;
    volatile uint64_t sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        uint64_t total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            size_t chunk = (bytes / nt) & ~(size_t)127;
            total += sum_range(buf + (size_t)t * chunk, chunk);
        }
        double dt = now() - t0;
        sink += total;
        double gbs = bytes / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    (void)sink;
    munmap(buf, bytes);
    return best;
}

/* Twelve independent accumulators in named registers (an array indexed in a
 * loop is kept in memory by gcc -O2, which measures stores, not vpdpbusd). */
__attribute__((target("avx512f,avx512bw,avx512vnni"), noinline)) static double
vnni_loop(long iters) {
    __m512i a0 = _mm512_set1_epi32(0), a1 = _mm512_set1_epi32(1), a2 = _mm512_set1_epi32(2),
            a3 = _mm512_set1_epi32(3), a4 = _mm512_set1_epi32(4), a5 = _mm512_set1_epi32(5),
            a6 = _mm512_set1_epi32(6), a7 = _mm512_set1_epi32(7), a8 = _mm512_set1_epi32(8),
            a9 = _mm512_set1_epi32(9), a10 = _mm512_set1_epi32(10), a11 = _mm512_set1_epi32(11);
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
    for (long it = 0; it < iters; it++) {
#define D(r) r = _mm512_dpbusd_epi32(r, a, b)
        D(a0); D(a1); D(a2); D(a3); D(a4); D(a5); D(a6); D(a7); D(a8); D(a9); D(a10); D(a11);
#undef D
    }
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                 _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
    s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)));
    return (double)_mm512_reduce_add_epi32(s);
}

/* GOP/s (1e9 ops, multiply and add counted separately) of vpdpbusd zmm on
 * `threads` threads; 0 when the CPU lacks AVX-512 VNNI. */
double lv_bench_vnni_gops(int threads, long iters) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512vnni")) return 0.0;
    volatile double sink = 0;
    double t0 = now();
#pragma omp parallel num_threads(threads)
    { sink += vnni_loop(iters); }
    double dt = now() - t0;
    return (double)threads * iters * 12 * 128 / dt / 1e9;
}
