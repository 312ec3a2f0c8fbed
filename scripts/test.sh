#!/usr/bin/env bash
# The whole test suite: unit tests, a real docker-registry (CNCF distribution 2.8) with
# signatures made by cosign 2.5, skopeo 1.18 and Python `cryptography`, the hostile registry,
# the webhook over mTLS, and the CLI. Installs Debian's docker-registry first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker-registry >/dev/null 2>&1 && [ ! -x /usr/bin/docker-registry ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
  else
    echo "the integration tests need Debian's docker-registry: sudo apt-get install -y docker-registry" >&2
    exit 2
  fi
fi
exec cargo test --locked --all-features "$@"
