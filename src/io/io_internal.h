/* io_internal.h — helpers shared by the files of src/io, not by other modules.
 *
 * The arena owns every allocation hanging off an mf_gguf (keys, names, the kv
 * and tensor tables, string arrays, nested arrays), so closing a file, parsed
 * or synthesized from a llama2.c checkpoint, is one walk over its chunks. The
 * reader is the bounds-checked cursor every parser in this folder reads file
 * bytes through: each read checks the bytes left first, and a failed read
 * records a message naming the file, the offset and what was being read. */
#ifndef MF_IO_INTERNAL_H
#define MF_IO_INTERNAL_H

#include "io/gguf.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "memfit's file formats are little-endian; a big-endian host is not supported"
#endif

/* ---- arena ---- */

typedef struct io_arena io_arena;
/* Zero-filled; NULL (with the error set) on failure. *a may start NULL. */
void *io_arena_alloc(io_arena **a, uint64_t bytes);
/* Copy n bytes and add a NUL. */
char *io_arena_strndup(io_arena **a, const char *s, uint64_t n);
void io_arena_free(io_arena *a);

/* ---- reader ---- */

typedef struct io_reader {
    const uint8_t *p;      /* borrowed: the whole input */
    uint64_t size, pos;
    const char *name;      /* borrowed: the file name for messages */
    char what[160];        /* what is being read, e.g. "key 'general.name'" */
} io_reader;

void io_reader_init(io_reader *r, const void *p, uint64_t size, const char *name);
uint64_t io_reader_left(const io_reader *r);
/* Record "NAME: offset POS: WHAT: message" and return st. */
mf_status io_reader_fail(const io_reader *r, mf_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
mf_status io_reader_bytes(io_reader *r, uint64_t n, const uint8_t **out);
mf_status io_reader_u8(io_reader *r, uint8_t *v);
mf_status io_reader_u16(io_reader *r, uint16_t *v);
mf_status io_reader_u32(io_reader *r, uint32_t *v);
mf_status io_reader_u64(io_reader *r, uint64_t *v);
mf_status io_reader_i32(io_reader *r, int32_t *v);
mf_status io_reader_f32(io_reader *r, float *v);

/* Map a whole file read-only (MAP_PRIVATE). Empty files give *map = NULL. */
mf_status io_map_file(const char *path, void **map, uint64_t *size);
void io_unmap(void *map, uint64_t size);

#endif
