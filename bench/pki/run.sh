#!/usr/bin/env bash
# Benchmark (not a test): `kube-aggregator pki` (release build) against cfssl 1.2 for the seed's
# front-proxy flow — `gencert -initca | cfssljson -bare` for the CA, then `gencert -ca … -profile
# kubernetes-front-proxy | cfssljson -bare` for the client, RSA 2048 as in the guides — and
# prints the ratio of mean wall times (cfssl / ours; above 1 means we are faster).
#
# Usage: bench/pki/run.sh [RUNS]   (default 30; uses hyperfine, installing it with apt-get when
# missing, or falls back to a timed loop). Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-30}"

scripts/deps test >/dev/null   # cfssl, cfssljson, openssl
if ! command -v hyperfine >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "bench/pki: installing hyperfine" >&2
  { $sudo apt-get install -y -qq hyperfine >/dev/null 2>&1 \
      || { $sudo apt-get update -qq && $sudo apt-get install -y -qq hyperfine >/dev/null 2>&1; }; } \
    || echo "bench/pki: hyperfine unavailable, using a timed loop" >&2
fi

cargo build --release --locked -q -p kube-aggregator
ka="$(realpath "${CARGO_TARGET_DIR:-target}/release/kube-aggregator")"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/front-proxy-ca-csr.json" <<'EOF'
{"CN":"Kubernetes-front-proxy CA","key":{"algo":"rsa","size":2048},
 "names":[{"C":"CN","ST":"BeiJing","L":"BeiJing","O":"k8s","OU":"System"}],"ca":{"expiry":"876000h"}}
EOF
cat >"$work/ca-config.json" <<'EOF'
{"signing":{"default":{"expiry":"87600h"},"profiles":{"kubernetes-front-proxy":
 {"usages":["signing","key encipherment","client auth"],"expiry":"876000h"}}}}
EOF
cat >"$work/front-proxy-client-csr.json" <<'EOF'
{"CN":"front-proxy-client","hosts":[],"key":{"algo":"rsa","size":2048}}
EOF

# The same two pipelines for both tools; only the program names differ.
flow() { # gencert-cmd cfssljson-cmd
  printf '%s' "cd $work && $1 gencert -initca front-proxy-ca-csr.json 2>/dev/null | $2 -bare front-proxy-ca \
&& $1 gencert -ca=front-proxy-ca.pem -ca-key=front-proxy-ca-key.pem -config=ca-config.json \
-profile=kubernetes-front-proxy front-proxy-client-csr.json 2>/dev/null | $2 -bare front-proxy-client"
}
ours="$(flow "$ka pki" "$ka pki cfssljson")"
theirs="$(flow cfssl cfssljson)"

# Sanity: both flows produce a client certificate that verifies.
for cmd in "$ours" "$theirs"; do
  rm -f "$work"/*.pem "$work"/*.csr
  bash -c "$cmd"
  openssl verify -CAfile "$work/front-proxy-ca.pem" "$work/front-proxy-client.pem" >/dev/null
done

if command -v hyperfine >/dev/null 2>&1; then
  hyperfine --style basic --warmup 3 --runs "$runs" --export-json "$work/result.json" \
    -n "kube-aggregator pki" "$ours" -n "cfssl + cfssljson" "$theirs"
  ours_mean="$(jq '.results[0].mean' "$work/result.json")"
  theirs_mean="$(jq '.results[1].mean' "$work/result.json")"
else
  time_loop() { # command -> mean seconds
    local start end
    start="$(date +%s%N)"
    for _ in $(seq "$runs"); do bash -c "$1"; done
    end="$(date +%s%N)"
    awk -v s="$start" -v e="$end" -v n="$runs" 'BEGIN { printf "%.6f", (e - s) / n / 1e9 }'
  }
  ours_mean="$(time_loop "$ours")"
  theirs_mean="$(time_loop "$theirs")"
fi

awk -v o="$ours_mean" -v t="$theirs_mean" -v n="$runs" 'BEGIN {
  printf "pki CA + client flow, %d runs: kube-aggregator pki %.1f ms, cfssl %.1f ms, ratio cfssl/ours = %.2f\n",
    n, o * 1000, t * 1000, t / o
}'
