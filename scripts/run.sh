#!/usr/bin/env bash
# Builds gpl (installing system libraries when missing) and runs it: scripts/run.sh run pipelines/galaxy10.gpl
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
cargo build --release --quiet
exec target/release/gpl "$@"
