#!/bin/sh
# bench/memory.sh — memfit under memory budgets (docs/memory.md), re-runnable:
# TinyLlama-1.1B-shaped random models (q8_0 ~1.1 GiB, f16 ~2.0 GiB, made by
# `memfit synth` in $BENCH_DIR), budgets 128 MiB .. unlimited; for each:
# peak memory (VmHWM), decode tokens/s for 1 sequence and for 8/64
# sequences decoded together (`memfit batch`), and the ratio to the limit the
# read bandwidth sets (n_seq x bandwidth / bytes streamed per step).
#   cold: MF_STREAM_IO default (O_DIRECT: every read goes to the disk, the page
#         cache is bypassed, so no cache needs dropping)
#   warm: MF_STREAM_IO=cached (buffered reads from the page cache, file cached
#         by reading it once first)
# Usage: sh bench/memory.sh [threads]   (after make; writes bench/results/memory.md
# and bench/results/memory.tsv; plot: sh bench/plot_memory.sh)
set -e
threads=${1:-2}
table_only=0
[ "$1" = "--table" ] && table_only=1 && threads=2
dir=${BENCH_DIR:-/tmp/memfit-bench}
out=bench/results/memory.md
tsv=bench/results/memory.tsv
mkdir -p "$dir" bench/results
[ $table_only = 1 ] || [ -n "$MEMFIT" ] || make -s memfit
if [ $table_only = 0 ]; then
M=${MEMFIT:-./memfit}
shape="--dim 2048 --layers 22 --heads 32 --kv-heads 4 --ff 5632 --vocab 32000"
for t in f16 q8_0; do
    f="$dir/tinyllama-1.1b-$t.gguf"
    [ -f "$f" ] || $M synth -o "$f" $shape --type $t --seed 1
done
$M plan -m "$dir/tinyllama-1.1b-q8_0.gguf" --measure
mach=${MEMFIT_CACHE:-$HOME/.cache/memfit/machine}
disk=$(sed -n 's/^disk_gbs //p' "$mach")
# prompts: 4 ids each, different per sequence
for n in 1 8 64; do
    i=0; : >"$dir/p$n.txt"
    while [ $i -lt $n ]; do echo "$((i * 7 + 1)),$((i * 13 + 2)),$((i * 3 + 5)),$((i + 9))" >>"$dir/p$n.txt"; i=$((i + 1)); done
done
stat() { sed -n "s/.*$1 \([0-9.]*\).*/\1/p" "$2" | head -n 1; }
echo "model	cache	budget_mib	n_seq	tok_s	peak_mib	pred_mib	streamed_mib	limit_tok_s" >"$tsv"
for t in q8_0 f16; do
    f="$dir/tinyllama-1.1b-$t.gguf"
    budgets="128M 512M 1G none"
    [ $t = f16 ] && budgets="128M 512M 2G none"
    for cache in cold warm; do
        io=""; [ $cache = warm ] && io=cached && cat "$f" >/dev/null
        for b in $budgets; do
            for n in 1 8 64; do
                mem="--mem $b"; [ $b = none ] && mem=""
                MF_STREAM_IO=$io $M batch -m "$f" --ids-file "$dir/p$n.txt" -n 4 -c 16 -t "$threads" \
                    $mem --stats --quiet >/dev/null 2>"$dir/err" || { echo "$t $b $n: failed"; cat "$dir/err"; continue; }
                tps=$(sed -n 's/.*(decoding steps \([0-9.]*\) tok\/s).*/\1/p' "$dir/err")
                peak=$(stat "VmHWM)" "$dir/err")
                pred=$(stat "predicted peak" "$dir/err"); pred=${pred:-0}
                units=$(sed -n 's/.*| \([0-9]*\) streamed units.*/\1/p' "$dir/err")
                sm=$(sed -n 's/.*resident, \([0-9.]*\) MiB streamed per pass.*/\1/p' "$dir/err")
                sm=${sm:-0}
                lim=$(awk -v n=$n -v d="$disk" -v s="$sm" 'BEGIN { if (s > 0) printf "%.2f", n * d * 1e9 / (s * 1048576); else print "-" }')
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' $t $cache ${b} $n "$tps" "$peak" "$pred" "$sm" "$lim" >>"$tsv"
                echo "$t $cache budget $b seqs $n: $tps tok/s, VmHWM $peak MiB (plan $pred), streams $sm MiB/step, disk limit $lim tok/s"
            done
        done
    done
done
fi
{
    echo "# memfit under memory budgets: TinyLlama-1.1B shape, $threads threads"
    echo
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores;"
    disk=$(sed -n 's/^disk_gbs //p' "${MEMFIT_CACHE:-$HOME/.cache/memfit/machine}")
    mem=$(sed -n 's/^mem_gbs //p' "${MEMFIT_CACHE:-$HOME/.cache/memfit/machine}")
    echo "disk read $disk GB/s, memory read $mem GB/s (memfit plan --measure: O_DIRECT read of the model file, a 256 MiB sum);"
    echo "made by \`sh bench/memory.sh $threads\` on $(date -u +%Y-%m-%d)."
    echo "Decode tokens/s summed over sequences (3 decoding steps after prompts of 4 tokens, context 16)."
    echo "Limit: the tokens/s at which the bytes streamed per step take exactly the read time: sequences x bandwidth /"
    echo "streamed bytes per step, with the disk bandwidth for cold runs (O_DIRECT) and the memory bandwidth for warm ones"
    echo "(page-cache copies; an upper bound). 'none' = no --mem: the file is mapped, as llama.cpp does."
    echo
    echo "| model | cache | budget | seqs | tok/s | VmHWM MiB | plan MiB | streamed MiB/step | limit tok/s | of limit |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    tail -n +2 "$tsv" | awk -F'\t' -v d="$disk" -v m="$mem" '{
        bw = ($2 == "warm") ? m : d; lim = "-"; pct = "-";
        if ($8 > 0) { l = $4 * bw * 1e9 / ($8 * 1048576); lim = sprintf("%.2f", l); pct = sprintf("%.0f%%", 100 * $5 / l) }
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, ($7 == 0 ? "-" : $7), $8, lim, pct }'
} >"$out"
echo "wrote $out"
