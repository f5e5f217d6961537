"""The start-latency chart of BENCHMARKS.md (needs matplotlib: `pip install matplotlib`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"pywasm": "#3b7dd8", "runc": "#d8893b"}


def start_latency_chart(results: dict[str, Any], path: Path) -> Path:
    """Per containerd version: box plot plus every run as a dot, pywasm next to runc, and the
    shim's own span (exec of `start` to the end of `delete`) next to them."""
    versions = list(results["versions"])
    fig, axes = plt.subplots(1, len(versions), figsize=(5.5 * len(versions), 4.2), sharey=True)
    if len(versions) == 1:
        axes = [axes]
    for ax, version in zip(axes, versions, strict=True):
        r = results["versions"][version]
        series = []
        for name in ("pywasm", "runc"):
            series.append((f"{name}\nctr run --rm", name, r["start"][name]))
        for name in ("pywasm", "runc"):
            spans = [d["span"] for d in r["spans"][name]]
            series.append((f"{name}\nshim span", name, spans))
        data = [[x * 1000 for x in xs] for _, _, xs in series]
        box = ax.boxplot(data, widths=0.5, patch_artist=True, showfliers=False)
        for patch, (_, name, _) in zip(box["boxes"], series, strict=True):
            patch.set_facecolor(COLORS[name])
            patch.set_alpha(0.35)
        for i, ((_, name, _), ys) in enumerate(zip(series, data, strict=True), start=1):
            xs = [i + 0.18 * ((j % 7) / 6 - 0.5) for j in range(len(ys))]
            ax.scatter(xs, ys, s=10, color=COLORS[name], zorder=3)
        ax.set_xticks(range(1, len(series) + 1), [label for label, _, _ in series], fontsize=8)
        ax.set_title(f"containerd {version} ({r.get('server', '?')})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].set_ylabel("ms")
    fig.suptitle("Start latency: hello (pywasm) vs busybox echo (runc)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
