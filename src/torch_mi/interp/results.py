"""Comparing two output distributions: KL divergence and the result helpers shared by
knockout, steering and RWKV state experiments."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch

from ..errors import InterventionError


def kl_divergence(baseline_logits: torch.Tensor, other_logits: torch.Tensor,
                  reduction: str = "sum") -> float | torch.Tensor:
    """KL(P || Q) with P = softmax(baseline), Q = softmax(other) over the last dimension.

    Computed in float64 from log-softmax, with 0 * log 0 = 0 and no probability floor
    (docs/porting.md: KL divergence). Several rows ([S, V]) are summed (``"sum"``, the
    default), averaged (``"mean"``) or returned per row (``"none"``).
    """
    for name, t in (("baseline_logits", baseline_logits), ("other_logits", other_logits)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise InterventionError(f"kl_divergence: {name} must be a float tensor, got "
                                    f"{type(t).__name__}")
    if baseline_logits.shape != other_logits.shape:
        raise InterventionError(f"kl_divergence: shapes differ {list(baseline_logits.shape)} vs "
                                f"{list(other_logits.shape)}")
    log_p = torch.log_softmax(baseline_logits.detach().double(), dim=-1)
    log_q = torch.log_softmax(other_logits.detach().double().to(log_p.device), dim=-1)
    p = log_p.exp()
    per_row = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(dim=-1)
    if reduction == "none":
        return per_row
    if reduction == "mean":
        return float(per_row.mean())
    if reduction == "sum":
        return float(per_row.sum())
    raise InterventionError(f"unknown reduction {reduction!r}: use 'sum', 'mean' or 'none'")


def check_k(what: str, k: object) -> int:
    """``k`` as an int >= 1 (how many entries to list); InterventionError otherwise."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise InterventionError(f"{what}: k (how many tokens to list) must be an int >= 1, got "
                                f"{k!r:.40}")
    return int(k)


class LogitComparison:
    """Baseline vs intervened logits [V] (last position) and what changed between them."""

    def __init__(self, baseline_logits: torch.Tensor, other_logits: torch.Tensor) -> None:
        self.baseline_logits = baseline_logits.detach().float().cpu()
        self.other_logits = other_logits.detach().float().cpu()

    def kl_divergence(self) -> float:
        return kl_divergence(self.baseline_logits, self.other_logits)

    def probabilities(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.softmax(self.baseline_logits.double(), -1),
                torch.softmax(self.other_logits.double(), -1))

    def logit_diff(self, token_id: int) -> float:
        """baseline[token] - other[token]."""
        self._check(token_id)
        flat_b, flat_o = self.baseline_logits.reshape(-1), self.other_logits.reshape(-1)
        return float(flat_b[token_id] - flat_o[token_id])

    def probability_shift(self, token_id: int) -> tuple[float, float]:
        """(P_baseline, P_other) of one token."""
        self._check(token_id)
        p, q = self.probabilities()
        return float(p.reshape(-1)[token_id]), float(q.reshape(-1)[token_id])

    def top_changed_tokens(self, k: int = 10) -> list[tuple[int, float, float, float]]:
        """[(token_id, p_baseline, p_other, |dp|)] sorted by |dp| descending."""
        check_k("top_changed_tokens", k)
        p, q = (t.reshape(-1) for t in self.probabilities())
        delta = (p - q).abs()
        top = delta.topk(min(k, delta.numel()))
        return [(int(i), float(p[i]), float(q[i]), float(d))
                for d, i in zip(top.values, top.indices, strict=True)]

    def to_dict(self, decode: Callable[[int], str] | None = None, k: int = 10) -> dict:
        decode = decode or str
        return {
            "kl_divergence": self.kl_divergence(),
            "top_changed": [{"token_id": i, "token": decode(i), "p_baseline": pb,
                             "p_intervened": po, "abs_delta": d}
                            for i, pb, po, d in self.top_changed_tokens(k)],
        }

    def _check(self, token_id: int) -> None:
        vocab = self.baseline_logits.reshape(-1).numel()
        if isinstance(token_id, bool) or not isinstance(token_id, numbers.Integral):
            raise InterventionError(f"token id must be an int, got {type(token_id).__name__} "
                                    f"{token_id!r:.40}")
        if not 0 <= token_id < vocab:
            raise InterventionError(f"token id {token_id} outside the vocabulary (0..{vocab - 1})")


class BatchComparison:
    """Per-prompt :class:`LogitComparison` results of one batch, and their aggregates."""

    def __init__(self, results: list[LogitComparison]) -> None:
        self.results = list(results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> LogitComparison:
        return self.results[i]

    def __iter__(self):
        return iter(self.results)

    def kl_divergences(self) -> torch.Tensor:
        """[B] KL(baseline || intervened) of each prompt (float64)."""
        return torch.tensor([r.kl_divergence() for r in self.results], dtype=torch.float64)

    def mean_kl_divergence(self) -> float:
        return float(self.kl_divergences().mean())

    def _per_prompt(self, token_ids: int | list[int]) -> list[int]:
        if isinstance(token_ids, (list, tuple)):
            if len(token_ids) != len(self.results):
                raise InterventionError(f"{len(token_ids)} token ids for {len(self.results)} "
                                        f"prompts; give one id for all or one per prompt")
            return list(token_ids)
        return [token_ids] * len(self.results)

    def logit_diffs(self, token_ids: int | list[int]) -> torch.Tensor:
        """[B] baseline - intervened logit of the token (one id, or one per prompt)."""
        ids = self._per_prompt(token_ids)
        return torch.tensor([r.logit_diff(t) for r, t in zip(self.results, ids, strict=True)],
                            dtype=torch.float64)

    def probability_shifts(self, token_ids: int | list[int]) -> torch.Tensor:
        """[B, 2] (P_baseline, P_intervened) of the token (one id, or one per prompt)."""
        ids = self._per_prompt(token_ids)
        return torch.tensor([r.probability_shift(t)
                             for r, t in zip(self.results, ids, strict=True)],
                            dtype=torch.float64)
