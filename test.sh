#!/usr/bin/env bash
# README command 2: lint, type-check and run the whole test suite (unit + integration), offline.
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh --no-demo
# The HTML report is checked in a real browser: Debian's chromium (installed once).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "test.sh: chromium is missing; install Debian's chromium package (the report test needs it)" >&2
  fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 INSPECT_LOG_DIR="${INSPECT_LOG_DIR:-$PWD/logs/test}"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
.venv/bin/pytest -q "$@"
