"""Logit targets of an attribution graph: which next-token logits get a node.

Without ``target_tokens``: the most probable tokens, up to ``max_n_logits``, until their
cumulative probability reaches ``desired_logit_prob`` (circuit-tracer's rule). With them:
exactly those tokens (ids, or strings that must be single tokens). Each target's
direction is its unembedding column minus the mean column: the gradient injected at the
final norm's output for a logit node (the logit relative to the mean logit).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from torch_mi.errors import InputError, MIError


@dataclass(frozen=True)
class LogitTargets:
    token_ids: torch.Tensor       # [k] long
    tokens: tuple[str, ...]       # decoded token strings
    probabilities: torch.Tensor   # [k] softmax probabilities at the last position
    vectors: torch.Tensor         # [k, D] demeaned unembedding columns

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])


def _token_id(model, target: object) -> int:
    vocab = model.vocab_size
    if isinstance(target, str):
        return int(model.to_single_token(target))  # TokenizerError if not one token
    if isinstance(target, bool) or not isinstance(target, numbers.Integral):
        raise InputError(f"a target token must be a token id (int) or a string, got "
                         f"{type(target).__name__} {target!r:.40}")
    if not 0 <= int(target) < vocab:
        raise InputError(f"target token id {int(target)} is outside the vocabulary "
                         f"(0..{vocab - 1})")
    return int(target)


def _decode(model, token_id: int) -> str:
    tok = model.tokenizer
    try:
        return "" if tok is None else tok.decode([token_id], errors="replace")
    except MIError:  # an id the tokenizer does not have (a padded vocabulary)
        return ""


def select_targets(model, logits: torch.Tensor, target_tokens: Sequence | torch.Tensor | None,
                   max_n_logits: int, desired_logit_prob: float) -> LogitTargets:
    """The logit targets for last-position ``logits`` [V]."""
    probs = torch.softmax(logits.float(), dim=-1)  # [V]
    if target_tokens is None:
        if isinstance(max_n_logits, bool) or not isinstance(max_n_logits, int) \
                or not 1 <= max_n_logits <= probs.shape[0]:
            raise InputError(f"max_n_logits must be an int in 1..{probs.shape[0]}, got "
                             f"{max_n_logits!r}")
        if not isinstance(desired_logit_prob, (int, float)) or not 0 < desired_logit_prob <= 1:
            raise InputError(f"desired_logit_prob must be in (0, 1], got {desired_logit_prob!r}")
        top_p, top_idx = torch.topk(probs, max_n_logits)
        cutoff = int(torch.searchsorted(torch.cumsum(top_p, 0), desired_logit_prob)) + 1
        ids = top_idx[:cutoff]
    else:
        items = target_tokens.tolist() if isinstance(target_tokens, torch.Tensor) \
            else list(target_tokens)
        if not items:
            raise InputError("target_tokens is empty: give at least one token id or string, "
                             "or None for the most probable tokens")
        ids = torch.tensor([_token_id(model, t) for t in items], device=logits.device)
    w_u = model.W_U.float()  # [D, V]
    vectors = (w_u[:, ids] - w_u.mean(dim=1, keepdim=True)).T.contiguous()  # [k, D]
    tokens = tuple(_decode(model, int(i)) for i in ids.tolist())
    return LogitTargets(ids.long(), tokens, probs[ids], vectors)


__all__ = ["LogitTargets", "select_targets"]
