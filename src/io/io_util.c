/* io_util.c — the arena, the bounds-checked reader and file mapping that the
 * parsers of src/io share (see io_internal.h for why they exist). */
#include "io/io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- arena ---- */

#define ARENA_CHUNK (64u * 1024u)

struct io_arena {
    io_arena *next;
    uint64_t cap, used;
    _Alignas(16) unsigned char mem[];
};

static io_arena *arena_chunk(uint64_t cap) {
    if (cap > SIZE_MAX - sizeof(io_arena)) return NULL;
    io_arena *c = malloc(sizeof(io_arena) + (size_t)cap);
    if (!c) return NULL;
    c->next = NULL;
    c->cap = cap;
    c->used = 0;
    return c;
}

void *io_arena_alloc(io_arena **a, uint64_t bytes) {
    uint64_t need = (bytes + 15) & ~(uint64_t)15;
    if (need < bytes) {
        mf_errorf(MF_E_NOMEM, "out of memory (allocation of %llu bytes)", (unsigned long long)bytes);
        return NULL;
    }
    io_arena *c = *a;
    if (!c || c->cap - c->used < need) {
        /* Big requests get a chunk of their own, linked behind the current one
         * so the current chunk keeps filling. */
        bool own = need > ARENA_CHUNK / 4;
        io_arena *n = arena_chunk(own ? need : ARENA_CHUNK);
        if (!n) {
            mf_errorf(MF_E_NOMEM, "out of memory (allocation of %llu bytes)",
                      (unsigned long long)bytes);
            return NULL;
        }
        if (own && c) {
            n->next = c->next;
            c->next = n;
        } else {
            n->next = c;
            *a = n;
        }
        c = n;
    }
    void *p = c->mem + c->used;
    c->used += need;
    memset(p, 0, (size_t)need);
    return p;
}

char *io_arena_strndup(io_arena **a, const char *s, uint64_t n) {
    uint64_t total;
    if (!mf_add_ok(n, 1, &total)) {
        mf_errorf(MF_E_NOMEM, "out of memory (string of %llu bytes)", (unsigned long long)n);
        return NULL;
    }
    char *d = io_arena_alloc(a, total);
    if (d && n) memcpy(d, s, (size_t)n);
    return d;
}

void io_arena_free(io_arena *a) {
    while (a) {
        io_arena *next = a->next;
        free(a);
        a = next;
    }
}

/* ---- reader ---- */

void io_reader_init(io_reader *r, const void *p, uint64_t size, const char *name) {
    r->p = p;
    r->size = size;
    r->pos = 0;
    r->name = name ? name : "(buffer)";
    snprintf(r->what, sizeof r->what, "header");
}

uint64_t io_reader_left(const io_reader *r) { return r->size - r->pos; }

mf_status io_reader_fail(const io_reader *r, mf_status st, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mf_errorf(st, "%s: offset %llu: %s: %s", r->name, (unsigned long long)r->pos, r->what,
                     msg);
}

mf_status io_reader_bytes(io_reader *r, uint64_t n, const uint8_t **out) {
    if (n > io_reader_left(r))
        return io_reader_fail(r, MF_E_FORMAT,
                              "truncated: needs %llu bytes, only %llu left in the file (size %llu)",
                              (unsigned long long)n, (unsigned long long)io_reader_left(r),
                              (unsigned long long)r->size);
    *out = r->p + r->pos;
    r->pos += n;
    return MF_OK;
}

static mf_status reader_le(io_reader *r, unsigned n, uint64_t *v) {
    const uint8_t *b = NULL;
    TRY(io_reader_bytes(r, n, &b));
    uint64_t x = 0;
    for (unsigned i = 0; i < n; i++) x |= (uint64_t)b[i] << (8 * i);
    *v = x;
    return MF_OK;
}

mf_status io_reader_u8(io_reader *r, uint8_t *v) {
    uint64_t x = 0;
    TRY(reader_le(r, 1, &x));
    *v = (uint8_t)x;
    return MF_OK;
}

mf_status io_reader_u16(io_reader *r, uint16_t *v) {
    uint64_t x = 0;
    TRY(reader_le(r, 2, &x));
    *v = (uint16_t)x;
    return MF_OK;
}

mf_status io_reader_u32(io_reader *r, uint32_t *v) {
    uint64_t x = 0;
    TRY(reader_le(r, 4, &x));
    *v = (uint32_t)x;
    return MF_OK;
}

mf_status io_reader_u64(io_reader *r, uint64_t *v) { return reader_le(r, 8, v); }

mf_status io_reader_i32(io_reader *r, int32_t *v) {
    uint32_t x = 0;
    TRY(io_reader_u32(r, &x));
    memcpy(v, &x, 4);
    return MF_OK;
}

mf_status io_reader_f32(io_reader *r, float *v) {
    uint32_t x = 0;
    TRY(io_reader_u32(r, &x));
    memcpy(v, &x, 4);
    return MF_OK;
}

/* ---- mapping ---- */

mf_status io_map_file(const char *path, void **map, uint64_t *size) {
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mf_errorf(MF_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    mf_status s = MF_OK;
    if (fstat(fd, &st) != 0) {
        s = mf_errorf(MF_E_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        s = mf_errorf(MF_E_IO, "%s: not a regular file", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        s = mf_errorf(MF_E_IO, "%s: too large to map", path);
        goto fail;
    }
    if (st.st_size > 0) {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            s = mf_errorf(MF_E_IO, "%s: cannot map %llu bytes: %s", path,
                          (unsigned long long)st.st_size, strerror(errno));
            goto fail;
        }
        *map = m;
    }
    *size = (uint64_t)st.st_size;
fail: /* also the way out on success: the mapping outlives the descriptor */
    close(fd);
    return s;
}

void io_unmap(void *map, uint64_t size) {
    if (map) munmap(map, (size_t)size);
}
