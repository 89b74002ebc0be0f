"""PNG figures for the CLI and notebooks (matplotlib, headless)."""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import InputError

IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def plot_path(path: str | os.PathLike, option: str = "path") -> Path:
    """Where a figure will really be written, checked before any work.

    matplotlib appends ``.png`` to a name without an image suffix, so ``--plot out`` with a
    folder ``out`` used to write ``out.png`` and report ``out``; a FIFO would block the
    write forever. Refused here with the resolved path: a folder, a special file, a name
    without an image suffix, a missing parent folder."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    if not isinstance(text, str) or not text:
        raise InputError(f"{option} must be a file name such as attention.png, got {text!r}")
    target = Path(text)
    real = target.resolve()
    if target.is_dir():
        raise InputError(f"{option} {text!r} is a folder ({real}); give a file inside it, "
                         f"e.g. {target / 'figure.png'}")
    if target.exists() and not stat.S_ISREG(target.stat().st_mode):
        raise InputError(f"{option} {text!r} ({real}) exists and is not a regular file; "
                         f"give another file name")
    if target.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"{option} {text!r} has no image suffix ({', '.join(IMAGE_SUFFIXES)}); "
                         f"matplotlib would write {real}.png instead: name the file, e.g. "
                         f"{text}.png")
    if not real.parent.is_dir():
        raise InputError(f"{option} {text!r}: folder {real.parent} does not exist; create it "
                         f"first")
    return target


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(token: str, width: int = 10) -> str:
    """A short printable label; a whitespace-only token shows its spaces as '␣'."""
    if token.strip() == "":
        token = token.replace(" ", "␣")
    escapes = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
    text = "".join(ch if ch.isprintable() else escapes.get(ch, f"\\x{ord(ch):02x}")
                   for ch in token)
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_heatmap(matrix: torch.Tensor, row_labels: Sequence[str], col_labels: Sequence[str],
                 path: str | os.PathLike, *, title: str = "", colorbar: str = "",
                 annotations: Sequence[Sequence[str]] | None = None, cmap: str = "viridis",
                 vmin: float | None = None, vmax: float | None = None) -> str:
    """A labelled heatmap of ``matrix`` [rows, cols] (optionally annotated cell by cell)."""
    target = plot_path(path)
    plt = pyplot()
    data = matrix.detach().float().cpu().numpy()
    rows, cols = data.shape
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * cols + 2), max(4, 0.32 * rows + 1.5)))
    image = ax.imshow(data, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
    ax.set_xticks(range(cols), [_label(c) for c in col_labels], rotation=45, ha="right",
                  fontsize=8)
    step = max(1, math.ceil(rows / 40))
    ax.set_yticks(range(0, rows, step), [row_labels[i] for i in range(0, rows, step)],
                  fontsize=8)
    if annotations is not None and rows * cols <= 1200:
        for r in range(rows):
            for c in range(cols):
                dark = image.norm(data[r, c]) < 0.5  # light text on the dark end of the map
                ax.text(c, r, _label(annotations[r][c], 8), ha="center", va="center",
                        fontsize=6, color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label=colorbar)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return str(target)


def plot_logit_lens(analysis, path: str | os.PathLike, *, target: str | None = None,
                    target_probs: torch.Tensor | None = None) -> str:
    """Layer x position heatmap annotated with the top-1 token: of the top-1 token's
    probability, or with ``target_probs`` [L, S] of the ``target`` token's."""
    grid = analysis.grid_probs
    if target_probs is not None and tuple(target_probs.shape) != tuple(grid.shape):
        raise InputError(f"target_probs must be [layers, positions] = {list(grid.shape)}, got "
                         f"{list(target_probs.shape)}")
    shown = f"P({target!r})" if target_probs is not None else "top-1 probability"
    layers = [f"L{i}" for i in range(grid.shape[0])]
    return plot_heatmap(grid if target_probs is None else target_probs, layers,
                        analysis.tokens, path, title=f"Logit lens ({analysis.hook}): {shown}",
                        colorbar=("probability of the top token" if target_probs is None
                                  else f"probability of {target!r}"),
                        annotations=analysis.grid_tokens, vmin=0.0, vmax=1.0)


def plot_attention(patterns: torch.Tensor, tokens: Sequence[str], path: str | os.PathLike,
                   *, title: str = "") -> str:
    """Grid of per-head attention patterns [H, S, S] (query rows, key columns)."""
    target = plot_path(path)
    plt = pyplot()
    heads = patterns.shape[0]
    cols = min(heads, 4)
    rows = math.ceil(heads / cols)
    size = max(2.5, 0.28 * len(tokens))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size + 2, rows * size + 1),
                             squeeze=False, layout="constrained")
    labels = [_label(t, 8) for t in tokens]
    image = None
    for h in range(rows * cols):
        ax = axes[h // cols][h % cols]
        if h >= heads:
            ax.axis("off")
            continue
        image = ax.imshow(patterns[h].detach().float().cpu().numpy(), vmin=0.0, vmax=1.0,
                          cmap="Blues")
        ax.set_title(f"head {h}", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
    if image is not None:  # one shared 0..1 scale for every head
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8,
                     label="attention weight (query row -> key column)")
    fig.suptitle(title, fontsize=10)
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return str(target)


def plot_curve(xs: Sequence[float], ys: Sequence[float], path: str | os.PathLike, *,
               xlabel: str, ylabel: str, title: str = "") -> str:
    """A simple line plot with markers (dose-response curves)."""
    target = plot_path(path)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(list(xs), list(ys), marker="o")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return str(target)
