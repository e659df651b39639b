#!/usr/bin/env bash
# The test command the README gives and CI runs: installs system libraries when missing,
# then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
bash scripts/install-test-browser.sh
cargo test --all-targets "$@"
