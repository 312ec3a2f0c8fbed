#!/usr/bin/env bash
# Load test of the webhook: cached ImageReviews over TLS keep-alive with wrk, next to a
# constant-answer axum+rustls server (examples/baseline.rs, the same TLS/HTTP stack) measured
# in the same run; then the cold-review latency of signed, uncached images against a local
# registry. Loopback only; every loop is bounded in time.
#
# Needs: cargo, Debian's docker-registry, wrk, curl. Usage: scripts/load.sh [seconds]
# wrk cannot present a client certificate, so mTLS is off for this measurement (TLS stays on).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${1:-10}
for b in docker-registry wrk curl; do
  command -v "$b" >/dev/null || { echo "missing $b: sudo apt-get install -y $b" >&2; exit 2; }
done
echo "==> release build (portcullis + baseline)" >&2
cargo build --quiet --release --bin portcullis --example baseline
BIN=$ROOT/target/release/portcullis
BASE=$ROOT/target/release/examples/baseline

WORK=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { local p; while :; do p=$(( 20000 + RANDOM % 40000 )); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }; done; }
wait_http() { for _ in $(seq 1 100); do curl -fsSk -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timeout: $1" >&2; return 1; }

mkdir -p "$WORK/storage"
tar -xzf fixtures/registry-starter/registry-storage.tar.gz -C "$WORK/storage"
REG=127.0.0.1:$(free_port)
sed -e "s|__ROOTDIRECTORY__|$WORK/storage|" -e "s|__ADDR__|$REG|" fixtures/registry-starter/registry-config.yml > "$WORK/registry.yml"
docker-registry serve "$WORK/registry.yml" >/dev/null 2>&1 & PIDS+=($!)
wait_http "http://$REG/v2/"
"$BIN" dev-certs --out "$WORK/tls" >/dev/null

WPORT=$(free_port); MPORT=$(free_port); BPORT=$(free_port)
cat > "$WORK/portcullis.yaml" <<YAML
registries: {"$REG": {insecure: true}}
rules:
  - name: signed
    images: ["$REG/**"]
    signatures: {keys: [$ROOT/fixtures/registry-starter/keys/trusted.pub]}
server:
  listen: 127.0.0.1:$WPORT
  tls: {cert: tls/server.crt, key: tls/server.key}
  metricsListen: 127.0.0.1:$MPORT
cache: {allowTTL: 5m, denyTTL: 30s}
YAML
"$BIN" serve --config "$WORK/portcullis.yaml" >/dev/null 2>&1 & PIDS+=($!)
"$BASE" "127.0.0.1:$BPORT" "$WORK/tls/server.crt" "$WORK/tls/server.key" & PIDS+=($!)
wait_http "http://127.0.0.1:$MPORT/readyz"
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$BPORT") 2>/dev/null && break; sleep 0.1; done

body() { # images...
  local c="" s=""; for i in "$@"; do c+="$s{\"image\":\"$i\"}"; s=","; done
  printf '{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{},"spec":{"containers":[%s],"namespace":"default"},"status":{"allowed":false}}\n' "$c"
}
post() { # port body -> time_total
  curl -sSk -o /dev/null -w '%{time_total}\n' -H 'Content-Type: application/json' --data-binary "$2" "https://127.0.0.1:$1/imagepolicy?timeout=30s"
}

echo "==> cold reviews (each a signed image not yet verified: resolve, .sig, blob; fresh TLS connection)"
cold=()
for img in signed-cosign signed-skopeo signed-v2s2 attested attested-untrusted-builder multiarch; do
  t=$(post "$WPORT" "$(body "$REG/starter/$img:v1")"); cold+=("$t")
  printf '    %-28s %6.1f ms\n' "$img" "$(awk -v t="$t" 'BEGIN{print t*1000}')"
done
tc=$(post "$BPORT" "$(body "$REG/starter/signed-cosign:v1")")
printf '    baseline (constant answer, fresh TLS connection) %6.1f ms\n' "$(awk -v t="$tc" 'BEGIN{print t*1000}')"

CACHED=$(body "$REG/starter/signed-cosign:v1")
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[$CACHED]]
LUA
run() { # name port
  wrk -t2 -c32 -d"${DURATION}s" --latency -s "$WORK/post.lua" "https://127.0.0.1:$2/imagepolicy" > "$WORK/$1.txt"
  local rps p99
  rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/$1.txt")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$1.txt")
  echo "$rps $p99"
}
echo "==> cached reviews, wrk -t2 -c32 -d${DURATION}s over TLS keep-alive"
read -r b_rps b_p99 < <(run baseline "$BPORT")
read -r p_rps p_p99 < <(run portcullis "$WPORT")
grep -q '"allowed":true' <(curl -sSk -H 'Content-Type: application/json' --data-binary "$CACHED" "https://127.0.0.1:$WPORT/imagepolicy") || { echo "the cached review was not allowed" >&2; exit 1; }
printf '    %-34s %10s req/s   p99 %s\n' "baseline (constant answer)" "$b_rps" "$b_p99"
printf '    %-34s %10s req/s   p99 %s\n' "portcullis (cached verdict)" "$p_rps" "$p_p99"
printf '    ratio portcullis/baseline: %.2f\n' "$(awk -v a="$p_rps" -v b="$b_rps" 'BEGIN{print a/b}')"
echo "    non-2xx answers: baseline $(grep -c 'Non-2xx' "$WORK/baseline.txt" || true), portcullis $(grep -c 'Non-2xx' "$WORK/portcullis.txt" || true)"
