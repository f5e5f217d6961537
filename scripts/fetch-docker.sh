#!/usr/bin/env bash
# Unpack Docker 28 (Debian sid's docker.io and docker-cli) into .cache/docker-28 without
# installing it. The archive URI is read from this machine's apt sources at run time; the
# system's apt state is untouched (private sources list, lists and archive directories).
set -euo pipefail

VERSION="${DOCKER28_VERSION:-28.5.2+dfsg4-5}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="$ROOT/.cache"
PREFIX="$CACHE/docker-28"
APT="$CACHE/apt-docker28"

if [[ -x "$PREFIX/usr/sbin/dockerd" && -x "$PREFIX/usr/bin/docker" ]]; then
    "$PREFIX/usr/sbin/dockerd" --version
    exit 0
fi

uri="$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
    uri="$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)"
fi
if [[ -z "$uri" ]]; then
    echo "fetch-docker: no Debian archive URI found in /etc/apt/sources.list.d/*.sources" >&2
    exit 1
fi

mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/debs"
cat >"$APT/sources.list" <<LIST
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

# docker.io carries dockerd; the client is in docker-cli (same source version) when split.
download() {
    rm -f "$APT"/debs/*.deb
    (cd "$APT/debs" && apt-get "${opts[@]}" -q download "docker.io=$VERSION")
    local cli
    cli="$(apt-cache "${opts[@]}" show "docker-cli=$VERSION" 2>/dev/null | head -n1 || true)"
    if [[ -n "$cli" ]]; then
        (cd "$APT/debs" && apt-get "${opts[@]}" -q download "docker-cli=$VERSION")
    fi
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
for deb in "$APT"/debs/*.deb; do
    dpkg -x "$deb" "$PREFIX.tmp"
done
for bin in usr/sbin/dockerd usr/bin/docker; do
    if [[ ! -x "$PREFIX.tmp/$bin" ]]; then
        echo "fetch-docker: $bin is missing from the unpacked packages" >&2
        exit 1
    fi
done
out="$("$PREFIX.tmp/usr/sbin/dockerd" --version)"
echo "$out"
if [[ "$out" != *" ${VERSION%%+*}"* ]]; then
    echo "fetch-docker: expected dockerd ${VERSION%%+*}, got: $out" >&2
    exit 1
fi
rm -rf "$PREFIX"
mv "$PREFIX.tmp" "$PREFIX"
rm -f "$APT"/debs/*.deb
