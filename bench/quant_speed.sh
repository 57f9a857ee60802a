#!/bin/sh
# bench/quant_speed.sh — prompt (pp64) and generation (tg32) speed of every
# quantized type on a TinyLlama-1.1B-shaped random model (memfit synth f16,
# then memfit quantize --pure to each type), 2 threads, with the GB/s of
# weights read while decoding beside the measured read bandwidth and the
# prompt GFLOP/s. The bandwidth ceiling is measured in the same process as
# the decode (memfit bench's "weights read alone": a pass that only reads
# the same weight memory with the same threads): on this VM the read
# bandwidth of an allocation varies between ~31 and ~56 GB/s from one
# process to the next, so a figure measured elsewhere would mislead; the
# 1 GiB bench/bandwidth.c figure is printed too. Writes
# bench/results/quant_speed.md. Re-run:
#   sh bench/quant_speed.sh [threads]
set -e
threads=${1:-2}
dir=${BENCH_DIR:-/tmp/memfit-bench}
M=${MEMFIT:-./memfit}
out=bench/results/quant_speed.md
mkdir -p "$dir" bench/results
[ -n "$MEMFIT" ] || make -s memfit
f16="$dir/tinyllama-1.1b-f16.gguf"
[ -f "$f16" ] || $M synth -o "$f16" --dim 2048 --layers 22 --heads 32 --kv-heads 4 --ff 5632 \
    --vocab 32000 --type f16 --seed 1
make -s build/bench/bandwidth
bw=$(build/bench/bandwidth --read | sed -n 's/.*2 threads \([0-9.]*\) GB\/s.*/\1/p')
# 2 x parameters of all matrices per token; pp64 tok/s x this = FLOP/s
flop=$(awk 'BEGIN { d = 2048; f = 5632; L = 22; kv = 256; v = 32000;
    print 2 * (L * (d * d * 2 + d * kv * 2 + 3 * d * f) + v * d) }')
{
    echo "# Speed per type: TinyLlama-1.1B shape (random weights), $threads threads"
    echo
    echo "Each type made with \`memfit quantize --pure\` from the f16 synth model; \`memfit bench -p 64 -n 32 -r 3\`."
    echo "Decode GB/s = tg32 t/s x weight bytes per token; *read alone* = a pass that only reads those weights, in the"
    echo "same process and memory, same threads (the ceiling; it moves between ~31 and ~67 GB/s over minutes on this VM)."
    echo "Read bandwidth of a fresh 1 GiB buffer (bench/bandwidth.c, 2 threads) at the start: $bw GB/s."
    echo "Made by \`sh bench/quant_speed.sh $threads\` on $(date -u +%Y-%m-%d)."
    echo
    echo "| type | size GiB | pp64 t/s | prompt GFLOP/s | tg32 t/s | decode GB/s | read alone GB/s | decode / read alone |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} >"$out"
for t in f16 q8_0 q6_k q5_k q4_k q3_k q2_k q5_1 q5_0 q4_1 q4_0 iq4_nl iq4_xs; do
    f="$dir/tinyllama-1.1b-pure-$t.gguf"
    if [ $t = f16 ]; then f=$f16; elif [ ! -f "$f" ]; then
        $M quantize "$f16" "$f" --type $t --pure -t "$threads" -q >/dev/null 2>&1 || { echo "quantize $t failed"; continue; }
    fi
    $M bench -m "$f" -t "$threads" -p 64 -n 32 -r 3 >"$dir/b.txt" 2>&1 || { echo "bench $t failed"; cat "$dir/b.txt"; continue; }
    awk -F'|' -v t=$t -v flop="$flop" '
        /pp64/ { gsub(/ /, "", $3); size = $3; split($8, a, "±"); pp = a[1] + 0 }
        /tg32/ { split($8, a, "±"); tg = a[1] + 0; gsub(/ /, "", $9); gbs = $9 + 0 }
        /weights read alone/ { sub(/.*alone: /, ""); ra = $0 + 0 }
        END { printf "| %s | %s | %.2f | %.1f | %.2f | %.2f | %.2f | %.0f%% |\n", t, size, pp, pp * flop / 1e9, tg, gbs, ra, 100 * gbs / ra }' \
        "$dir/b.txt" | sed 's/GiB//' | tee -a "$out"
done
echo "wrote $out"
