#!/usr/bin/env bash
# One entry point for people and CI:  bash scripts/dev.sh {setup|repro|test} [extra args]
#   setup  create .venv (Python 3.11) and install diffpose with its test dependencies
#   repro  setup, then `dvc repro` the embedded default pipeline (synthetic demo benchmark)
#   test   setup, then run the test suite (extra args go to pytest)
# Environment: PYTHON (interpreter for the venv, default python3.11), VENV (default .venv),
# DIFFPOSE_TORCH (the torch requirement installed when the venv has none; default: the CPU build
# torch==2.13.0 where it is available; a GPU user sets e.g. DIFFPOSE_TORCH=torch to get CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
TORCH_SPEC=${DIFFPOSE_TORCH:-torch==2.13.0}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        command -v "$PYTHON" >/dev/null || { echo "dev.sh: $PYTHON not found (set PYTHON=...)" >&2; exit 1; }
        "$PYTHON" -m venv "$VENV"
    fi
    local py="$VENV/bin/python"
    local stamp="$VENV/.diffpose-installed"
    local want
    want=$(cat pyproject.toml scripts/dev.sh | "$py" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    "$py" -m pip install --quiet --upgrade pip
    if ! "$py" -c 'import torch' 2>/dev/null; then
        "$py" -m pip install --quiet "$TORCH_SPEC" || "$py" -m pip install --quiet torch
    fi
    "$py" -m pip install --quiet -e ".[dev]"
    echo "$want" > "$stamp"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) setup ;;
    repro)
        setup
        export PATH="$PWD/$VENV/bin:$PATH"
        dvc repro "$@"
        ;;
    test)
        setup
        export PATH="$PWD/$VENV/bin:$PATH"
        python -m pytest "$@"
        ;;
    *)
        echo "usage: bash scripts/dev.sh {setup|repro|test} [args]" >&2
        exit 2
        ;;
esac
