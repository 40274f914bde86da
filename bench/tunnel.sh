#!/usr/bin/env bash
# Throughput through walgate's SSH tunnel versus `ssh -N -L` (see tunnel.py).
#   bench/tunnel.sh [--rounds N] [--mib N]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DWALGATE_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" >/dev/null
WALGATE_BIN=$PWD/build-release/walgate exec python3 bench/tunnel.py "$@"
