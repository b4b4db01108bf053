#!/usr/bin/env bash
# Install what is missing, build, and run every test of pvbackup. This is what CI runs
# (.ci/run), stage by stage:
#
#   setup       scripts/setup.sh (Debian packages)
#   build       build/: RelWithDebInfo, -Werror
#   ctest       the whole suite in build/
#   build-asan  build-asan/: ASan + UBSan (PVB_SANITIZE=ON)       skip: PVB_SKIP_ASAN=1
#   ctest-asan  the whole suite again, leaks detected, UB fatal    skip: PVB_SKIP_ASAN=1
#   build-tsan  build-tsan/: ThreadSanitizer (PVB_TSAN=ON)           skip: PVB_SKIP_TSAN=1
#   ctest-tsan  the concurrent parts (backup pipeline, restore, packer, S3 client) and the CLI
#               integration test (local and S3) under TSan                      skip: PVB_SKIP_TSAN=1
#   format      clang-format --dry-run -Werror on src/ include/ tests/
#   build-fuzz  build-fuzz/: clang, PVB_FUZZ=ON (when tests/fuzz/CMakeLists.txt exists)
#   fuzz        each fuzz_* target for PVB_FUZZ_SECONDS on tests/fuzz/corpus/<target>/
#                                                                  skip: PVB_SKIP_FUZZ=1
#
# Every stage runs even when an earlier one failed (except that a failed build skips the
# tests it would have run). The last lines are a table of stages with their times, then
# `N passed, N failed`: the ctest totals, plus one per other stage (and per fuzz target).
# Exits 0 only when nothing failed.
#
# Environment:
#   PVB_SKIP_ASAN=1, PVB_SKIP_FUZZ=1   skip the sanitizer or fuzz stages (local speed only;
#                                      CI runs everything)
#   PVB_FUZZ_SECONDS=N                 time per fuzz target (default 20)
#   PVB_FUZZ_TIMEOUT=N                 an input slower than N seconds fails (default 10)
#   PVB_CTEST_JOBS=N                   ctest parallelism (default 2)
#   PVB_SKIP_SETUP=1                   do not check Debian packages
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
exec </dev/null # as in CI: nothing may wait for a terminal

JOBS=$(nproc 2>/dev/null || echo 2)
CTEST_JOBS=${PVB_CTEST_JOBS:-2}
FUZZ_SECONDS=${PVB_FUZZ_SECONDS:-20}
FUZZ_TIMEOUT=${PVB_FUZZ_TIMEOUT:-10}
T_START=$SECONDS

PASSED=0
FAILED=0
SUMMARY=()
FAILURES=()

banner() { printf '\n========== %s ==========\n' "$*"; }
# record STAGE RESULT PASSED FAILED SECONDS
record() {
    PASSED=$((PASSED + $3))
    FAILED=$((FAILED + $4))
    SUMMARY+=("$(printf '%-18s %-38s %5ss' "$1" "$2" "$5")")
    [ "$4" -eq 0 ] || FAILURES+=("$1: $2")
}
skip() { SUMMARY+=("$(printf '%-18s %-38s %6s' "$1" "skipped ($2)" -)"); }

# build STAGE DIR CMAKE_ARGS...: configure and build DIR; output in DIR/build.log, shown
# in part when it fails. Returns non-zero on failure.
build() {
    local stage=$1 dir=$2 t=$SECONDS rc=0
    shift 2
    banner "$stage: cmake -B $dir $*"
    mkdir -p "$dir"
    {
        cmake -S "$ROOT" -B "$dir" "$@" && cmake --build "$dir" --parallel "$JOBS"
    } >"$dir/build.log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        grep -E 'warning:' "$dir/build.log" | sort -u | head -n 50 || true
        echo "built in $((SECONDS - t))s (log: $dir/build.log)"
        record "$stage" "ok" 1 0 $((SECONDS - t))
    else
        if grep -q -E 'error:|CMake Error' "$dir/build.log"; then
            echo "--- errors in $dir/build.log:"
            grep -E -B2 -A6 'error:|CMake Error' "$dir/build.log" | head -n 150
        else
            echo "--- last lines of $dir/build.log:"
            tail -n 40 "$dir/build.log"
        fi
        record "$stage" "FAILED (exit $rc)" 0 1 $((SECONDS - t))
    fi
    return "$rc"
}

# run_ctest STAGE DIR [VAR=VALUE]...: the whole ctest suite of DIR, with these variables in
# its environment; counts its tests.
run_ctest() {
    local stage=$1 dir=$2 t=$SECONDS rc=0 line total failed
    shift 2
    banner "$stage: ctest in $dir${*:+ with $*}"
    env "$@" ctest --test-dir "$dir" --output-on-failure -j "$CTEST_JOBS" --no-tests=error \
        --timeout 900 ${CTEST_FILTER:+-R "$CTEST_FILTER"} 2>&1 | tee "$dir/ctest.log" || rc=$?
    line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$dir/ctest.log" |
        tail -n 1)
    if [ -n "$line" ]; then
        failed=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$line")
        total=$(sed -E 's/.*failed out of ([0-9]+).*/\1/' <<<"$line")
        if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
            failed=1 # ctest failed for another reason than a test
        fi
        record "$stage" "$((total - failed))/$total tests passed" $((total - failed)) "$failed" \
            $((SECONDS - t))
    else
        record "$stage" "FAILED (no ctest summary, exit $rc)" 0 1 $((SECONDS - t))
    fi
}

# ----------------------------------------------------------------------------- setup
banner "setup: Debian packages"
t=$SECONDS
if bash "$ROOT/scripts/setup.sh"; then
    record setup ok 1 0 $((SECONDS - t))
else
    record setup FAILED 0 1 $((SECONDS - t))
    printf '%s\n' "${SUMMARY[@]}"
    echo "setup failed: nothing can be built"
    printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
    exit 1
fi

# ----------------------------------------------------------------------------- release
if build build build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPVB_WERROR=ON -DPVB_SANITIZE=OFF \
    -DPVB_TSAN=OFF -DPVB_FUZZ=OFF -DPVB_TESTS=ON; then
    run_ctest ctest build
else
    record ctest "not run: build failed" 0 1 0
fi

# ----------------------------------------------------------------------------- sanitizers
if [ "${PVB_SKIP_ASAN:-0}" = 1 ]; then
    skip build-asan PVB_SKIP_ASAN=1
    skip ctest-asan PVB_SKIP_ASAN=1
elif build build-asan build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPVB_WERROR=ON \
    -DPVB_SANITIZE=ON -DPVB_TSAN=OFF -DPVB_FUZZ=OFF -DPVB_TESTS=ON; then
    run_ctest ctest-asan build-asan ASAN_OPTIONS=detect_leaks=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
    record ctest-asan "not run: build failed" 0 1 0
fi

# ----------------------------------------------------------------------------- tsan
if [ "${PVB_SKIP_TSAN:-0}" = 1 ]; then
    skip build-tsan PVB_SKIP_TSAN=1
    skip ctest-tsan PVB_SKIP_TSAN=1
elif build build-tsan build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPVB_WERROR=ON \
    -DPVB_SANITIZE=OFF -DPVB_TSAN=ON -DPVB_FUZZ=OFF -DPVB_TESTS=ON; then
    CTEST_FILTER='unit/(backup|restore|repo|storage)/|integration(-s3)?/test_cli_basic|integration/test_s3_(storage|credentials)' \
        run_ctest ctest-tsan build-tsan TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
else
    record ctest-tsan "not run: build failed" 0 1 0
fi

# ----------------------------------------------------------------------------- format
banner "format: clang-format --dry-run -Werror"
t=$SECONDS
mapfile -d '' FILES < <(
    {
        find src include tests -type f \( -name '*.c' -o -name '*.h' \) \
            -not -path 'tests/fuzz/corpus*' -print0 2>/dev/null
        find . -maxdepth 1 -type f \( -name '*.c' -o -name '*.h' \) -print0
    } | LC_ALL=C sort -z
)
clang-format --version
bad=()
for f in "${FILES[@]}"; do
    if ! clang-format --style=file --dry-run -Werror "$f" >/dev/null 2>&1; then
        bad+=("$f")
    fi
done
if [ "${#bad[@]}" -eq 0 ]; then
    echo "${#FILES[@]} files formatted as .clang-format says"
    record format "ok (${#FILES[@]} files)" 1 0 $((SECONDS - t))
else
    for f in "${bad[@]}"; do
        clang-format --style=file --dry-run -Werror "$f" 2>&1 | head -n 12
    done | head -n 200
    echo "misformatted (${#bad[@]} of ${#FILES[@]}; fix with: clang-format -i FILE):"
    printf '  %s\n' "${bad[@]}"
    record format "FAILED: ${#bad[@]} misformatted files" 0 1 $((SECONDS - t))
fi

# ----------------------------------------------------------------------------- fuzz
if [ ! -f tests/fuzz/CMakeLists.txt ]; then
    skip fuzz "no tests/fuzz/CMakeLists.txt"
elif [ "${PVB_SKIP_FUZZ:-0}" = 1 ]; then
    skip fuzz PVB_SKIP_FUZZ=1
elif build build-fuzz build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DPVB_FUZZ=ON -DPVB_SANITIZE=OFF -DPVB_TSAN=OFF -DPVB_WERROR=OFF -DPVB_TESTS=OFF; then
    mapfile -t TARGETS < <(find build-fuzz -type f -name 'fuzz_*' -perm -u+x \
        -not -name '*.*' -not -path '*/CMakeFiles/*' | LC_ALL=C sort)
    if [ "${#TARGETS[@]}" -eq 0 ]; then
        banner "fuzz"
        echo "tests/fuzz/CMakeLists.txt exists but built no fuzz_* executable"
        record fuzz "FAILED: no fuzz_* targets" 0 1 0
    fi
    for exe in "${TARGETS[@]}"; do
        name=${exe##*/}
        banner "fuzz: $name for ${FUZZ_SECONDS}s"
        t=$SECONDS
        # Absolute paths: a target may change its working directory.
        seeds="$ROOT/tests/fuzz/corpus/$name"
        work="$ROOT/build-fuzz/corpus-run/$name"
        artifacts="$ROOT/build-fuzz/artifacts/$name"
        log="$ROOT/build-fuzz/$name.log"
        rm -rf "$work" "$artifacts"
        mkdir -p "$work" "$artifacts"
        args=(-max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" -rss_limit_mb=2048
            -print_final_stats=1 -artifact_prefix="$artifacts/")
        for dict in "$ROOT/tests/fuzz/$name.dict" "$ROOT/tests/fuzz/dict/$name.dict"; do
            [ ! -f "$dict" ] || args+=(-dict="$dict")
        done
        corpora=("$work")
        if [ -d "$seeds" ]; then
            corpora+=("$seeds")
            echo "seed corpus: ${seeds#"$ROOT"/} ($(find "$seeds" -type f | wc -l) files)"
        else
            echo "warning: no seed corpus ${seeds#"$ROOT"/}: starting from nothing"
        fi
        rc=0
        ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            timeout -k 10 $((FUZZ_SECONDS + 180)) "$exe" "${args[@]}" "${corpora[@]}" \
            >"$log" 2>&1 || rc=$?
        if [ "$rc" -eq 0 ]; then
            grep -E '^(#[0-9]+.*DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::new_units_added)' \
                "$log" || tail -n 5 "$log"
            record "$name" ok 1 0 $((SECONDS - t))
        else
            # the report, without libFuzzer's progress lines
            grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|INITED|RELOAD)' "$log" | tail -n 80
            grep -m1 -E '^INFO: Seed: ' "$log" || true
            echo "log: $log"
            echo "inputs that failed: $(find "$artifacts" -type f -printf '%f ')"
            echo "reproduce: $exe ${artifacts#"$ROOT"/}/<input>"
            record "$name" "FAILED (exit $rc)" 0 1 $((SECONDS - t))
        fi
    done
else
    record fuzz "not run: build failed" 0 1 0
fi

# ----------------------------------------------------------------------------- summary
banner "summary ($((SECONDS - T_START))s in all)"
printf '%-18s %-38s %6s\n' stage result time
printf '%s\n' "${SUMMARY[@]}"
if [ "${#FAILURES[@]}" -ne 0 ]; then
    echo "failed:"
    printf '  %s\n' "${FAILURES[@]}"
fi
printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
[ "$FAILED" -eq 0 ]
