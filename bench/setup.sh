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
# compiler (Debian: build-essential cmake); one job by default, niced, so a shared machine stays
# usable (~15 min on 2 cores).
# Portable build, pinned: llama.cpp's default build is -march=native, which on a CPU with AMX
# (Intel Sapphire Rapids and later) compiles its AMX matmul and repacks the default model's Q4_1
# weights into AMX tiles; that path segfaulted in the first Llama()/create_completion (h22d's
# session; the same crash upstream: ggml-org/llama.cpp#20824, the fix ggml-org/llama.cpp#26954
# still open in the llama.cpp that 0.3.36 vendors). GGML_NATIVE=OFF builds the AVX2/FMA/F16C
# kernels only (every x86 machine this project runs on has them; no AVX512, which AMD Zen 3
# lacks), so one build runs everywhere. LLAVA_BUILD=OFF: the multimodal library is not used.
LLAMA_CPP_VERSION=0.3.36
LLAMA_CPP_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF"
# An installed build is kept only if it is this version and has no AMX kernels (a native build
# from before this fix is rebuilt).
llama_ok='import sys, llama_cpp as l; sys.exit(l.__version__ != sys.argv[1] or b"AMX_INT8 = 1" in l.llama_print_system_info())'
# --no-cache-dir: pip caches the wheel it built from the sdist and would reuse it whatever
# CMAKE_ARGS say.
if ! .venv-bench/bin/python -c "$llama_ok" "$LLAMA_CPP_VERSION" 2>/dev/null; then
  .venv-bench/bin/pip uninstall -q -y llama-cpp-python 2>/dev/null || true
  CMAKE_ARGS="$LLAMA_CPP_CMAKE_ARGS ${CMAKE_ARGS:-}" \
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-1}" nice -n 19 \
    .venv-bench/bin/pip install -q --no-cache-dir --no-binary llama-cpp-python \
    "llama-cpp-python==$LLAMA_CPP_VERSION"
fi
# Smoke test: load the default model's GGUF and generate a few greedy tokens (where the old
# build crashed), in its own process so a crash says so here rather than in the bench.
gguf=$(.venv/bin/python -c 'from safelab.models.loading import default_gguf_path; print(default_gguf_path())')
.venv-bench/bin/python -X faulthandler -c '
import sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, n_threads=1, verbose=False)
out = llm.create_completion("The capital of France is", max_tokens=4, temperature=0.0)
print("llama-cpp-python", llama_cpp.__version__, "ok:", repr(out["choices"][0]["text"]))
print(llama_cpp.llama_print_system_info().decode())' "$gguf"
.venv-bench/bin/python -c 'import torch, transformers, nnsight, transformer_lens; print("bench venv ok: torch", torch.__version__, "transformers", transformers.__version__, "nnsight", nnsight.__version__)'
