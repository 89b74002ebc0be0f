"""Logit lens: read any residual-stream hook through the final norm and unembedding.

``logit_lens(model, text)`` runs one forward capturing the chosen hook at every layer and
projects each with ``project_to_vocab`` (final norm + unembed + final soft-cap, so the last
layer's ``hook_resid_post`` reproduces the model's own output distribution exactly).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..hooks.points import STREAM_POINTS, stream_point
from ..hooks.spec import HookSpec
from ..model import LanguageModel
from ..prompts import Prompt, prompt_ids, prompt_text

LENS_HOOKS = {name: (lambda layer, n=name: stream_point(n, layer)) for name in STREAM_POINTS}


@dataclass
class TokenPrediction:
    token_id: int
    token: str
    probability: float


@dataclass
class LogitLensResult:
    """Top-k predictions read at one layer (last position)."""

    layer: int
    predictions: list[TokenPrediction]


@dataclass
class LogitLensAnalysis:
    """Per-layer predictions for one input, plus the top-1 grid over every position."""

    input_text: str
    n_layers: int
    layer_results: list[LogitLensResult] = field(default_factory=list)
    hook: str = "resid_post"
    tokens: list[str] = field(default_factory=list)  # input tokens (decoded)
    grid_probs: torch.Tensor | None = None  # [L, S] top-1 probability per layer/position
    grid_tokens: list[list[str]] = field(default_factory=list)  # [L][S] top-1 token
    final_predictions: list[TokenPrediction] = field(default_factory=list)  # model output

    def push(self, result: LogitLensResult) -> None:
        self.layer_results.append(result)

    def top_predictions(self) -> list[tuple[str, float]]:
        """(token, probability) of the top-1 prediction at each layer."""
        return [(r.predictions[0].token, r.predictions[0].probability)
                for r in self.layer_results if r.predictions]

    def first_appearance(self, token: str, k: int = 10) -> int | None:
        """First layer whose top-k holds a prediction containing ``token`` (substring, after
        stripping surrounding whitespace), or None."""
        needle = token.strip()
        for result in self.layer_results:
            if any(needle and needle in p.token for p in result.predictions[:k]):
                return result.layer
        return None

    def first_top1(self, token: str) -> int | None:
        """First layer at which ``token`` (exact match, whitespace-stripped) is the top-1."""
        for result in self.layer_results:
            if result.predictions and result.predictions[0].token.strip() == token.strip():
                return result.layer
        return None

    def summary(self) -> str:
        lines = [f"Logit lens ({self.hook}, last position) for: {self.input_text!r}"]
        for r in self.layer_results:
            if r.predictions:
                p = r.predictions[0]
                lines.append(f"Layer {r.layer:2d}: {format_token(p.token)!r} "
                             f"({format_probability(p.probability)})")
        return "\n".join(lines)

    def detailed(self, k: int = 10) -> str:
        lines = []
        for r in self.layer_results:
            lines.append(f"Layer {r.layer:2d}:")
            for rank, p in enumerate(r.predictions[:k], 1):
                lines.append(f"  {rank:2d}. {format_token(p.token)!r} "
                             f"{format_probability(p.probability)}")
        return "\n".join(lines)

    def print_summary(self) -> None:
        print(self.summary())

    def print_detailed(self, k: int = 10) -> None:
        print(self.detailed(k))

    def to_dict(self) -> dict:
        return {
            "input": self.input_text, "hook": self.hook, "n_layers": self.n_layers,
            "tokens": self.tokens,
            "layers": [{"layer": r.layer, "predictions": [
                {"rank": i + 1, "token_id": p.token_id, "token": p.token,
                 "probability": p.probability} for i, p in enumerate(r.predictions)]}
                for r in self.layer_results],
            "output": [{"token_id": p.token_id, "token": p.token, "probability": p.probability}
                       for p in self.final_predictions],
        }


def format_token(token: str) -> str:
    """Escape newlines/tabs so a token prints on one line."""
    return token.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def format_probability(p: float) -> str:
    """12.3% / 0.123% / 1.2e-4% depending on magnitude."""
    percent = p * 100
    if percent >= 1:
        return f"{percent:.1f}%"
    if percent >= 0.01:
        return f"{percent:.3f}%"
    return f"{percent:.1e}%"


def decode_predictions_with(pairs: Iterable[tuple[int, float]],
                            decode: Callable[[int], str]) -> list[TokenPrediction]:
    return [TokenPrediction(int(i), decode(int(i)), float(p)) for i, p in pairs]


def _layer_probs(model: LanguageModel, resid: torch.Tensor) -> torch.Tensor:
    """Probabilities [S, V] (fp32) of one layer's residual [S, D]."""
    return torch.softmax(model.project_to_vocab(resid).float(), dim=-1)


def logit_lens(model: LanguageModel, prompt: Prompt, *, k: int = 10,
               hook: str = "resid_post") -> LogitLensAnalysis:
    """Run the logit lens on one prompt (text or token ids, batch of one)."""
    if not isinstance(hook, str) or hook not in LENS_HOOKS:
        raise InputError(f"unknown lens hook {hook!r}; choose one of {sorted(LENS_HOOKS)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= model.vocab_size:
        raise InputError(f"logit_lens: k (predictions kept per layer) must be an int in "
                         f"[1, {model.vocab_size}] (the vocabulary size), got {k!r:.40}")
    tok = model.tokenizer
    ids = prompt_ids(model, prompt)
    text = prompt_text(model, prompt, ids)
    points = [LENS_HOOKS[hook](i) for i in range(model.num_layers)]
    cache = model.forward(ids, HookSpec().capture(*points))
    decode = tok.decode_token if tok is not None else str
    analysis = LogitLensAnalysis(text, model.num_layers, hook=hook,
                                 tokens=[decode(int(t)) for t in ids[0]])
    probs_grid, tokens_grid = [], []
    with torch.no_grad():
        for layer, point in enumerate(points):
            probs = _layer_probs(model, cache[point][0])  # [S, V]
            top_p, top_i = probs[-1].topk(k)
            analysis.push(LogitLensResult(layer, decode_predictions_with(
                zip(top_i.tolist(), top_p.tolist(), strict=True), decode)))
            best_p, best_i = probs.max(dim=-1)  # [S]
            probs_grid.append(best_p)
            tokens_grid.append([decode(int(i)) for i in best_i])
        final = torch.softmax(cache.output()[0, -1].float(), dim=-1).topk(k)
    analysis.grid_probs = torch.stack(probs_grid).cpu()
    analysis.grid_tokens = tokens_grid
    analysis.final_predictions = decode_predictions_with(
        zip(final.indices.tolist(), final.values.tolist(), strict=True), decode)
    return analysis
