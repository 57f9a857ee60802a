#!/bin/sh
# Run every built fuzz target for FUZZ_SECONDS (default 60) from a seed
# corpus made from ../shared (small files and prefixes); fail on any finding.
set -e
secs=${FUZZ_SECONDS:-60}
shared=${MF_SHARED:-../shared}
for bin in build-fuzz/fuzz_*; do
    name=$(basename "$bin")
    corpus=build-fuzz/corpus-$name
    mkdir -p "$corpus"
    if [ -x tests/fuzz/make_corpus.sh ] || [ -f tests/fuzz/make_corpus.sh ]; then
        sh tests/fuzz/make_corpus.sh "$name" "$corpus" "$shared"
    fi
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
