#!/usr/bin/env bash
# The test command the README gives and CI runs: installs system libraries when missing,
# then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
bash scripts/install-test-browser.sh
# Tests run in parallel in one process (tests/it) and start gpl processes side by side; HDF5's
# advisory file locks then fail spuriously on files another test still holds open.
export HDF5_USE_FILE_LOCKING=FALSE
# `bash scripts/test.sh slurm` runs the Slurm tests alone and requires a cluster to start; in
# the whole suite they report, rather than fail, when this machine cannot host one.
case " $* " in
  *slurm*) export GPL_REQUIRE_SLURM=1 ;;
esac
cargo test --all-targets "$@"
