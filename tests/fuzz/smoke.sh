#!/bin/sh
# Smoke run of one libFuzzer target: the checked-in seed corpus plus 15 s of fresh inputs.
# New inputs go to a scratch directory in the build tree, never into the source tree.
# usage: smoke.sh FUZZER WORKDIR SEED_CORPUS_DIR
set -eu
fuzzer=$1 work=$2 seeds=$3
rm -rf "$work" && mkdir -p "$work/corpus" "$seeds"
exec "$fuzzer" -max_total_time="${WALGATE_FUZZ_SECONDS:-15}" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$work/" -print_final_stats=1 "$work/corpus" "$seeds"
