#!/usr/bin/env bash
# Fuzzes every parser that reads hostile input (tests/fuzz.rs: command lines, names,
# magrathea.yml, Procfile, bin/release output, app.json, hook and node protocol frames, sealed
# backup streams, tarball extraction) for FUZZ_SECONDS per target, and prints each target's executions and crashes.
# Exits non-zero if anything crashed; crashing inputs are saved under FUZZ_OUT.
#
#   FUZZ_SECONDS=60            time per target
#   FUZZ_TARGETS=tar,command   only these targets (default: all)
#   FUZZ_SEED=N                reproduce a run (default: the time; printed first)
#   FUZZ_OUT=DIR               where crashing inputs go (default: target/fuzz-crashes)
#   FUZZ_REPLAY=FILE           run one saved input against FUZZ_TARGETS instead
#
# The suite (scripts/test.sh) runs a short deterministic pass of the same targets.
set -euo pipefail
cd "$(dirname "$0")/.."

export FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
export FUZZ_OUT="${FUZZ_OUT:-$PWD/target/fuzz-crashes}"
cargo build --tests --test fuzz --locked 2>&1 | tail -n 1
exec cargo test --locked --test fuzz -q -- --exact fuzz_timed --nocapture
