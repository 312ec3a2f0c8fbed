#!/usr/bin/env bash
# Portcullis end to end: a real registry holding images signed by cosign 2.5 and skopeo 1.18
# (fixtures/registry-starter), `portcullis serve` behind mTLS, and ImageReviews posted exactly
# as kube-apiserver posts them (client certificate, same body) for signed, unsigned and mixed
# pods; then the same again, answered from the verdict cache; then the CLI.
#
# Needs: cargo, and Debian's docker-registry and curl (installed here when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need docker-registry || [ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
need curl || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing ${missing[*]} (Debian packages)"
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing: ${missing[*]} -- run: sudo apt-get install -y ${missing[*]}" >&2
    exit 2
  fi
fi

echo "==> building portcullis"
cargo build --quiet --bin portcullis
BIN=$ROOT/target/debug/portcullis

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 40000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

wait_http() { # url [curl args...]
  local url=$1; shift
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$@" "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $url" >&2; return 1
}

echo "==> starting docker-registry with the starter fixtures (real cosign 2.5 / skopeo 1.18 signatures)"
mkdir -p "$WORK/storage"
tar -xzf fixtures/registry-starter/registry-storage.tar.gz -C "$WORK/storage"
RPORT=$(free_port); REG=127.0.0.1:$RPORT
sed -e "s|__ROOTDIRECTORY__|$WORK/storage|" -e "s|__ADDR__|$REG|" \
  fixtures/registry-starter/registry-config.yml > "$WORK/registry.yml"
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 & PIDS+=($!)
wait_http "http://$REG/v2/"
echo "    registry at $REG"

echo "==> generating a test CA, the webhook's server certificate and kube-apiserver's client certificate"
"$BIN" dev-certs --out "$WORK/tls" --san localhost --san 127.0.0.1 >/dev/null

WPORT=$(free_port); MPORT=$(free_port)
cat > "$WORK/portcullis.yaml" <<EOF
registries:
  "$REG": {insecure: true}
rules:
  - name: starter-attested          # signed, with SLSA provenance from our builder and an SBOM
    images: ["$REG/starter/attested*"]
    signatures: {keys: [$ROOT/fixtures/registry-starter/keys/trusted.pub]}
    attestations:
      - name: provenance
        predicateType: https://slsa.dev/provenance/v1
        authorities: [{key: $ROOT/fixtures/registry-starter/keys/trusted.pub}]
        condition: 'predicate.runDetails.builder.id == "https://ci.starter.example/builder@v1"'
      - {name: sbom, predicateType: https://cyclonedx.org/bom, authorities: [{key: $ROOT/fixtures/registry-starter/keys/trusted.pub}]}
  - name: starter-signed
    images: ["$REG/starter/**"]
    signatures: {keys: [$ROOT/fixtures/registry-starter/keys/trusted.pub]}
  - {name: kubernetes-system, images: ["registry.k8s.io/**"], action: allow}
defaultAction: deny
server:
  listen: 127.0.0.1:$WPORT
  path: /imagepolicy
  tls: {cert: tls/server.crt, key: tls/server.key, clientCA: tls/ca.crt}
  metricsListen: 127.0.0.1:$MPORT
cache: {allowTTL: 5m, denyTTL: 30s}
EOF
echo "==> portcullis serve (mTLS: only kube-apiserver's client certificate is accepted)"
"$BIN" serve --config "$WORK/portcullis.yaml" >"$WORK/portcullis.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$MPORT/readyz"

review() { # title namespace images...
  local title=$1 ns=$2; shift 2
  local containers="" sep=""
  for i in "$@"; do containers+="$sep{\"image\":\"$i\"}"; sep=","; done
  local body
  body="{\"kind\":\"ImageReview\",\"apiVersion\":\"imagepolicy.k8s.io/v1alpha1\",\"metadata\":{},\"spec\":{\"containers\":[$containers],\"annotations\":{\"x.image-policy.k8s.io/k\":\"v\"},\"namespace\":\"$ns\"},\"status\":{\"allowed\":false}}"
  local answer
  answer=$(printf '%s\n' "$body" | curl -sS --http2 --cacert "$WORK/tls/ca.crt" \
    --cert "$WORK/tls/apiserver-client.crt" --key "$WORK/tls/apiserver-client.key" \
    -H 'Content-Type: application/json' --data-binary @- \
    "https://127.0.0.1:$WPORT/imagepolicy?timeout=30s")
  echo
  echo "--- $title"
  for i in "$@"; do echo "    image: $i"; done
  if [[ $answer == *'"allowed":true'* ]]; then echo "    => ALLOWED"; else echo "    => DENIED"; fi
  local reason
  reason=$(sed -n 's/.*"reason":"\(\([^"\\]\|\\.\)*\)".*/\1/p' <<<"$answer")
  [ -n "$reason" ] && echo "    reason: ${reason//\\\"/\"}"
  sed -n 's/.*"auditAnnotations":{\(.*\)}}}/\1/p' <<<"$answer" | tr ',' '\n' | sed 's/^/    audit: /'
}

pods() {
  review "pod with a cosign-signed image" default "$REG/starter/signed-cosign:v1"
  review "pod with a skopeo-signed image and a Docker schema-2 image" default "$REG/starter/signed-skopeo:v1" "$REG/starter/signed-v2s2:v1"
  review "pod with an unsigned image" default "$REG/starter/unsigned:v1"
  review "pod signed by a key nobody trusts" default "$REG/starter/signed-untrusted:v1"
  review "mixed pod: signed app, unsigned sidecar" default "$REG/starter/signed-cosign:v1" "$REG/starter/unsigned:v1"
  review "image from a registry no rule covers" default "docker.io/library/nginx:1.27"
  review "attested image: SLSA provenance from our builder + CycloneDX SBOM" default "$REG/starter/attested:v1"
  review "attested image built by an untrusted builder (CEL condition)" default "$REG/starter/attested-untrusted-builder:v1"
}

echo
echo "==================== ImageReviews, cold ===================="
pods
echo
echo "==================== The same again: answered from the verdict cache ===================="
pods

echo
echo "==> a client without kube-apiserver's certificate is refused at the TLS handshake:"
if curl -sS --cacert "$WORK/tls/ca.crt" -d '{}' "https://127.0.0.1:$WPORT/imagepolicy" >/dev/null 2>"$WORK/curl.err"; then
  echo "    UNEXPECTED: accepted"; exit 1
else
  echo "    refused: $(head -c 120 "$WORK/curl.err")"
fi

echo
echo "==> metrics (from http://127.0.0.1:$MPORT/metrics):"
curl -fsS "http://127.0.0.1:$MPORT/metrics" | grep -E '^portcullis_(reviews|verdict_cache_lookups|image_verdicts)_total' | sed 's/^/    /'

echo
echo "==> the same engine as a CLI, for CI: portcullis verify (exit 0 all allowed, 1 any denied)"
set +e
"$BIN" verify --config "$WORK/portcullis.yaml" \
  "$REG/starter/signed-cosign:v1" "$REG/starter/unsigned:v1" "$REG/starter/multiarch:v1" | sed 's/^/    /'
echo "    exit code: ${PIPESTATUS[0]}"
set -e
echo
echo "Done. (logs: the webhook logs one line per review; run with RUST_LOG=debug for registry requests)"
