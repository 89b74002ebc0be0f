"""Bar chart of a memory estimate (and of the measured forward peak next to it)."""

from __future__ import annotations

import os

from ..plots import plot_path, pyplot
from .estimate import MemoryEstimate
from .snapshot import MIB

COLORS = {"weights": "#8c8c8c", "captures": "#1f77b4", "logits": "#ff7f0e",
          "transient": "#2ca02c", "measured": "#d62728"}


def plot_memory(estimate: MemoryEstimate, path: str | os.PathLike, *,
                measured_bytes: int | None = None, measured_label: str = "measured peak",
                title: str = "") -> str:
    """Left: the estimate's categories (MB); right: the forward estimate, stacked by
    category, beside the measured forward peak when there is one."""
    target = plot_path(path)
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4),
                                      gridspec_kw={"width_ratios": [3, 2]})
    names = list(estimate.breakdown())
    values = [estimate.breakdown()[n] / MIB for n in names]
    bars = left.bar(names, values, color=[COLORS[n] for n in names])
    left.bar_label(bars, labels=[f"{v:,.1f}" for v in values], fontsize=8)
    left.set_ylabel("MB (MiB)")
    left.set_title("estimate by category", fontsize=10)
    bottom = 0.0
    for name in ("captures", "logits", "transient"):
        height = estimate.breakdown()[name] / MIB
        right.bar("estimate", height, bottom=bottom, color=COLORS[name], label=name)
        bottom += height
    right.text(0, bottom, f"{bottom:,.1f}", ha="center", va="bottom", fontsize=8)
    if measured_bytes is not None:
        measured = measured_bytes / MIB
        right.bar(measured_label, measured, color=COLORS["measured"], label=measured_label)
        right.text(1, measured, f"{measured:,.1f}", ha="center", va="bottom", fontsize=8)
    right.set_title("forward (all but weights)", fontsize=10)
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title or f"memory: batch {estimate.batch} x {estimate.seq_len} tokens, "
                 f"{estimate.dtype}", fontsize=11)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return str(target)
