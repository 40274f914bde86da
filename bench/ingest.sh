#!/usr/bin/env bash
# Streaming throughput: `walgate run` versus `pg_recvlogical` on the same WAL (see ingest.py).
#   bench/ingest.sh [--rounds N] [--txns N] [--rows-per-txn N]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DWALGATE_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" >/dev/null
WALGATE_BIN=$PWD/build-release/walgate exec python3 bench/ingest.py "$@"
