#!/bin/sh
# CLI behaviour a user sees: exit codes and messages on bad input, synth ->
# info -> run -> logits -> perplexity -> bench on small models, context-full
# handling, atomic outputs (no .tmp or partial file after a failure).
MEMFIT=${MEMFIT:-./memfit}
SHARED=${MF_SHARED:-../shared}
T=$(mktemp -d /tmp/mf_cli_XXXXXX)
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# expect CODE DESCRIPTION -- command...: checks the exit code; stderr kept in $T/err
expect() {
    code=$1; what=$2; shift 3
    "$@" >"$T/out" 2>"$T/err"; rc=$?
    if [ "$rc" -eq "$code" ]; then ok; else bad "$what: exit $rc, wanted $code"; sed 's/^/    /' "$T/err" | head -5; fi
}
has() { if grep -q "$2" "$T/$1"; then ok; else bad "$3: '$2' not in $1"; sed 's/^/    /' "$T/$1" | head -5; fi; }

expect 1 "no command" -- $MEMFIT
expect 1 "unknown command" -- $MEMFIT frobnicate
expect 0 "help" -- $MEMFIT --help
expect 1 "missing model" -- $MEMFIT info "$T/nope.gguf"
has err "nope.gguf" "missing model names the file"
expect 1 "bad thread count" -- $MEMFIT run -m x -t abc -p hi
expect 1 "no prompt" -- $MEMFIT run -m x

# a small random model
expect 0 "synth" -- $MEMFIT synth -o "$T/s.gguf" --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 128 --vocab 300 --seed 7
expect 0 "synth again" -- $MEMFIT synth -o "$T/s2.gguf" --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 128 --vocab 300 --seed 7
if cmp -s "$T/s.gguf" "$T/s2.gguf"; then ok; else bad "synth is not deterministic"; fi
expect 1 "synth bad shape" -- $MEMFIT synth -o "$T/b.gguf" --dim 65 --layers 2 --heads 4 --ff 128 --vocab 300
[ -e "$T/b.gguf" ] || [ -e "$T/b.gguf.tmp" ] && bad "synth left a file after failing" || ok
expect 0 "info" -- $MEMFIT info "$T/s.gguf"
has out "blk.1.ffn_down.weight" "info lists tensors"
has out "parameters" "info shows parameter count"

# corrupt files: truncated, bad magic
head -c 100 "$T/s.gguf" >"$T/trunc.gguf"
expect 1 "truncated gguf" -- $MEMFIT info "$T/trunc.gguf"
has err "trunc.gguf" "truncation error names the file"
printf 'GGUX' >"$T/magic.gguf"; tail -c +5 "$T/s.gguf" >>"$T/magic.gguf"
expect 1 "bad magic" -- $MEMFIT run -m "$T/magic.gguf" --ids 1,2 -n 2
: >"$T/empty.gguf"
expect 1 "empty file" -- $MEMFIT info "$T/empty.gguf"

# generation from ids, and the context limit
expect 0 "run ids" -- $MEMFIT run -m "$T/s.gguf" --ids 1,2,3 -n 5 --temp 0
has err "generation:" "timing line"
expect 0 "context full" -- $MEMFIT run -m "$T/s.gguf" --ids 1,2,3 -n 50 -c 8
has err "context full" "context-full message"
expect 1 "prompt over context" -- $MEMFIT run -m "$T/s.gguf" --ids 1,2,3,4,5,6,7,8,9 -n 2 -c 8
expect 1 "token outside vocab" -- $MEMFIT run -m "$T/s.gguf" --ids 1,2,300 -n 2

# logits: output written atomically, nothing left on failure
expect 0 "logits" -- $MEMFIT logits -m "$T/s.gguf" --ids 1,2,3 --gen 4 -o "$T/o.ref"
sz=$(wc -c <"$T/o.ref"); want=$((16 + 12 + 3 * 300 * 4 + 4 + 16))
[ "$sz" -eq "$want" ] && ok || bad "MFRF size $sz, wanted $want"
expect 1 "logits into missing dir" -- $MEMFIT logits -m "$T/s.gguf" --ids 1,2 -o "$T/no/such/dir/o.ref"
[ -e "$T/no/such/dir/o.ref.tmp" ] && bad "tmp left" || ok

# text in, text out with a real vocabulary
if [ -f "$SHARED/models/llama-2-tiny-random.gguf" ]; then
    expect 0 "synth with vocab" -- $MEMFIT synth -o "$T/v.gguf" --dim 32 --layers 1 --heads 2 --ff 64 --vocab-from "$SHARED/models/llama-2-tiny-random.gguf"
    expect 0 "run text" -- $MEMFIT run -m "$T/v.gguf" -p "Once upon a time" -n 8 --seed 3
    expect 0 "perplexity text" -- $MEMFIT perplexity -m "$T/v.gguf" -f "$SHARED/reference/prompt.txt" -c 16
    has out "perplexity:" "perplexity result"
    # a random model has a perplexity near its vocabulary size, never below 1
    ppl=$(sed -n 's/^perplexity: \([0-9.]*\).*/\1/p' "$T/out")
    awk -v p="$ppl" 'BEGIN { exit !(p > 1000 && p < 200000) }' && ok || bad "perplexity $ppl implausible"
fi
printf '1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17' >"$T/ids.txt"
expect 0 "perplexity ids" -- $MEMFIT perplexity -m "$T/s.gguf" --ids-file "$T/ids.txt" -c 8
expect 1 "perplexity too short" -- $MEMFIT perplexity -m "$T/s.gguf" --ids-file "$T/ids.txt" -c 64
expect 0 "bench" -- $MEMFIT bench -m "$T/s.gguf" -p 8 -n 4 -r 2 -t 2
has out "pp8" "bench table"
has out "tg4" "bench table"

# a long context (700 positions: many 16-position groups of attention lanes)
# gives the same logits with the SIMD kernels as with the scalar references
$MEMFIT synth -o "$T/long.gguf" --dim 256 --layers 2 --heads 4 --kv-heads 2 --ff 512 --vocab 512 --seed 9 2>/dev/null
ids=$(awk 'BEGIN { for (i = 0; i < 700; i++) printf "%s%d", (i ? "," : ""), (i * 7919 + 13) % 512 }')
expect 0 "long context" -- $MEMFIT logits -m "$T/long.gguf" --ids "$ids" --gen 4 -c 1024 -o "$T/long.ref"
expect 0 "long context, reference kernels" -- env MF_FORCE_REF=1 $MEMFIT logits -m "$T/long.gguf" --ids "$ids" --gen 4 -c 1024 -o "$T/long_ref.ref"
if cmp -s "$T/long.ref" "$T/long_ref.ref"; then ok; else bad "long context: SIMD and reference logits differ"; fi
rm -rf "$T"
echo "RESULT $pass $fail cli"
[ "$fail" -eq 0 ]
