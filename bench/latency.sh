#!/usr/bin/env bash
# Commit -> durable in the change log and commit -> delivered to a local webhook and to NATS
# JetStream R1, p50/p99/max (see latency.py).
#   bench/latency.sh [--rounds N] [--seconds S] [--warmup S] [--rate TPS] [--clients N]
#                     [--sinks webhook,nats1] [--batch-max-delay D] [--status-interval D]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/build.sh
exec python3 bench/latency.py "$@"
