#!/usr/bin/env bash
# Throughput through walgate's SSH tunnel versus `ssh -N -L` (see tunnel.py).
#   bench/tunnel.sh [--rounds N] [--mib N]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/build.sh
exec python3 bench/tunnel.py "$@"
