"""Head detection: previous-token, induction, duplicate-token and BOS/attention-sink scores.

Scores follow TransformerLens 3.x's ``head_detector`` exactly: a detection pattern D [S,S]
(lower triangular, 0/1) says where a head of that kind attends, and a head's pattern A
[S,S] scores ``sum(A * D) / sum(A)`` (``"mul"``: the share of attention on those cells) or
``1 - round(sum|A - D| / S, 3)`` (``"abs"``). ``exclude_bos`` zeroes key 0 and
``exclude_current_token`` the diagonal first, as TL does. The BOS/attention-sink pattern
(not in TL) has ones at key 0 for every query after the first. Several sequences are scored
one by one and averaged, like TL's ``detect_head`` on a list. One forward captures only the
attention patterns (``blocks.{i}.attn.hook_pattern``) of the whole batch.

``rows="matched"`` (``"mul"`` only) scores only the queries whose detection row is not
empty: for induction on a repeated random sequence that is the usual induction score (mean
attention of second-repeat queries on the token after their earlier copy). TL's score
divides by every query, so on 2 x n random tokens after BOS it cannot exceed n / (2n + 1).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..hooks.points import HookPoint
from ..hooks.spec import HookSpec
from ..model import LanguageModel
from ..plots import plot_heatmap
from ..prompts import Prompt, prompt_batch

HEAD_KINDS = ("previous_token", "induction", "duplicate_token", "bos")
ERROR_MEASURES = ("mul", "abs")
ROWS = ("all", "matched")


def detection_pattern(kind: str, tokens: torch.Tensor) -> torch.Tensor:
    """The 0/1 detection pattern [S,S] of ``kind`` on one sequence ``tokens`` [S]."""
    seq = tokens.reshape(-1).cpu()
    n = seq.shape[0]
    if kind == "previous_token":
        return torch.diag(torch.ones(n - 1), -1)
    if kind == "bos":
        pattern = torch.zeros(n, n)
        pattern[1:, 0] = 1.0
        return pattern
    duplicate = (seq[:, None] == seq[None, :]).float().tril(-1)  # earlier copies of the query
    if kind == "duplicate_token":
        return duplicate
    if kind == "induction":  # the token after an earlier copy: duplicates shifted one right
        shifted = torch.zeros(n, n)
        shifted[:, 1:] = duplicate[:, :-1]
        return shifted.tril()
    raise InputError(f"unknown head kind {kind!r}; choose from {', '.join(HEAD_KINDS)}")


def score_patterns(patterns: torch.Tensor, detection: torch.Tensor, *,
                   exclude_bos: bool = False, exclude_current_token: bool = False,
                   error_measure: str = "mul", rows: str = "all") -> torch.Tensor:
    """Scores [H] of attention patterns [H,S,S] against one detection pattern [S,S]."""
    a = patterns.detach().float().cpu()
    d = detection.to(a.dtype)
    if rows == "matched":  # only the queries the pattern says something about
        a = a * (d.sum(dim=-1) > 0).to(a.dtype)[:, None]
    if error_measure == "mul":
        if exclude_bos:
            a = a.clone()
            a[:, :, 0] = 0
        if exclude_current_token:
            a = a * (1 - torch.eye(a.shape[-1]))
        return (a * d).sum(dim=(-1, -2)) / a.sum(dim=(-1, -2))
    diff = (a - d).abs()
    if exclude_bos:
        diff[:, :, 0] = 0
    if exclude_current_token:
        diff = diff * (1 - torch.eye(diff.shape[-1]))
    size = diff.shape[-1]
    return torch.tensor([1 - round(float(x.mean()) * size, 3) for x in diff])


def repeated_random_tokens(model: LanguageModel, n_tokens: int = 50, repeats: int = 2, *,
                           batch: int = 1, seed: int = 0, bos: bool = True) -> torch.Tensor:
    """Token ids [batch, bos + repeats*n_tokens]: ``n_tokens`` random ordinary tokens
    (seeded; special tokens left out) repeated ``repeats`` times, after BOS if the
    tokenizer has one and ``bos``."""
    for name, value, low in (("n_tokens", n_tokens, 1), ("repeats", repeats, 1),
                             ("batch", batch, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise InputError(f"repeated_random_tokens: {name} must be an int >= {low}, got "
                             f"{value!r:.40}")
    tok = model.tokenizer
    special = set()
    if tok is not None:
        special = {t for t in (tok.bos_token_id, tok.pad_token_id, *tok.eos_token_ids)
                   if t is not None}
        added = getattr(tok.inner, "get_added_tokens_decoder", None)
        special |= {int(i) for i, t in (added() if added else {}).items() if t.special}
    allowed = torch.tensor([i for i in range(model.vocab_size) if i not in special])
    g = torch.Generator().manual_seed(int(seed))
    picks = allowed[torch.randint(len(allowed), (batch, n_tokens), generator=g)]
    ids = picks.repeat(1, repeats)  # [B, repeats*n]
    bos_id = tok.bos_token_id if tok is not None else None
    if bos and bos_id is not None:
        ids = torch.cat([torch.full((batch, 1), int(bos_id)), ids], dim=1)
    return ids.to(model.device)


@dataclass
class HeadScores:
    """Per-head scores [layers, heads] of each kind, and the sequences they came from."""

    scores: dict[str, torch.Tensor]  # kind -> [L, H]
    tokens: torch.Tensor  # [B, T] the (possibly padded) sequences scored
    error_measure: str = "mul"
    rows: str = "all"

    def __getitem__(self, kind: str) -> torch.Tensor:
        if kind not in self.scores:
            raise InputError(f"no {kind!r} scores here; computed: {', '.join(self.scores)}")
        return self.scores[kind]

    def top(self, kind: str, k: int = 5) -> list[tuple[int, int, float]]:
        """The ``k`` best heads of ``kind`` as (layer, head, score), best first."""
        grid = self[kind]
        values, index = grid.flatten().topk(min(k, grid.numel()))
        heads = grid.shape[1]
        return [(int(i) // heads, int(i) % heads, float(v))
                for v, i in zip(values, index, strict=True)]

    def partners(self, layer: int, kind: str = "previous_token",
                 threshold: float = 0.5) -> list[tuple[int, int, float]]:
        """Heads in layers before ``layer`` scoring >= ``threshold`` on ``kind`` (e.g. the
        previous-token heads an induction head at ``layer`` can compose with), best first."""
        grid = self[kind][:layer]
        found = [(int(l_), int(h), float(grid[l_, h]))
                 for l_, h in (grid >= threshold).nonzero().tolist()]
        return sorted(found, key=lambda t: -t[2])

    def plot(self, kind: str, path: str | os.PathLike, *, title: str = "") -> str:
        """Layer x head heatmap of one kind's scores with a colour bar; returns the path."""
        return plot_head_scores(self, kind, path, title=title)


def plot_head_scores(scores: HeadScores, kind: str, path: str | os.PathLike, *,
                     title: str = "") -> str:
    """Heatmap [layers, heads] of ``kind``'s scores, annotated and with a colour bar."""
    grid = scores[kind]
    low = 0.0 if scores.error_measure == "mul" else -1.0
    notes = [[f"{float(v):.2f}" for v in row] for row in grid]
    return plot_heatmap(grid, [f"L{i}" for i in range(grid.shape[0])],
                        [f"H{h}" for h in range(grid.shape[1])], path,
                        title=title or f"{kind.replace('_', '-')} head scores "
                                       f"({scores.error_measure})",
                        colorbar=f"{kind} score", annotations=notes, vmin=low, vmax=1.0)


def _check_kinds(kinds: object) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = (kinds,)
    if not isinstance(kinds, Sequence) or not kinds:
        raise InputError(f"kinds must be a non-empty list from {', '.join(HEAD_KINDS)}")
    bad = [k for k in kinds if k not in HEAD_KINDS]
    if bad:
        raise InputError(f"unknown head kind(s) {bad}; choose from {', '.join(HEAD_KINDS)}")
    return tuple(kinds)


def detect_heads(model: LanguageModel, tokens: Prompt | Sequence[Prompt] | None = None, *,
                 kinds: Sequence[str] = HEAD_KINDS, n_tokens: int = 50, repeats: int = 2,
                 batch: int = 1, seed: int = 0, exclude_bos: bool = False,
                 exclude_current_token: bool = False, error_measure: str = "mul",
                 rows: str = "all") -> HeadScores:
    """Score every head of ``model`` for each of ``kinds`` ([layers, heads] per kind).

    ``tokens`` (a prompt, a [B,S] id tensor or a list of prompts; one padded batch) or, if
    None, ``batch`` repeated random sequences from :func:`repeated_random_tokens`. Each
    sequence is scored on its own tokens and the scores averaged over sequences."""
    kinds = _check_kinds(kinds)
    if error_measure not in ERROR_MEASURES:
        raise InputError(f"error_measure must be one of {ERROR_MEASURES}, got {error_measure!r}")
    if rows not in ROWS or (rows == "matched" and error_measure != "mul"):
        raise InputError(f"rows must be one of {ROWS} ('matched' with error_measure='mul' "
                         f"only), got {rows!r:.40}")
    for name, flag in (("exclude_bos", exclude_bos),
                       ("exclude_current_token", exclude_current_token)):
        if not isinstance(flag, bool):
            raise InputError(f"{name} must be True or False, got {flag!r:.40}")
    if tokens is None:
        tokens = repeated_random_tokens(model, n_tokens, repeats, batch=batch, seed=seed)
    pb = prompt_batch(model, tokens)
    short = [i for i, r in enumerate(pb.rows) if len(r) < 2]
    if short:
        raise InputError(f"sequence(s) {short} have fewer than 2 tokens; head patterns need at "
                         f"least 2")
    points = [HookPoint("AttnPattern", layer) for layer in range(model.num_layers)]
    cache = model.forward(pb.ids, HookSpec().capture(*points), attention_mask=pb.attention_mask)
    totals = {k: torch.zeros(model.num_layers, model.num_heads) for k in kinds}
    for row, ids in enumerate(pb.rows):
        real = pb.real(row)
        patterns = {k: detection_pattern(k, torch.tensor(ids)) for k in kinds}
        for layer, point in enumerate(points):
            attn = cache[point][row, :, real, real]  # [H, S, S]
            for k in kinds:
                totals[k][layer] += score_patterns(
                    attn, patterns[k], exclude_bos=exclude_bos,
                    exclude_current_token=exclude_current_token, error_measure=error_measure,
                    rows=rows)
    scores = {k: v / len(pb.rows) for k, v in totals.items()}
    return HeadScores(scores, pb.ids.cpu(), error_measure, rows)
