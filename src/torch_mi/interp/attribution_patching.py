"""Attribution patching (Nanda 2023): a first-order estimate of activation patching.

Patching the clean activation ``a_clean`` into the corrupted run changes the metric by
about ``(a_clean - a_corrupted) . d metric / d a`` with the gradient taken at the corrupted
run. Two forwards and one backward give the estimate for every head and position at once,
where actual patching needs one forward per patch. The estimates are *changes* of the
metric (``patched - corrupted``), summed over what one patch covers (a head's positions
and head dims; a position's hidden dims) and over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError
from ..hooks.spec import HookSpec
from ..model import LanguageModel
from .patch_inputs import (
    HEAD_KINDS,
    POSITION_KINDS,
    Metric,
    PatchKind,
    PromptPair,
    check_indices,
    check_metric,
    check_positions,
    num_heads,
    prompt_pair,
    resolve_kind,
    scalar,
)


def attribution_patch_heads(model: LanguageModel, clean, corrupted, metric: Metric, *,
                            kind: str = "z", layers: Sequence[int] | None = None,
                            positions=None, last_logits_only: bool = True) -> torch.Tensor:
    """Estimated metric change of patching each head ([L, H]; with ``positions`` "each"
    or a list, each head at each position: [L, P, H]); same arguments as patch_heads."""
    pair = prompt_pair(model, clean, corrupted)
    patch_kind = resolve_kind(kind, HEAD_KINDS)
    layer_ids = check_indices(layers, model.num_layers, "layer")
    num_heads(model, patch_kind)  # InputError if the model lacks this kind
    pos_ids = check_positions(positions, pair.seq_len)
    terms = _terms(model, pair, check_metric(metric), patch_kind, layer_ids, last_logits_only)
    out = []
    for term in terms:  # [B, ...]: sum the batch and the last dim
        per = term.sum(dim=(0, -1))  # z/q/k/v/result: [S, H]; pattern: [H, Sq]
        if patch_kind.head_dim < patch_kind.pos_dim:
            per = per.T  # -> [S, H]
        out.append(per.sum(dim=0) if pos_ids is None else per[pos_ids])
    return torch.stack(out).cpu()


def attribution_patch_positions(model: LanguageModel, clean, corrupted, metric: Metric, *,
                                kind: str = "resid_pre", layers: Sequence[int] | None = None,
                                positions=None, last_logits_only: bool = True) -> torch.Tensor:
    """Estimated metric change of patching each (layer, position) -> [L, P]."""
    pair = prompt_pair(model, clean, corrupted)
    patch_kind = resolve_kind(kind, POSITION_KINDS)
    layer_ids = check_indices(layers, model.num_layers, "layer")
    pos_ids = check_positions("each" if positions is None else positions, pair.seq_len)
    terms = _terms(model, pair, check_metric(metric), patch_kind, layer_ids, last_logits_only)
    return torch.stack([term.sum(dim=(0, -1))[pos_ids] for term in terms]).cpu()


def _terms(model: LanguageModel, pair: PromptPair, metric: Metric, kind: PatchKind,
           layers: list[int], last_logits_only: bool) -> list[torch.Tensor]:
    """(clean - corrupted) * d metric / d activation at the corrupted run, per layer."""
    points = [kind.point(layer) for layer in layers]
    with torch.no_grad():
        clean = model.forward(pair.clean, HookSpec().capture(*points),
                              last_logits_only=last_logits_only)
    run = model.forward(pair.corrupted, HookSpec().capture(*points).capture_grad(*points),
                        last_logits_only=last_logits_only)
    with torch.enable_grad():
        value = scalar(metric(run.output()))
        if not value.requires_grad:
            raise InputError("attribution patching needs a differentiable metric: return a "
                             "tensor computed from the logits (no .item(), no float())")
        value.backward()
    return [((clean[p] - run[p]) * run.grad(p)).float() for p in points]
