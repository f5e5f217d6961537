"""The long-running shim server: one per container (or per pod), forked by ``start``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time

from pywasmd import paths
from pywasmd.shim.cli import ShimArgs

# At module level, unlike the rest: the zygote preloads this module, and with it both kinds
# of container (serve runs only in a forked server, never in `start`).
from pywasmd.shim.factory import ContainerFactory

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pywasmd.shim.launcher import Launcher
    from pywasmd.shim.linux import Runc
    from pywasmd.shim.reaper import Reaper
    from pywasmd.shim.service import TaskService
    from pywasmd.ttrpc.server import Server

log = logging.getLogger("pywasmd.shim")

#: Time given to queued events once the shim has nothing left to serve.
_EVENT_DRAIN = 10.0


def _open_log() -> None:
    """Send stderr (and so logging) to the bundle's ``log`` FIFO, which containerd reads.

    Non-blocking and loss-tolerant: a stalled or restarting containerd must never
    stop the shim.
    """
    try:
        fd = os.open(paths.LOG_FIFO, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)


def _setup_logging(debug: bool) -> None:
    _open_log()
    logging.raiseExceptions = False  # a full or broken log FIFO drops lines, nothing more
    handler = logging.StreamHandler(sys.stderr)
    # containerd copies these lines into its own log: match its logfmt shape.
    formatter = logging.Formatter(
        'time="%(asctime)s.%(msecs)03dZ" level=%(levelname)s msg="%(message)s" '
        "runtime=io.containerd.pywasm.v1",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def serve(listener: socket.socket, args: ShimArgs, socket_path: str) -> None:
    import setproctitle

    # What `ps` shows, shaped like containerd-shim-runc-v2's, whoever forked us.
    setproctitle.setproctitle(
        f"containerd-shim-pywasm-v1 -namespace {args.namespace} -id {args.id} "
        f"-address {args.address}"
    )
    _setup_logging(args.debug)
    _below_containerd(args.address)
    try:
        asyncio.run(_serve(listener, args))
    except Exception:
        log.exception("shim server failed")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(socket_path)


def _below_containerd(address: str) -> None:
    """Take containerd's OOM score + 1, as containerd's runc shim does: under memory pressure
    the shim and the containers it starts (workers inherit the score unless their config
    sets one) go before containerd.  containerd's pid comes from its own socket's peer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            probe.connect(address.removeprefix("unix://"))
            creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        pid = int.from_bytes(creds[:4], "little")
        with open(f"/proc/{pid}/oom_score_adj", encoding="ascii") as f:
            score = int(f.read())
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as f:
            f.write(str(min(score + 1, 1000)))
    except (OSError, ValueError) as exc:
        log.warning("cannot take containerd's OOM score + 1: %s", exc)


#: A server with no container and no containerd connection for this long is abandoned.
_ABANDONED_AFTER = 5.0


async def _exit_when_abandoned(service: TaskService, server: Server) -> None:
    """Leave when containerd forgot us (e.g. it died during Create and dropped the bundle).

    containerd connects right after ``start`` and keeps the connection while any of our
    containers lives; with neither, nobody will ever send the Shutdown that ends us.
    """
    idle = 0.0
    while True:
        await asyncio.sleep(1.0)
        idle = idle + 1.0 if service.task_count == 0 and server.connection_count == 0 else 0.0
        if idle >= _ABANDONED_AFTER:
            log.warning("no container and no containerd connection for %.0fs: exiting", idle)
            service.shutdown_requested.set()
            return


def _runc(reaper: Reaper, namespace: str) -> Runc:
    from pywasmd.errors import ShimError
    from pywasmd.nodeconfig import load_node_config, runc_binary
    from pywasmd.shim.linux import Runc

    try:
        binary = runc_binary(load_node_config())
    except ShimError as exc:
        log.error("%s; looking for runc on PATH", exc.message)
        binary = ""
    return Runc(reaper, namespace, binary)


def _launchers() -> Launcher:
    from pywasmd.errors import ShimError
    from pywasmd.nodeconfig import engine_interpreters, load_node_config
    from pywasmd.shim.launcher import EngineLaunchers, ForkLauncher

    try:
        interpreters = engine_interpreters(load_node_config())
    except ShimError as exc:
        log.error("%s; every engine runs in this shim's Python", exc.message)
        interpreters = {}
    return EngineLaunchers(ForkLauncher(), interpreters)


async def _serve(listener: socket.socket, args: ShimArgs) -> None:
    from pywasmd.shim.events import TtrpcEventPublisher
    from pywasmd.shim.reaper import Reaper, become_subreaper
    from pywasmd.shim.server import task_services
    from pywasmd.shim.service import TaskService
    from pywasmd.ttrpc.server import Server

    loop = asyncio.get_running_loop()
    become_subreaper()
    reaper = Reaper()
    reaper.install(loop)
    publisher = TtrpcEventPublisher(os.environ.get("TTRPC_ADDRESS", ""), args.namespace)
    publisher.start()
    from pywasmd.shim.artifacts import ContainerdArtifacts

    artifacts = ContainerdArtifacts(args.address, args.namespace)
    containers = ContainerFactory(
        _launchers(), reaper, artifacts.lookup, artifacts.entrypoint, _runc(reaper, args.namespace)
    )
    service = TaskService(containers, publisher)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.shutdown_requested.set)
    server = Server(task_services(service))
    serving = asyncio.create_task(server.serve(listener))
    log.info("pywasm shim %d serving %s (namespace %s)", os.getpid(), args.id, args.namespace)
    watchdog = asyncio.create_task(_exit_when_abandoned(service, server))
    await service.shutdown_requested.wait()
    watchdog.cancel()
    # Let the Shutdown reply reach containerd before the connection goes away.
    await asyncio.sleep(0.01)
    await server.close()
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    await publisher.close(_EVENT_DRAIN)
    log.info("pywasm shim %d exiting", os.getpid())
