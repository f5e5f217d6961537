#!/usr/bin/env bash
# Install everything pywasmd and its tests need. Idempotent: fast when already done.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-.venv}"

log() { printf 'install: %s\n' "$*"; }

# 1. System packages (containerd 1.6, runc, busybox for the runc sanity images; curl and wrk
#    for the network tests and the HTTP benchmark).
pkgs=(containerd runc busybox-static docker-registry curl wrk)
missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    # Keep apt from starting the system containerd service; tests run private instances.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        made_policy=1
    fi
    trap '[[ $made_policy == 1 ]] && rm -f "$policy"' EXIT
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    if [[ $made_policy == 1 ]]; then rm -f "$policy"; fi
    trap - EXIT
else
    log "system packages present: ${pkgs[*]}"
fi

# 2. The venv and the package (editable, with dev tools).
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    if ! python3 -m venv "$VENV"; then
        # Debian's own python3 needs python3-venv for ensurepip.
        rm -rf "$VENV"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
        python3 -m venv "$VENV"
    fi
fi
stamp="$VENV/.pywasmd-install-stamp"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]] \
    || [[ ! -x "$VENV/bin/containerd-shim-pywasm-v1" || ! -x "$VENV/bin/pywasm" ]]; then
    log "pip install -e .[dev]"
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
    touch "$stamp"
else
    log "venv up to date ($VENV)"
fi

# 3. The shim and the CLI on PATH, so any containerd finds the shim. containerd runs it twice
#    per container (start, delete): the shim is a small C front end built here with zig cc (the
#    ziglang dev dependency) that handles the common case itself and execs the generated Python
#    launcher (python -IS, in /usr/local/libexec/pywasm) for the rest; if it cannot be built,
#    the launcher itself is the shim.
rm -f /usr/local/bin/containerd-shim-pywasm-v1
"$VENV/bin/python" -m pywasmd.shim.install --bindir /usr/local/bin
for bin in pywasm; do
    target="$ROOT/$VENV/bin/$bin"
    [[ "$VENV" = /* ]] && target="$VENV/bin/$bin"
    if [[ "$(readlink "/usr/local/bin/$bin" 2>/dev/null || true)" != "$target" ]]; then
        ln -sfn "$target" "/usr/local/bin/$bin"
        log "linked /usr/local/bin/$bin -> $target"
    fi
done

# 4. A Python 3.10 venv for the wasmer engine (wasmer-python has wheels for CPython <= 3.10 only).
"$ROOT/scripts/venv310.sh"

# 5. containerd 2.1 (unpacked from Debian sid into .cache/containerd-2.1).
"$ROOT/scripts/fetch-containerd21.sh"
"$ROOT/scripts/fetch-docker.sh"
log "done"
