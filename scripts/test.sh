#!/usr/bin/env bash
# README command 2: install what the tests need, then run the whole suite
# (host unit and integration tests, plugin SDK tests) and the lints.
set -euo pipefail
cd "$(dirname "$0")/.."
KMSHOST_BOOTSTRAP_PEERS=1 scripts/bootstrap.sh
# Tests against real peers must run, not skip.
export KMSHOST_REQUIRE_PEERS=1
export KMSHOST_BAO="$PWD/target/peers-venv/bin/bao"

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)

echo "== cargo test" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# Plugin-side unit tests run natively (the wasm imports are never called).
(cd plugins && cargo test --workspace --lib --target-dir ../target/plugins-native) 2>&1 | tee -a "$log"

echo "== the SDK is publishable (cargo package builds it from its own files)" >&2
(cd plugins && cargo package -p kmshost-plugin-sdk --allow-dirty --quiet --target-dir ../target/plugins-native)

echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets -- -D warnings
(cd plugins && cargo clippy --target wasm32-wasip2 --workspace --lib --examples -- -D warnings)
# The native half: the SDK's mock host and every plugin's unit tests on it.
(cd plugins && cargo clippy --workspace --lib --tests --target-dir ../target/plugins-native -- -D warnings)

# One closing line for the whole run.
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
echo "tests: ${passed} passed, ${failed} failed"
