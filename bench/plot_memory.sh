#!/bin/sh
# Plot bench/results/memory.tsv (from bench/memory.sh): decode tokens/s
# against the memory budget, one line per model/cache/sequence count, into
# docs/memory.png. Needs gnuplot (apt-get install gnuplot-nox).
set -e
tsv=bench/results/memory.tsv
d=$(mktemp -d)
# budgets on a log axis: MiB values, unlimited plotted at 4096
tail -n +2 "$tsv" | awk -F'\t' -v d="$d" '{
    b = $3; mib = (b == "none") ? 4096 : (b ~ /G$/ ? substr(b, 1, length(b) - 1) * 1024 : substr(b, 1, length(b) - 1));
    f = d "/" $1 "_" $2 "_" $4 ".dat"; print mib, $5 >> f }'
plots=""
for f in "$d"/*.dat; do
    name=$(basename "$f" .dat | sed 's/_/ /g; s/ \([0-9]*\)$/, \1 seq/')
    plots="$plots${plots:+, }'$f' using 1:2 with linespoints title '$name'"
done
gnuplot <<GP
set terminal png size 1000,640 noenhanced
set output 'docs/memory.png'
set logscale xy
set xlabel 'memory budget (MiB; 4096 = unlimited)'
set ylabel 'decode tokens/s (all sequences)'
set title 'memfit: TinyLlama-1.1B shape under a memory budget (2 threads)'
set key outside right
set grid
plot $plots
GP
rm -rf "$d"
echo "wrote docs/memory.png"
