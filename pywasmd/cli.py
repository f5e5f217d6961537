"""`pywasm`: build, push, pull, inspect and import OCI images of WebAssembly (WASI) programs.

Subcommands live in `COMMANDS`, a small table: each entry adds its own arguments and names its
handler, so push/pull/import can be added without touching the dispatch. Handlers import the
image code themselves, keeping `pywasm --help` down to argparse's own start-up cost.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pywasmd.errors import InvalidArgument, NotFound, ShimError
from pywasmd.wasmbin import HEADER_SIZE, is_wasm

PROG = "pywasm"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


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
        type=Path,
        metavar="OUT.tar",
        help="where to write the OCI archive (this, --push, or both)",
    )
    p.add_argument(
        "--push", action="store_true", help="push the result to the registry named by --tag"
    )
    p.add_argument(
        "--format",
        choices=("image", "artifact"),
        default="image",
        help="image: an OCI image whose rootfs holds the module (runs on any containerd); "
        "artifact: a CNCF Wasm OCI artifact, the module as the only layer (default: %(default)s)",
    )
    p.add_argument(
        "--index",
        action="append",
        default=[],
        type=Path,
        metavar="IMAGE.tar",
        help="also list the images of this OCI archive (e.g. a linux/amd64 build) in one "
        "multi-platform index next to the Wasm image (repeatable)",
    )
    _insecure_argument(p)
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


def _insecure_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--insecure",
        action="store_true",
        help="talk to the registry over plain HTTP (e.g. a local registry on 127.0.0.1)",
    )


def _build(args: argparse.Namespace) -> int:
    from pywasmd.image import content as oci
    from pywasmd.image import wasm
    from pywasmd.image.build import Platform
    from pywasmd.image.reference import parse_reference

    if args.output is None and not args.push:
        raise _UsageError("say where the result goes: -o OUT.tar, --push, or both")
    module: Path = args.module
    ref = parse_reference(args.tag)
    if ref.digest:
        raise InvalidArgument(f"-t {args.tag}: a digest is computed by the build; give a tag")
    platform = Platform.parse(args.platform)
    data = _read_module(module)
    # Catches what the 8-byte check cannot: a module cut short by a failed download or copy.
    wasm.parse(data, str(module))
    if args.format == "artifact":
        for flag, value in (
            ("--file", args.file),
            ("--env", args.env),
            ("--arg", args.arg),
            ("--workdir", args.workdir),
            ("--label", args.label),
        ):
            if value:
                raise InvalidArgument(
                    f"{flag} cannot be used with --format artifact: an artifact holds only the "
                    "module; use --format image, or pass it at run time"
                )
        built = oci.build_artifact(data, module.name, platform)
    else:
        built = oci.from_image(_compat_image(args, module, data, platform))
    if args.index:
        parts = [built] + [oci.read_archive(path).content for path in args.index]
        built = oci.make_index(parts)
    if args.output is not None:
        _write_content(built, ref, args.output)
        print(f"{ref} {built.root.digest}")
    if args.push:
        _push_content(built, ref, args.insecure)
    return EXIT_OK


def _compat_image(args: argparse.Namespace, module: Path, data: bytes, platform: Any) -> Any:
    from pywasmd.image.build import File, FileSource, build_image, tree

    env = [_key_value(e, "--env") for e in args.env]
    labels = dict(_key_value(label, "--label").split("=", 1) for label in args.label)
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
    return build_image(
        files=files,
        entrypoint=[guest_module],
        cmd=args.arg,
        env=env,
        working_dir=args.workdir,
        labels=labels,
        platform=platform,
    )


def _write_content(built: Any, ref: Any, out: Path) -> None:
    from pywasmd.image import content as oci

    try:
        oci.write_archive(built, ref, out)
    except OSError as e:
        raise _Failure(f"cannot write {out}: {e.strerror or e}") from None


def _push_content(built: Any, ref: Any, insecure: bool) -> None:
    from pywasmd.image.progress import for_terminal
    from pywasmd.image.registry import Registry

    progress = for_terminal()
    try:
        pushed = Registry(ref, insecure=insecure, progress=progress).push(built)
    finally:
        progress.close()
    print(f"pushed {pushed.reference} ({pushed.uploaded} blobs sent, {pushed.skipped} present)")


def _push_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", type=Path, metavar="ARCHIVE.tar", help="an OCI image archive")
    p.add_argument(
        "ref",
        nargs="?",
        metavar="REF",
        help="where to push, e.g. 127.0.0.1:5000/hello:1 (default: the archive's own name)",
    )
    _insecure_argument(p)


def _push(args: argparse.Namespace) -> int:
    from pywasmd.image import content as oci
    from pywasmd.image.reference import parse_reference

    archived = oci.read_archive(args.archive)
    name = args.ref or archived.reference
    if not name:
        raise InvalidArgument(f"{args.archive}: the archive names no image; give REF")
    ref = parse_reference(name)
    if ref.digest:
        raise InvalidArgument(f"{name}: push to a tag, not a digest")
    _push_content(archived.content, ref, args.insecure)
    return EXIT_OK


def _pull_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", help="e.g. 127.0.0.1:5000/hello:1 or NAME@sha256:...")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="OUT.tar",
        help="where to write the OCI archive (default: NAME_TAG.tar in the current directory)",
    )
    _insecure_argument(p)


def _pull(args: argparse.Namespace) -> int:
    from pywasmd.image.reference import parse_reference

    ref = parse_reference(args.ref)
    out: Path = args.output or Path(f"{ref.path.rsplit('/', 1)[-1]}_{ref.tag or 'latest'}.tar")
    pulled = _fetch(ref, args.insecure)
    _write_content(pulled, ref, out)
    print(f"{ref} {pulled.root.digest} -> {out}")
    return EXIT_OK


def _fetch(ref: Any, insecure: bool) -> Any:
    from pywasmd.image.progress import for_terminal
    from pywasmd.image.registry import Registry

    progress = for_terminal()
    try:
        return Registry(ref, insecure=insecure, progress=progress).pull()
    finally:
        progress.close()


def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        metavar="REF|ARCHIVE.tar",
        help="an OCI image archive, or an image in a registry",
    )
    p.add_argument(
        "--platform", metavar="OS/ARCH", help="which image to show when there are several"
    )
    _insecure_argument(p)


def _is_archive_path(target: str) -> bool:
    return target.endswith(".tar") or target.startswith(("/", "./", "../")) or Path(target).exists()


def _inspect(args: argparse.Namespace) -> int:
    from pywasmd.image import content as oci
    from pywasmd.image.build import Platform
    from pywasmd.image.inspect import describe
    from pywasmd.image.reference import parse_reference

    platform = Platform.parse(args.platform) if args.platform else None
    if _is_archive_path(args.target):
        archived = oci.read_archive(Path(args.target))
        rows = describe(archived.content, archived.reference, platform)
    else:
        ref = parse_reference(args.target)
        rows = describe(_fetch(ref, args.insecure), str(ref), platform)
    for key, value in rows:
        print(f"{key + ':':15}{value}")
    return EXIT_OK


def _import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", type=Path, metavar="ARCHIVE.tar", help="an OCI image archive")
    p.add_argument(
        "--address",
        default="/run/containerd/containerd.sock",
        metavar="SOCK",
        help="containerd's socket (default: %(default)s)",
    )
    p.add_argument(
        "--namespace",
        default="default",
        metavar="NS",
        help="containerd namespace (default: %(default)s)",
    )
    p.add_argument(
        "--all-platforms",
        action="store_true",
        help="import every platform of a multi-platform archive, not just wasi/wasm",
    )
    p.add_argument(
        "--ctr", default="ctr", metavar="PATH", help="the ctr binary to use (default: %(default)s)"
    )


def _import(args: argparse.Namespace) -> int:
    from pywasmd.image import content as oci
    from pywasmd.image.ctrimport import import_archive

    archived = oci.read_archive(args.archive)  # refuse broken archives before containerd sees them
    if archived.reference is None:
        raise InvalidArgument(
            f"{args.archive}: the archive names no image (no io.containerd.image.name); "
            "rebuild it with pywasm build -t REF"
        )
    output = import_archive(
        archived,
        args.archive,
        ctr=args.ctr,
        address=args.address,
        namespace=args.namespace,
        all_platforms=args.all_platforms,
    )
    print(output)
    return EXIT_OK


def _config_arguments(p: argparse.ArgumentParser) -> None:
    from pywasmd.nodesetup import add_arguments

    add_arguments(p)


def _config(args: argparse.Namespace) -> int:
    from pywasmd.nodesetup import run

    return run(args)


def _warm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        metavar="MODULE.wasm|ARCHIVE.tar|REF",
        help="a module, an OCI archive, or an image or artifact in a registry",
    )
    p.add_argument(
        "--platform", metavar="OS/ARCH", help="which image of a multi-platform index to warm"
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the compile cache (default: $PYWASM_CACHE_DIR or /var/lib/pywasm/cache)",
    )
    p.add_argument(
        "--fuel", action="store_true", help="warm the fuel-metered variant (pywasm.io/fuel)"
    )
    _insecure_argument(p)


def _warm(args: argparse.Namespace) -> int:
    """Compile ahead of time, into the same entry the shim's worker would look up."""
    import tempfile

    from pywasmd.cache import CompileCache, module_digest
    from pywasmd.engine import get_engine
    from pywasmd.image.build import Platform
    from pywasmd.nodeconfig import config_path, load_node_config
    from pywasmd.oci.engine_choice import choose_engine
    from pywasmd.oci.grants import Preopen
    from pywasmd.oci.plan import WasiPlan

    platform = Platform.parse(args.platform) if args.platform else None
    with tempfile.TemporaryDirectory(prefix="pywasm-warm-") as scratch:
        if args.target.endswith(".wasm") and Path(args.target).is_file():
            name, module = args.target, args.target
        else:
            from pywasmd.image import content as oci
            from pywasmd.image.inspect import module_of
            from pywasmd.image.reference import parse_reference

            if _is_archive_path(args.target):
                content = oci.read_archive(Path(args.target)).content
            else:
                content = _fetch(parse_reference(args.target), args.insecure)
            name, data = module_of(content, platform)
            module = os.path.join(scratch, "module.wasm")
            Path(module).write_bytes(data)
        # The engine and features a container gets from this node's config (no annotation).
        choice = choose_engine({}, {}, load_node_config(), config_path())
        plan = WasiPlan(
            module=module,
            argv=(name,),
            env=(),
            cwd="/",
            preopens=(Preopen(scratch, "/", True),),
            engine=choice.name,
            features=choice.feature_tuple,
            fuel=1 if args.fuel else None,
        )
        engine = get_engine(plan.engine)
        cache = CompileCache(args.cache_dir)
        # A scratch copy's identity would only litter the digest memo: hash it outright.
        key = cache.key(engine, plan, module_digest(module))
        if cache.lookup(key) is not None:
            print(f"{name}: already compiled ({cache.path(key)})")
            return EXIT_OK
        stored = cache.store(key, engine.precompile(plan))
        if stored is None:
            raise _Failure(f"the compile cache {cache.root} cannot be written (see above)")
    print(f"{name}: compiled into {stored}")
    return EXIT_OK


def _doctor_arguments(p: argparse.ArgumentParser) -> None:
    from pywasmd.doctor import add_arguments

    add_arguments(p)


def _doctor(args: argparse.Namespace) -> int:
    from pywasmd.doctor import run

    return run(args)


def _run_arguments(p: argparse.ArgumentParser) -> None:
    from pywasmd.client.run import add_arguments

    add_arguments(p)


def _run(args: argparse.Namespace) -> int:
    from pywasmd.client.run import run

    return run(args)


COMMANDS: tuple[Command, ...] = (
    Command(
        "build",
        "package a Wasm module as an OCI image or Wasm artifact",
        "Package MODULE.wasm as an OCI image (--format image: the module goes to /<basename> and"
        " is the entrypoint) or as a CNCF Wasm OCI artifact (--format artifact: the module is the"
        " only layer). Write an archive (-o) for `pywasm import`, `ctr images import --platform"
        " wasi/wasm` or `docker load`, and/or push it (--push). --index adds other platforms'"
        " images (e.g. linux/amd64) under one multi-platform tag.",
        _build_arguments,
        _build,
    ),
    Command(
        "push",
        "push an OCI archive to a registry",
        "Push every blob and manifest of ARCHIVE.tar to REF; digests stay as built.",
        _push_arguments,
        _push,
    ),
    Command(
        "pull",
        "pull an image or artifact from a registry into an OCI archive",
        "Pull REF (every platform of an index) into an OCI archive, checking every digest.",
        _pull_arguments,
        _pull,
    ),
    Command(
        "inspect",
        "show what an image, artifact or archive holds",
        "Print the reference, kind, platform(s), entrypoint and module of an OCI archive or of"
        " an image in a registry: module size and digest, WASI version (p1 for core modules, p2"
        " for components, from the binary header) and imports.",
        _inspect_arguments,
        _inspect,
    ),
    Command(
        "import",
        "import an OCI archive into containerd (wasi/wasm platform handled)",
        "Import ARCHIVE.tar into containerd with ctr, selecting the wasi/wasm platform that ctr"
        " would otherwise filter out.",
        _import_arguments,
        _import,
    ),
    Command(
        "warm",
        "compile a module ahead of time into this node's compile cache",
        "Compile the module of MODULE.wasm, of an OCI archive, or of an image or artifact in a"
        " registry, with this node's engine and features, into the compile cache the shim uses:"
        " the first container start of that module then loads machine code instead of"
        " compiling (seconds for a large module).",
        _warm_arguments,
        _warm,
    ),
    Command(
        "config",
        "print or install node configuration for containerd (CRI), Docker or Kubernetes",
        "Print (or with --install merge into PATH) the node configuration pywasm needs: the CRI"
        " runtime entry of containerd's config.toml (handler pywasm; --version 1 for containerd"
        " 1.6/1.7, 2 for 2.x, default: the containerd on PATH), Docker's daemon.json runtime"
        " entry (`docker run --runtime pywasm`; `--runtime io.containerd.pywasm.v1` works"
        " without it), or a Kubernetes RuntimeClass manifest (handler pywasm).",
        _config_arguments,
        _config,
    ),
    Command(
        "run",
        "run an image, a Wasm artifact or a local .wasm as a container through containerd",
        "Run IMAGE (an image or a CNCF Wasm artifact; pulled when containerd lacks it) or a local"
        " module (a path ending in .wasm, wrapped into a wasi/wasm image on the fly) as one"
        " container on the pywasm runtime, through containerd's API, like `ctr run`/`docker"
        " run`. Output and exit status are the guest's; Ctrl-C and SIGTERM reach it.",
        _run_arguments,
        _run,
    ),
    Command(
        "doctor",
        "check that this node can run Wasm containers; print the fix for each problem",
        "Check the node as containerd sees it: containerd's version and socket, the shim on"
        " containerd's PATH, the runtime in containerd's config (CRI handler pywasm), Docker's"
        " daemon.json, cgroups, the fork-server, the compile cache and each engine. Each"
        " problem is printed with the command that fixes it. Exit status 0 when the node can"
        " run a Wasm container, 1 otherwise.",
        _doctor_arguments,
        _doctor,
    ),
)


class _Failure(Exception):
    """A failure that is not the user's input (exit 1)."""


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Build, push, pull, inspect and import OCI images of WebAssembly (WASI)"
        " programs for pywasmd.",
        epilog="examples:\n  pywasm build hello.wasm -t hello:latest -o hello.tar\n"
        "  pywasm import hello.tar\n"
        "  pywasm build hello.wasm -t 127.0.0.1:5000/hello:1 --format artifact --push --insecure\n"
        "  pywasm pull 127.0.0.1:5000/hello:1 -o hello.tar --insecure\n"
        "  pywasm inspect hello.tar",
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
    if not is_wasm(data) or len(data) < HEADER_SIZE:
        raise InvalidArgument(f"{path}: not a WebAssembly binary: {_describe(data)}")
    return data


def _describe(data: bytes) -> str:
    """Say what a non-Wasm file looks like, since the usual mistakes have telltale starts."""
    if not data:
        return "the file is empty"
    if is_wasm(data):
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
