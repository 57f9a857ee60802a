#!/bin/sh
# Run every built fuzz target for FUZZ_SECONDS (default 60) from a seed
# corpus made from ../shared (small files and prefixes); fail on any finding.
set -e
secs=${FUZZ_SECONDS:-60}
shared=${MF_SHARED:-../shared}
sh tests/fuzz/make_corpus.sh "$shared" build-fuzz/corpus
mkdir -p build-fuzz/corpus/tokenizer
[ -f "$shared/reference/prompt.txt" ] && cp "$shared/reference/prompt.txt" build-fuzz/corpus/tokenizer/
for bin in build-fuzz/fuzz_*; do
    case "$bin" in *.log) continue ;; esac
    name=$(basename "$bin")
    corpus=build-fuzz/corpus/${name#fuzz_}
    mkdir -p "$corpus"
    echo "== $name for ${secs}s"
    log=build-fuzz/$name.log
    if ! MF_SHARED=$shared "$bin" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 -artifact_prefix=build-fuzz/ "$corpus" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "FUZZ FAILED: $name"
        exit 1
    fi
    grep -E "^stat::number_of_executed_units|^Done" "$log" || tail -n 3 "$log"
done
