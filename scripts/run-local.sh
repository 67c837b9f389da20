#!/usr/bin/env bash
# Runs the whole path on this machine without Docker:
#   demo: a fake LLM upstream, no API key needed
#   run:  the real upstream of .env (UPSTREAM_BASE_URL, UPSTREAM_API_KEY)
# Envoy listens on :8000 and holds the provider key, the sidecar on
# 127.0.0.1:50051 (admin :9090). The budget
# store is Redis at REDIS_URL when it answers, else an in-memory one.
set -euo pipefail
mode="${1:-demo}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mkdir -p .tmp
envoy_bin="$(scripts/envoy-path.sh)"

export BUDGET_STORE="${BUDGET_STORE:-auto}"
export EXTPROC_ADDR="${EXTPROC_ADDR:-127.0.0.1:50051}"
export ENVOY_LISTEN_ADDR="${ENVOY_LISTEN_ADDR:-0.0.0.0:8000}"
export ENVOY_ADMIN_ADDR="${ENVOY_ADMIN_ADDR:-127.0.0.1:9901}"
export LISTEN_ADDR="${LISTEN_ADDR:-127.0.0.1:50051}"
export ADMIN_ADDR="${ADMIN_ADDR:-127.0.0.1:9090}"
if [ "$mode" = demo ]; then
  # The demo ignores .env: it must work on a fresh machine with no key.
  export ENV_FILE=/dev/null
  export UPSTREAM_BASE_URL="http://127.0.0.1:18080"
  export UPSTREAM_PROVIDER=openai
  export UPSTREAM_API_KEY="demo-upstream-key"
  export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
else
  [ -f .env ] || { echo "no .env: cp .env.example .env and set UPSTREAM_API_KEY" >&2; exit 1; }
  # Compose's Redis host name means nothing here; use a local Redis if any.
  if grep -q '^REDIS_URL=redis://redis:' .env 2>/dev/null || ! grep -q '^REDIS_URL=' .env; then
    export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
  fi
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if [ "$mode" = demo ]; then
  bin/fakellm -addr 127.0.0.1:18080 & pids+=($!)
fi
bin/aifirewall envoy-config -o .tmp/envoy.yaml
bin/aifirewall & pids+=($!)
for _ in $(seq 1 100); do curl -fsS "http://$ADMIN_ADDR/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
# Envoy reads the provider key (UPSTREAM_API_KEY, a providers file's
# api_key_env variables) from its environment: give it .env's.
(if [ "$mode" = run ]; then set -a; . ./.env; set +a; fi
 exec "$envoy_bin" -c .tmp/envoy.yaml --disable-hot-restart -l warning) & pids+=($!)
for _ in $(seq 1 100); do curl -fsS "http://$ENVOY_ADMIN_ADDR/ready" >/dev/null 2>&1 && break; sleep 0.1; done
cat <<MSG

AI Firewall is up ($mode): Envoy on http://localhost:8000, sidecar admin on http://$ADMIN_ADDR
Try:
  curl -N -X POST http://localhost:8000/v1/chat/completions \\
    -H "Authorization: Bearer ${INTERNAL_API_KEY:-changeme-internal-key}" \\
    -H "Content-Type: application/json" \\
    -d '{"model": "openai/gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "Hello!"}]}'
Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
