/* stream.c — the prefetching streamer (see stream.h).
 *
 * One reader thread; buffers move EMPTY -> LOADING -> READY, and a READY
 * buffer is pinned while the forward pass uses it. The reader picks the next
 * unit in cyclic order after the one in use that is not loaded yet, and
 * evicts the unpinned buffer whose unit comes furthest in the future, so a
 * buffer is never replaced by something needed later than what it holds.
 * Reads use O_DIRECT where the file system allows it (no page-cache copy:
 * the bytes land once, in our buffer); otherwise plain pread followed by
 * POSIX_FADV_DONTNEED so the page cache does not balloon. MF_STREAM_IO=cached
 * reads through the page cache and keeps it (warm-cache benchmarks: the
 * cache is the kernel's, not counted in the process's resident set). */
#include "plan/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ALIGN 4096u

typedef enum { BUF_EMPTY, BUF_LOADING, BUF_READY } buf_state;

typedef struct {
    uint8_t *mem;      /* ALIGN-aligned, into raw */
    void *raw;         /* from the ledger */
    int unit;          /* -1 if none */
    buf_state state;
    int pins;
} stream_buf;

struct mf_stream {
    int fd, n_units, n_buf;
    bool direct, keep_cache;
    uint64_t *off, *len, file_size;
    stream_buf *bufs;
    mf_ledger *ledger;
    pthread_t thread;
    bool thread_started, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int cur;           /* the unit most recently acquired */
    int want;          /* a unit acquire() is waiting for, or -1 */
    mf_status error;   /* first read error, reported by acquire */
    char error_msg[256];
    mf_stream_stats stats;
};

uint64_t mf_stream_buffer_bytes(uint64_t max_len) {
    /* the range is widened to ALIGN on both ends, plus room to align the start */
    return (max_len + 2 * (uint64_t)ALIGN) / ALIGN * ALIGN + ALIGN;
}

static int ahead(const mf_stream *st, int u) {
    return ((u - st->cur) % st->n_units + st->n_units) % st->n_units;
}

static stream_buf *find(mf_stream *st, int u) {
    for (int i = 0; i < st->n_buf; i++)
        if (st->bufs[i].unit == u && st->bufs[i].state != BUF_EMPTY) return &st->bufs[i];
    return NULL;
}

/* Under the lock: the next unit to load and the buffer to load it into. */
static bool pick_work(mf_stream *st, int *unit, stream_buf **buf) {
    int target = -1;
    if (st->want >= 0 && !find(st, st->want)) target = st->want;
    for (int k = 0; target < 0 && k < st->n_units; k++) {
        int u = (st->cur + k) % st->n_units;
        if (!find(st, u)) target = u;
    }
    if (target < 0) return false;
    stream_buf *victim = NULL;
    for (int i = 0; i < st->n_buf; i++) {
        stream_buf *b = &st->bufs[i];
        if (b->state == BUF_LOADING || b->pins) continue;
        if (b->state == BUF_EMPTY) {
            victim = b;
            break;
        }
        if (ahead(st, b->unit) > ahead(st, target) &&
            (!victim || ahead(st, b->unit) > ahead(st, victim->unit)))
            victim = b;
    }
    if (!victim) return false;
    *unit = target;
    *buf = victim;
    return true;
}

/* The aligned tail past the end of the file is padding: a short read there is fine. */
static mf_status read_range(mf_stream *st, uint8_t *dst, uint64_t off, uint64_t len) {
    uint64_t got;
    TRY(mf_pread_full(st->fd, dst, len, off, &got));
    if (!st->direct && !st->keep_cache)
        posix_fadvise(st->fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
    st->stats.bytes_read += got;
    return MF_OK;
}

static void *reader(void *arg) {
    mf_stream *st = arg;
    pthread_mutex_lock(&st->mu);
    while (!st->stop) {
        int u;
        stream_buf *b;
        if (st->error != MF_OK || !pick_work(st, &u, &b)) {
            pthread_cond_wait(&st->cv, &st->mu);
            continue;
        }
        b->unit = u;
        b->state = BUF_LOADING;
        uint64_t start = st->off[u] / ALIGN * ALIGN;
        uint64_t end = (st->off[u] + st->len[u] + ALIGN - 1) / ALIGN * ALIGN;
        pthread_mutex_unlock(&st->mu);
        double t0 = mf_time_s();
        mf_status rs = read_range(st, b->mem, start, end - start);
        pthread_mutex_lock(&st->mu);
        st->stats.io_seconds += mf_time_s() - t0;
        st->stats.reads++;
        b->state = rs == MF_OK ? BUF_READY : BUF_EMPTY;
        if (rs != MF_OK) {
            st->error = rs;
            snprintf(st->error_msg, sizeof st->error_msg, "%s", mf_last_error());
        }
        pthread_cond_broadcast(&st->cv);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

static mf_status open_file(mf_stream *st, const char *path) {
    const char *io = getenv("MF_STREAM_IO");
    st->keep_cache = io && !strcmp(io, "cached");
    st->fd = st->keep_cache ? -1 : open(path, O_RDONLY | O_DIRECT);
    st->direct = st->fd >= 0;
    if (st->fd < 0) st->fd = open(path, O_RDONLY);
    if (st->fd < 0) return mf_errorf(MF_E_IO, "cannot open '%s': %s", path, strerror(errno));
    off_t size = lseek(st->fd, 0, SEEK_END);
    if (size < 0) return mf_errorf(MF_E_IO, "cannot size '%s': %s", path, strerror(errno));
    st->file_size = (uint64_t)size;
    /* some file systems accept O_DIRECT at open and refuse the read: try one */
    if (st->direct) {
        void *probe = NULL;
        if (posix_memalign(&probe, ALIGN, ALIGN) != 0) return mf_errorf(MF_E_NOMEM, "out of memory");
        ssize_t n = pread(st->fd, probe, ALIGN, 0);
        free(probe);
        if (n < 0) {
            close(st->fd);
            st->direct = false;
            st->fd = open(path, O_RDONLY);
            if (st->fd < 0) return mf_errorf(MF_E_IO, "cannot open '%s': %s", path, strerror(errno));
        }
    }
    st->stats.direct = st->direct;
    return MF_OK;
}

static mf_status setup(mf_stream *st, const char *path, const uint64_t *off, const uint64_t *len) {
    TRY(open_file(st, path));
    uint64_t max_len = 0;
    for (int u = 0; u < st->n_units; u++) {
        uint64_t end;
        if (!mf_add_ok(off[u], len[u], &end) || end > st->file_size)
            return mf_errorf(MF_E_FORMAT, "'%s': weights at %llu (+%llu bytes) are past the end",
                             path, (unsigned long long)off[u], (unsigned long long)len[u]);
        st->off[u] = off[u];
        st->len[u] = len[u];
        if (len[u] > max_len) max_len = len[u];
    }
    uint64_t bytes = mf_stream_buffer_bytes(max_len);
    for (int i = 0; i < st->n_buf; i++) {
        stream_buf *b = &st->bufs[i];
        b->unit = -1;
        TRY(mf_alloc_p(st->ledger, bytes, MF_TAG_STREAM, &b->raw));
        b->mem = (uint8_t *)(((uintptr_t)b->raw + ALIGN - 1) / ALIGN * ALIGN);
    }
    if (pthread_create(&st->thread, NULL, reader, st) != 0)
        return mf_errorf(MF_E_NOMEM, "cannot start the reader thread");
    st->thread_started = true;
    return MF_OK;
}

mf_status mf_stream_open(const char *path, int n_units, const uint64_t *unit_off,
                         const uint64_t *unit_len, int n_buf, mf_ledger *ledger,
                         mf_stream **out) {
    *out = NULL;
    if (n_units <= 0 || n_buf <= 0) return mf_errorf(MF_E_INVALID, "stream: nothing to stream");
    mf_stream *st = calloc(1, sizeof *st);
    if (!st) return mf_errorf(MF_E_NOMEM, "out of memory");
    st->fd = -1;
    st->n_units = n_units;
    st->n_buf = n_buf;
    st->ledger = ledger;
    st->want = -1;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    st->off = calloc((size_t)n_units, sizeof *st->off);
    st->len = calloc((size_t)n_units, sizeof *st->len);
    st->bufs = calloc((size_t)n_buf, sizeof *st->bufs);
    mf_status s = st->off && st->len && st->bufs ? setup(st, path, unit_off, unit_len)
                                                 : mf_errorf(MF_E_NOMEM, "out of memory");
    if (s != MF_OK) {
        mf_stream_close(st);
        return s;
    }
    *out = st;
    return MF_OK;
}

mf_status mf_stream_acquire(mf_stream *st, int u, const uint8_t **data) {
    pthread_mutex_lock(&st->mu);
    st->cur = u;
    st->want = u;
    pthread_cond_broadcast(&st->cv);
    double t0 = mf_time_s();
    stream_buf *b;
    while (!((b = find(st, u)) && b->state == BUF_READY) && st->error == MF_OK)
        pthread_cond_wait(&st->cv, &st->mu);
    st->stats.wait_seconds += mf_time_s() - t0;
    mf_status s = st->error;
    if (s == MF_OK) {
        b->pins++;
        *data = b->mem + (st->off[u] - st->off[u] / ALIGN * ALIGN);
    }
    st->want = -1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    if (s != MF_OK) return mf_errorf(s, "%s", st->error_msg);
    return MF_OK;
}

void mf_stream_release(mf_stream *st, int u) {
    pthread_mutex_lock(&st->mu);
    stream_buf *b = find(st, u);
    if (b && b->pins > 0) b->pins--;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

void mf_stream_get_stats(const mf_stream *st, mf_stream_stats *out) {
    pthread_mutex_lock((pthread_mutex_t *)&st->mu);
    *out = st->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&st->mu);
}

void mf_stream_close(mf_stream *st) {
    if (!st) return;
    if (st->thread_started) {
        pthread_mutex_lock(&st->mu);
        st->stop = true;
        pthread_cond_broadcast(&st->cv);
        pthread_mutex_unlock(&st->mu);
        pthread_join(st->thread, NULL);
    }
    for (int i = 0; st->bufs && i < st->n_buf; i++) mf_free(st->ledger, st->bufs[i].raw);
    if (st->fd >= 0) close(st->fd);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    free(st->off);
    free(st->len);
    free(st->bufs);
    free(st);
}
