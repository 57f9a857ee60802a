#!/bin/sh
# tests/cross/arm64.sh — build the kernel test for aarch64 and run it under
# qemu: the NEON kernels (src/tensor/*_neon.c) against the scalar reference,
# bit for bit, once for base ARMv8-A (widening multiplies) and once with the
# dot product extension (vdotq_s32). Only src/core and src/tensor are built
# (no pcre2 for arm64 needed); the x86 kernel files are left out.
# Needs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user; skips
# (exit 0, with a message) when they are missing. Prints the test's RESULT
# lines. Run from the repository root: sh tests/cross/arm64.sh
CC=${CROSS_CC:-aarch64-linux-gnu-gcc}
QEMU=${QEMU:-qemu-aarch64}
SYSROOT=${SYSROOT:-/usr/aarch64-linux-gnu}
OUT=${BUILD:-build}/cross
if ! command -v "$CC" >/dev/null 2>&1 || ! command -v "$QEMU" >/dev/null 2>&1; then
    echo "SKIP arm64: need $CC and $QEMU (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)"
    exit 0
fi
mkdir -p "$OUT" || exit 1
SRCS=$(ls src/core/*.c src/tensor/*.c | grep -v -e '_avx2\.c$' -e '_avx512\.c$')
status=0
for variant in base dotprod; do
    march=
    [ "$variant" = dotprod ] && march=-march=armv8.2-a+dotprod
    bin="$OUT/test_kernels_simd_$variant"
    # shellcheck disable=SC2086 # SRCS and march are word lists
    if ! "$CC" -std=c11 -O2 -Wall -Wextra -Wshadow $march -D_GNU_SOURCE -Iinclude -Isrc -Itests/unit \
        tests/unit/test_kernels_simd.c $SRCS -lm -lpthread -o "$bin"; then
        echo "RESULT 0 1 kernels_simd_arm64_$variant (build failed)"
        status=1
        continue
    fi
    echo "arm64 $variant:"
    "$QEMU" -L "$SYSROOT" "$bin" || status=1
done
exit $status
