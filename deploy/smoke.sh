#!/usr/bin/env bash
# Smoke test of the container (needs a Docker engine; not part of `make test`):
# start the image, wait for /healthz, send one signed delivery, expect 202.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-obsv}
secret=smoke-secret
port=${PORT:-18000}
name=obsv-smoke-$$
docker run -d --rm --name "$name" -p "127.0.0.1:$port:8000" \
  -e OBSV_SENTRY_CLIENT_SECRET="$secret" "$image" >/dev/null
trap 'docker stop "$name" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/healthz"
echo
.venv/bin/obsv send-test --url "http://127.0.0.1:$port" --secret "$secret"
echo "smoke test passed"
