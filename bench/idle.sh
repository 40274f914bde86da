#!/usr/bin/env bash
# Idle cost (wakeups/s, CPU, memory) of walgate versus pg_recvlogical for 1 and 20 sources (see idle.py).
#   bench/idle.sh [--sources 1,20] [--rounds N] [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/build.sh
exec python3 bench/idle.py "$@"
