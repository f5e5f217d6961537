#!/usr/bin/env bash
# Generate pywasmd/api from proto/.
#
#   scripts/gen-proto.sh           regenerate pywasmd/api in place
#   scripts/gen-proto.sh --check   exit 1 when pywasmd/api differs from what proto/ generates
#
# Sources live under proto/pywasmd/api/ so that `protoc -I proto` emits imports of the form
# `from pywasmd.api... import ..._pb2`, i.e. the generated code needs no sys.path tricks.
set -euo pipefail

cd "$(dirname "$0")/.."
PY="${VENV:-.venv}/bin/python"
API=pywasmd/api

usage() {
    echo "usage: $0 [--check]" >&2
    exit 2
}

check=0
case "${1:-}" in
    "") ;;
    --check) check=1 ;;
    *) usage ;;
esac

# generate OUTDIR: write the generated tree under OUTDIR/pywasmd/api.
generate() {
    local out=$1
    local -a protos services
    # Sorted, so the file order handed to protoc (and hence its output) never depends on the
    # directory listing order of the filesystem.
    mapfile -t protos < <(cd proto && find pywasmd/api -name '*.proto' | LC_ALL=C sort)
    if ((${#protos[@]} == 0)); then
        echo "gen-proto: no .proto files under proto/pywasmd/api" >&2
        exit 1
    fi
    "$PY" -m grpc_tools.protoc -I proto --python_out="$out" --pyi_out="$out" "${protos[@]}"
    # gRPC stubs only where a service is declared: for the other files grpc_tools would emit
    # modules that contain nothing but an import of grpc and a version check.
    mapfile -t services < <(cd proto && grep -l '^service ' "${protos[@]}" | LC_ALL=C sort)
    if ((${#services[@]} > 0)); then
        "$PY" -m grpc_tools.protoc -I proto --grpc_python_out="$out" "${services[@]}"
    fi
    local dir
    while IFS= read -r dir; do
        [[ -e "$dir/__init__.py" ]] || : >"$dir/__init__.py"
    done < <(find "$out/$API" -type d)
}

if ((check)); then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    generate "$tmp"
    if ! diff -r -x __pycache__ "$tmp/$API" "$API"; then
        echo "generated code is stale: run make proto" >&2
        exit 1
    fi
    exit 0
fi

find "$API" \( -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' \) -delete
generate .
echo "gen-proto: regenerated $API"
