#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after another, and prints
# per target the final exec/s, corpus size and coverage. Usage: fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On a stable toolchain the nightly
# flags it uses (-Zsanitizer=address) are unlocked with RUSTC_BOOTSTRAP=1, set below.
# Environment: FUZZ_NICE (default 19), FUZZ_TIMEOUT (seconds per input, default 20),
# FUZZ_RSS_MB (default 2048), CARGO_TARGET_DIR (passed through to cargo).
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-600}
shift || true
export RUSTC_BOOTSTRAP=1

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

nice -n "${FUZZ_NICE:-19}" cargo fuzz build

mkdir -p logs corpus-evolved
failed=0
summary=()
for t in "${targets[@]}"; do
    # New inputs go to corpus-evolved/<target> (ignored by git); corpus/<target> holds the
    # committed seeds and is only read.
    mkdir -p "corpus-evolved/$t" "artifacts/$t"
    log="logs/$t.log"
    echo "== $t: ${secs}s" >&2
    status=0
    nice -n "${FUZZ_NICE:-19}" cargo fuzz run "$t" "corpus-evolved/$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 \
        -timeout="${FUZZ_TIMEOUT:-20}" -rss_limit_mb="${FUZZ_RSS_MB:-2048}" \
        >"$log" 2>&1 || status=$?
    # The last status line looks like: #123 DONE cov: 10 ft: 20 corp: 5/1Kb lim: ... exec/s: 99 rss: ...
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    field() { sed -nE "s/.* $1: ([^ ]+).*/\1/p" <<<"$last"; }
    execs=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log" | tail -n 1)
    [[ -n $execs ]] || execs=$(field 'exec/s')
    runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)
    # libFuzzer's in-memory corpus (seeds that count plus new inputs), and the files it wrote.
    corp=$(field corp)
    inputs=$(find "corpus-evolved/$t" -type f | wc -l)
    crashes=$(find "artifacts/$t" -type f | wc -l)
    line=$(printf '%-13s exit=%-3s runs=%-10s exec/s=%-7s corp=%-12s new-files=%-5s cov=%-5s ft=%-6s crashes=%s' \
        "$t" "$status" "${runs:-?}" "${execs:-?}" "${corp:-?}" "$inputs" "$(field cov)" "$(field ft)" "$crashes")
    echo "$line"
    summary+=("$line")
    if [[ $status -ne 0 ]]; then
        failed=1
        grep -E '^(==[0-9]+==ERROR|thread .* panicked|SUMMARY|Test unit written)' "$log" | head -n 5 >&2 || true
    fi
done

echo
echo "summary (${secs}s per target, logs in fuzz/logs/):"
printf '%s\n' "${summary[@]}"
exit "$failed"
