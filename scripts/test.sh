#!/usr/bin/env bash
# The test command: install dependencies, build with AddressSanitizer + UndefinedBehavior-
# Sanitizer (clang, -Wall -Wextra -Werror, libFuzzer targets too) and run every test with
# ctest: unit tests, fuzz smoke runs, and integration tests against real PostgreSQL 15 and
# OpenSSH servers that the tests start on free loopback ports.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -L unit         only unit tests (any ctest arguments are passed on)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

BUILD=${WALGATE_TEST_BUILD:-build-test}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
  -DWALGATE_SANITIZE=ON -DWALGATE_FUZZ=ON >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
# The release build that scripts/quickstart.sh and users make, with the default compiler (gcc):
# its -Werror must hold there too (gcc warns about things clang does not).
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DWALGATE_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$BUILD"
# Integration tests are RUN_SERIAL (they time reconnects); unit and fuzz tests run in parallel.
ctest --output-on-failure -j"$(nproc)" "$@"
