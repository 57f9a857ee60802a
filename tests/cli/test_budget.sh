#!/bin/sh
# Memory budgets, end to end: a model ~4x larger than the budget runs under
# --mem with logits bit-identical to an unlimited run, its measured VmHWM under
# the budget and within 10% of the plan's prediction; a budget below the
# minimum fails at once with the smallest budget that works.
MEMFIT=${MEMFIT:-./memfit}
T=$(mktemp -d /tmp/mf_budget_XXXXXX)
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
stat_mib() { sed -n "s/.*$1 \([0-9.]*\) MiB.*/\1/p" "$2" | head -n 1; }

$MEMFIT synth -o "$T/m.gguf" --dim 512 --layers 24 --heads 8 --kv-heads 4 --ff 1024 --vocab 4096 \
    --type f16 --seed 3 2>/dev/null || bad "synth"
size=$(wc -c <"$T/m.gguf")
budget_mib=28
[ "$size" -ge $((4 * budget_mib * 1048576)) ] && ok || bad "model ($size bytes) is not 4x the budget"
ids=1,5,9,200,4000,17,33,65,129,257,513,1025,2049,3000,7,8
for kv in f32 q8_0; do
    $MEMFIT logits -m "$T/m.gguf" --ids $ids --gen 6 -c 128 --kv-type $kv -o "$T/full.ref" 2>/dev/null || bad "unlimited run"
    if $MEMFIT logits -m "$T/m.gguf" --ids $ids --gen 6 -c 128 --kv-type $kv --mem ${budget_mib}M --stats \
        -o "$T/budget.ref" 2>"$T/err"; then ok; else bad "budget run ($kv)"; cat "$T/err"; fi
    cmp -s "$T/full.ref" "$T/budget.ref" && ok || bad "$kv: logits under --mem differ from the unlimited run"
    peak=$(stat_mib "VmHWM)" "$T/err"); pred=$(stat_mib "predicted peak" "$T/err")
    if [ -n "$MF_SANITIZED" ]; then
        echo "(sanitizer build: ASan's shadow memory is in VmHWM; memory bounds not checked)"
    else
        awk -v p="$peak" -v b="$budget_mib" 'BEGIN { exit !(p > 0 && p <= b) }' && ok || bad "$kv: VmHWM $peak MiB over the budget $budget_mib MiB"
        awk -v p="$peak" -v q="$pred" 'BEGIN { d = (p - q) / p; if (d < 0) d = -d; exit !(d <= 0.10) }' && ok \
            || bad "$kv: predicted peak $pred MiB is not within 10% of the measured $peak MiB"
    fi
    grep -q "read .* MiB from disk" "$T/err" && ok || bad "stats line"
    echo "kv $kv: budget $budget_mib MiB, model $((size / 1048576)) MiB: VmHWM $peak MiB, predicted $pred MiB"
done
# q4_K: where this CPU multiplies a packed layout (AVX-512 VNNI), matrices
# are repacked when made resident (every one without a budget, the resident
# units with one); the logits are the same bits either way
$MEMFIT quantize "$T/m.gguf" "$T/q.gguf" --type q4_k --pure -q >/dev/null 2>&1 || bad "quantize q4_k"
$MEMFIT logits -m "$T/q.gguf" --ids $ids --gen 6 -c 128 --stats -o "$T/qa.ref" 2>"$T/err" || bad "q4_k run"
packed=$(sed -n 's/.*| \([0-9.]*\) MiB repacked.*/\1/p' "$T/err")
MF_NO_REPACK=1 $MEMFIT logits -m "$T/q.gguf" --ids $ids --gen 6 -c 128 --stats -o "$T/qb.ref" 2>"$T/err" \
    || bad "q4_k run without repacking"
grep -q "| 0.0 MiB repacked" "$T/err" && ok || bad "MF_NO_REPACK=1 still repacked"
cmp -s "$T/qa.ref" "$T/qb.ref" && ok || bad "q4_k: repacked and row-major logits differ"
$MEMFIT logits -m "$T/q.gguf" --ids $ids --gen 6 -c 128 --mem 24M --stats -o "$T/qc.ref" 2>"$T/err" \
    || bad "q4_k budget run"
cmp -s "$T/qa.ref" "$T/qc.ref" && ok || bad "q4_k: logits under --mem (some units resident, repacked) differ"
qpacked=$(sed -n 's/.*| \([0-9.]*\) MiB repacked.*/\1/p' "$T/err")
echo "q4_k: ${packed:-?} MiB repacked without a budget, ${qpacked:-?} MiB of the resident units under 24 MiB"
# generation under the budget gives the same tokens as without
$MEMFIT run -m "$T/m.gguf" --ids 1,2,3 -n 12 --temp 0 -c 64 >"$T/a.txt" 2>/dev/null
$MEMFIT run -m "$T/m.gguf" --ids 1,2,3 -n 12 --temp 0 -c 64 --mem ${budget_mib}M >"$T/b.txt" 2>/dev/null
cmp -s "$T/a.txt" "$T/b.txt" && ok || bad "run under --mem generates different tokens"
# many sequences decoded together (under the budget) give each one's own greedy tokens
printf '1,2,3\n4,5,6,7\n9\n100,200,300,400,500\n' >"$T/p.txt"
$MEMFIT batch -m "$T/m.gguf" --ids-file "$T/p.txt" -n 6 -c 32 --mem ${budget_mib}M >"$T/batch.txt" 2>"$T/err" \
    && ok || { bad "batch"; cat "$T/err"; }
i=0
while read -r line; do
    $MEMFIT run -m "$T/m.gguf" --ids "$line" -n 6 --temp 0 -c 32 >"$T/one.txt" 2>/dev/null
    got=$(sed -n "s/^\[$i\] [0-9 ]*| //p" "$T/batch.txt" | tr -s ' ' | sed 's/ *$//')
    want=$(tr -s ' ' <"$T/one.txt" | sed 's/ *$//')
    [ "$got" = "$want" ] && ok || bad "batch sequence $i: '$got' != '$want'"
    i=$((i + 1))
done <"$T/p.txt"
# too small: a clear error naming the smallest budget, exit 1, nothing run
if $MEMFIT run -m "$T/m.gguf" --ids 1,2,3 -n 4 --mem 8M 2>"$T/err"; then bad "8M budget accepted"; else ok; fi
grep -q "smallest that works is" "$T/err" && ok || { bad "no smallest-budget message"; cat "$T/err"; }
$MEMFIT plan -m "$T/m.gguf" --mem ${budget_mib}M -c 128 >"$T/plan" 2>&1 && ok || bad "plan"
grep -q "predicted peak" "$T/plan" && grep -q "streamed" "$T/plan" && ok || bad "plan output"
# a generous budget keeps everything resident and reads each layer once
$MEMFIT logits -m "$T/m.gguf" --ids $ids -c 128 --mem 400M --stats -o "$T/big.ref" 2>"$T/err" || bad "large budget"
grep -q "0 streamed units" "$T/err" && ok || bad "a large budget should stream nothing"
rm -rf "$T"
echo "RESULT $pass $fail budget"
[ "$fail" -eq 0 ]
