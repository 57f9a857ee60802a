#!/bin/sh
# Run every unit test binary and every CLI test script; add up their RESULT
# lines and end with "N passed, N failed". A program that crashes or exits
# non-zero without a RESULT line counts as one failure.
passed=0; failed=0
bins=$(ls "$TEST_BIN_DIR"/test_* 2>/dev/null)
scripts=$(ls tests/cli/test_*.sh 2>/dev/null)
for t in $bins $scripts; do
    case "$t" in
        *.sh) out=$(MEMFIT="$MEMFIT" sh "$t" 2>&1); rc=$? ;;
        *) out=$("$t" 2>&1); rc=$? ;;
    esac
    line=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -n 1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | cut -d' ' -f2); f=$(echo "$line" | cut -d' ' -f3)
    else
        p=0; f=1
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$f" -ne 0 ]; then
        printf '%s\n' "$out" | grep -v '^RESULT ' | tail -n 30
        echo "FAILED: $t (exit $rc)"
    else
        echo "ok: $(basename "$t") ($p checks)"
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
