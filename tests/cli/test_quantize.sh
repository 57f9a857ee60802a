#!/bin/sh
# `memfit quantize` and `memfit kld` as a user meets them: the table and
# totals, the fallback note, calibration with --save-imatrix / --imatrix, the
# KL report against a base model and an MFRF file, and clear failures (exit
# 1, a message, no output or .tmp file left, the input unchanged).
MEMFIT=${MEMFIT:-./memfit}
SHARED=${MF_SHARED:-../shared}
T=$(mktemp -d /tmp/mf_quant_cli_XXXXXX)
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
expect() {
    code=$1; what=$2; shift 3
    "$@" >"$T/out" 2>"$T/err"; rc=$?
    if [ "$rc" -eq "$code" ]; then ok; else bad "$what: exit $rc, wanted $code"; sed 's/^/    /' "$T/err" | head -5; fi
}
has() { if grep -q -- "$2" "$T/$1"; then ok; else bad "$3: '$2' not in $1"; sed 's/^/    /' "$T/$1" | head -5; fi; }
none() { if [ -e "$1" ] || [ -e "$1.tmp" ]; then bad "$2: file left behind"; else ok; fi; }

if [ ! -f "$SHARED/models/stories260K.gguf" ]; then
    echo "skip: $SHARED not found"; echo "RESULT 0 0 quantize-cli"; exit 0
fi
IN="$SHARED/models/stories260K.gguf"
cp "$IN" "$T/in.gguf"
sum=$(cksum <"$T/in.gguf")

expect 0 "help" -- $MEMFIT quantize --help
expect 1 "no type" -- $MEMFIT quantize "$T/in.gguf" "$T/o.gguf"
expect 1 "unknown type" -- $MEMFIT quantize "$T/in.gguf" "$T/o.gguf" --type q9_9
has err "q4_k_m" "unknown type lists the types"
none "$T/o.gguf" "unknown type"
expect 1 "out is in" -- $MEMFIT quantize "$T/in.gguf" "$T/in.gguf" --type q8_0
has err "input" "out == in names the input"
expect 1 "missing dir" -- $MEMFIT quantize "$T/in.gguf" "$T/no/dir/o.gguf" --type q8_0
none "$T/no/dir/o.gguf" "missing dir"
expect 1 "missing input" -- $MEMFIT quantize "$T/nope.gguf" "$T/o.gguf" --type q8_0
none "$T/o.gguf" "missing input"
expect 1 "calib and imatrix" -- $MEMFIT quantize "$T/in.gguf" "$T/o.gguf" --type q4_0 --calib-ids x --imatrix y

expect 0 "q8_0" -- $MEMFIT quantize "$T/in.gguf" "$T/q8.gguf" --type q8_0 -t 2
has out "blk.0.ffn_down.weight" "table lists tensors"
has out "f16 <- q8_0" "ffn_down falls back to f16"
has out "bits per weight" "totals"
has out "5 fallback(s)" "fallbacks counted"
[ "$(cksum <"$T/in.gguf")" = "$sum" ] && ok || bad "input changed"

# calibration: save the matrix, quantize again with it
awk 'BEGIN { printf "1"; for (i = 1; i < 256; i++) printf " %d", (i * 37 + 11) % 512; print "" }' >"$T/cal.txt"
expect 0 "calibrated q4_0" -- $MEMFIT quantize "$T/in.gguf" "$T/q4c.gguf" --type q4_0 --calib-ids "$T/cal.txt" --calib-ctx 64 --save-imatrix "$T/m.imatrix"
has err "importance matrix: 36 tensors" "imatrix summary"
has out "with importances" "totals count importances"
[ -s "$T/m.imatrix" ] && ok || bad "no imatrix file"
expect 0 "q4_0 from saved imatrix" -- $MEMFIT quantize "$T/in.gguf" "$T/q4i.gguf" --type q4_0 --imatrix "$T/m.imatrix"
cmp -s "$T/q4c.gguf" "$T/q4i.gguf" && ok || bad "saved imatrix gives another file"
head -c 50 "$T/m.imatrix" >"$T/trunc.imatrix"
expect 1 "truncated imatrix" -- $MEMFIT quantize "$T/in.gguf" "$T/o.gguf" --type q4_0 --imatrix "$T/trunc.imatrix"
none "$T/o.gguf" "truncated imatrix"

# kld against the base model and against llama.cpp's logits
expect 0 "kld base model" -- $MEMFIT kld -m "$T/q8.gguf" --base-model "$T/in.gguf" --ids-file "$SHARED/reference/stories260K.story-ids.txt" -c 128
has out "Mean    KLD" "kld statistics"
has out "Same top p" "top-1 agreement"
expect 0 "kld ref" -- $MEMFIT kld -m "$T/in.gguf" --base "$SHARED/reference/stories260K.ref"
# the f32 model against llama.cpp's own logits of it: KL ~ 0, top-1 100%
kl=$(sed -n 's/^kld_summary.* mean=\([^ ]*\).*/\1/p' "$T/out")
awk -v k="$kl" 'BEGIN { exit !(k < 1e-6) }' && ok || bad "f32 vs llama.cpp KL $kl"
has out "top1=100" "same top token everywhere"
expect 1 "kld no base" -- $MEMFIT kld -m "$T/q8.gguf" --ids-file x
expect 1 "kld not a ref" -- $MEMFIT kld -m "$T/q8.gguf" --base "$T/cal.txt"
has err "MFRF" "bad ref named"

rm -rf "$T"
echo "RESULT $pass $fail quantize-cli"
[ "$fail" -eq 0 ]
