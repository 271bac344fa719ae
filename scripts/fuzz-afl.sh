#!/usr/bin/env bash
# Coverage-guided fuzzing with AFL++ (cargo-afl) of every target in tests/fuzz (command lines,
# names, magrathea.yml, Procfile, bin/release output, app.json, buildpack specs, hook and node
# frames, tarball extraction): the same functions and properties as the suite's short
# deterministic pass, with coverage feedback. Runs each target for FUZZ_SECONDS, prints its
# executions, coverage and crashes, exits non-zero if anything crashed (inputs are kept under
# FUZZ_OUT/<target>/default/crashes).
#
#   FUZZ_SECONDS=60            time per target
#   FUZZ_TARGETS=tar,command   only these targets (default: all)
#   FUZZ_OUT=DIR               AFL's output (default: target/afl)
#
# Installs cargo-afl from crates.io the first time (it builds its own AFL++).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${FUZZ_SECONDS:-60}
OUT=${FUZZ_OUT:-$ROOT/target/afl}

if ! cargo afl --version >/dev/null 2>&1; then
    echo "==> installing cargo-afl"
    cargo install cargo-afl --locked
fi
cargo afl config --build >/dev/null 2>&1 || true   # no-op once built for this rustc

echo "==> building the AFL++ harness"
(cd fuzz/afl && cargo afl build --release 2>&1 | tail -n 1)
BIN=$ROOT/fuzz/afl/target/release/magrathea-afl
ALL="command names magrathea_yml procfile release_yaml buildpack_spec app_json hook_frames node_frames tar"
TARGETS=${FUZZ_TARGETS:-$ALL}
TARGETS=${TARGETS//,/ }

# AFL insists on a local core pattern and CPU governor; neither is ours to change here.
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1
export AFL_NO_AFFINITY=1 AFL_QUIET=1
# The instrumented binary covers the whole crate: tell afl-fuzz its coverage map's size.
AFL_MAP_SIZE=$(AFL_DUMP_MAP_SIZE=1 FUZZ_TARGET=procfile "$BIN" || true)
export AFL_MAP_SIZE

failed=0
printf '%-16s %12s %10s %8s %8s\n' target execs execs/s edges crashes
for t in $TARGETS; do
    d=$OUT/$t
    rm -rf "$d" && mkdir -p "$d"
    FUZZ_TARGET=$t "$BIN" --seeds "$d/in" --dict "$d/dict"
    FUZZ_TARGET=$t timeout $((SECS + 60)) cargo afl fuzz -V "$SECS" -i "$d/in" -o "$d/out" \
        -x "$d/dict" -- "$BIN" >"$d/afl.log" 2>&1 || true
    s=$d/out/default/fuzzer_stats
    if [ ! -f "$s" ]; then
        echo "$t: AFL did not start; see $d/afl.log" >&2
        tail -n 20 "$d/afl.log" >&2
        failed=1
        continue
    fi
    get() { awk -F' *: *' -v k="$1" '$1==k {print $2}' "$s"; }
    crashes=$(get saved_crashes)
    printf '%-16s %12s %10s %8s %8s\n' "$t" "$(get execs_done)" "$(get execs_per_sec)" \
        "$(get edges_found)" "$crashes"
    if [ "${crashes:-0}" != 0 ]; then
        failed=1
        ls "$d/out/default/crashes" | head -n 3 | sed "s|^|    $d/out/default/crashes/|"
    fi
done
exit $failed
