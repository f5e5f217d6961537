#!/usr/bin/env python3
"""File and function sizes of pywasmd/ (generated api/ excluded), for refactoring reports.

    python3 scripts/code_stats.py [ROOT]

A file's size is its line count; a function's is ``end_lineno - lineno + 1`` of its
``def`` (methods and nested functions count on their own, and are also inside their parent).
"""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path


def _percentile(values: list[int], p: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main(root: str = "pywasmd") -> None:
    files: dict[str, int] = {}
    functions: list[tuple[int, str]] = []
    for path in sorted(Path(root).rglob("*.py")):
        if "api" in path.relative_to(root).parts[:1]:
            continue
        text = path.read_text(encoding="utf-8")
        files[str(path)] = len(text.splitlines())
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((size, f"{path}:{node.lineno} {node.name}"))
    sizes = [n for n in files.values() if n]  # empty __init__.py files say nothing
    largest = max(files, key=lambda f: files[f])
    fsizes = [s for s, _ in functions]
    print(f"files: {len(sizes)} non-empty, {sum(sizes)} lines")
    print(f"file lines: median {statistics.median(sizes):g}, largest {files[largest]} ({largest})")
    print(
        f"functions: {len(fsizes)}, lines median {statistics.median(fsizes):g}, "
        f"p90 {_percentile(fsizes, 0.9)}, largest {max(functions)[0]} ({max(functions)[1]})"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
