"""Path patching (Wang et al. 2022, IOI): the effect of sender heads on the metric that
goes *through* the inputs of receiver heads, and through nothing else.

1. Run the corrupted prompt with the senders' outputs (``hook_z``) taken from the clean
   run and every other head's output frozen at its corrupted value (MLPs recomputed, or
   frozen too with ``freeze_mlps=True``); record the receivers' inputs (q, k and/or v).
   They now differ from the corrupted run only along sender -> receiver paths.
2. Run the corrupted prompt with only those receiver inputs replaced; measure the metric.

k and v are per KV head: with grouped-query attention a receiver head's k/v patch reaches
every query head of its group. Each sender set is one batch block, so a sweep over single
senders (:func:`path_patch_heads`) runs ``batch_size`` of them per forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError
from ..hooks.interventions import Intervention
from ..hooks.points import HookPoint
from ..hooks.spec import HookSpec
from ..model import LanguageModel
from .head_patching import _progress
from .patch_inputs import (
    HEAD_KINDS,
    Metric,
    PromptPair,
    check_batch_size,
    check_indices,
    check_metric,
    num_heads,
    prompt_pair,
    scalar,
)

Head = tuple[int, int]  # (layer, head)


def path_patch(model: LanguageModel, clean, corrupted, metric: Metric,
               senders: Sequence[Head], receivers: Sequence[Head], *,
               receiver_input: str | Sequence[str] = "q", freeze_mlps: bool = False,
               last_logits_only: bool = True) -> float:
    """Metric after patching the senders -> receivers paths (clean into corrupted)."""
    pair = prompt_pair(model, clean, corrupted)
    sender_set = _heads(model, senders, "sender")
    values = _run(model, pair, check_metric(metric), [sender_set],
                  _heads(model, receivers, "receiver"), _inputs(receiver_input), freeze_mlps,
                  1, last_logits_only, False)
    return float(values[0])


def path_patch_heads(model: LanguageModel, clean, corrupted, metric: Metric,
                     receivers: Sequence[Head], *, receiver_input: str | Sequence[str] = "q",
                     layers: Sequence[int] | None = None, freeze_mlps: bool = False,
                     batch_size: int = 32, last_logits_only: bool = True,
                     progress: bool = False) -> torch.Tensor:
    """Path patching with each head of ``layers`` alone as the sender -> [L, H]."""
    pair = prompt_pair(model, clean, corrupted)
    layer_ids = check_indices(layers, model.num_layers, "layer")
    n_heads = num_heads(model, HEAD_KINDS["z"])
    jobs = [[(layer, head)] for layer in layer_ids for head in range(n_heads)]
    values = _run(model, pair, check_metric(metric), jobs, _heads(model, receivers, "receiver"),
                  _inputs(receiver_input), freeze_mlps, check_batch_size(batch_size),
                  last_logits_only, progress)
    return values.view(len(layer_ids), n_heads)


def _heads(model: LanguageModel, heads: Sequence[Head], what: str) -> list[Head]:
    n_heads = num_heads(model, HEAD_KINDS["z"])
    try:
        pairs = [(layer, head) for layer, head in heads]
    except (TypeError, ValueError):
        raise InputError(f"{what}s must be (layer, head) pairs, got {heads!r}") from None
    if not pairs:
        raise InputError(f"path patching needs at least one {what} head")
    for layer, head in pairs:
        check_indices([layer], model.num_layers, f"{what} layer")
        check_indices([head], n_heads, f"{what} head")
    return pairs


def _inputs(receiver_input: str | Sequence[str]) -> list[str]:
    names = [receiver_input] if isinstance(receiver_input, str) else list(receiver_input)
    bad = [n for n in names if n not in ("q", "k", "v")]
    if bad or not names:
        raise InputError(f"receiver_input must be 'q', 'k', 'v' or a list of them, got "
                         f"{receiver_input!r}")
    return names


def _run(model: LanguageModel, pair: PromptPair, metric: Metric, jobs: list[list[Head]],
         receivers: list[Head], inputs: list[str], freeze_mlps: bool, batch_size: int,
         last_logits_only: bool, progress: bool) -> torch.Tensor:
    last = max(layer for layer, _ in receivers)
    z_points = [HookPoint.AttnZ(layer) for layer in range(last + 1)]
    frozen = z_points + ([HookPoint.MlpOut(layer) for layer in range(last)] if freeze_mlps
                         else [])
    with torch.no_grad():
        clean = model.forward(pair.clean, HookSpec().capture(*z_points))
        corrupt = model.forward(pair.corrupted, HookSpec().capture(*frozen))
    groups = model.num_heads // num_heads(model, HEAD_KINDS["k"])
    values = []
    for chunk in _progress([jobs[i:i + batch_size] for i in range(0, len(jobs), batch_size)],
                           progress, "path patching"):
        n = len(chunk) * pair.batch
        ids = pair.corrupted.repeat(len(chunk), 1)
        step1 = HookSpec()
        for point in frozen:
            step1.intervene(point, Intervention.Replace(_frozen(point, clean, corrupt, chunk,
                                                                pair.batch)))
        wanted = {(HEAD_KINDS[k].point(layer), k) for layer, _ in receivers for k in inputs}
        step1.capture(*(point for point, _ in wanted))
        with torch.no_grad():
            recorded = model.forward(ids, step1, last_logits_only=True)
            step2 = HookSpec()
            for point, name in sorted(wanted, key=lambda pk: (pk[0].layer, pk[1])):
                heads = sorted({h if name == "q" else h // groups
                                for layer, h in receivers if layer == point.layer})
                mask = torch.zeros((n, 1, recorded[point].shape[2], 1), dtype=torch.bool,
                                   device=ids.device)
                mask[:, :, heads] = True
                step2.intervene(point, Intervention.Apply(_take(mask, recorded[point])))
            logits = model.forward(ids, step2, last_logits_only=last_logits_only).output()
        for k in range(len(chunk)):
            values.append(scalar(metric(logits[k * pair.batch:(k + 1) * pair.batch])).float())
    return torch.stack(values).cpu()


def _frozen(point: HookPoint, clean, corrupt, chunk: list[list[Head]], batch: int):
    """Corrupted value of ``point`` for every row block, with block k's senders at this
    layer taken from the clean run (z only)."""
    base = corrupt[point].repeat(len(chunk), *([1] * (corrupt[point].dim() - 1)))
    if point.variant != "AttnZ":
        return base
    source = clean[point]
    for k, senders in enumerate(chunk):
        for layer, head in senders:
            if layer == point.layer:
                base[k * batch:(k + 1) * batch, :, head] = source[:, :, head]
    return base


def _take(mask: torch.Tensor, values: torch.Tensor):
    def patch(tensor: torch.Tensor, _point) -> torch.Tensor:
        return torch.where(mask, values.to(tensor.dtype), tensor)
    return patch
