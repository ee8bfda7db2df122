#!/usr/bin/env bash
# Installs spdlab's Debian packages when any is missing (apt-get, as root or through sudo), then configures a
# Release build in build/. Run by examples/run_study.sh and tests/run.sh, which then build what they need.
# Usage: bash examples/setup.sh [extra Debian packages...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# openmpi-bin and libopenmpi-dev: data parallel over several processes (mpirun -np N spdlab ...).
packages=(build-essential cmake git libopenblas-dev libopenblas-openmp-dev libstb-dev doctest-dev zlib1g-dev
          openmpi-bin libopenmpi-dev dataset-fashion-mnist "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
