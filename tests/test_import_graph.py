"""No import cycle inside pywasmd (the generated ``pywasmd/api`` excluded).

The graph is read from the source with ``ast``, nothing is imported.  An edge A -> B is any
``import`` of B that A *executes*:

- at module level, and also inside functions.  A deferred import keeps a cycle from
  failing at import time today, but the modules still depend on each other: whoever moves
  the import to the top (or calls the function while the other module is half-initialised)
  gets the failure, and the layering has no order a reader can follow.  The cycle this test
  was written against (bootstrap -> serve -> service -> linux -> bootstrap) ran only through
  function-level imports.
- not under ``if TYPE_CHECKING:``.  Those lines never run; annotations name types, they
  do not make a module depend on another's initialisation.

``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
Importing a submodule also initialises its parent packages; that implicit edge is not
counted, as Python's import system handles a package that imports its own submodules.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "pywasmd"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, package: str) -> list[tuple[str, str | None]]:
    """``(module, name)`` for every executed import; ``name`` for ``from module import name``."""
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.extend((base, alias.name) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    sources = {
        _module_name(root, p): p
        for p in root.rglob("*.py")
        if p.relative_to(root).parts[0] != "api"
    }
    graph: dict[str, set[str]] = {name: set() for name in sources}
    for name, path in sources.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for module, imported in _imports(ast.parse(path.read_text(), str(path)), package):
            target = f"{module}.{imported}" if imported else module
            if target not in sources:
                target = module
            if target in sources and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_import_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    detail = [" ; ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in found]
    assert not found, "import cycles in pywasmd:\n" + "\n".join(detail)


def test_the_graph_sees_function_level_imports() -> None:
    # bootstrap imports the zygote only inside start's helpers, to keep `delete` cheap.
    graph = import_graph()
    assert "pywasmd.shim.zygote" in graph["pywasmd.shim.bootstrap"]
    assert "pywasmd.errors" in graph["pywasmd.shim.server"]


def test_a_cycle_is_reported(tmp_path: Path) -> None:
    pkg = tmp_path / "pywasmd"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pywasmd.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pywasmd.a\n"
    )
    (pkg / "d.py").write_text("import pywasmd.c\n")
    assert cycles(import_graph(pkg)) == [["pywasmd.a", "pywasmd.sub.b"]]


#: Who may import whom: a package (or module) -> the pywasmd modules it may import (by prefix).
#: docs/architecture.md draws the same map. The shim and the command-line tools sit on top
#: and may import any layer below them, but never each other.
LAYERS: dict[str, tuple[str, ...]] = {
    # leaves: the standard library and the error classes only
    "pywasmd.errors": (),
    "pywasmd.paths": (),
    "pywasmd.leb128": (),
    "pywasmd.mountflags": (),
    "pywasmd.wasmbin": ("pywasmd.errors", "pywasmd.leb128"),
    "pywasmd.shim.cli": (),
    "pywasmd.shim.unixsock": (),
    "pywasmd.shim.reaper": (),
    "pywasmd.image.mediatypes": (),
    # the seam a streamed HTTP body crosses between the server and an engine's instance
    "pywasmd.http.exchange": (),
    # the ttrpc protocol knows nothing of containers
    "pywasmd.ttrpc": ("pywasmd.ttrpc", "pywasmd.errors"),
    # the OCI model is pure: spec -> grants -> plan (and the sandbox plan)
    "pywasmd.oci": (
        "pywasmd.oci",
        "pywasmd.errors",
        "pywasmd.mountflags",
        "pywasmd.paths",
        "pywasmd.wasmbin",
        "pywasmd.engine",
    ),
    "pywasmd.engine": ("pywasmd.errors", "pywasmd.oci"),
    "pywasmd.engines": (
        "pywasmd.engines",
        "pywasmd.engine",
        "pywasmd.errors",
        "pywasmd.oci.plan",
        "pywasmd.wasmbin",
        "pywasmd.http.exchange",
    ),
    # HTTP functions: the server and the pure CGI parts, on the engine seam (no engine library)
    "pywasmd.http": ("pywasmd.http", "pywasmd.engine", "pywasmd.errors", "pywasmd.oci"),
    "pywasmd.image": ("pywasmd.image", "pywasmd.errors", "pywasmd.wasmbin"),
    "pywasmd.cache": (),
    # The Task API: ids, the state table, the container protocol; no transport (ttrpc, the
    # server binding), no mounts or cgroups, no kind of container.
    "pywasmd.shim.service": (
        "pywasmd.api",
        "pywasmd.errors",
        "pywasmd.shim.container",
        "pywasmd.shim.process",
        "pywasmd.shim.state",
    ),
    "pywasmd.shim.state": ("pywasmd.errors",),
    "pywasmd.shim.process": (
        "pywasmd.errors",
        "pywasmd.shim.console",
        "pywasmd.shim.state",
        "pywasmd.shim.stdio",
    ),
    # What both kinds share; it knows neither kind nor the factory that picks one.
    "pywasmd.shim.container": (
        "pywasmd.errors",
        "pywasmd.oci",
        "pywasmd.shim.cgroups",
        "pywasmd.shim.mounts",
        "pywasmd.shim.process",
        "pywasmd.shim.reaper",
        "pywasmd.shim.stats",
    ),
    # The two kinds know the shared part, never each other.
    "pywasmd.shim.runc_container": (
        "pywasmd.errors",
        "pywasmd.oci.spec",
        "pywasmd.shim.cgroups",
        "pywasmd.shim.container",
        "pywasmd.shim.linux",
        "pywasmd.shim.process",
        "pywasmd.shim.reaper",
        "pywasmd.shim.stdio",
    ),
    "pywasmd.shim.wasm_container": (
        "pywasmd.paths",
        "pywasmd.engine",
        "pywasmd.errors",
        "pywasmd.nodeconfig",
        "pywasmd.oci",
        "pywasmd.shim.cgroups",
        "pywasmd.shim.console",
        "pywasmd.shim.container",
        "pywasmd.shim.hostsetup",
        "pywasmd.shim.launcher",
        "pywasmd.shim.process",
        "pywasmd.shim.reaper",
        "pywasmd.shim.state",
        "pywasmd.shim.stdio",
    ),
}
#: Imported by nothing in the package but the command-line tools.
TOOLS = ("pywasmd.cli", "pywasmd.doctor", "pywasmd.nodesetup", "pywasmd.client")


def _rule(module: str) -> tuple[str, ...] | None:
    best = max(
        (p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None
    )
    return None if best is None else LAYERS[best]


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_every_layer_imports_only_what_it_may() -> None:
    graph = import_graph()
    wrong = []
    for module, targets in sorted(graph.items()):
        allowed = _rule(module)
        for target in sorted(targets):
            if allowed is not None and not any(_under(target, p) for p in allowed):
                wrong.append(f"{module} -> {target}")
            if any(_under(target, t) for t in TOOLS) and not any(_under(module, t) for t in TOOLS):
                wrong.append(f"{module} -> {target} (a command-line tool)")
    assert not wrong, "imports against the layering of docs/architecture.md:\n" + "\n".join(wrong)


def test_start_and_delete_import_only_leaves_up_front() -> None:
    """containerd waits for ``start`` and ``delete`` on every container: what bootstrap
    imports at module level is paid every time, so it is only the leaf modules."""
    path = ROOT / "shim" / "bootstrap.py"
    tree = ast.parse(path.read_text(), str(path))
    top = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))])
    imported = {
        f"{m}.{n}" if n and f"{m}.{n}" in import_graph() else m
        for m, n in _imports(top, "pywasmd.shim")
        if m.startswith("pywasmd")
    }
    assert imported <= {"pywasmd.paths", "pywasmd.shim.cli", "pywasmd.shim.unixsock"}, imported
