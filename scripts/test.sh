#!/usr/bin/env bash
# The whole test suite: unit tests and the end-to-end tests that drive the real binary with
# real ssh, git (and, for builds and deploys, Docker). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
# Builds and deploys run in real Docker, from stack images made here (no registry).
bash scripts/docker-up.sh
bash scripts/stack-tiny.sh >/dev/null
bash scripts/stack-bookworm.sh >/dev/null
# Apps that pin Python 3.13 or Node 20 (tests/compat.rs trixie cases) build on trixie.
bash scripts/stack-trixie.sh >/dev/null
# Services (Postgres, Redis, MariaDB) run from images made the same way.
bash scripts/service-images.sh >/dev/null

# One feature set for every step, so nothing is compiled twice: the test build has the
# failpoints (src/failpoint.rs) that tests/crash.rs kills the controller with.
FEATURES=(--features failpoints)
cargo build --all-targets --locked "${FEATURES[@]}" 2>&1 | tail -n 3
# Style gates: formatting and lints are part of the suite.
cargo fmt --check
cargo clippy --all-targets --locked "${FEATURES[@]}" -- -D warnings 2>&1 | tail -n 3
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast "${FEATURES[@]}" "$@"
else
    cargo test --locked --no-fail-fast "${FEATURES[@]}" "$@"
fi
