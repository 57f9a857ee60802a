// tests/cpp/test_util.h — the helpers every CPU GoogleTest suite of lowvram
// shares (test_qgemm, test_sparse, test_accum): float bit casts, one
// xorshift generator (so a seed means the same numbers in every suite), and
// buffers that end at an inaccessible page, so that a kernel reading or
// writing one byte past what it was given faults instead of passing.
#ifndef LOWVRAM_TEST_UTIL_H
#define LOWVRAM_TEST_UTIL_H

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

inline uint32_t F2U(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float U2F(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
    uint64_t Next() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        return s;
    }
    int Int(int n) { return (int)(Next() % (uint64_t)n); }
    float Uniform(float lo, float hi) { return lo + (hi - lo) * (float)(Next() >> 40) * 0x1p-24f; }
};

// n bytes whose last byte is the last one before a PROT_NONE page.
struct Guarded {
    void *base = nullptr;
    size_t total = 0;
    uint8_t *p = nullptr;
    explicit Guarded(size_t n) {
        const size_t pg = (size_t)sysconf(_SC_PAGESIZE), data = (n + pg - 1) / pg * pg + pg;
        total = data + pg;
        base = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED) base = nullptr;
        if (base) {
            mprotect((char *)base + data, pg, PROT_NONE);
            p = (uint8_t *)base + data - n;
        }
    }
    template <typename T>
    T *Copy(const std::vector<T> &v) {
        if (!v.empty()) std::memcpy(p, v.data(), v.size() * sizeof(T));
        return (T *)p;
    }
    Guarded(const Guarded &) = delete;
    Guarded &operator=(const Guarded &) = delete;
    ~Guarded() {
        if (base) munmap(base, total);
    }
};

}  // namespace

#endif  // LOWVRAM_TEST_UTIL_H
