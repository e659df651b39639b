#!/usr/bin/env bash
# Installs the headless browser the report test renders report.html with: Debian's `chromium`.
# Idempotent and quiet: does nothing when a chromium binary is already on PATH. Exits non-zero
# with a message when it cannot install (no apt-get, or not root and no sudo).
set -euo pipefail
for bin in chromium chromium-browser; do
  command -v "$bin" >/dev/null 2>&1 && exit 0
done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-browser: chromium is missing and apt-get is not available; install Debian's 'chromium' package by hand" >&2
  exit 1
fi
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo_cmd="sudo"
  else
    echo "install-test-browser: chromium is missing; run 'apt-get install -y chromium' as root" >&2
    exit 1
  fi
fi
echo "install-test-browser: installing chromium (needed by the report rendering test)" >&2
$sudo_cmd apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null 2>&1
