#!/usr/bin/env bash
# Unpack Docker 28 (Debian sid's docker.io and docker-cli) and its buildx CLI plugin (sid's
# docker-buildx, usr/libexec/docker/cli-plugins/docker-buildx) into .cache/docker-28 without
# installing them. The archive URI is read from this machine's apt sources at run time; the
# system's apt state is untouched (private sources list, lists and archive directories).
set -euo pipefail

VERSION="${DOCKER28_VERSION:-28.5.2+dfsg4-5}"
BUILDX_VERSION="${DOCKER_BUILDX_VERSION:-0.29.1+ds1-4}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="$ROOT/.cache"
PREFIX="$CACHE/docker-28"
APT="$CACHE/apt-docker28"

BUILDX="usr/libexec/docker/cli-plugins/docker-buildx"
have_docker=0
# docker-proxy (userland proxy, in docker.io) publishes `-p` ports when dockerd runs without
# iptables, as the tests' does; dockerd finds it next to itself on its PATH.
if [[ -x "$PREFIX/usr/sbin/dockerd" && -x "$PREFIX/usr/bin/docker" \
    && -x "$PREFIX/usr/sbin/docker-proxy" ]]; then
    have_docker=1
    if [[ -x "$PREFIX/$BUILDX" ]]; then
        "$PREFIX/usr/sbin/dockerd" --version
        "$PREFIX/$BUILDX" version
        exit 0
    fi
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
# An existing Docker unpack only gets the buildx plugin added.
download() {
    rm -f "$APT"/debs/*.deb
    (cd "$APT/debs" && apt-get "${opts[@]}" -q download "docker-buildx=$BUILDX_VERSION")
    if ((have_docker)); then
        return 0
    fi
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

if ((have_docker)); then
    dpkg -x "$APT"/debs/docker-buildx_*.deb "$PREFIX"
    "$PREFIX/$BUILDX" version
    rm -f "$APT"/debs/*.deb
    exit 0
fi

rm -rf "$PREFIX.tmp"
mkdir -p "$PREFIX.tmp"
for deb in "$APT"/debs/*.deb; do
    dpkg -x "$deb" "$PREFIX.tmp"
done
for bin in usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/docker "$BUILDX"; do
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
"$PREFIX.tmp/$BUILDX" version
rm -rf "$PREFIX"
mv "$PREFIX.tmp" "$PREFIX"
rm -f "$APT"/debs/*.deb
