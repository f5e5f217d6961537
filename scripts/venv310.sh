#!/usr/bin/env bash
# Build .venv310: pyenv's CPython 3.10 with pywasmd and both engines (wasmer-python 1.1.0 ships
# wheels only for CPython <= 3.10). Idempotent: reruns only pip, which is fast when up to date.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="${VENV310:-.venv310}"

if [[ ! -x "$VENV/bin/python" ]]; then
    root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
    # The newest 3.10 patch release pyenv has; sort -V so 3.10.13 beats 3.10.9.
    python="$(ls -d "$root"/versions/3.10.* 2>/dev/null | sort -V | tail -n 1)/bin/python"
    if [[ ! -x "$python" ]]; then
        echo "venv310: no CPython 3.10 under $root/versions (try: pyenv install 3.10)" >&2
        exit 1
    fi
    "$python" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q -e '.[dev,wasmer]'
"$VENV/bin/python" -c 'import wasmer, wasmer_compiler_cranelift, wasmtime; print("venv310: ok")'
