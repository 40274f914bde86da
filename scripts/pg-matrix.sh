#!/usr/bin/env bash
# Run walgate's PostgreSQL-facing tests on every major 11-18 and print a table: the three
# commands a new user tries first (tests/integration/test_pgversion.py: validate, run with
# snapshot/stream/resync, slots list), then test_ingest and test_validate, each with its time.
#
#   scripts/pg-matrix.sh                 all of 11-18
#   scripts/pg-matrix.sh 11 17           only these majors
#   scripts/pg-matrix.sh --quick [...]   only test_pgversion (about 5-15 s per major)
#
# Majors other than 15 are installed first if missing (scripts/pg-versions.sh). The build is
# the sanitizer build of scripts/test.sh ($WALGATE_TEST_BUILD, default build-test). Each test's
# output is kept in $BUILD/pg-matrix/pgNN-TEST.log. Exit status 1 when any cell is not ok.
set -euo pipefail
cd "$(dirname "$0")/.."

TESTS=(test_pgversion test_ingest test_validate)
if [ "${1:-}" = "--quick" ]; then
  TESTS=(test_pgversion)
  shift
fi
MAJORS=("$@")
[ ${#MAJORS[@]} -gt 0 ] || MAJORS=(11 12 13 14 15 16 17 18)

scripts/pg-versions.sh "${MAJORS[@]}"
BUILD=${WALGATE_TEST_BUILD:-build-test}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
  -DWALGATE_SANITIZE=ON -DWALGATE_FUZZ=ON >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target walgate >/dev/null
LOGS=$BUILD/pg-matrix
mkdir -p "$LOGS"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export WALGATE_BIN=$PWD/$BUILD/walgate WALGATE_SOURCE_DIR=$PWD PYTHONPATH=$PWD/tests

declare -A CELL
failed=0
start_all=$(date +%s)
for major in "${MAJORS[@]}"; do
  for t in "${TESTS[@]}"; do
    log=$LOGS/pg$major-$t.log
    t0=$(date +%s)
    if WALGATE_TEST_PG=$major timeout 900 python3 -u "tests/integration/$t.py" >"$log" 2>&1; then
      r=ok
    else
      r=FAIL
      failed=1
    fi
    CELL[$t,$major]="$r $(($(date +%s) - t0))s"
    if [ "$t" = test_pgversion ]; then
      for cmd in validate run slots_list; do
        c=$(sed -n "s/^CELL $cmd \([a-zA-Z]*\).*/\1/p" "$log" | head -1)
        CELL[$cmd,$major]=${c:-"not run"}
        [ "${c:-}" = ok ] || failed=1
      done
    fi
    echo "PostgreSQL $major $t: ${CELL[$t,$major]} ($log)" >&2
  done
done

row() {
  local key=$2 line="| $1 |"
  for major in "${MAJORS[@]}"; do line+=" ${CELL[$key,$major]:-} |"; done
  echo "$line"
}
head="| |"
sep="|---|"
for major in "${MAJORS[@]}"; do
  head+=" $major |"
  sep+="---|"
done
echo
echo "$head"
echo "$sep"
if [[ " ${TESTS[*]} " == *" test_pgversion "* ]]; then
  row '`walgate run`' run
  row '`walgate validate`' validate
  row '`walgate slots list`' slots_list
fi
for t in "${TESTS[@]}"; do row "$t" "$t"; done
echo
echo "total $(($(date +%s) - start_all)) s; logs in $LOGS"
exit $failed
