#!/usr/bin/env bash
# Sets up everything from scratch and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# The tiny test models gain nothing from threads; on 2 cores OpenMP spinning only slows them.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest "$@"
