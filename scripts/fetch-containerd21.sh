#!/usr/bin/env bash
# Unpack containerd 2.1.9 (Debian sid) into .cache/containerd-2.1 without installing it.
# The archive URI is read from this machine's apt sources; the system's apt state is untouched.
set -euo pipefail

VERSION="${CONTAINERD21_VERSION:-2.1.9+ds1-5}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="$ROOT/.cache"
PREFIX="$CACHE/containerd-2.1"
APT="$CACHE/apt21"

if [[ -x "$PREFIX/usr/bin/containerd" ]]; then
    "$PREFIX/usr/bin/containerd" --version
    exit 0
fi

uri="$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
    uri="$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)"
fi
if [[ -z "$uri" ]]; then
    echo "fetch-containerd21: no Debian archive URI found in /etc/apt/sources.list.d/*.sources" >&2
    exit 1
fi

mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/debs"
cat >"$APT/sources.list" <<LIST
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri sid main
LIST

opts=(
    -o "Dir::Etc::sourcelist=$APT/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$APT/lists"
    -o "Dir::Cache::Archives=$APT/archives"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "APT::Get::List-Cleanup=0"
    -o "APT::Sandbox::User=root"
)

download() {
    rm -f "$APT"/debs/*.deb
    (cd "$APT/debs" && apt-get "${opts[@]}" -q download "containerd=$VERSION")
}
if ! compgen -G "$APT/lists/*sid*Packages*" >/dev/null; then
    apt-get "${opts[@]}" -q update
fi
if ! download; then
    # The lists may be stale; refresh them once and retry.
    apt-get "${opts[@]}" -q update
    download
fi

rm -rf "$PREFIX.tmp"
mkdir -p "$PREFIX.tmp"
for deb in "$APT"/debs/containerd_*.deb; do
    dpkg -x "$deb" "$PREFIX.tmp"
done
out="$("$PREFIX.tmp/usr/bin/containerd" --version)"
echo "$out"
if [[ "$out" != *" ${VERSION%%+*}"* ]]; then
    echo "fetch-containerd21: expected containerd ${VERSION%%+*}, got: $out" >&2
    exit 1
fi
rm -rf "$PREFIX"
mv "$PREFIX.tmp" "$PREFIX"
rm -f "$APT"/debs/*.deb
