"""Talking to an OCI registry through oras-py, with our errors instead of its exceptions.

oras gives us the HTTP session, docker-config credentials (`~/.docker/config.json`, credential
helpers) and the token/basic auth dance. We do not use its push/pull: they assume files on
disk and always send manifests as image manifests, while we push indexes and in-memory blobs.
Its request wrapper retries every failure five times with back-off (minutes in total), which
would turn "registry down" into a long hang; we call the request function without it and say
what is wrong at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import requests
import requests.adapters

from pywasmd.errors import InvalidArgument, NotFound, Unavailable
from pywasmd.image import mediatypes
from pywasmd.image.build import Descriptor, digest_of
from pywasmd.image.content import Content, descriptor_from_json, platform_of
from pywasmd.image.progress import Progress, null_progress
from pywasmd.image.reference import DEFAULT_DOMAIN, Reference

_DOCKER_HUB_API = "registry-1.docker.io"
_CONNECT_TIMEOUT = 10.0
_READ_TIMEOUT = 120.0
_CHUNK = 1 << 20
_MANIFEST_ACCEPT = ", ".join(
    [
        mediatypes.INDEX,
        mediatypes.MANIFEST,
        mediatypes.DOCKER_MANIFEST_LIST,
        mediatypes.DOCKER_MANIFEST,
    ]
)
_MAX_MANIFEST = 4 << 20


class RegistryError(Unavailable):
    """The registry could not be reached or refused a request (exit 1)."""


@dataclass(frozen=True)
class Pushed:
    reference: Reference
    digest: str
    uploaded: int  # blobs sent
    skipped: int  # blobs the registry had already


class Registry:
    def __init__(
        self, ref: Reference, *, insecure: bool = False, progress: Progress | None = None
    ) -> None:
        import oras.container
        import oras.provider

        self.ref = ref
        self.host = _DOCKER_HUB_API if ref.domain == DEFAULT_DOMAIN else ref.domain
        self.insecure = insecure
        self.progress = progress or null_progress()
        self._oras = oras.provider.Registry(hostname=self.host, insecure=insecure)
        self._oras.session.mount("https://", _TimeoutAdapter())
        self._oras.session.mount("http://", _TimeoutAdapter())
        # The undecorated request function: same auth handling, no retry loop.
        self._request = oras.provider.Registry.do_request.__wrapped__
        self._container = oras.container.Container(ref.path, registry=self.host)
        self._scheme = "http" if insecure else "https"
        self._auth_loaded = False

    # --- plumbing ------------------------------------------------------------------------

    def _url(self, tail: str) -> str:
        return f"{self._scheme}://{self.host}/v2/{self.ref.path}/{tail}"

    def _do(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        data: Any = None,
        stream: bool = False,
        ok: tuple[int, ...] = (200,),
        what: str = "",
    ) -> Any:
        if not self._auth_loaded:
            # Credentials for this host from the docker config (and its helpers), if any.
            try:
                self._oras.auth.load_configs(self._container)
            except (OSError, ValueError) as e:
                raise RegistryError(f"cannot read docker credentials: {e}") from None
            self._auth_loaded = True
        try:
            response = self._request(
                self._oras, url, method, data=data, headers=dict(headers or {}), stream=stream
            )
        except requests.exceptions.SSLError as e:
            raise RegistryError(self._ssl_message(e)) from None
        except requests.exceptions.ConnectionError as e:
            raise RegistryError(self._connect_message(e)) from None
        except requests.exceptions.Timeout:
            raise RegistryError(f"registry {self.host} timed out ({what or url})") from None
        except requests.exceptions.RequestException as e:
            raise RegistryError(f"registry {self.host}: {what or url}: {e}") from None
        except ValueError as e:
            # oras raises a bare ValueError when it cannot answer an auth challenge.
            raise RegistryError(self._auth_message(str(e))) from None
        if response.status_code in ok:
            return response
        if response.status_code in (401, 403):
            raise RegistryError(self._auth_message(f"HTTP {response.status_code}"))
        raise RegistryError(
            f"registry {self.host}: {what or method + ' ' + url} failed: "
            f"HTTP {response.status_code} {_error_text(response)}"
        )

    def _connect_message(self, e: Exception) -> str:
        text = str(e)
        reason = "connection refused" if "refused" in text.lower() else _short(text)
        hint = "; is it running?"
        if not self.insecure:
            hint += " use --insecure for plain HTTP"
        return f"cannot reach registry {self.host}: {reason}{hint}"

    def _ssl_message(self, e: Exception) -> str:
        text = str(e)
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
            return (
                f"registry {self.host} does not speak HTTPS (it answered in plain HTTP); "
                "use --insecure for plain HTTP"
            )
        return f"TLS with registry {self.host} failed: {_short(text)}"

    def _auth_message(self, why: str) -> str:
        return (
            f"registry {self.host} refused our credentials ({why}); log in with "
            f"`docker login {self.host}` (pywasm reads ~/.docker/config.json)"
        )

    # --- reading ---------------------------------------------------------------------------

    def ping(self) -> None:
        """Fail fast, with a clear reason, before any real work."""
        self._do("GET", f"{self._scheme}://{self.host}/v2/", ok=(200, 401), what="GET /v2/")

    def manifest(self, reference: str) -> tuple[Descriptor, bytes]:
        """The manifest or index at a tag or digest, checked against its digest."""
        response = self._do(
            "GET",
            self._url(f"manifests/{reference}"),
            headers={"Accept": _MANIFEST_ACCEPT},
            ok=(200, 404),
            what=f"manifest {reference}",
        )
        if response.status_code == 404:
            raise NotFound(f"{self.ref.name}:{reference}: not found in registry {self.host}")
        data: bytes = response.content
        if len(data) > _MAX_MANIFEST:
            raise InvalidArgument(f"{self.ref}: manifest larger than {_MAX_MANIFEST} bytes")
        digest = digest_of(data)
        expected = reference if reference.startswith("sha256:") else None
        header = response.headers.get("Docker-Content-Digest")
        if expected is None and header and header.startswith("sha256:"):
            expected = header
        if expected and expected != digest:
            raise InvalidArgument(
                f"{self.ref.name}: manifest {reference} has digest {digest}, expected {expected}"
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            doc = json.loads(data)
            media_type = doc.get("mediaType") or media_type
        except ValueError:
            raise InvalidArgument(f"{self.ref}: manifest {reference} is not JSON") from None
        return Descriptor(media_type, digest, len(data)), data

    def blob(self, desc: Descriptor, label: str) -> bytes:
        """A blob, streamed (with progress) and checked against its digest and size."""
        response = self._do(
            "GET", self._url(f"blobs/{desc.digest}"), stream=True, ok=(200, 404), what=label
        )
        if response.status_code == 404:
            raise NotFound(f"{self.ref.name}: blob {desc.digest} ({label}) is missing")
        h = hashlib.sha256()
        parts: list[bytes] = []
        got = 0
        with self.progress.task(f"pull {label}", desc.size) as advance:
            for chunk in response.iter_content(_CHUNK):
                h.update(chunk)
                parts.append(chunk)
                got += len(chunk)
                advance(len(chunk))
                if got > desc.size:
                    break
        response.close()
        digest = "sha256:" + h.hexdigest()
        if got != desc.size or digest != desc.digest:
            raise InvalidArgument(
                f"{self.ref.name}: blob {desc.digest} ({label}) does not match its descriptor: "
                f"got {got} bytes with digest {digest}, expected {desc.size} bytes"
            )
        return b"".join(parts)

    def pull(self) -> Content:
        """The whole tree at the reference: every platform, every blob, digests checked."""
        self.ping()
        root, data = self.manifest(self.ref.digest or self.ref.tag or "latest")
        blobs = {root.digest: data}
        self._pull_children(root, data, blobs, 0)
        content = Content(root, blobs)
        if root.media_type in mediatypes.INDEX_TYPES:
            return content
        # A registry keeps no platform for a lone manifest; put back the one its config
        # declares, so a pulled archive is byte for byte the one that was built.
        platform = platform_of(content, json.loads(data))
        return Content(Descriptor(root.media_type, root.digest, root.size, platform), blobs)

    def _pull_children(
        self, desc: Descriptor, data: bytes, blobs: dict[str, bytes], depth: int
    ) -> None:
        doc = json.loads(data)
        if desc.media_type in mediatypes.INDEX_TYPES:
            if depth > 3:
                raise InvalidArgument(f"{self.ref}: indexes nested too deep")
            for entry in doc.get("manifests") or []:
                child = descriptor_from_json(entry)
                got, child_data = self.manifest(child.digest)
                blobs[got.digest] = child_data
                self._pull_children(
                    Descriptor(child.media_type, got.digest, got.size), child_data, blobs, depth + 1
                )
            return
        config = descriptor_from_json(doc.get("config") or {})
        if config.digest not in blobs:
            blobs[config.digest] = self.blob(config, "config")
        for i, layer in enumerate(doc.get("layers") or []):
            d = descriptor_from_json(layer)
            if d.digest not in blobs:
                blobs[d.digest] = self.blob(d, f"layer {i + 1} ({_human(d.size)})")

    # --- writing ---------------------------------------------------------------------------

    def push(self, content: Content) -> Pushed:
        """Blobs first, then manifests children-first, then the root under the tag."""
        self.ping()
        uploaded = skipped = 0
        for digest, media_type in content.ordered_blobs():
            data = content.blobs[digest]
            if media_type in mediatypes.INDEX_TYPES or media_type in mediatypes.MANIFEST_TYPES:
                tag = self.ref.tag if digest == content.root.digest and self.ref.tag else digest
                self._put_manifest(tag, media_type, data)
                continue
            if self._has_blob(digest):
                skipped += 1
                continue
            self._upload(digest, data)
            uploaded += 1
        pinned = Reference(self.ref.domain, self.ref.path, self.ref.tag, content.root.digest)
        return Pushed(pinned, content.root.digest, uploaded, skipped)

    def _has_blob(self, digest: str) -> bool:
        r = self._do("HEAD", self._url(f"blobs/{digest}"), ok=(200, 404), what=f"HEAD {digest}")
        return bool(r.status_code == 200)

    def _upload(self, digest: str, data: bytes) -> None:
        r = self._do(
            "POST",
            self._url("blobs/uploads/"),
            headers={"Content-Length": "0"},
            ok=(202,),
            what=f"start upload of {digest}",
        )
        location = r.headers.get("Location", "")
        if not location:
            raise RegistryError(f"registry {self.host} gave no upload location for {digest}")
        if location.startswith("/"):
            location = f"{self._scheme}://{self.host}{location}"
        sep = "&" if "?" in location else "?"
        with self.progress.task(f"push {_human(len(data))} {digest[7:19]}", len(data)) as advance:
            body = _Body(data, advance)
            self._do(
                "PUT",
                f"{location}{sep}digest={digest}",
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(data)),
                },
                data=body,
                ok=(201,),
                what=f"upload of {digest}",
            )

    def _put_manifest(self, reference: str, media_type: str, data: bytes) -> None:
        self._do(
            "PUT",
            self._url(f"manifests/{reference}"),
            headers={"Content-Type": media_type},
            data=data,
            ok=(200, 201),
            what=f"manifest {reference}",
        )


class _Body:
    """A request body that reports how much of it has been sent."""

    def __init__(self, data: bytes, advance: Callable[[int], None]) -> None:
        self._data = memoryview(data)
        self._advance = advance
        self._pos = 0
        self.len = len(data)

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else min(len(self._data), self._pos + n)
        chunk = bytes(self._data[self._pos : end])
        self._pos = end
        self._advance(len(chunk))
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(_CHUNK):
            yield chunk


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    # requests has no session-wide timeout; without one a black-holed registry hangs forever.
    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        if timeout is None:
            timeout = (_CONNECT_TIMEOUT, _READ_TIMEOUT)
        return super().send(request, stream, timeout, verify, cert, proxies)


def _error_text(response: Any) -> str:
    try:
        errors = response.json().get("errors") or []
        texts = [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
        if texts:
            return "(" + "; ".join(texts) + ")"
    except (ValueError, AttributeError):
        pass
    return f"({response.reason})" if response.reason else ""


def _short(text: str) -> str:
    # urllib3 nests the useful part ("[Errno 111] Connection refused") deep inside.
    for marker in ("] ", "): "):
        if marker in text:
            text = text.rsplit(marker, 1)[-1]
    return text.strip(" ')\"")[:200]


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


__all__ = ["Pushed", "Registry", "RegistryError"]
