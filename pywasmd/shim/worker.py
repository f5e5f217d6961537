"""A container's process: runs one WASI plan under an engine, then exits with its status.

The shim starts it at Create with the container's stdio on fds 0-2 and a control
socket on fd 3.  Talk on that socket, one line each way::

    shim -> worker   {"module": ..., "argv": [...], ...}   the WasiPlan as JSON
    worker -> shim   ok | err <message>                    module compiled, or why not
    shim -> worker   go                                    Start: run the guest

The process exists from Create on (Docker needs its pid then), but the guest
runs only after ``go``.  Signals keep their default actions, so a kill ends the
container with 128+n as a native process would.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import resource
import signal
import sys
import termios
import time
from typing import TYPE_CHECKING

from pywasmd.shim import sandbox
from pywasmd.shim.cgroups import Cgroup

if TYPE_CHECKING:
    from collections.abc import Callable

    from pywasmd.engine import Engine, Instances
    from pywasmd.oci.plan import WasiPlan

CONTROL_FD = 3
_PR_SET_PDEATHSIG = 1
# Looked up at import (the zygote preloads this module), not in each forked worker: loading
# libc through ctypes there costs every worker half a megabyte of private memory.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _read_line(fd: int) -> bytes:
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    return bytes(buf).rstrip(b"\n")


def _load(engine: Engine, plan: WasiPlan) -> object:
    """Load through the node's compile cache: compile on the first start only."""
    from pywasmd.cache import CompileCache
    from pywasmd.errors import ShimError

    if os.environ.get("PYWASM_CACHE") == "off":
        return engine.load_precompiled(_compile_apart(engine, plan), plan)
    cache = CompileCache()
    key = cache.key(engine, plan)
    path = cache.lookup(key)
    if path is not None:
        try:
            from_file = getattr(engine, "load_precompiled_file", None)
            if from_file is not None:
                return from_file(path, plan)
            with open(path, "rb") as f:
                return engine.load_precompiled(f.read(), plan)
        except Exception as exc:  # noqa: BLE001 - a bad entry is dropped, never fatal
            # Engines report an entry they cannot use as InvalidArgument too ("does not fit
            # this engine"): drop it and compile; a fault of the module itself shows again there.
            reason = exc.message if isinstance(exc, ShimError) else str(exc)
            logging.getLogger("pywasmd.cache").warning("dropping cache entry %s: %s", key, reason)
            cache.discard(key)
    data = _compile_apart(engine, plan)
    cache.store(key, data)
    return engine.load_precompiled(data, plan)


#: How long a module may take to compile; a larger one is refused with a message.
COMPILE_TIMEOUT = float(os.environ.get("PYWASM_COMPILE_TIMEOUT", "600"))


def _compile_apart(engine: Engine, plan: WasiPlan) -> bytes:
    """Compile in a process of its own (pywasmd.shim.compiler), outside what becomes the
    container: the compiler's threads, memory and time are never the worker's (it stays one
    thread, so every per-thread setting of its sandbox covers it), and a compile that runs
    away is ended."""
    import select

    from pywasmd import errors

    to_child, plan_in = os.pipe()
    code_out, from_child = os.pipe()
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-I", "-m", "pywasmd.shim.compiler"],
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, to_child, 0),
                (os.POSIX_SPAWN_DUP2, from_child, 1),
            ],
        )
    except OSError as exc:
        for fd in (to_child, plan_in, code_out, from_child):
            os.close(fd)
        raise errors.Internal(f"cannot start the compiler of {plan.argv[0]!r}: {exc}") from exc
    os.close(to_child)
    os.close(from_child)
    with open(plan_in, "wb") as f:
        f.write(json.dumps(plan.to_json()).encode())
    chunks: list[bytes] = []
    deadline = time.monotonic() + COMPILE_TIMEOUT
    with open(code_out, "rb", buffering=0) as f:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([f], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise errors.Unavailable(
                    f"compiling {plan.argv[0]!r} took longer than {COMPILE_TIMEOUT:.0f}s "
                    "(PYWASM_COMPILE_TIMEOUT in the shim's environment); warm the node's "
                    "compile cache ahead with `pywasm warm IMAGE`"
                )
            chunk = f.read(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    kind, _, rest = b"".join(chunks).partition(b"\n")
    if kind == b"ok" and status == 0:
        return rest
    if not kind:
        raise errors.Internal(
            f"the compiler of {plan.argv[0]!r} died (wait status {status}); out of memory? "
            "see the shim log"
        )
    cls = getattr(errors, kind.decode(), errors.Internal)
    if not (isinstance(cls, type) and issubclass(cls, errors.ShimError)):
        cls = errors.Internal
    raise cls(rest.decode(errors="replace"))


def _reset_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGALRM):
        signal.signal(sig, signal.SIG_DFL)
    # Die with the shim: a guest must never outlive the process that reports on it.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _route_logging(log_fd: int | None) -> None:
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_fd is None:
        root.addHandler(logging.NullHandler())
        return
    stream = open(log_fd, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logging.Formatter(
            'level=%(levelname)s msg="worker %(process)d: '
            '%(message)s" runtime=io.containerd.pywasm.v1'
        )
    )
    root.addHandler(handler)


def _become(uid: int, gid: int, groups: tuple[int, ...]) -> None:
    if os.getuid() == uid and os.getgid() == gid:
        return
    os.setgroups(list(groups))
    os.setgid(gid)
    os.setuid(uid)


def main(log_fd: int | None = None) -> None:
    """Run as a fresh interpreter, or in a child forked by the shim server.

    ``log_fd`` is the shim's log, kept open so the worker's own warnings (a cache
    it cannot write, say) reach the shim log, never the container's stderr.
    """
    _reset_signals()
    # Only stdio, the control socket and the shim's log belong here.
    keep = log_fd if log_fd is not None else CONTROL_FD
    os.closerange(CONTROL_FD + 1, keep)
    os.closerange(keep + 1, 65536)
    _route_logging(log_fd)
    from pywasmd.engine import OOM_EXIT_STATUS, GuestOutOfMemory, get_engine
    from pywasmd.errors import InvalidArgument, ShimError
    from pywasmd.oci.plan import WasiPlan

    line = _read_line(CONTROL_FD)
    if not line:
        os._exit(0)
    try:
        plan = WasiPlan.from_json(json.loads(line))
        engine = get_engine(plan.engine)
        loaded = _load(engine, plan)
        payload = _test_payload(plan)
        http = _http_front(plan)
        # Everything is loaded: from here on the worker lives in the container.
        if plan.sandbox is not None:
            if plan.sandbox.pid_namespace is not None:
                _become_pid_one(plan.sandbox.pid_namespace, plan.sandbox.cgroup_path)
            # An HTTP function stops gracefully at SIGTERM: its server takes the signal itself.
            sandbox.enter(plan.sandbox, graceful_stop=http is not None)
            if plan.sandbox.has("mount"):
                _check_cwd(plan.cwd)
            _check_fd_room(len(plan.preopens))
        if os.isatty(0):
            # A terminal container: the pty is the guest's controlling terminal, as under runc.
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    except ShimError as exc:
        kind = b"err " if isinstance(exc, InvalidArgument) else b"fail "
        os.write(CONTROL_FD, kind + exc.message.replace("\n", " ").encode() + b"\n")
        os._exit(1)
    except Exception as exc:  # noqa: BLE001 - any failure must reach the user as text
        os.write(CONTROL_FD, f"err {type(exc).__name__}: {exc}".replace("\n", " ").encode() + b"\n")
        os._exit(1)
    os.write(CONTROL_FD, b"ok\n")
    if _read_line(CONTROL_FD) != b"go":
        os._exit(0)

    def ready() -> None:
        try:
            if plan.sandbox is not None:
                sandbox.finish(plan.sandbox, plan.uid, plan.gid, plan.additional_gids)
            else:
                _become(plan.uid, plan.gid, plan.additional_gids)
        except (OSError, ShimError) as exc:
            print(
                f"pywasm: cannot enter the container as uid {plan.uid} gid {plan.gid}: {exc}",
                file=sys.stderr,
                flush=True,
            )
            os._exit(126)
        _tell(b"started\n")

    if payload is not None:
        ready()
        exec(compile(payload, "pywasm-test-payload", "exec"), {"__name__": "__payload__"})
        sys.stdout.flush()
        os._exit(0)

    if http is not None:
        # Threads and processes (the engine's epoch ticker, the instance pool, more servers)
        # start only after ready(): capabilities and seccomp apply per thread.
        ready()
        os._exit(http(lambda: engine.prepare_instances(loaded, plan)))

    # The control socket stays open while the guest runs (WASI gives it no way to reach
    # it): the shim learns through it why the guest ended.
    if plan.timeout is not None:
        # SIGALRM keeps its default action: the process ends with 128+14 at the deadline.
        signal.setitimer(signal.ITIMER_REAL, plan.timeout)
    try:
        status = engine.run(loaded, plan, ready)
    except GuestOutOfMemory as exc:
        print(f"pywasm: out of memory: {exc}", file=sys.stderr, flush=True)
        _tell(b"oom\n")
        os._exit(OOM_EXIT_STATUS)
    except Exception as exc:  # noqa: BLE001 - the container's stderr is where it must show
        print(f"pywasm: the {plan.engine} engine failed: {exc}", file=sys.stderr, flush=True)
        os._exit(126)
    os._exit(status & 0xFF)


def _become_pid_one(pid_namespace: str, cgroup_path: str) -> None:
    """Hand over to a copy of this process in the container's pid namespace, then go."""
    # The copy says nothing on the control socket before the shim has read its pid: it waits
    # for the end of this pipe, which the first process closes once it has written the pid.
    handed, handing = os.pipe()
    child = sandbox.start_in_pid_namespace(pid_namespace)
    if child:
        os.write(CONTROL_FD, f"pid {child}\n".encode())
        os.close(handing)
        if cgroup_path:
            _join_cgroup(child, cgroup_path)
        os._exit(0)
    os.close(handing)
    os.read(handed, 1)
    os.close(handed)
    # The copy's own session (kill --all signals it), and death with the shim, its parent now.
    os.setsid()
    _reset_signals()


def _join_cgroup(pid: int, cgroup_path: str) -> None:
    """Put the copy in the container's cgroup while it builds the sandbox and Create and Start
    travel, not at Start: the kernel's first cgroup migration in a while waits for an RCU
    grace period (~10 ms). Start makes sure it happened (cgroups.Cgroup.add skips a member).
    The compile is over by now and ran in a process that never joins."""
    try:
        Cgroup(cgroup_path).add(pid)
    except OSError as exc:
        # The shim tries again at Start and says so there.
        logging.getLogger("pywasmd.shim").debug(
            "pid %d joins cgroup %s at Start: %s", pid, cgroup_path, exc
        )


def _check_fd_room(grants: int) -> None:
    """Each grant holds an open directory: say so before the engine fails without a name."""

    from pywasmd.errors import InvalidArgument

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and grants + 32 > soft:
        raise InvalidArgument(
            f"mounts: {grants} grants each hold an open directory, more than "
            f"process.rlimits RLIMIT_NOFILE ({soft}) leaves room for; raise the limit "
            "(--ulimit nofile=...) or use fewer mounts"
        )


def _check_cwd(cwd: str) -> None:
    from pywasmd.oci.plan import missing_cwd

    if not os.path.isdir(cwd):
        raise missing_cwd(cwd)


#: Tests of the sandbox run a Python payload in place of the guest, after the whole sandbox
#: is up: only when the shim's environment names the file AND the container asks for it.
TEST_PAYLOAD_ENV = "PYWASM_TEST_PAYLOAD"
TEST_PAYLOAD_ANNOTATION = "pywasm.io/test-payload"


def _test_payload(plan: WasiPlan) -> str | None:
    path = os.environ.get(TEST_PAYLOAD_ENV)
    if not path or not plan.test_payload:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def _http_front(plan: WasiPlan) -> Callable[[Callable[[], Instances]], int] | None:
    """The HTTP server of a ``pywasm.io/trigger=http`` container, imported while the host's
    filesystem is still there (nothing can be imported after pivot_root)."""
    if plan.http is None:
        return None
    from pywasmd.http.server import serve

    http = plan.http
    return lambda prepare: serve(http, prepare, plan.env)


def _tell(message: bytes) -> None:
    try:
        os.write(CONTROL_FD, message)
    except OSError:
        pass


if __name__ == "__main__":
    main(log_fd=int(sys.argv[2]) if sys.argv[1:2] == ["--log-fd"] else None)
