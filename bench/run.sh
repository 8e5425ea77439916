#!/usr/bin/env bash
# kube-aggregator benchmark: builds the release binaries, starts the benchmark backend, nginx (the
# peer an operator would put in front instead), proxy::Engine alone and `kube-aggregator serve`
# on loopback, and drives them with wrk (HTTP/1.1) and h2load (HTTP/2), alternating; then
# aggregated /apis with 1,000 APIServices, 10k idle watches and a 1,000-watcher fan-out.
# Writes bench/results/<UTC stamp>.json and .md; docs/benchmarks.md explains the method.
#
# Usage: bench/run.sh [--quick] [bench-run flags…]   (bench/README.md lists them)
#        bench/run.sh --with-pki --with-store …       also runs bench/pki and bench/store
# Honours CARGO_TARGET_DIR. Takes ~12 minutes in full (--quick: ~2 minutes) on 2 cores, after
# the build. Not a test: it prints numbers and fails only when something cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

extra=()
with_pki=0
with_store=0
for a in "$@"; do
  case "$a" in
    --with-pki) with_pki=1 ;;
    --with-store) with_store=1 ;;
    *) extra+=("$a") ;;
  esac
done

scripts/deps bench >/dev/null   # nginx-light, wrk, nghttp2-client (h2load), linux-perf
cargo build --release --locked -q -p kube-aggregator -p bench-harness
bin="$(realpath "${CARGO_TARGET_DIR:-target}/release")"

# 10k watches need 10k descriptors in the driver and in the server (both inherit this limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$bin/bench-run" --bin-dir "$bin" --out-dir bench/results ${extra[@]+"${extra[@]}"}

if [ "$with_pki" = 1 ]; then bench/pki/run.sh; fi
if [ "$with_store" = 1 ]; then bench/store/run.sh; fi
