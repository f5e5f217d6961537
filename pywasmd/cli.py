"""`pywasm`: build and inspect OCI images of WebAssembly (WASI) programs.

Subcommands live in `COMMANDS`, a small table: each entry adds its own arguments and names its
handler, so push/pull/import can be added without touching the dispatch. Handlers import the
image code themselves, keeping `pywasm --help` down to argparse's own start-up cost.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from pywasmd.errors import InvalidArgument, NotFound, ShimError

PROG = "pywasm"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_WASM_MAGIC = b"\0asm"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    # argparse would print usage first; the brief's contract is one `pywasm: error:` line first.
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("module", type=Path, metavar="MODULE.wasm", help="the WebAssembly module")
    p.add_argument(
        "-t",
        "--tag",
        required=True,
        metavar="REF",
        help="image reference, e.g. hello:latest (→ docker.io/library/hello:latest)",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="OUT.tar",
        help="where to write the OCI archive",
    )
    p.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="HOST:GUEST",
        help="also put a host file or directory at GUEST in the image (repeatable)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="environment variable of the image (repeatable)",
    )
    p.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="A",
        help="default argument passed to the module, the image's Cmd (repeatable)",
    )
    p.add_argument("--workdir", default="", metavar="DIR", help="working directory in the image")
    p.add_argument(
        "--label", action="append", default=[], metavar="K=V", help="image label (repeatable)"
    )
    p.add_argument(
        "--platform",
        default="wasi/wasm",
        metavar="OS/ARCH",
        help="platform recorded in the image (default: %(default)s)",
    )


def _build(args: argparse.Namespace) -> int:
    from pywasmd.image.build import File, FileSource, Platform, build_image, tree
    from pywasmd.image.layout import write_archive
    from pywasmd.image.reference import parse_reference

    module: Path = args.module
    ref = parse_reference(args.tag)
    platform = Platform.parse(args.platform)
    env = [_key_value(e, "--env") for e in args.env]
    labels = dict(_key_value(label, "--label").split("=", 1) for label in args.label)
    data = _read_module(module)

    guest_module = "/" + module.name
    files: dict[str, FileSource] = {}
    for spec in args.file:
        host, guest = _host_guest(spec)
        if host.is_dir():
            files.update(tree(host, guest))
        else:
            files[guest] = host
    if guest_module in files:
        raise InvalidArgument(f"--file {guest_module}: that path holds the module itself")
    # Executable like any entrypoint, so tools that check the bit (runc, docker) accept it.
    files[guest_module] = File(data, 0o755)
    if args.workdir and not args.workdir.startswith("/"):
        raise InvalidArgument(f"--workdir {args.workdir!r}: must be an absolute path")

    image = build_image(
        files=files,
        entrypoint=[guest_module],
        cmd=args.arg,
        env=env,
        working_dir=args.workdir,
        labels=labels,
        platform=platform,
    )
    try:
        write_archive(image, ref, args.output)
    except OSError as e:
        raise _Failure(f"cannot write {args.output}: {e.strerror or e}") from None
    print(f"{ref} {image.manifest.digest}")
    return EXIT_OK


def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", type=Path, metavar="ARCHIVE.tar", help="an OCI image archive")
    p.add_argument(
        "--platform", metavar="OS/ARCH", help="which image to show when the archive holds several"
    )


def _inspect(args: argparse.Namespace) -> int:
    import hashlib

    from pywasmd.image.build import Platform
    from pywasmd.image.layout import read_archive

    platform = Platform.parse(args.platform) if args.platform else None
    image = read_archive(args.archive, platform)
    rows = [
        ("reference", image.reference or "(none)"),
        ("manifest", image.manifest_digest),
        ("platform", str(image.platform)),
        ("entrypoint", _argv_text(image.entrypoint)),
        ("cmd", _argv_text(image.cmd)),
        ("env", _argv_text(image.env)),
    ]
    argv = image.entrypoint + image.cmd
    if argv:
        content = image.read_file(argv[0])
        if content is None:
            rows.append(("module", f"{argv[0]} (not found in the image)"))
        else:
            kind = "" if content[:4] == _WASM_MAGIC else ", not WebAssembly"
            rows.append(("module", f"{argv[0]} ({len(content)} bytes{kind})"))
            rows.append(("module digest", "sha256:" + hashlib.sha256(content).hexdigest()))
    for key, value in rows:
        print(f"{key + ':':15}{value}")
    return EXIT_OK


COMMANDS: tuple[Command, ...] = (
    Command(
        "build",
        "package a Wasm module as an OCI image archive",
        "Package MODULE.wasm as an OCI image archive for `ctr images import --platform wasi/wasm`"
        " or `docker load`. The module goes to /<basename> and is the image's entrypoint.",
        _build_arguments,
        _build,
    ),
    Command(
        "inspect",
        "show what an OCI image archive holds",
        "Print the reference, platform, entrypoint and module of an OCI image archive.",
        _inspect_arguments,
        _inspect,
    ),
)


class _Failure(Exception):
    """A failure that is not the user's input (exit 1)."""


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Build and inspect OCI images of WebAssembly (WASI) programs for pywasmd.",
        epilog="example:\n  pywasm build hello.wasm -t hello:latest -o hello.tar\n"
        "  ctr images import --platform wasi/wasm hello.tar\n"
        "  docker load -i hello.tar",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for c in COMMANDS:
        p = sub.add_parser(c.name, help=c.help, description=c.description)
        c.add_arguments(p)
        p.set_defaults(run=c.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        return int(args.run(args))
    except SystemExit as e:  # --help and --version end through argparse's exit
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except (_UsageError, InvalidArgument, NotFound) as e:
        return _complain(str(e), EXIT_USAGE)
    except (_Failure, ShimError) as e:
        return _complain(str(e), EXIT_FAILURE)


def _complain(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _key_value(item: str, flag: str) -> str:
    key, eq, _ = item.partition("=")
    if not eq or not key or "\0" in item:
        raise InvalidArgument(f"{flag} {item!r}: expected KEY=VALUE with a non-empty KEY")
    return item


def _argv_text(items: list[str]) -> str:
    import json

    return json.dumps(items) if items else "(none)"


def _host_guest(spec: str) -> tuple[Path, str]:
    # The guest side is absolute, so the last ":/" splits even host paths that contain colons.
    host, sep, guest = spec.rpartition(":/")
    if not sep or not host:
        raise InvalidArgument(f"--file {spec!r}: expected HOST:GUEST with an absolute GUEST path")
    path = Path(host)
    if not path.exists():
        raise InvalidArgument(f"--file {spec!r}: {host}: no such file or directory")
    return path, "/" + guest


def _read_module(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidArgument(f"{path}: is a directory, not a WebAssembly module") from None
    except OSError as e:
        raise InvalidArgument(f"{path}: {e.strerror or e}") from None
    if data[:4] != _WASM_MAGIC or len(data) < 8:
        raise InvalidArgument(f"{path}: not a WebAssembly binary: {_describe(data)}")
    return data


def _describe(data: bytes) -> str:
    """Say what a non-Wasm file looks like, since the usual mistakes have telltale starts."""
    if not data:
        return "the file is empty"
    if data[:4] == _WASM_MAGIC:
        return f"it is truncated ({len(data)} bytes, shorter than the 8-byte header)"
    signatures = [
        (b"\x7fELF", "it is an ELF executable (a native program, not Wasm)"),
        (b"#!", "it is a script (starts with #!)"),
        (b"MZ", "it is a Windows/PE executable"),
        (b"\xcf\xfa\xed\xfe", "it is a Mach-O executable"),
        (b"\x1f\x8b", "it is gzip-compressed"),
        (b"PK\x03\x04", "it is a zip archive"),
    ]
    for magic, text in signatures:
        if data.startswith(magic):
            return text
    head = data[:512].lstrip()
    if head.startswith((b"(module", b"(component", b";;")):
        return "it is WebAssembly text (WAT); compile it first, e.g. with wasm-tools parse"
    if _looks_textual(data[:512]):
        return f"it is text starting {data[:24].decode(errors='replace')!r}"
    return "it starts with bytes " + data[:8].hex(" ") + " (a Wasm binary starts 00 61 73 6d)"


def _looks_textual(data: bytes) -> bool:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


if __name__ == "__main__":
    sys.exit(main())
