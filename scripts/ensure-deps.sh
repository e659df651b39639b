#!/usr/bin/env bash
# Installs what gpl needs on a fresh Debian machine with a Rust toolchain: libhdf5 (read
# through the hdf5 crate) and pkg-config. Does nothing when they are already present.
set -euo pipefail
need=()
pkg-config --exists hdf5 2>/dev/null || [ -e /usr/include/hdf5/serial/hdf5.h ] || need+=(libhdf5-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (needed to build gpl)" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
