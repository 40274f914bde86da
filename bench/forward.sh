#!/usr/bin/env bash
# Forwarding: records/s into a webhook receiver and JetStream (R1, R3), and end-to-end latency
# under pgbench -R (see forward.py).
#   bench/forward.sh [--txns N] [--rows-per-txn N] [--rate R] [--seconds S] [--sinks LIST]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
. bench/build.sh
exec python3 bench/forward.py "$@"
