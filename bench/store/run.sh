#!/usr/bin/env bash
# Benchmark (not a test) of crates/store: acknowledged writes/s, watch delivery latency and
# memory for idle watchers, for the embedded back-end and for etcd (a real etcd 3.4 started on
# free loopback ports by the program). Each back-end runs in its own process so that memory
# figures start from a fresh heap. Prints Markdown; docs/store.md records a run.
#
# Usage: bench/store/run.sh [--writes N] [--watchers N]   (defaults 4000 and 10000).
# Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."

scripts/deps test >/dev/null   # etcd-server, protoc
cargo build --release --locked -q -p store --example store-bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/store-bench"

echo "# store benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "- disk under the temp dir: $(df -h "${TMPDIR:-/tmp}" | awk 'NR==2 {print $1}')"
echo "- etcd: $(etcd --version | head -1)"
echo
for backend in embedded etcd; do
  "$bin" "$backend" "$@"
done
