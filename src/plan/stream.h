/* stream.h — reading units of weights (a layer's matrices, the output matrix)
 * from the model file into a bounded pool of buffers, with a background
 * thread that prefetches the units that come next (internal).
 *
 * Units are used in a fixed cyclic order (0, 1, ..., n-1, 0, ...): the
 * forward pass walks the layers once per batch. After acquire(u) the reader
 * fills free buffers with u+1, u+2, ... while u is being computed on. With as
 * many buffers as units, everything stays loaded after the first pass. */
#ifndef MF_STREAM_H
#define MF_STREAM_H

#include "core/core.h"

typedef struct mf_stream mf_stream;

typedef struct mf_stream_stats {
    uint64_t bytes_read;     /* from the file, including alignment padding */
    uint64_t reads;          /* unit loads */
    double io_seconds;       /* time the reader spent in pread */
    double wait_seconds;     /* time acquire() blocked waiting for data */
    bool direct;             /* O_DIRECT in use (else buffered + FADV_DONTNEED) */
} mf_stream_stats;

/* Buffers (n_buf of them, each big enough for the largest unit's
 * 4096-aligned file range) are charged to ledger as MF_TAG_STREAM. */
mf_status mf_stream_open(const char *path, int n_units, const uint64_t *unit_off,
                         const uint64_t *unit_len, int n_buf, mf_ledger *ledger,
                         mf_stream **out);
/* Bytes one buffer takes for units of at most max_len bytes. */
uint64_t mf_stream_buffer_bytes(uint64_t max_len);
/* Block until unit u is in a buffer; *data points at the byte of the file
 * at unit_off[u]. The buffer stays put until mf_stream_release(u). */
mf_status mf_stream_acquire(mf_stream *st, int u, const uint8_t **data);
void mf_stream_release(mf_stream *st, int u);
void mf_stream_get_stats(const mf_stream *st, mf_stream_stats *out);
void mf_stream_close(mf_stream *st);

#endif
