#!/usr/bin/env bash
# Run a Wasm container through a real containerd with the pywasm shim.
#
# Uses the containerd answering at /run/containerd/containerd.sock when there is one (the
# image is imported into it and the container removed afterwards). Otherwise it starts a
# private containerd 1.6 (root under a temporary directory, state under /run), runs the demo
# and stops it again: the demo leaves nothing running.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
PYWASM="$ROOT/.venv/bin/pywasm"
SYSTEM_SOCK=/run/containerd/containerd.sock
IMAGE=docker.io/library/hello:latest
export PATH="/usr/local/bin:$ROOT/.venv/bin:$PATH"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "build the guest integration/guests/hello.c -> .cache/guests/hello.wasm"
"$PY" -c 'from integration import guests; print(guests.build("hello"))'

work="$(mktemp -d /tmp/pywasm-demo.XXXXXX)"
private_pid=""
state=""
cleanup() {
    if [[ -n "$private_pid" ]]; then
        ctr -a "$sock" -n default tasks kill -s SIGKILL h1 >/dev/null 2>&1 || true
        ctr -a "$sock" -n default tasks rm -f h1 >/dev/null 2>&1 || true
        ctr -a "$sock" -n default containers rm h1 >/dev/null 2>&1 || true
        kill "$private_pid" 2>/dev/null || true
        wait "$private_pid" 2>/dev/null || true
        grep -o " $state[^ ]*\| $work[^ ]*" /proc/self/mountinfo | sort -r \
            | xargs -r -n1 umount -l 2>/dev/null || true
        rm -rf "$state"
        # The shim's fork-server (zygote) outlives containers by design; the demo leaves none.
        zsock="$("$ROOT/.venv/bin/python" -c 'from pywasmd.shim.zygote import socket_path; print(socket_path())')"
        for zpid in $(ss -xlpn 2>/dev/null | grep -F "$zsock" | grep -o 'pid=[0-9]*' | cut -d= -f2); do
            kill "$zpid" 2>/dev/null || true
        done
        echo "stopped the private containerd (pid $private_pid)"
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if ctr -a "$SYSTEM_SOCK" version >/dev/null 2>&1; then
    sock="$SYSTEM_SOCK"
    say "using the containerd answering at $sock"
else
    state="/run/pywasm-demo-$$"
    sock="$state/containerd.sock"
    mkdir -p "$work/root" "$state"
    cat >"$work/config.toml" <<EOF
version = 2
root = "$work/root"
state = "$state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
EOF
    say "no containerd at $SYSTEM_SOCK: starting a private one at $sock (log: $work/containerd.log)"
    containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
    private_pid=$!
    for _ in $(seq 100); do
        ctr -a "$sock" version >/dev/null 2>&1 && break
        sleep 0.1
    done
    ctr -a "$sock" version >/dev/null || { tail -20 "$work/containerd.log"; exit 1; }
fi
ctr=(ctr -a "$sock" -n default)

say "pywasm build .cache/guests/hello.wasm -t $IMAGE -o $work/hello.tar"
"$PYWASM" build .cache/guests/hello.wasm -t "$IMAGE" -o "$work/hello.tar"

say "ctr images import --platform wasi/wasm $work/hello.tar"
"${ctr[@]}" images import --platform wasi/wasm "$work/hello.tar"

# `ctr run IMAGE ID ARGS...` replaces the image's entrypoint with ARGS (unlike `docker run`,
# which appends them), so the module path comes first: the image's entrypoint.
module="$("$PY" -c 'import sys; from integration.images import archive_entrypoint as e
print(e(__import__("pathlib").Path(sys.argv[1]))[0])' "$work/hello.tar")"
say "ctr run --rm --runtime io.containerd.pywasm.v1 --platform wasi/wasm $IMAGE h1 $module arg1 arg2"
set +e
"${ctr[@]}" run --rm --runtime io.containerd.pywasm.v1 --platform wasi/wasm "$IMAGE" h1 \
    "$module" arg1 arg2
code=$?
set -e
echo "exit code: $code"
if [[ $code -ne 0 && -n "$private_pid" ]]; then
    echo "--- containerd log (tail) ---"
    tail -30 "$work/containerd.log"
fi
exit "$code"
