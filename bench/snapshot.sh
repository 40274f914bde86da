#!/usr/bin/env bash
# Initial snapshot of one big table: walgate (1 and 2 workers, direct and through its tunnel) versus psql COPY and pg_dump (see snapshot.py).
#   bench/snapshot.sh [--rounds N] [--rows N] [--no-tunnel] [--tunnel-transport libssh2|openssh]
#                     [--bin LABEL=PATH[@N][,openssh]]...
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/build.sh
exec python3 bench/snapshot.py "$@"
