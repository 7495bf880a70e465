#!/usr/bin/env bash
# README command 1: build kmshost and run the main job on the embedded
# default plugin (`kmshost demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec cargo run --quiet -p kmshost -- demo "$@"
