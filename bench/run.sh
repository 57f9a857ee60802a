#!/bin/sh
# bench/run.sh — the numbers in bench/results/, re-runnable by anyone:
#  1. the machine's read bandwidth and the matmul kernels (bench/bandwidth.c),
#  2. `memfit bench` (pp64, tg32, 3 repetitions) on TinyLlama-1.1B-shaped
#     random models (dim 2048, 22 layers, 32 heads, 4 KV heads, FFN 5632,
#     vocab 32000) in f16 and q8_0, made by `memfit synth` (about 2 GB and 1.2 GB
#     in $BENCH_DIR, default /tmp/memfit-bench).
# Usage: sh bench/run.sh [threads]   (from the repository root, after make)
set -e
threads=${1:-2}
dir=${BENCH_DIR:-/tmp/memfit-bench}
out=bench/results/tinyllama.md
mkdir -p "$dir" bench/results
make -s memfit build/bench/bandwidth
shape="--dim 2048 --layers 22 --heads 32 --kv-heads 4 --ff 5632 --vocab 32000"
for t in f16 q8_0; do
    f="$dir/tinyllama-1.1b-$t.gguf"
    [ -f "$f" ] || ./memfit synth -o "$f" $shape --type $t --seed 1
done
./build/bench/bandwidth
{
    echo "# memfit bench: TinyLlama-1.1B shape (random weights), $threads threads"
    echo
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;"
    echo "made by \`sh bench/run.sh $threads\` on $(date -u +%Y-%m-%d). The decode ceiling is the"
    echo "\"weights read alone\" line: a pass that only reads the same weight memory with the same threads,"
    echo "in the same process (this VM's read bandwidth moves between ~31 and ~60 GB/s over minutes;"
    echo "the fresh-buffer figures are in bandwidth.md)."
    echo
    for t in f16 q8_0; do
        ./memfit bench -m "$dir/tinyllama-1.1b-$t.gguf" -t "$threads" -p 64 -n 32 -r 3
        echo
    done
} | tee "$out"
echo "wrote $out"
