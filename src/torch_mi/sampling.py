"""Sampling helpers: pick a token from logits, read a token's probability."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import InputError


def sample_token(logits: torch.Tensor, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> int:
    """Greedy (``temperature <= 0``) or temperature sampling from logits [V] (flattened).

    Pass a seeded ``torch.Generator`` for reproducible sampling.
    """
    flat = logits.detach().reshape(-1).float()
    if flat.numel() == 0:
        raise InputError("sample_token got empty logits")
    if temperature <= 0:
        return int(torch.argmax(flat))
    probs = torch.softmax(flat / temperature, dim=-1)
    if generator is not None and generator.device != probs.device:
        probs = probs.to(generator.device)
    return int(torch.multinomial(probs, 1, generator=generator))


def extract_token_prob(logits: torch.Tensor, token_id: int) -> float:
    """Probability of ``token_id`` at the last position of logits [V], [S,V] or [1,S,V]."""
    if logits.dim() == 3:
        logits = logits[0]
    if logits.dim() == 2:
        logits = logits[-1]
    if logits.dim() != 1:
        raise InputError(f"extract_token_prob expects [V], [S,V] or [1,S,V], got "
                         f"{list(logits.shape)}")
    if not 0 <= token_id < logits.shape[0]:
        raise InputError(f"token id {token_id} outside the vocabulary of size {logits.shape[0]}")
    return float(torch.softmax(logits.float(), dim=-1)[token_id])


@dataclass
class GenerationResult:
    """A finished generation: texts, token counts and the tokens chosen at each step."""

    prompt: str
    full_text: str
    generated_text: str
    prompt_tokens: int
    generated_tokens: int
    total_tokens: int
    token_ids: list[int] = field(default_factory=list)  # prompt + generated
    step_tokens: list[int] = field(default_factory=list)  # generated, one per step
    stop_reason: str = "max_new_tokens"  # or "eos", "stop_string", "stop_id"
