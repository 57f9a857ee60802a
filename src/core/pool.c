/* pool.c — the thread pool.
 *
 * One pool of n threads; mf_pool_run hands every thread the same function
 * with its index, the caller working as thread 0, and returns when all are
 * done. Work is split by index, never by who finishes first, so results do not
 * depend on scheduling. Workers poll (with the CPU's pause hint) for a few
 * milliseconds before sleeping on a condition variable: decoding dispatches
 * hundreds of small jobs per token and a sleep per job would cost more than
 * the job. */
#include "core.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

struct mf_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    atomic_long generation;   /* bumped once per job */
    atomic_int pending;       /* workers still running the current job */
    mf_task_fn fn;
    void *ctx;
    atomic_bool stop;
};

typedef struct { mf_pool *pool; int ith; } worker_arg;

/* How long an idle worker keeps polling for the next job before it sleeps:
 * the jobs of one token come tens of microseconds apart (norms, attention
 * and sampling run between them), and waking a sleeping thread costs about
 * as much on a VM; a few milliseconds of polling cover every gap within a
 * token and let the threads sleep between user-paced requests. */
#define SPIN_SECONDS 0.004

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void *worker(void *arg) {
    worker_arg *wa = arg;
    mf_pool *p = wa->pool;
    int ith = wa->ith;
    free(wa);
    long seen = 0;
    for (;;) {
        long gen = atomic_load(&p->generation);
        double until = mf_time_s() + SPIN_SECONDS;
        for (unsigned spin = 1; gen == seen && !atomic_load(&p->stop); spin++) {
            cpu_relax();
            gen = atomic_load(&p->generation);
            if (spin % 256 == 0 && mf_time_s() > until) break;
        }
        if (gen == seen) {
            pthread_mutex_lock(&p->mu);
            while ((gen = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv_work, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = gen;
        p->fn(p->ctx, ith, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

int mf_n_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

mf_status mf_pool_create(int n, mf_pool **out) {
    *out = NULL;
    if (n <= 0) n = mf_n_cores();
    if (n > 256) return mf_errorf(MF_E_INVALID, "thread count %d is too large (max 256)", n);
    mf_pool *p = calloc(1, sizeof *p);
    if (!p) return mf_errorf(MF_E_NOMEM, "out of memory creating the thread pool");
    p->n = n;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    p->threads = calloc((size_t)n, sizeof *p->threads);
    if (!p->threads) goto fail;
    for (int i = 1; i < n; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) goto fail;
        wa->pool = p;
        wa->ith = i;
        if (pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
            free(wa);
            goto fail;
        }
    }
    *out = p;
    return MF_OK;
fail:
    p->n = 1;  /* only join what was started: threads are zero after a failed create */
    mf_pool_free(p);
    return mf_errorf(MF_E_NOMEM, "could not start %d threads", n);
}

void mf_pool_free(mf_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        if (p->threads && p->threads[i]) pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    free(p);
}

int mf_pool_size(const mf_pool *p) { return p ? p->n : 1; }

void mf_pool_run(mf_pool *p, mf_task_fn fn, void *ctx) {
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->pending, p->n - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->n);
    double until = mf_time_s() + SPIN_SECONDS;
    for (unsigned spin = 1; atomic_load(&p->pending) > 0; spin++) {
        cpu_relax();
        if (spin % 256 == 0 && mf_time_s() > until) break;
    }
    if (atomic_load(&p->pending) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
