#!/usr/bin/env bash
# README command 2: install what the tests need, then run the whole suite
# (host unit and integration tests, plugin SDK tests) and the lints.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)

echo "== cargo test" >&2
cargo test --workspace

echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets -- -D warnings
(cd plugins && cargo clippy --target wasm32-wasip2 --workspace --lib --examples -- -D warnings)
