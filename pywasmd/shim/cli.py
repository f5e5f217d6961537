"""Parsing the shim's command line (Go ``flag`` syntax), pure and import-light.

containerd runs ``containerd-shim-pywasm-v1 -namespace NS -address A
-publish-binary P -id ID [-bundle B] [-debug] start|delete``.  Unknown flags are
accepted and ignored, as newer containerd versions add some.
"""

from __future__ import annotations

# Flags containerd may pass that pywasm does not use are still listed, so their values are
# never mistaken for the action: -socket and -debug-socket (2.x), -info (2.x asks for runtime
# info; without a start or delete action it ends as a usage error).
_VALUE_FLAGS = {"namespace", "address", "publish-binary", "id", "bundle", "socket", "debug-socket"}
_BOOL_FLAGS = {"debug", "v", "version", "info"}


class ShimArgs:
    """The parsed command line.  A plain class: ``dataclasses`` costs ``start`` 10 ms."""

    __slots__ = (
        "action",
        "namespace",
        "address",
        "publish_binary",
        "id",
        "bundle",
        "debug",
        "version",
    )

    def __init__(
        self,
        action: str = "",
        namespace: str = "default",
        address: str = "",
        publish_binary: str = "",
        id: str = "",
        bundle: str = "",
        debug: bool = False,
        version: bool = False,
    ) -> None:
        self.action = action
        self.namespace = namespace
        self.address = address
        self.publish_binary = publish_binary
        self.id = id
        self.bundle = bundle
        self.debug = debug
        self.version = version

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    def to_fields(self) -> dict[str, str]:
        """Every field as text (a flag as "1" or ""): how the arguments cross to the zygote."""
        return {
            name: ("1" if value else "") if isinstance(value, bool) else str(value)
            for name, value in self.as_dict().items()
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> ShimArgs:
        """The inverse of :meth:`to_fields`; names it does not know are ignored."""
        args = cls()
        for name in cls.__slots__:
            if name in fields:
                default = getattr(args, name)
                setattr(
                    args, name, fields[name] == "1" if isinstance(default, bool) else fields[name]
                )
        return args

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShimArgs) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"ShimArgs({self.as_dict()!r})"

    __hash__ = None  # type: ignore[assignment]


class UsageError(ValueError):
    pass


def parse(argv: list[str]) -> ShimArgs:
    values: dict[str, str] = {}
    flags: set[str] = set()
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            positional.append(arg)
            continue
        name, eq, inline = arg.lstrip("-").partition("=")
        if name in _BOOL_FLAGS:
            flags.add(name)
        elif name in _VALUE_FLAGS:
            if eq:
                values[name] = inline
            elif i < len(argv):
                values[name] = argv[i]
                i += 1
            else:
                raise UsageError(f"flag -{name} needs a value")
        elif (
            not eq
            and i < len(argv)
            and not argv[i].startswith("-")
            and argv[i] not in ("start", "delete")
        ):
            i += 1  # an unknown flag with a value: skip both
    return ShimArgs(
        action=positional[0] if positional else "",
        namespace=values.get("namespace", "default"),
        address=values.get("address", ""),
        publish_binary=values.get("publish-binary", ""),
        id=values.get("id", ""),
        bundle=values.get("bundle", ""),
        debug="debug" in flags,
        version=bool(flags & {"v", "version"}),
    )
