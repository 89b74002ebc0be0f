"""Logit lens: read any residual-stream hook through the final norm and unembedding.

``logit_lens(model, text)`` runs one forward capturing the chosen hook at every layer and
projects each with ``project_to_vocab`` (final norm + unembed + final soft-cap, so the last
layer's ``hook_resid_post`` reproduces the model's own output distribution exactly).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..hooks.points import STREAM_POINTS, stream_point
from ..hooks.spec import HookSpec
from ..model import LanguageModel
from ..prompts import Prompt, PromptBatch, prompt_batch, prompt_text
from .lens_maps import LensMap, Target, apply_map, lens_maps, position_metrics, target_ids

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
    kl_to_final: torch.Tensor | None = None  # [L, S] KL(final || layer) per position (fp64)
    target_id: int | None = None  # the token whose probability and rank are tracked
    target_probs: torch.Tensor | None = None  # [L, S] probability of the target
    target_ranks: torch.Tensor | None = None  # [L, S] rank of the target (0 = top-1)

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
            **self._metrics_dict(),
        }

    def _metrics_dict(self) -> dict:
        """Last-position KL and target figures per layer (empty when not computed)."""
        out: dict = {}
        if self.kl_to_final is not None:
            out["kl_to_final"] = self.kl_to_final[:, -1].tolist()
        if self.target_id is not None and self.target_probs is not None:
            out["target"] = {"token_id": self.target_id,
                             "probability": self.target_probs[:, -1].tolist(),
                             "rank": self.target_ranks[:, -1].tolist()}
        return out


@dataclass
class BatchLogitLens:
    """Per-prompt analyses of a batch, and their aggregates at each prompt's last token."""

    analyses: list[LogitLensAnalysis]

    def __len__(self) -> int:
        return len(self.analyses)

    def __getitem__(self, i: int) -> LogitLensAnalysis:
        return self.analyses[i]

    def _last(self, name: str) -> torch.Tensor:
        """[B, L] of one per-position metric at the last position of each prompt."""
        values = [getattr(a, name) for a in self.analyses]
        if any(v is None for v in values):
            raise InputError(f"{name} needs a target: call logit_lens(..., target=' token')")
        return torch.stack([v[:, -1] for v in values])

    def kl_to_final(self) -> torch.Tensor:
        """[B, L] KL(final || layer) at each prompt's last token."""
        return self._last("kl_to_final")

    def target_probs(self) -> torch.Tensor:
        """[B, L] probability of each prompt's target at its last token."""
        return self._last("target_probs")

    def target_ranks(self) -> torch.Tensor:
        """[B, L] rank of each prompt's target at its last token (0 = top-1)."""
        return self._last("target_ranks")

    def mean_kl_to_final(self) -> torch.Tensor:
        """[L] mean over prompts of the last-token KL to the final distribution."""
        return self.kl_to_final().mean(dim=0)

    def mean_target_prob(self) -> torch.Tensor:
        """[L] mean over prompts of the target's last-token probability."""
        return self.target_probs().mean(dim=0)

    def mean_target_rank(self) -> torch.Tensor:
        """[L] mean over prompts of the target's last-token rank (float)."""
        return self.target_ranks().double().mean(dim=0)

    def to_dict(self) -> dict:
        return {"prompts": [a.to_dict() for a in self.analyses]}


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


def _check_args(model: LanguageModel, k: object, hook: object) -> None:
    if not isinstance(hook, str) or hook not in LENS_HOOKS:
        raise InputError(f"unknown lens hook {hook!r}; choose one of {sorted(LENS_HOOKS)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= model.vocab_size:
        raise InputError(f"logit_lens: k (predictions kept per layer) must be an int in "
                         f"[1, {model.vocab_size}] (the vocabulary size), got {k!r:.40}")


def logit_lens(model: LanguageModel, prompt: Prompt | Sequence[Prompt], *, k: int = 10,
               hook: str = "resid_post", target: Target | Sequence[Target] | None = None,
               lens: Mapping[int, LensMap] | None = None
               ) -> LogitLensAnalysis | BatchLogitLens:
    """Run the logit lens on one prompt (text or ids) or a list of prompts.

    A list runs as one left-padded batch and gives a :class:`BatchLogitLens` (one analysis
    per prompt, each equal to that prompt run alone, plus aggregates). Every analysis holds
    KL(final || layer) per position; with ``target`` (one token, or one per prompt) also
    its probability and rank. ``lens`` maps layers to tuned-lens affine maps (see
    :mod:`.lens_maps`) applied to the residual before the final norm and unembedding.
    """
    _check_args(model, k, hook)
    batch = prompt_batch(model, prompt)
    targets = target_ids(model, target, len(batch.rows), batch.single)
    points = [LENS_HOOKS[hook](i) for i in range(model.num_layers)]
    like = torch.empty(0, device=model.device, dtype=model.dtype)
    maps = lens_maps(lens, model.num_layers, model.hidden_size, like)
    cache = model.forward(batch.ids, HookSpec().capture(*points), attention_mask=batch.attention_mask)
    analyses = []
    with torch.no_grad():
        for row in range(len(batch.rows)):
            analyses.append(_analyse(model, prompt if batch.single else prompt[row], batch, row,
                                     cache, points, maps, targets, k, hook))
    return analyses[0] if batch.single else BatchLogitLens(analyses)


def _analyse(model: LanguageModel, prompt: Prompt, batch: PromptBatch, row: int, cache,
             points, maps, targets: list[int] | None, k: int, hook: str) -> LogitLensAnalysis:
    """The analysis of one row of the batch (its real positions only)."""
    tok = model.tokenizer
    decode = tok.decode_token if tok is not None else str
    ids = torch.tensor([batch.rows[row]], dtype=torch.long)
    real = batch.real(row)
    analysis = LogitLensAnalysis(prompt_text(model, prompt, ids), model.num_layers, hook=hook,
                                 tokens=[decode(int(t)) for t in ids[0]])
    final_logits = cache.output()[row, real].float()  # [S, V]
    target = targets[row] if targets is not None else None
    probs_grid, tokens_grid, kls, t_probs, t_ranks = [], [], [], [], []
    for layer, point in enumerate(points):
        resid = apply_map(maps.get(layer), layer, cache[point][row, real])  # [S, D]
        logits = model.project_to_vocab(resid).float()  # [S, V]
        probs = torch.softmax(logits, dim=-1)
        top_p, top_i = probs[-1].topk(k)
        analysis.push(LogitLensResult(layer, decode_predictions_with(
            zip(top_i.tolist(), top_p.tolist(), strict=True), decode)))
        best_p, best_i = probs.max(dim=-1)  # [S]
        probs_grid.append(best_p)
        tokens_grid.append([decode(int(i)) for i in best_i])
        kl, t_prob, t_rank = position_metrics(final_logits, logits, target)
        kls.append(kl.cpu())
        t_probs.append(t_prob)
        t_ranks.append(t_rank)
    final = torch.softmax(final_logits[-1], dim=-1).topk(k)
    analysis.grid_probs = torch.stack(probs_grid).cpu()
    analysis.grid_tokens = tokens_grid
    analysis.final_predictions = decode_predictions_with(
        zip(final.indices.tolist(), final.values.tolist(), strict=True), decode)
    analysis.kl_to_final = torch.stack(kls)
    if target is not None:
        analysis.target_id = target
        analysis.target_probs = torch.stack(t_probs)
        analysis.target_ranks = torch.stack(t_ranks)
    return analysis
