"""The node's compile cache: a module is compiled once per node, not once per start.

Entries are content-addressed: ``sha256(module bytes)`` plus a fingerprint of
everything that changes the machine code (engine name and version, enabled
features, fuel metering); wasmtime itself refuses an entry made for another CPU.
Writers go through a temporary file and ``rename``, so a crash or a full disk
never leaves a torn entry; readers see a whole entry or none.  Every failure here
is soft: the container still runs, compiled in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pywasmd.engine import Engine
    from pywasmd.oci.plan import WasiPlan

log = logging.getLogger("pywasmd.cache")

DEFAULT_DIR = "/var/lib/pywasm/cache"
DEFAULT_MAX_BYTES = 2 << 30
_SUFFIX = ".cwasm"


def module_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


_DIGESTS = "digests"
_MAX_DIGESTS = 4096
_SAMPLE = 1 << 16


def _identity(path: str) -> str | None:
    """A name for the file's current bytes that costs no full read: inode, size, times, and a
    hash of its first and last 64 KiB.

    Not the device: every container's overlay mount has its own, while the inode and times
    are the image layer's file, the same in every container of that image.  A file rewritten
    in place changes its mtime/ctime (ctime cannot be set from user space); the sampled bytes
    guard against an accidental match of the rest.
    """
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            head = f.read(_SAMPLE)
            if st.st_size > 2 * _SAMPLE:
                f.seek(-_SAMPLE, os.SEEK_END)
            tail = f.read(_SAMPLE)
    except OSError:
        return None
    sample = hashlib.sha256(head + tail).hexdigest()[:16]
    return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}-{st.st_ctime_ns}-{sample}"


def remembered_digest(path: str, root: str | None = None) -> str:
    """``module_digest``, remembered per file identity under the cache directory, so a later
    start of a 26 MB module does not hash 26 MB.  Any trouble with the memo: hash again."""
    root = root or os.environ.get("PYWASM_CACHE_DIR") or DEFAULT_DIR
    identity = _identity(path)
    if identity is None:
        return module_digest(path)
    memo = os.path.join(root, _DIGESTS, identity)
    try:
        with open(memo, encoding="ascii") as f:
            known = f.read(65)
        if len(known) == 64 and all(c in "0123456789abcdef" for c in known):
            return known
    except (OSError, ValueError):
        pass
    digest = module_digest(path)
    _remember(os.path.join(root, _DIGESTS), identity, digest)
    return digest


def _remember(directory: str, identity: str, digest: str) -> None:
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(digest)
        os.replace(tmp, os.path.join(directory, identity))
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return
    try:
        names = os.listdir(directory)
    except OSError:
        return
    if len(names) > _MAX_DIGESTS:
        # Tiny files, one per module file ever started: keep the newest half.
        aged = sorted(names, key=lambda n: _mtime(os.path.join(directory, n)))
        for name in aged[: len(aged) // 2]:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def cache_key(digest: str, fingerprint: Iterable[str]) -> str:
    """``digest`` names the module; ``fingerprint`` names how it was compiled."""
    salt = hashlib.sha256("\0".join(fingerprint).encode()).hexdigest()[:16]
    return f"{digest}-{salt}"


class CompileCache:
    def __init__(self, root: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root or os.environ.get("PYWASM_CACHE_DIR") or DEFAULT_DIR
        self.max_bytes = max_bytes

    def key(self, engine: Engine, plan: WasiPlan, digest: str | None = None) -> str:
        """Where ``engine`` compiling ``plan``'s module is stored: the one key derivation, used
        by the worker and by ``pywasm warm`` alike.

        ``digest`` is the module's sha256 when the caller has it; otherwise it is taken from
        the digest memo under this cache (a later start reads no 26 MB module to hash it).
        """
        if digest is None:
            digest = remembered_digest(plan.module, self.root)
        return cache_key(digest, [engine.name, engine.fingerprint(plan)])

    def path(self, key: str) -> str:
        return os.path.join(self.root, key + _SUFFIX)

    def lookup(self, key: str) -> str | None:
        """The entry's path when present (and marks it recently used)."""
        path = self.path(key)
        try:
            os.utime(path)
        except OSError:
            return None
        return path

    def store(self, key: str, data: bytes) -> str | None:
        """Write an entry atomically; None when the cache cannot take it."""
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=_SUFFIX)
        except OSError as exc:
            log.warning(
                "compile cache %s is not writable (%s); compiling in memory", self.root, exc
            )
            return None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path(key))
        except OSError as exc:
            log.warning("cannot write compile cache entry %s: %s", key, exc)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return None
        self.evict()
        return self.path(key)

    def discard(self, key: str) -> None:
        """Drop an entry the engine refused (stale or corrupt)."""
        try:
            os.unlink(self.path(key))
        except OSError:
            pass

    def entries(self) -> list[tuple[float, int, str]]:
        """(last use, size, path) of every entry, oldest first."""
        found = []
        try:
            with os.scandir(self.root) as it:
                for entry in it:
                    if entry.name.endswith(_SUFFIX) and not entry.name.startswith(".tmp-"):
                        st = entry.stat()
                        found.append((st.st_mtime, st.st_size, entry.path))
        except OSError:
            return []
        return sorted(found)

    def evict(self) -> None:
        """Least recently used entries go first until the cache fits its budget."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            try:
                os.unlink(path)
                total -= size
            except OSError:
                pass
