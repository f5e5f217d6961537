"""Linux containers in a pywasm shim: a pod's pause container and its non-Wasm sidecars.

A pod whose RuntimeClass is pywasm gets one pywasm shim, but its sandbox container and any
container whose entrypoint is a Linux program must still run as real Linux containers.  The
shim drives the ``runc`` binary the way containerd's runc shim does: ``runc create`` with the
container's stdio inherited, the init pid from ``--pid-file``, ``runc start``, signals to the
init, ``runc delete``.  The shim is a child subreaper, so the container's init comes back to it
when ``runc create`` exits and its exit is reaped like a Wasm worker's.

runc's own state lives under ``/run/pywasm/runc/<namespace>``, apart from the runc shim's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections.abc import Sequence

from pywasmd import paths
from pywasmd.errors import Internal, NotFound, ShimError, Unavailable
from pywasmd.shim.launcher import ChildStdio
from pywasmd.shim.reaper import Reaper

# Python ignores these; an exec'd program would inherit that, so runc (and the container
# after it) get the defaults back.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


def find_runc(configured: str = "") -> str:
    if configured:
        return configured
    found = shutil.which("runc") or paths.find_binary("runc")
    if found is None:
        raise Unavailable(
            "this container runs a Linux program, which pywasm hands to runc, but no runc "
            "binary is on the node: install runc (apt-get install runc) or name it with runc: in "
            "/etc/pywasm/config.yaml"
        )
    return found


def _is_systemd_path(cgroups_path: str) -> bool:
    # runc's systemd driver takes "slice:prefix:name"; cgroupfs paths are plain paths.
    return cgroups_path.count(":") == 2 and not cgroups_path.startswith("/")


class Runc:
    """One namespace's runc: every call is a child process reaped through the shim's reaper."""

    def __init__(self, reaper: Reaper, namespace: str, binary: str = "") -> None:
        self._reaper = reaper
        self._binary = binary
        self.root = os.path.join(paths.RUNC_STATE_ROOT, namespace or "default")

    def _argv(self, bundle: str, *args: str) -> list[str]:
        binary = self._binary = find_runc(self._binary)
        return [
            binary,
            "--root",
            self.root,
            "--log",
            paths.in_bundle(bundle, paths.RUNC_LOG),
            "--log-format",
            "json",
            *args,
        ]

    async def _run(self, argv: Sequence[str], stdio: ChildStdio | None = None) -> tuple[int, str]:
        """Run runc; its exit status and what it printed (nothing when stdio is the container's)."""
        loop = asyncio.get_running_loop()
        reader = -1
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            if stdio is None:
                reader, writer = os.pipe()
                actions = [(devnull, 0), (writer, 1), (writer, 2)]
            else:
                writer = -1
                actions = [(stdio.stdin, 0), (stdio.stdout, 1), (stdio.stderr, 2)]
            try:
                pid = _spawn(argv, actions)
            except BaseException:
                if reader >= 0:
                    os.close(reader)
                raise
            finally:
                if writer >= 0:
                    os.close(writer)
        finally:
            os.close(devnull)
        done: asyncio.Future[int] = loop.create_future()

        def exited(code: int) -> None:
            if not done.done():
                done.set_result(code)

        self._reaper.watch(pid, exited)
        output = b""
        if reader >= 0:
            try:
                output = await _read_all(reader)
            finally:
                os.close(reader)
        code = await done
        return code, output.decode(errors="replace").strip()

    async def _check(self, bundle: str, what: str, *args: str) -> str:
        code, output = await self._run(self._argv(bundle, *args))
        if code != 0:
            raise _runc_error(what, bundle, output)
        return output

    async def create(self, id: str, bundle: str, stdio: ChildStdio, cgroups_path: str = "") -> int:
        """``runc create``; the init pid, waiting for ``start``."""
        _remember_root(bundle, self.root)
        pid_file = paths.in_bundle(bundle, paths.INIT_PID)
        args = ["create", "--bundle", bundle, "--pid-file", pid_file, id]
        if _is_systemd_path(cgroups_path):
            args.insert(0, "--systemd-cgroup")
        code, _ = await self._run(self._argv(bundle, *args), stdio)
        if code != 0:
            raise _runc_error("create", bundle, "")
        return _read_pid(id, pid_file)

    async def exec(
        self, id: str, bundle: str, exec_id: str, process: bytes, stdio: ChildStdio
    ) -> int:
        """``runc exec --detach``: the exec'd process's pid (it runs at once, as with runc)."""
        spec_file = os.path.join(bundle, f"pywasm-exec-{exec_id}.json")
        pid_file = os.path.join(bundle, f"pywasm-exec-{exec_id}.pid")
        _write_file(spec_file, process)
        try:
            args = ["exec", "--process", spec_file, "--detach", "--pid-file", pid_file, id]
            code, _ = await self._run(self._argv(bundle, *args), stdio)
            if code != 0:
                raise _runc_error("exec", bundle, "")
            return _read_pid(id, pid_file)
        finally:
            for leftover in (spec_file, pid_file):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)

    async def start(self, id: str, bundle: str) -> None:
        await self._check(bundle, "start", "start", id)

    async def kill_all(self, id: str, bundle: str, sig: int) -> None:
        await self._check(bundle, "kill", "kill", "--all", id, str(sig))

    async def update(self, id: str, bundle: str, resources: bytes) -> None:
        """``runc update --resources``: the OCI LinuxResources JSON as containerd sends it."""
        path = os.path.join(bundle, "pywasm-update.json")
        _write_file(path, resources)
        try:
            await self._check(bundle, "update", "update", "--resources", path, id)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def pause(self, id: str, bundle: str) -> None:
        await self._check(bundle, "pause", "pause", id)

    async def resume(self, id: str, bundle: str) -> None:
        await self._check(bundle, "resume", "resume", id)

    async def pids(self, id: str, bundle: str) -> list[int]:
        output = await self._check(bundle, "ps", "ps", "--format", "json", id)
        try:
            found = json.loads(output or "[]")
        except ValueError as exc:
            raise Internal(f"runc ps {id}: unreadable answer {output[:200]!r}") from exc
        return [int(p) for p in found] if isinstance(found, list) else []

    async def delete(self, id: str, bundle: str) -> None:
        code, output = await self._run(self._argv(bundle, "delete", "--force", id))
        if code != 0 and "does not exist" not in output + _last_error(bundle):
            raise _runc_error("delete", bundle, output)
        # Gone: `delete` (the shim binary) need not ask runc again.
        paths.forget_runc_root(bundle)


def _spawn(argv: Sequence[str], actions: Sequence[tuple[int, int]]) -> int:
    try:
        return os.posix_spawn(
            argv[0],
            list(argv),
            {"PATH": paths.DEFAULT_PATH},
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in actions],
            setsigdef=_DEFAULT_SIGNALS,
        )
    except OSError as exc:
        raise Internal(f"cannot run {argv[0]}: {exc.strerror}") from exc


def _remember_root(bundle: str, root: str) -> None:
    os.makedirs(root, mode=0o711, exist_ok=True)
    paths.write_runc_root(bundle, root)


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _read_pid(id: str, pid_file: str) -> int:
    try:
        with open(pid_file, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError) as exc:
        raise Internal(f"runc created {id!r} but left no usable pid file: {exc}") from exc


async def _read_all(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    finished = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            chunks.append(chunk)
            return
        loop.remove_reader(fd)
        if not finished.done():
            finished.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await finished
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)


def _last_error(bundle: str) -> str:
    """The last error runc wrote to its JSON log in this bundle."""
    try:
        with open(paths.in_bundle(bundle, paths.RUNC_LOG), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()[-50:]
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            return str(entry.get("msg", "")).strip()
    return ""


def _runc_error(what: str, bundle: str, output: str) -> ShimError:
    """runc's own words; a failure of the host's runtime, not of the request, unless the
    container is simply gone."""
    said = _last_error(bundle) or output or "no message (see the shim log)"
    if what in ("kill", "ps", "pause", "resume") and (
        "not running" in said or "does not exist" in said
    ):
        return NotFound(f"runc {what}: {said}")
    return Internal(f"runc {what} failed: {said}")
