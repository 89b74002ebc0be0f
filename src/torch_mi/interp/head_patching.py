"""Activation patching per head, per position, and per head x position.

Each patch re-runs the corrupted prompt with one slice of one activation (a head, a
position, or a head at a position) taken from the clean run, and records
``metric(logits)``. Patches never interact across batch rows, so ``batch_size`` patches run
in one forward: the corrupted batch is repeated and row block k carries patch k (at any
layer: each layer's hook only touches the rows whose patch lives there).

``metric`` maps the logits to a scalar; by default it sees the last position only
(logits [B,1,V], so ``logits[:, -1]`` works either way) and ``last_logits_only=False``
gives it every position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..hooks.interventions import Intervention
from ..hooks.spec import HookSpec
from ..model import LanguageModel
from .patch_inputs import (
    HEAD_KINDS,
    POSITION_KINDS,
    Metric,
    PatchKind,
    PromptPair,
    check_batch_size,
    check_indices,
    check_metric,
    check_positions,
    num_heads,
    prompt_pair,
    resolve_kind,
    scalar,
)

Job = tuple[int, tuple]  # (layer, index into the activation's dims 1..n-2)


def patch_heads(model: LanguageModel, clean, corrupted, metric: Metric, *, kind: str = "z",
                layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                positions=None, batch_size: int = 32, last_logits_only: bool = True,
                progress: bool = False) -> torch.Tensor:
    """Metric after patching each head's ``kind`` activation from clean into corrupted.

    ``kind``: "z", "q", "k", "v" (k and v per KV head), "result" or "pattern".
    ``positions``: None patches every position of the head at once -> [L, H];
    "each" or a list of positions (negative count from the end) -> [L, P, H]
    (query positions for "pattern"). ``layers``/``heads`` select rows/columns.
    """
    pair = prompt_pair(model, clean, corrupted)
    patch_kind = resolve_kind(kind, HEAD_KINDS)
    layer_ids = check_indices(layers, model.num_layers, "layer")
    head_ids = check_indices(heads, num_heads(model, patch_kind), "head")
    pos_ids = check_positions(positions, pair.seq_len)
    jobs = [(layer, _head_index(patch_kind, pos, head)) for layer in layer_ids
            for pos in (pos_ids if pos_ids is not None else [None]) for head in head_ids]
    values = run_patches(model, pair, check_metric(metric), patch_kind, jobs,
                         check_batch_size(batch_size), last_logits_only, progress)
    shape = [len(layer_ids), len(head_ids)] if pos_ids is None else \
        [len(layer_ids), len(pos_ids), len(head_ids)]
    return values.view(shape)


def patch_positions(model: LanguageModel, clean, corrupted, metric: Metric, *,
                    kind: str = "resid_pre", layers: Sequence[int] | None = None,
                    positions=None, batch_size: int = 32, last_logits_only: bool = True,
                    progress: bool = False) -> torch.Tensor:
    """Metric after patching each (layer, position) of a residual-stream activation
    ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out") -> [L, P]
    (``positions`` None = every position)."""
    pair = prompt_pair(model, clean, corrupted)
    patch_kind = resolve_kind(kind, POSITION_KINDS)
    layer_ids = check_indices(layers, model.num_layers, "layer")
    pos_ids = check_positions("each" if positions is None else positions, pair.seq_len)
    jobs = [(layer, (pos,)) for layer in layer_ids for pos in pos_ids]
    values = run_patches(model, pair, check_metric(metric), patch_kind, jobs,
                         check_batch_size(batch_size), last_logits_only, progress)
    return values.view(len(layer_ids), len(pos_ids))


def _head_index(kind: PatchKind, pos: int | None, head: int) -> tuple:
    """Index into dims 1..n-2 of the activation: (pos, head) or (head, query pos)."""
    where = slice(None) if pos is None else pos
    return (where, head) if kind.pos_dim < kind.head_dim else (head, where)


def run_patches(model: LanguageModel, pair: PromptPair, metric: Metric, kind: PatchKind,
                jobs: list[Job], batch_size: int, last_logits_only: bool = True,
                progress: bool = False) -> torch.Tensor:
    """Metric for each job (one patch each), ``batch_size`` jobs per forward -> [len(jobs)]."""
    layers = sorted({layer for layer, _ in jobs})
    points = [kind.point(layer) for layer in layers]
    with torch.no_grad():
        clean = model.forward(pair.clean, HookSpec().capture(*points),
                              last_logits_only=last_logits_only)
    acts = {layer: clean[point] for layer, point in zip(layers, points, strict=True)}
    chunks = [jobs[i:i + batch_size] for i in range(0, len(jobs), batch_size)]
    values = []
    for chunk in _progress(chunks, progress, f"patching {kind.name}"):
        spec = patch_spec(kind, acts, chunk, pair.batch)
        with torch.no_grad():
            logits = model.forward(pair.corrupted.repeat(len(chunk), 1), spec,
                                   last_logits_only=last_logits_only).output()
        for k in range(len(chunk)):
            values.append(scalar(metric(logits[k * pair.batch:(k + 1) * pair.batch])).float())
    return torch.stack(values).cpu()


def patch_spec(kind: PatchKind, acts: dict[int, torch.Tensor], chunk: list[Job],
               batch: int) -> HookSpec:
    """Interventions putting job k's clean slice into rows k*batch..(k+1)*batch-1."""
    spec = HookSpec()
    for layer in sorted({layer for layer, _ in chunk}):
        act = acts[layer]  # [B, ...]
        mask = torch.zeros((len(chunk) * batch, *act.shape[1:-1], 1), dtype=torch.bool,
                           device=act.device)
        for k, (job_layer, index) in enumerate(chunk):
            if job_layer == layer:
                mask[(slice(k * batch, (k + 1) * batch), *index)] = True
        source = act.repeat(len(chunk), *([1] * (act.dim() - 1)))  # row r <- clean[r % B]
        spec.intervene(kind.point(layer), Intervention.Apply(_where(mask, source)))
    return spec


def _where(mask: torch.Tensor, source: torch.Tensor):
    def patch(tensor: torch.Tensor, _point) -> torch.Tensor:
        return torch.where(mask, source.to(tensor.dtype), tensor)
    return patch


def _progress(items: list, enabled: bool, description: str):
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=description, transient=True)
