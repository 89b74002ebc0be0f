"""Activation patching (causal tracing, Meng et al. 2022) over layer x position.

For every (layer, position) the corrupted prompt is re-run with one activation replaced by
its value from the clean run. The normalised effect
``(m_patched - m_corrupted) / (m_clean - m_corrupted)`` is 1 where the patch restores the
clean answer and 0 where it does nothing; the KL recovery
``1 - KL(clean || patched) / KL(clean || corrupted)`` measures the whole distribution.
Each layer is one batched forward (all positions x all prompt pairs), and pairs of
different lengths are left-padded together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..hooks.interventions import Intervention
from ..hooks.points import STREAM_POINTS, HookPoint, stream_point
from ..hooks.spec import HookSpec
from ..model import LanguageModel
from .results import kl_divergence

PATCH_KINDS = tuple(STREAM_POINTS)  # resid_pre, resid_mid, resid_post, attn_out, mlp_out
METRICS = ("prob", "logit", "logit_diff")
_EPS = 1e-9


@dataclass
class CausalTrace:
    """Normalised effect of patching each (layer, position); means over prompt pairs."""

    kind: str
    metric: str
    tokens: list[str]  # position labels (first pair's clean prompt, padding included)
    effect: torch.Tensor  # [L, S]
    kl_recovery: torch.Tensor  # [L, S]
    per_pair: torch.Tensor  # [B, L, S]
    clean_metric: torch.Tensor  # [B]
    corrupted_metric: torch.Tensor  # [B]
    answers: list[int] = field(default_factory=list)

    def best(self) -> tuple[int, int, float]:
        """(layer, position, effect) of the strongest patch."""
        flat = int(self.effect.argmax())
        layer, pos = divmod(flat, self.effect.shape[1])
        return layer, pos, float(self.effect[layer, pos])

    def plot(self, path, title: str | None = None) -> str:
        from ..plots import plot_heatmap

        rows = [f"L{i}" for i in range(self.effect.shape[0])]
        return plot_heatmap(self.effect, rows, self.tokens, path, cmap="magma",
                            title=title or f"Causal trace ({self.kind}, {self.metric})",
                            colorbar="normalised effect", vmin=min(0.0, float(self.effect.min())),
                            vmax=max(1.0, float(self.effect.max())))

    def to_dict(self) -> dict:
        layer, pos, value = self.best()
        return {"kind": self.kind, "metric": self.metric, "tokens": self.tokens,
                "effect": self.effect.tolist(), "kl_recovery": self.kl_recovery.tolist(),
                "clean_metric": self.clean_metric.tolist(),
                "corrupted_metric": self.corrupted_metric.tolist(), "answers": self.answers,
                "best": {"layer": layer, "position": pos, "effect": value}}


def _metric(logits: torch.Tensor, answers: torch.Tensor, foils: torch.Tensor | None,
            metric: str) -> torch.Tensor:
    """Metric per row of last-position logits [N, V] (answers/foils [N])."""
    logits = logits.float()
    rows = torch.arange(logits.shape[0], device=logits.device)
    if metric == "prob":
        return torch.softmax(logits, dim=-1)[rows, answers]
    if metric == "logit":
        return logits[rows, answers]
    return logits[rows, answers] - logits[rows, foils]


def _encode_pairs(model: LanguageModel, clean, corrupted):
    clean = [clean] if isinstance(clean, str) else list(clean)
    corrupted = [corrupted] if isinstance(corrupted, str) else list(corrupted)
    if len(clean) != len(corrupted) or not clean:
        raise InputError(f"need as many corrupted prompts as clean ones, got {len(clean)} and "
                         f"{len(corrupted)}")
    tok = model.require_tokenizer()
    for a, b in zip(clean, corrupted, strict=True):
        if len(tok.encode(a)) != len(tok.encode(b)):
            raise InputError(f"clean {a!r} and corrupted {b!r} have different token counts; "
                             f"position-wise patching needs equal lengths")
    clean_ids, mask = tok.encode_batch(clean)
    corrupt_ids, _ = tok.encode_batch(corrupted)
    return clean_ids.to(model.device), corrupt_ids.to(model.device), mask.to(model.device)


def _row_patch(clean_act: torch.Tensor, n_pairs: int, positions: torch.Tensor):
    """Apply-fn: row r of the repeated batch takes the clean value at position positions[r]."""
    def patch(tensor: torch.Tensor, point: HookPoint) -> torch.Tensor:
        rows = torch.arange(tensor.shape[0], device=tensor.device)
        out = tensor.clone()
        out[rows, positions] = clean_act[rows % n_pairs, positions].to(tensor.dtype)
        return out
    return patch


def _answer_ids(model: LanguageModel, answer, clean_logits: torch.Tensor, n: int) -> torch.Tensor:
    if answer is None:
        return clean_logits.argmax(dim=-1)
    answers = [answer] * n if isinstance(answer, (str, int)) else list(answer)
    tok = model.tokenizer
    ids = [a if isinstance(a, int) else tok.find_token_id(a.strip()) for a in answers]
    return torch.tensor(ids, device=clean_logits.device)


def causal_trace(model: LanguageModel, clean: str | Sequence[str], corrupted: str | Sequence[str], *,
                 answer=None, foil=None, kind: str = "resid_post", metric: str = "prob",
                 progress: bool = False) -> CausalTrace:
    """Patch clean activations into corrupted runs at every (layer, position)."""
    if kind not in PATCH_KINDS:
        raise InputError(f"unknown patch kind {kind!r}; choose one of {sorted(PATCH_KINDS)}")
    if metric not in METRICS or (metric == "logit_diff" and foil is None):
        raise InputError(f"metric must be one of {METRICS} ('logit_diff' needs a foil)")
    clean_ids, corrupt_ids, mask = _encode_pairs(model, clean, corrupted)
    n_pairs, seq_len = clean_ids.shape
    points = [stream_point(kind, layer) for layer in range(model.num_layers)]
    clean_run = model.forward(clean_ids, HookSpec().capture(*points), attention_mask=mask,
                              last_logits_only=True)
    clean_logits = clean_run.output()[:, -1]
    corrupt_logits = model.forward(corrupt_ids, attention_mask=mask,
                                   last_logits_only=True).output()[:, -1]
    answers = _answer_ids(model, answer, clean_logits, n_pairs)
    foils = None if foil is None else _answer_ids(model, foil, clean_logits, n_pairs)
    m_clean = _metric(clean_logits, answers, foils, metric)
    m_corrupt = _metric(corrupt_logits, answers, foils, metric)
    # Row t * B + b of the repeated batch patches position t of pair b. The unpatched
    # reference is run at the same batch shape, so a patch that changes nothing scores
    # exactly 0 (GEMM rounding can depend on the batch shape).
    positions = torch.arange(seq_len * n_pairs, device=clean_ids.device) // n_pairs
    big_ids, big_mask = corrupt_ids.repeat(seq_len, 1), mask.repeat(seq_len, 1)
    reference = model.forward(big_ids, attention_mask=big_mask,
                              last_logits_only=True).output()[:, -1]
    m_reference = _metric(reference, answers.repeat(seq_len),
                          None if foils is None else foils.repeat(seq_len), metric)
    effects, recoveries = [], []
    denominator = torch.where((m_clean - m_corrupt).abs() > _EPS, m_clean - m_corrupt,
                              torch.full_like(m_clean, float("nan")))
    base_kl = kl_divergence(clean_logits, corrupt_logits, reduction="none")
    for layer in _layers(model.num_layers, progress):
        hooks = HookSpec().intervene(points[layer], Intervention.Apply(
            _row_patch(clean_run[points[layer]], n_pairs, positions)))
        logits = model.forward(big_ids, hooks, attention_mask=big_mask,
                               last_logits_only=True).output()[:, -1]
        m = _metric(logits, answers.repeat(seq_len),
                    None if foils is None else foils.repeat(seq_len), metric)
        effects.append(((m - m_reference).view(seq_len, n_pairs) / denominator).T)  # [B, S]
        kl = kl_divergence(clean_logits.repeat(seq_len, 1), logits, reduction="none")
        recoveries.append((1 - kl.view(seq_len, n_pairs) / base_kl.clamp_min(1e-12)).T)
    per_pair = torch.stack(effects, dim=1).cpu()  # [B, L, S]
    recovery = torch.stack(recoveries, dim=1).float().cpu()
    tok = model.tokenizer
    labels = [tok.decode_token(int(t)) if m_ else "<pad>"
              for t, m_ in zip(clean_ids[0].tolist(), mask[0].tolist(), strict=True)]
    return CausalTrace(kind, metric, labels, per_pair.nanmean(dim=0), recovery.mean(dim=0),
                       per_pair, m_clean.cpu(), m_corrupt.cpu(), answers.tolist())


def _layers(n: int, progress: bool):
    if not progress:
        yield from range(n)
        return
    from rich.progress import track

    yield from track(range(n), description="patching layers", transient=True)
