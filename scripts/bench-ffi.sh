#!/usr/bin/env bash
# Benchmarks the C ABI as a C program sees it: builds the release library,
# installs it into a temporary prefix, compiles ffi/bench/ilm_bench.c against it
# with pkg-config, and runs it on 3 and 8 in-process zero-latency simulated drives
# (IDM_SIM=mem:N): ilm.h lock+unlock latency, and idm_engine.h throughput with
# BATCH lock operations in flight.
#
#   scripts/bench-ffi.sh [ITERATIONS [BATCH]]
set -euo pipefail
cd "$(dirname "$0")/.."
iters=${1:-5000}
batch=${2:-3000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scripts/install-ffi.sh "$work/prefix" >/dev/null
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
# shellcheck disable=SC2046
cc -O2 -o "$work/ilm_bench" ffi/bench/ilm_bench.c $(pkg-config --cflags --libs libseagate_ilm) \
  -Wl,-rpath,"$work/prefix/lib"
for n in 3 8; do
  IDM_SIM=mem:$n "$work/ilm_bench" "$n" "$iters" "$batch"
done
