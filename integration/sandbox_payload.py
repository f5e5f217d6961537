"""What an escaped Wasm guest would try, run by the real worker in place of the guest.

The shim runs this file when its environment has `PYWASM_TEST_PAYLOAD=<this file>` and the
container has the annotation `pywasm.io/test-payload=1`: the worker reads it before entering the
sandbox and executes it (`__name__ == "__payload__"`) once the whole sandbox (namespaces, root,
credentials, capabilities, no_new_privs, seccomp) is in place. It can import only what the
worker had loaded before `pivot_root` (os, errno, ctypes, socket, resource); it prints one
`attempt: outcome` line per attempt on stdout (the container's stdout). integration/native/
escape.c does the same attempts, with the same output, in a runc container.

The tests run a copy with PORT and TARGET filled in (`render`). Every attempt is harmless to the
machine even when it succeeds: the files it creates are new empty files with a random name, the
mount names a filesystem type that does not exist (ENODEV when the mount was allowed, EPERM when
refused), the module calls pass no module (EBADF/EFAULT when allowed), ptrace uses PTRACE_SEIZE
(no stop; released when this process exits), the raised limit is this process's own, and the
directory `mkdir` makes (a custom seccomp profile may refuse it) is removed at once, as is the
block device node of loop0 that `device` makes and opens read-only (the device cgroup decides).
"""

from __future__ import annotations

import ctypes
import errno
import os

#: TCP port the test listens on at 127.0.0.1 in the container's host namespaces.
PORT = 0
#: The payload tries to ptrace a process whose argv[0] contains this (a shim's).
TARGET = "containerd-shim"

# x86_64 system call numbers.
_SYS_INIT_MODULE = 175
_SYS_FINIT_MODULE = 313
_SYS_ADD_KEY = 248
_SYS_KEYCTL = 250
_PTRACE_SEIZE = 0x4206
_RLIMIT_NOFILE = 7
_KEYCTL_GET_KEYRING_ID = 0
_KEY_SPEC_PROCESS_KEYRING = -2
_KEY_SPEC_SESSION_KEYRING = -3
_S_IFBLK = 0o060000

ATTEMPTS = (
    "shadow",
    "tmp",
    "root",
    "tcp",
    "mount",
    "init_module",
    "finit_module",
    "ptrace",
    "rlimit",
    "keyctl",
    "add_key",
    "mkdir",
    "device",
)


def render(port: int, target: str = TARGET) -> str:
    """This file's text with PORT and TARGET set (what the tests hand the shim)."""
    from pathlib import Path  # here: the payload itself runs where only preloaded modules are

    text = Path(__file__).read_text()
    text = text.replace("\nPORT = 0\n", f"\nPORT = {port}\n", 1)
    return text.replace(f'\nTARGET = "{TARGET}"\n', f"\nTARGET = {target!r}\n", 1)


def _name(code: int) -> str:
    return errno.errorcode.get(code, f"errno{code}")


class _Rlimit(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_ulong), ("max", ctypes.c_ulong)]


def _libc() -> ctypes.CDLL:
    # dlopen(NULL): the symbols the interpreter already has; nothing is read from disk.
    return ctypes.CDLL(None, use_errno=True)


def _syscall(libc: ctypes.CDLL, *args: int | bytes | None) -> str:
    fn = libc.syscall
    fn.restype = ctypes.c_long
    ctypes.set_errno(0)
    r = fn(*[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return _name(ctypes.get_errno()) if r == -1 else "ok"


def _create(path: str) -> str:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as e:
        return _name(e.errno or 0)
    os.close(fd)
    return f"created {path}"


def _mkdir(path: str) -> str:
    # Made and removed at once: a refusal by a custom seccomp profile shows as EPERM.
    try:
        os.mkdir(path, 0o700)
    except OSError as e:
        return _name(e.errno or 0)
    os.rmdir(path)
    return "ok"


def _device(path: str) -> str:
    # loop0 (block 7:0): runc's device cgroup lets a container make any node (`b *:* m`) but
    # open only the allowed ones; opening an unbound loop device read-only changes nothing.
    try:
        os.mknod(path, _S_IFBLK | 0o600, os.makedev(7, 0))
    except OSError as e:
        return "mknod " + _name(e.errno or 0)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return "open " + _name(e.errno or 0)
    finally:
        os.unlink(path)
    os.close(fd)
    return "opened"


def _shadow() -> str:
    try:
        with open("/etc/shadow", "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        return _name(e.errno or 0)
    return f"read {len(data)} {data.split(b':', 1)[0].decode(errors='replace')}"


def _tcp() -> str:
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(("127.0.0.1", PORT))
    except TimeoutError:
        return "ETIMEDOUT"
    except OSError as e:
        return _name(e.errno or 0)
    finally:
        s.close()
    return "connected"


def _ptrace(libc: ctypes.CDLL) -> str:
    targets = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0]
            if TARGET.encode() in argv0:
                targets.append(int(entry))
        except OSError:
            continue
    if not targets:
        return "no-target"
    fn = libc.ptrace
    fn.restype = ctypes.c_long
    ctypes.set_errno(0)
    r = fn(ctypes.c_long(_PTRACE_SEIZE), ctypes.c_long(targets[0]), None, None)
    return _name(ctypes.get_errno()) if r == -1 else "seized"


def _rlimit(libc: ctypes.CDLL) -> str:
    old = _Rlimit()
    if libc.prlimit(0, _RLIMIT_NOFILE, None, ctypes.byref(old)) != 0:
        return "getrlimit " + _name(ctypes.get_errno())
    new = _Rlimit(old.cur, old.max + 1)
    ctypes.set_errno(0)
    if libc.prlimit(0, _RLIMIT_NOFILE, ctypes.byref(new), None) != 0:
        return f"hard={old.max} {_name(ctypes.get_errno())}"
    return f"hard={old.max} raised"


def attempt(what: str, libc: ctypes.CDLL, token: str) -> str:
    if what == "shadow":
        return _shadow()
    if what == "tmp":
        return _create(f"/tmp/pw-escape-{token}")
    if what == "root":
        return _create(f"/pw-escape-{token}")
    if what == "tcp":
        return _tcp()
    if what == "mount":
        libc.mount.restype = ctypes.c_int
        ctypes.set_errno(0)
        r = libc.mount(b"pw-escape", b"/", b"pw-no-such-fs", ctypes.c_ulong(0), None)
        return _name(ctypes.get_errno()) if r != 0 else "mounted"
    if what == "init_module":
        return _syscall(libc, _SYS_INIT_MODULE, None, 0, b"")
    if what == "finit_module":
        return _syscall(libc, _SYS_FINIT_MODULE, -1, b"", 0)
    if what == "ptrace":
        return _ptrace(libc)
    if what == "rlimit":
        return _rlimit(libc)
    if what == "keyctl":
        return _syscall(libc, _SYS_KEYCTL, _KEYCTL_GET_KEYRING_ID, _KEY_SPEC_SESSION_KEYRING, 0)
    if what == "add_key":
        return _syscall(
            libc, _SYS_ADD_KEY, b"user", b"pw-escape", b"x", 1, _KEY_SPEC_PROCESS_KEYRING
        )
    if what == "mkdir":
        return _mkdir(f"/pw-mkdir-{token}")
    if what == "device":
        return _device(f"/pw-dev-{token}")
    raise ValueError(f"unknown attempt {what!r}")


def main() -> None:
    libc = _libc()
    token = os.urandom(6).hex()
    for what in ATTEMPTS:
        try:
            outcome = attempt(what, libc, token)
        except Exception as e:  # noqa: BLE001 - one broken attempt must not hide the others
            outcome = f"payload-error {type(e).__name__}: {e}"
        os.write(1, f"{what}: {outcome}\n".encode())


if __name__ in ("__main__", "__payload__"):
    main()
