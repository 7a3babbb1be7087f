#!/usr/bin/env bash
# README command 2: lint, type-check and run the whole test suite (unit + integration), offline.
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh --no-demo
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 INSPECT_LOG_DIR="${INSPECT_LOG_DIR:-$PWD/logs/test}"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
.venv/bin/pytest -q "$@"
