#!/bin/sh
# bench/quant_quality.sh — bits per weight against KL divergence for every
# quantization type memfit can write, on the trained stories260K and the
# random synth-512, without and with an importance matrix. Re-runnable:
#   sh bench/quant_quality.sh [threads]     (from the repository root)
# Writes bench/results/quant_quality.md (the table), .dat (the numbers) and
# docs/quant_quality.png (the plot; needs gnuplot, skipped if absent).
#
# Token ids (neither model has a real tokenizer): each model's own samples,
# BOS (id 1) + 255 tokens at temperature 1, made with `memfit run` — 16
# full-length samples for calibration (seeds from 1) and 16 others for
# evaluation (seeds from 1001), so calibration and evaluation never share text. Every window
# is one sample (-c 256): these small models need BOS at the start of a
# window. The base is the unquantized file; KL is KL(base || quantized) over
# the second half of each window, as llama.cpp's perplexity --kl-divergence.
set -e
threads=${1:-2}
shared=${MF_SHARED:-../shared}
dir=${BENCH_DIR:-/tmp/memfit-quant}
res=bench/results/quant_quality
types="f16 bf16 q8_0 q6_k q5_k_m q5_1 q5_0 q4_k_m q4_1 q4_0 iq4_nl iq4_xs q3_k_m q2_k"
mkdir -p "$dir" bench/results docs
make -s memfit

samples() { # model first_seed -> 16 samples of exactly 256 ids on stdout
    s=$2 kept=0
    while [ "$kept" -lt 16 ]; do
        # a placeholder vocabulary prints <id> pieces, a checkpoint prints ids;
        # a sample that meets EOS early is dropped, so windows stay samples
        ids=$(./memfit run -m "$1" --ids 1 -n 255 --temp 1 --seed "$s" -t "$threads" 2>/dev/null |
            sed 's/></ /g; s/[<>]/ /g')
        if [ "$(echo $ids | wc -w)" -eq 255 ]; then echo "1 $ids"; kept=$((kept + 1)); fi
        s=$((s + 1))
    done
}

# one row: model name, type, imatrix flag, bits/weight, KL mean, KL p99, top-1 %, ppl ratio
measure() {
    name=$1 base=$2 type=$3 im=$4
    out="$dir/$name-$type-$im.gguf"
    extra=""
    [ "$im" = yes ] && extra="--imatrix $dir/$name.imatrix"
    if ! ./memfit quantize "$base" "$out" --type "$type" -t "$threads" -q $extra \
        >"$dir/q.txt" 2>"$dir/q.err"; then
        echo "$name $type $im n/a n/a n/a n/a n/a  # $(tail -n 1 "$dir/q.err")"
        return
    fi
    bpw=$(sed -n 's/.* \([0-9.]*\) bits per weight.*/\1/p' "$dir/q.txt")
    ./memfit kld -m "$out" --base-model "$base" --ids-file "$dir/$name.eval" -c 256 -t "$threads" \
        >"$dir/k.txt" 2>/dev/null
    line=$(grep '^kld_summary' "$dir/k.txt")
    val() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    ratio=$(awk -v a="$(val ppl_model)" -v b="$(val ppl_base)" 'BEGIN { printf "%.4f", a / b }')
    echo "$name $type $im $bpw $(val mean) $(val p99) $(val top1) $ratio"
    rm -f "$out"
}

: >"$res.dat"
for name in stories260K synth-512; do
    if [ "$name" = stories260K ]; then base="$shared/models/stories260K.gguf"; gen="$shared/models/stories260K.bin"
    else base="$shared/models/synth-512-f16.gguf"; gen="$base"; fi
    samples "$gen" 1 >"$dir/$name.calib"
    samples "$gen" 1001 >"$dir/$name.eval"
    ./memfit quantize "$base" "$dir/$name-tmp.gguf" --type f16 -q -t "$threads" \
        --calib-ids "$dir/$name.calib" --calib-ctx 256 --save-imatrix "$dir/$name.imatrix" \
        >/dev/null 2>&1
    rm -f "$dir/$name-tmp.gguf"
    for t in $types; do
        measure "$name" "$base" "$t" no | tee -a "$res.dat"
        case $t in f16|bf16|q8_0) ;; *) measure "$name" "$base" "$t" yes | tee -a "$res.dat" ;; esac
    done
done

{
    echo "# Quantization quality: bits per weight against KL divergence"
    echo
    echo "Made by \`sh bench/quant_quality.sh $threads\` on $(date -u +%Y-%m-%d) (method in the"
    echo "script's header and docs/quantization.md). KL = KL(base || quantized) in nats per"
    echo "token over 16 windows of 256 model-sampled tokens (second halves scored); top-1 ="
    echo "how often both models rank the same token first; PPL ratio = PPL(quantized) / PPL(base)."
    echo "bpw counts every tensor (norms and embeddings too). imatrix: importances collected"
    echo "over 16 other samples of the same model."
    for name in stories260K synth-512; do
        echo
        echo "## $name"
        echo
        echo "| type | imatrix | bits/weight | mean KL | KL p99 | top-1 % | PPL ratio |"
        echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
        awk -v n="$name" '$1 == n { printf "| %s | %s | %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6, $7, $8 }' "$res.dat"
    done
} >"$res.md"
echo "wrote $res.md"

if command -v gnuplot >/dev/null 2>&1; then
    for name in stories260K synth-512; do
        for im in no yes; do awk -v n="$name" -v i="$im" '$1 == n && $3 == i && $4 != "n/a"' "$res.dat" >"$dir/$name-$im.dat"; done
    done
    gnuplot <<EOF
set terminal pngcairo size 1200,520 font "sans,10" noenhanced
set output "docs/quant_quality.png"
set multiplot layout 1,2
set logscale y
set format y "%g"
set xlabel "bits per weight"
set ylabel "mean KL divergence from the base (nats)"
set grid
set key top right
do for [n in "stories260K synth-512"] {
    set title n
    plot "$dir/".n."-no.dat" using 4:5 with points pt 7 ps 1.2 title "no imatrix", \
         "$dir/".n."-no.dat" using 4:5:2 with labels left offset 0.6,0.3 rotate by 35 font ",8" notitle, \
         "$dir/".n."-yes.dat" using 4:5 with points pt 6 ps 1.5 title "with imatrix"
}
unset multiplot
EOF
    echo "wrote docs/quant_quality.png"
else
    echo "gnuplot not found: no plot (apt-get install -y gnuplot-nox)"
fi
