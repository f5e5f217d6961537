"""`pywasm run`: one container on the pywasm runtime through containerd's gRPC API, as `ctr run`
does it, for an image, a Wasm OCI artifact or a local `.wasm`.

1. What to run. A local module is wrapped on the fly into a `wasi/wasm` image
   (`pywasm.local/<name>:<digest>`); a reference containerd does not have is pulled from its
   registry (every blob checked) and stored in containerd's content store with the garbage
   collection labels containerd's own pull sets, then recorded as an image.
2. Its rootfs. An image's layers are unpacked into snapshots named by chain id (reusing those
   ctr or Docker unpacked), and the container gets a writable snapshot on top. An artifact has
   no rootfs: the container names the image, and the shim reads the module from the content
   store. All of this happens under a lease, so containerd's GC never sees it half-made.
3. The container: containerd's default Linux spec, then the image config, then the options.
   stdio are FIFOs this command makes and pumps (as ctr's do); SIGINT and SIGTERM are sent to
   the task; the exit status is the guest's. `--rm` (the default) deletes task, container and
   snapshot afterwards; `-d` leaves the task running and prints the container id.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import select
import signal
import stat
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pywasmd.client.containerd import Client
from pywasmd.client.spec import (
    ImageConfig,
    RunOptions,
    build_spec,
    parse_size,
    parse_tmpfs,
    parse_user,
    parse_volume,
)
from pywasmd.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from pywasmd.wasmbin import is_wasm

RUNTIME = "io.containerd.pywasm.v1"
SNAPSHOTTER = "overlayfs"
IMAGE_LABEL = "io.pywasm.image"
FIFO_ROOT = "/run/pywasm/run"
LOCAL_DOMAIN = "pywasm.local"
_WASM_CONFIG = "application/vnd.wasm.config.v0+json"
_INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
_MANIFEST_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    }
)


# --- arguments ---------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        metavar="IMAGE|ARTIFACT|./module.wasm",
        help="an image or Wasm artifact reference (pulled when containerd lacks it), or a "
        "local module (a path ending in .wasm), wrapped into an image on the fly",
    )
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG", help="arguments of the guest")
    rm = p.add_mutually_exclusive_group()
    rm.add_argument(
        "--rm",
        dest="rm",
        action="store_true",
        default=True,
        help="remove the container when it exits (the default)",
    )
    rm.add_argument(
        "--keep", dest="rm", action="store_false", help="keep the container after it exits"
    )
    p.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="start the container, print its id and return (it is kept; remove it with ctr)",
    )
    p.add_argument("-i", "--interactive", action="store_true", help="connect stdin to the guest")
    p.add_argument("-t", "--tty", action="store_true", help="give the guest a terminal")
    p.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="set an environment variable (K alone: take it from this shell)",
    )
    p.add_argument("--env-file", action="append", default=[], metavar="FILE", help="read K=V lines")
    p.add_argument(
        "-v",
        "--volume",
        action="append",
        default=[],
        metavar="SRC:DST[:ro]",
        help="bind-mount host directory or file SRC at DST (read-only with :ro)",
    )
    p.add_argument(
        "--tmpfs", action="append", default=[], metavar="DST[:OPTS]", help="a private tmpfs at DST"
    )
    p.add_argument("-w", "--workdir", default="", metavar="DIR", help="working directory")
    p.add_argument("-u", "--user", default="", metavar="UID[:GID]", help="numeric user and group")
    p.add_argument("-m", "--memory", metavar="SIZE", help="memory limit, e.g. 64m")
    p.add_argument("--cpus", type=float, metavar="N", help="CPU limit, e.g. 0.5")
    p.add_argument(
        "--annotation",
        action="append",
        default=[],
        metavar="K=V",
        help="OCI annotation, e.g. pywasm.io/engine=wasmer (repeatable)",
    )
    p.add_argument("--net-host", action="store_true", help="share the host's network namespace")
    p.add_argument("--read-only", action="store_true", help="make the rootfs read-only")
    p.add_argument("--name", metavar="ID", help="container id (default: a generated one)")
    p.add_argument(
        "--platform",
        metavar="OS/ARCH",
        help="which image of a multi-platform index to run (default: wasi/wasm if present)",
    )
    p.add_argument(
        "--pull",
        choices=("missing", "always", "never"),
        default="missing",
        help="when to pull the image from its registry (default: %(default)s)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="talk to the registry over plain HTTP (e.g. a local registry on 127.0.0.1)",
    )
    p.add_argument(
        "--address",
        default="/run/containerd/containerd.sock",
        metavar="SOCK",
        help="containerd's socket (default: %(default)s)",
    )
    p.add_argument(
        "--namespace",
        "-n",
        default=os.environ.get("CONTAINERD_NAMESPACE") or "default",
        metavar="NS",
        help="containerd namespace (default: $CONTAINERD_NAMESPACE or default)",
    )
    p.add_argument("--runtime", default=RUNTIME, help="containerd runtime (default: %(default)s)")


def _env(items: list[str], files: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for path in files:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise InvalidArgument(f"--env-file {path}: {e.strerror or e}") from None
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                line = _from_shell(line)
                if not line:
                    continue
            if line.startswith("="):
                raise InvalidArgument(f"--env-file {path}:{n}: {line!r} has no variable name")
            out.append(line)
    for item in items:
        if "=" not in item:
            item = _from_shell(item)
            if not item:
                continue
        if item.startswith("="):
            raise InvalidArgument(f"-e {item!r}: expected KEY=VALUE with a non-empty KEY")
        out.append(item)
    return tuple(out)


def _from_shell(key: str) -> str:
    value = os.environ.get(key)
    return f"{key}={value}" if value is not None else ""


def _annotations(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InvalidArgument(f"--annotation {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def options_from(args: argparse.Namespace) -> RunOptions:
    if args.tty and args.detach:
        raise InvalidArgument("-t with -d: a detached container has no terminal to attach")
    if args.user:
        parse_user(args.user)
    mounts = [parse_volume(v) for v in args.volume] + [parse_tmpfs(t) for t in args.tmpfs]
    for m in mounts:
        if m.type == "bind" and not os.path.exists(m.source):
            raise InvalidArgument(
                f"-v {m.source}:{m.destination}: {m.source} does not exist on this host"
            )
    return RunOptions(
        args=tuple(args.args),
        env=_env(args.env, args.env_file),
        mounts=tuple(mounts),
        workdir=args.workdir,
        user=args.user,
        memory=parse_size(args.memory, "--memory") if args.memory else None,
        cpus=args.cpus,
        annotations=_annotations(args.annotation),
        net_host=args.net_host,
        terminal=args.tty,
        readonly_rootfs=args.read_only,
    )


# --- what to run -------------------------------------------------------------------------------


def is_local_module(target: str) -> bool:
    return target.endswith(".wasm") or target.startswith(("./", "../", "/"))


def local_image_name(path: Path, data: bytes) -> str:
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.stem.lower())
    stem = stem.strip("._-") or "module"
    return f"{LOCAL_DOMAIN}/{stem}:{hashlib.sha256(data).hexdigest()[:12]}"


def _wrap_module(path: Path) -> tuple[str, Any]:
    from pywasmd.image import content as oci
    from pywasmd.image.build import File, build_image

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidArgument(f"{path}: is a directory, not a WebAssembly module") from None
    except OSError as e:
        raise InvalidArgument(f"{path}: {e.strerror or e}") from None
    if not is_wasm(data):
        raise InvalidArgument(
            f"{path}: not a WebAssembly binary (it starts {data[:8].hex(' ') or 'empty'}; a "
            "Wasm binary starts 00 61 73 6d)"
        )
    guest = "/" + path.name
    image = build_image(files={guest: File(data, 0o755)}, entrypoint=[guest])
    return local_image_name(path, data), oci.from_image(image)


def _gc_labels(media_type: str, data: bytes, snapshot_chain: str | None) -> dict[str, str]:
    """The labels containerd's own pull puts on a blob, so its GC keeps what it refers to."""
    labels: dict[str, str] = {}
    if media_type in _INDEX_TYPES or media_type in _MANIFEST_TYPES:
        doc = json.loads(data)
        for i, entry in enumerate(doc.get("manifests") or []):
            labels[f"containerd.io/gc.ref.content.m.{i}"] = str(entry["digest"])
        if doc.get("config"):
            labels["containerd.io/gc.ref.content.config"] = str(doc["config"]["digest"])
        for i, layer in enumerate(doc.get("layers") or []):
            labels[f"containerd.io/gc.ref.content.l.{i}"] = str(layer["digest"])
    if snapshot_chain:
        labels[f"containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"] = snapshot_chain
    return labels


def chain_ids(diff_ids: list[str]) -> list[str]:
    """containerd's snapshot names for an image's layers (the OCI chain id of each prefix)."""
    chain: list[str] = []
    for d in diff_ids:
        if chain:
            d = "sha256:" + hashlib.sha256(f"{chain[-1]} {d}".encode()).hexdigest()
        chain.append(d)
    return chain


def store(client: Client, name: str, content: Any) -> None:
    """Put every blob of `content` into containerd's content store; record `name` -> root."""
    media: dict[str, str] = dict(content.ordered_blobs())
    configs: dict[str, str] = {}
    for _desc, manifest in content.manifests():
        config = manifest.get("config") or {}
        if config.get("mediaType") != _WASM_CONFIG and config.get("digest") in content.blobs:
            doc = content.document(str(config["digest"]))
            diff_ids = [str(d) for d in (doc.get("rootfs") or {}).get("diff_ids") or []]
            if diff_ids:
                configs[str(config["digest"])] = chain_ids(diff_ids)[-1]
    for digest, media_type in media.items():
        data = content.blobs[digest]
        labels = _gc_labels(media_type, data, configs.get(digest))
        client.content_write(digest, data, labels)
    root = content.root
    client.image_put(name, root.media_type, root.digest, root.size)


def pull(client: Client, name: str, insecure: bool) -> None:
    from pywasmd.image.progress import for_terminal
    from pywasmd.image.reference import parse_reference
    from pywasmd.image.registry import Registry

    progress = for_terminal()
    try:
        content = Registry(parse_reference(name), insecure=insecure, progress=progress).pull()
    finally:
        progress.close()
    store(client, name, content)


@dataclass
class Resolved:
    """The image manifest to run, read back from containerd."""

    name: str
    manifest: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def is_artifact(self) -> bool:
        return (self.manifest.get("config") or {}).get("mediaType") == _WASM_CONFIG


def _json(client: Client, digest: str, what: str) -> dict[str, Any]:
    data = client.content_read(digest, 8 << 20)
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise InvalidArgument(f"{what}: blob {digest} in containerd does not match its digest")
    try:
        doc = json.loads(data)
    except ValueError:
        raise InvalidArgument(f"{what}: blob {digest} is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what}: blob {digest} is not a JSON object")
    return doc


def pick_manifest(index: Mapping[str, Any], platform: str | None, what: str) -> Mapping[str, Any]:
    """The index entry to run: --platform exactly, else wasi/wasm, else this host's Linux."""
    entries = [e for e in index.get("manifests") or [] if isinstance(e, Mapping)]
    # Attestation manifests (buildx) have platform unknown/unknown: never run them.
    entries = [
        e
        for e in entries
        if (e.get("annotations") or {}).get("vnd.docker.reference.type") != "attestation-manifest"
    ]

    def plat(e: Mapping[str, Any]) -> str:
        p = e.get("platform") or {}
        text = f"{p.get('os', '')}/{p.get('architecture', '')}"
        return text + (f"/{p['variant']}" if p.get("variant") else "")

    wanted = [platform] if platform else ["wasi/wasm", "wasip1/wasm", "wasip2/wasm", "linux/amd64"]
    for w in wanted:
        for e in entries:
            if plat(e) == w or (platform and plat(e).startswith(w + "/")):
                return e
    if not platform and len(entries) == 1:
        return entries[0]
    seen = ", ".join(plat(e) for e in entries) or "none"
    raise InvalidArgument(
        f"{what}: no image for platform {platform or 'wasi/wasm'} (the index has: {seen}); "
        "pick one with --platform"
    )


def resolve(client: Client, name: str, platform: str | None) -> Resolved:
    image = client.image_get(name)
    if image is None:
        raise NotFound(f"image {name} is not in containerd")
    media_type, digest = image.target.media_type, image.target.digest
    for _ in range(4):
        doc = _json(client, digest, f"image {name}")
        if media_type in _INDEX_TYPES or doc.get("mediaType") in _INDEX_TYPES:
            entry = pick_manifest(doc, platform, f"image {name}")
            media_type, digest = str(entry.get("mediaType", "")), str(entry["digest"])
            continue
        resolved = Resolved(name, doc)
        if not resolved.is_artifact:
            config_digest = str((doc.get("config") or {}).get("digest", ""))
            resolved.config = _json(client, config_digest, f"image {name} config")
            _check_platform(resolved.config, platform, name)
        return resolved
    raise InvalidArgument(f"image {name}: indexes nested too deep")


def _check_platform(config: Mapping[str, Any], platform: str | None, name: str) -> None:
    if not platform:
        return
    have = f"{config.get('os', '')}/{config.get('architecture', '')}"
    if not (have == platform or platform.startswith(have + "/")):
        raise InvalidArgument(f"image {name} is for {have}, not {platform}")


def unpack(client: Client, resolved: Resolved) -> str:
    """Unpack the image's layers into committed snapshots; the top one's name."""
    layers = resolved.manifest.get("layers") or []
    diff_ids = [str(d) for d in (resolved.config.get("rootfs") or {}).get("diff_ids") or []]
    if len(diff_ids) != len(layers):
        raise InvalidArgument(
            f"image {resolved.name}: {len(layers)} layers but {len(diff_ids)} diff_ids in its "
            "config; the image is malformed"
        )
    chain = chain_ids(diff_ids)
    parent = ""
    for layer, name in zip(layers, chain, strict=True):
        if not client.snapshot_exists(SNAPSHOTTER, name):
            key = f"extract-{uuid.uuid4().hex[:12]}-{name}"
            mounts = client.snapshot_prepare(SNAPSHOTTER, key, parent)
            try:
                client.diff_apply(
                    str(layer["mediaType"]), str(layer["digest"]), int(layer["size"]), mounts
                )
                client.snapshot_commit(SNAPSHOTTER, name, key)
            except AlreadyExists:
                client.snapshot_remove(SNAPSHOTTER, key)  # another unpack won the race
            except BaseException:
                client.snapshot_remove(SNAPSHOTTER, key)
                raise
        parent = name
    return parent


def _module_title(manifest: Mapping[str, Any]) -> str:
    for layer in manifest.get("layers") or []:
        title = (layer.get("annotations") or {}).get("org.opencontainers.image.title")
        if title:
            return str(title)
    return "module.wasm"


# --- stdio -------------------------------------------------------------------------------------


class Stdio:
    """FIFOs for the task's stdio, made and opened before Create, as ctr's are.

    Output ends are opened read-only and non-blocking: Linux reports such a FIFO readable
    only once a writer has come, so the pump waits for the shim, and it ends at end-of-file,
    when the worker and the shim have closed their ends (a terminal's copy included). After
    the task has exited, a writer that stays (a leaked descriptor) gets a short grace.
    """

    def __init__(self, container_id: str, stdin: bool, terminal: bool) -> None:
        self.dir = os.path.join(FIFO_ROOT, f"{container_id}-{uuid.uuid4().hex[:8]}")
        os.makedirs(self.dir, mode=0o700)
        self.stdin = self._fifo("stdin") if stdin else ""
        self.stdout = self._fifo("stdout")
        self.stderr = "" if terminal else self._fifo("stderr")
        self._fds: list[int] = []
        # Written once the task has exited: the pumps drain what is left, then end.
        self._wake = os.pipe2(os.O_CLOEXEC)
        self._grace = 2.0
        self._threads: list[threading.Thread] = []
        self._stdin_fd: int | None = None

    def _fifo(self, name: str) -> str:
        path = os.path.join(self.dir, name)
        os.mkfifo(path, 0o600)
        return path

    def open(self) -> None:
        outputs = [(self.stdout, sys.stdout.buffer)]
        if self.stderr:
            outputs.append((self.stderr, sys.stderr.buffer))
        for path, sink in outputs:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._fds.append(fd)
            t = threading.Thread(target=self._pump_out, args=(fd, sink), daemon=True)
            self._threads.append(t)
        if self.stdin:
            self._stdin_fd = os.open(self.stdin, os.O_RDWR | os.O_CLOEXEC)

    def start(self, on_stdin_end: Any) -> None:
        for t in self._threads:
            t.start()
        if self._stdin_fd is not None:
            t = threading.Thread(target=self._pump_in, args=(on_stdin_end,), daemon=True)
            t.start()

    def _pump_out(self, fd: int, sink: Any) -> None:
        deadline: float | None = None
        while True:
            watch = [fd] if deadline is not None else [fd, self._wake[0]]
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select(watch, [], [], timeout)
            if not ready:
                return  # the grace after the exit ran out with a writer still attached
            if self._wake[0] in ready:
                deadline = time.monotonic() + self._grace
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not chunk:
                return  # every writer (worker, shim) closed: the output is complete
            with contextlib.suppress(OSError, ValueError):
                sink.write(chunk)
                sink.flush()

    def _pump_in(self, on_end: Any) -> None:
        src = sys.stdin.fileno()
        while self._stdin_fd is not None:
            try:
                chunk = os.read(src, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                # Our end is a writer too: the guest sees end-of-file only once it is closed
                # and the shim was told (CloseIO) to drop its own.
                fd, self._stdin_fd = self._stdin_fd, None
                with contextlib.suppress(OSError):
                    os.close(fd)
                on_end()
                return
            try:
                os.write(self._stdin_fd, chunk)
            except OSError:
                return

    def finish(self, grace: float = 2.0) -> None:
        """After the task exited: drain the pipes, then close and remove everything (once)."""
        if self._wake[0] < 0:
            return
        self._grace = grace
        with contextlib.suppress(OSError):
            os.write(self._wake[1], b"x")
        for t in self._threads:
            if t.is_alive():
                t.join(10)
        self._threads = []
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        if self._stdin_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._stdin_fd)
            self._stdin_fd = None
        for fd in self._wake:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake = (-1, -1)
        for name in ("stdin", "stdout", "stderr"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.dir, name))
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)


@contextlib.contextmanager
def _raw_terminal(enabled: bool) -> Iterator[None]:
    if not enabled or not os.isatty(0):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


# --- the command -------------------------------------------------------------------------------


def _check_socket(address: str) -> None:
    try:
        mode = os.stat(address).st_mode
    except FileNotFoundError:
        raise Unavailable(
            f"no containerd socket at {address}; is containerd running? (--address SOCK; "
            "pywasm doctor checks the node)"
        ) from None
    except PermissionError:
        raise Unavailable(f"{address}: permission denied; run pywasm run as root") from None
    if not stat.S_ISSOCK(mode):
        raise Unavailable(f"{address} is not a socket; give containerd's socket with --address")


def run(args: argparse.Namespace) -> int:
    opts = options_from(args)
    _check_socket(args.address)
    container_id = args.name or f"pywasm-{uuid.uuid4().hex[:12]}"
    with Client(args.address, args.namespace) as client:
        client.lease_create(f"pywasm-run-{container_id}-{uuid.uuid4().hex[:8]}")
        created = False
        try:
            if client.container_exists(container_id):
                raise client.exists(container_id)
            name = _ensure_image(client, args)
            resolved = resolve(client, name, args.platform)
            argv, top = None, ""
            if resolved.is_artifact:
                # No layer to unpack: an empty snapshot is the rootfs, so whatever the
                # sandbox puts there (mount points) goes with the snapshot.
                argv = [_module_title(resolved.manifest), *opts.args]
            else:
                top = unpack(client, resolved)
            snapshotter, snapshot_key = SNAPSHOTTER, container_id
            if client.snapshot_exists(SNAPSHOTTER, container_id):
                raise AlreadyExists(
                    f"a snapshot named {container_id!r} exists in namespace "
                    f"{args.namespace!r}; pick another --name"
                )
            spec = build_spec(
                container_id,
                args.namespace,
                ImageConfig.from_json(resolved.config),
                opts,
                argv,
            )
            client.container_create(
                container_id,
                json.dumps(spec).encode(),
                args.runtime,
                name,
                snapshotter,
                snapshot_key,
                {IMAGE_LABEL: name} if resolved.is_artifact else {},
            )
            created = True
            mounts = client.snapshot_prepare(SNAPSHOTTER, snapshot_key, top)
        except BaseException:
            if created:
                client.container_delete(container_id)
                client.snapshot_remove(SNAPSHOTTER, container_id)
            client.lease_delete()
            raise
        # From here on the container (and its snapshot) keep what it needs from GC.
        client.lease_delete()
        return _run_task(client, args, opts, container_id, mounts, True)


def _ensure_image(client: Client, args: argparse.Namespace) -> str:
    target: str = args.target
    if is_local_module(target):
        name, content = _wrap_module(Path(target))
        if client.image_get(name) is None:
            store(client, name, content)
        return name
    from pywasmd.image.reference import parse_reference

    name = str(parse_reference(target))
    if args.pull == "always" or (args.pull == "missing" and client.image_get(name) is None):
        pull(client, name, args.insecure)
    elif client.image_get(name) is None:
        raise InvalidArgument(f"image {name} is not in containerd and --pull never was given")
    return name


def _run_task(
    client: Client,
    args: argparse.Namespace,
    opts: RunOptions,
    container_id: str,
    mounts: list[Any],
    has_snapshot: bool,
) -> int:
    stdio: Stdio | None = None
    task = False
    finished = detached = started = False
    try:
        if not args.detach:
            stdio = Stdio(container_id, args.interactive or args.tty, args.tty)
            stdio.open()
        client.task_create(
            container_id,
            mounts,
            stdio.stdin if stdio else "",
            stdio.stdout if stdio else "",
            stdio.stderr if stdio else "",
            opts.terminal,
        )
        task = started = True
        if args.detach:
            client.task_start(container_id)
            print(container_id)
            task, detached = False, True  # it runs on: the user owns it now
            return 0
        assert stdio is not None
        status = _attach(client, args, container_id, stdio)
        finished = True
        return status
    finally:
        if stdio is not None:
            stdio.finish(2.0 if started else 0.0)
        if task:
            with contextlib.suppress(Exception):
                client.task_delete(container_id)
        # A run that failed leaves nothing behind, even with --keep; a detached one runs on.
        if not detached and (args.rm or not finished):
            with contextlib.suppress(Exception):
                client.container_delete(container_id)
            if has_snapshot:
                with contextlib.suppress(Exception):
                    client.snapshot_remove(SNAPSHOTTER, container_id)


def _attach(client: Client, args: argparse.Namespace, container_id: str, stdio: Stdio) -> int:
    done = threading.Event()
    result: dict[str, Any] = {}

    def wait() -> None:
        try:
            result["status"] = client.task_wait(container_id)
        except BaseException as e:  # handed to the main thread
            result["error"] = e
        done.set()

    def forward(signum: int, _frame: Any) -> None:
        client.task_kill(container_id, signum)

    def resize(_signum: int = 0, _frame: Any = None) -> None:
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(0)
            client.task_resize(container_id, size.columns, size.lines)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for s in previous:
        signal.signal(s, forward)
    if args.tty:
        previous[signal.SIGWINCH] = signal.getsignal(signal.SIGWINCH)
        signal.signal(signal.SIGWINCH, resize)
    try:
        with _raw_terminal(args.tty):
            waiter = threading.Thread(target=wait, daemon=True)
            waiter.start()
            client.task_start(container_id)
            if args.tty:
                resize()
            stdio.start(lambda: client.task_close_stdin(container_id))
            while not done.wait(0.2):
                pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if "error" in result:
        raise result["error"]
    status = int(result["status"])
    # containerd reports 255 for a task whose status it could not learn.
    return status if status < 256 else 255
