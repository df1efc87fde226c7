#!/usr/bin/env bash
# A short fuzzing run of every target in fuzz/ (or those named), one after the other, one process
# at a time. Not part of CI: needs nightly Rust and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   tools/fuzz.sh [SECONDS] [TARGET...]     # SECONDS per target, default 60
#
# Each target fuzzes fuzz/corpus/TARGET (kept between runs, not committed), seeded with the
# committed inputs of fixtures/fuzz/TARGET except crash-* (those are known defects, replayed by
# the regression tests; fuzzing them again would only stop at once). A crash, timeout or
# out-of-memory input is written to fuzz/artifacts/TARGET/ and makes the script exit 1 once
# every target has run. Logs: fuzz/logs/TARGET.log. See fuzz/README.md.
#
# Environment: FUZZ_ARGS adds libFuzzer flags (e.g. "-fork=1 -ignore_crashes=1" to go on past
# a known crash; every new artifact still fails the run); SANITIZER picks cargo-fuzz's sanitizer
# (default none: the readers are safe Rust, and AddressSanitizer costs about a third of the
# executions; "address" for unsafe code); CARGO_BUILD_JOBS limits the build as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
sanitizer=${SANITIZER:-none}

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "tools/fuzz.sh: needs nightly Rust and cargo-fuzz (cargo install cargo-fuzz)" >&2
    exit 2
fi

# The fuzz crate is its own workspace; start it from the workspace's versions of every crate.
[ -e fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

# -a: debug assertions and overflow checks, as `cargo test` has them.
build=(--sanitizer "$sanitizer" --debug-assertions)
(cd fuzz && cargo +nightly fuzz build "${build[@]}")

mkdir -p fuzz/logs
failed=()
summary=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/logs/$target.log"
    artifacts_before=$(find "fuzz/artifacts/$target" -type f | wc -l)
    find "fixtures/fuzz/$target" -type f ! -name 'crash-*' -exec cp -t "fuzz/corpus/$target" {} +
    echo "== $target: ${seconds}s"
    status=0
    # shellcheck disable=SC2086
    (cd fuzz && cargo +nightly fuzz run "${build[@]}" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        ${FUZZ_ARGS:-}) >"$log" 2>&1 || status=$?
    # The final stats; in -fork mode only progress lines (`#N ... exec/s: R`) are printed.
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [ -z "$runs" ]; then
        last=$(grep -E '^#[0-9]+: ' "$log" | tail -1)
        runs=$(grep -oE '^#[0-9]+' <<<"$last" | tr -d '#')
        took=$(grep -oE 'time: [0-9]+s' <<<"$last" | grep -oE '[0-9]+')
        [ -n "$runs" ] && [ "${took:-0}" -gt 0 ] && rate=$((runs / took))
    fi
    corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
    artifacts=$(( $(find "fuzz/artifacts/$target" -type f | wc -l) - artifacts_before ))
    line="$target: ${runs:-?} executions, ${rate:-?} exec/s, corpus $corpus files"
    [ "$status" -eq 0 ] && [ "$artifacts" -gt 0 ] && status=1
    if [ "$status" -ne 0 ]; then
        line="$line, FAILED (exit $status, $artifacts new artifacts;"
        line="$line see $log, fuzz/artifacts/$target/)"
        failed+=("$target")
        grep -E '^(==[0-9]+==|thread .* panicked|SUMMARY|artifact_prefix|Test unit written)' \
            "$log" | head -20 || true
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]}" >&2
    exit 1
fi
