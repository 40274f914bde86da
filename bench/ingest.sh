#!/usr/bin/env bash
# Catch-up speed: `walgate run` versus `pg_recvlogical` on the same WAL (see ingest.py).
#   bench/ingest.sh [--workload small|batch|wide|big|all] [--rounds N] [--rows N]
#                   [--rows-per-txn N] [--txns N] [--updates N] [--recv-protocol 1|2]
#                   [--logical-decoding-work-mem SIZE] [--timeout S]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/build.sh
exec python3 bench/ingest.py "$@"
