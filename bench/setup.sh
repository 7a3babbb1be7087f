#!/usr/bin/env bash
# Bench-only dependencies (nnsight, transformer-lens, llama-cpp-python) in their own venv, .venv-bench.
#
# .venv-bench sees everything in the project's .venv (torch, transformers, inspect_ai, safelab)
# through a .pth file, so torch and transformers are never reinstalled or changed, and the bench
# packages (and their many dependencies: pandas, datasets, wandb...) stay out of .venv.
#   bash setup.sh && bash bench/setup.sh
#   HF_HUB_OFFLINE=1 .venv-bench/bin/python bench/capture.py
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || { echo "run 'bash setup.sh --no-demo' first (creates .venv)" >&2; exit 1; }
[ -x .venv-bench/bin/python ] || .venv/bin/python -m venv .venv-bench
main_site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
bench_site=$(.venv-bench/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# addsitedir (not a bare path) so the .pth files of .venv (safelab's editable install) apply too.
echo "import site; site.addsitedir('$main_site')" > "$bench_site/safelab-main-venv.pth"
# torch and transformers are pinned to what .venv has, so pip can only add packages around them.
torch_v=$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')
tf_v=$(.venv/bin/python -c 'import transformers; print(transformers.__version__)')
.venv-bench/bin/pip install -q "torch==$torch_v" "transformers==$tf_v" nnsight transformer-lens
# llama-cpp-python (bench/generate.py's peer) builds llama.cpp from its sdist with cmake and a C++
# compiler (Debian: build-essential cmake); one or two jobs, niced, so a shared machine stays usable.
if ! .venv-bench/bin/python -c 'import llama_cpp' 2>/dev/null; then
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" nice -n 10 \
    .venv-bench/bin/pip install -q --no-binary llama-cpp-python llama-cpp-python
fi
.venv-bench/bin/python -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__)'
.venv-bench/bin/python -c 'import torch, transformers, nnsight, transformer_lens; print("bench venv ok: torch", torch.__version__, "transformers", transformers.__version__, "nnsight", nnsight.__version__)'
