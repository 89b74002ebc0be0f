"""Text generation through the same hook sites as ``forward``.

Default mode keeps the backend's decoding state (``model.make_state()``, a KV cache for
transformers): the prompt is processed once, then one position per
step, so each step's hooks and interventions see only the new position (an ``Add`` of a
[D] vector therefore steers every generated token). ``recompute=True`` re-runs the whole
sequence every step instead (hooks see all positions, interventions re-apply to the prompt
each step; docs/porting.md: generation). Batches of unequal prompts are left-padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import InputError
from .hooks.spec import HookSpec
from .model import LanguageModel
from .prompts import prompt_rows
from .sampling import GenerationResult
from .tokenizer import pad_batch


@dataclass(frozen=True)
class SamplingConfig:
    """Greedy when temperature <= 0; otherwise temperature, then top-k, then top-p."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise InputError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Temperature-scaled logits [B,V] with tokens outside top-k / top-p set to -inf."""
    logits = logits / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token once the tokens before it already reach top_p (keeps at least one).
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= cfg.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def choose_tokens(logits: torch.Tensor, cfg: SamplingConfig,
                  generator: torch.Generator | None) -> torch.Tensor:
    """One token id per row of logits [B,V]."""
    if cfg.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits.float(), cfg), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class StopRules:
    """Stop ids (default: the tokenizer's EOS ids) and stop strings."""

    def __init__(self, stop, eos_ids: Sequence[int] = ()) -> None:
        items = [] if stop is None else ([stop] if isinstance(stop, (str, int)) else list(stop))
        self.strings = [s for s in items if isinstance(s, str) and s]
        self.ids = {int(s) for s in items if isinstance(s, int) and not isinstance(s, bool)}
        self.ids |= {int(i) for i in eos_ids}

    def cut(self, text: str) -> str | None:
        """The text before the first stop string, or None if none occurs."""
        hits = [text.index(s) for s in self.strings if s in text]
        return text[:min(hits)] if hits else None


@dataclass
class _Batch:
    """Running state of a batched generation."""

    rows: list[list[int]]
    generated: list[list[int]]
    done: list[bool]
    reasons: list[str]


def generate(model: LanguageModel, prompts, max_new_tokens: int = 32, *, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             stop=None, ignore_eos: bool = False, hooks: HookSpec | None = None,
             recompute: bool = False):
    """Generate continuations; a single prompt gives a GenerationResult, a list gives a list.

    ``stop`` holds stop strings and/or stop ids; the tokenizer's EOS ids also stop unless
    ``ignore_eos``. A stop id is not output; a stop string and what follows it are cut.
    """
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    cfg = SamplingConfig(temperature, top_k, top_p)
    rows, single = prompt_rows(model, prompts)
    if any(not r for r in rows):
        raise InputError("empty prompt: it encodes to no tokens; give at least one token")
    tok = model.tokenizer
    rules = StopRules(stop, tok.eos_token_ids if tok is not None and not ignore_eos else ())
    generator = torch.Generator(model.device).manual_seed(seed) if seed is not None else None
    batch = _Batch([list(r) for r in rows], [[] for _ in rows], [False] * len(rows),
                   ["max_new_tokens"] * len(rows))
    pad = tok.padding_id if tok is not None else 0
    ids, mask = pad_batch(rows, pad)
    _run(model, batch, ids.to(model.device), mask.to(model.device), max_new_tokens, cfg,
         generator, rules, hooks, recompute)
    results = [_result(model, r, g, why, prompts if single else None, rules)
               for r, g, why in zip(rows, batch.generated, batch.reasons, strict=True)]
    return results[0] if single else results


def _run(model: LanguageModel, batch: _Batch, ids, mask, steps, cfg, generator, rules, hooks, recompute):
    padded = bool((mask == 0).any())
    state = None if recompute else model.make_state()
    step_input, all_ids = ids, ids
    for _ in range(steps):
        attention = mask if padded else None
        if recompute:
            out = model.forward(all_ids, hooks, attention_mask=attention, last_logits_only=True)
        else:
            out = model.forward(step_input, hooks, attention_mask=attention, state=state,
                                last_logits_only=True)
        tokens = choose_tokens(out.output()[:, -1].float(), cfg, generator)
        _record(model, batch, tokens.tolist(), rules)
        if all(batch.done):
            break
        step_input = tokens[:, None].to(ids.device)
        all_ids = torch.cat([all_ids, step_input], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)


def _record(model: LanguageModel, batch: _Batch, tokens: list[int], rules: StopRules) -> None:
    for i, token in enumerate(tokens):
        if batch.done[i]:
            continue
        if token in rules.ids:
            batch.done[i], batch.reasons[i] = True, "stop_id"
            continue
        batch.generated[i].append(token)
        if rules.strings and model.tokenizer is not None:
            text = model.tokenizer.decode(batch.generated[i])
            if rules.cut(text) is not None:
                batch.done[i], batch.reasons[i] = True, "stop_string"


def _result(model: LanguageModel, prompt_ids: list[int], generated: list[int], reason: str,
            prompt_text: str | None, rules: StopRules) -> GenerationResult:
    tok = model.tokenizer
    if tok is None:
        prompt, text, full = "", "", ""
    else:
        prompt = prompt_text if isinstance(prompt_text, str) else tok.decode(prompt_ids)
        text = tok.decode(generated)
        full = tok.decode(prompt_ids + generated)
        if reason == "stop_string":  # the stop string and what follows are not output
            cut = rules.cut(text)
            if full.endswith(text):
                full = full[: len(full) - len(text)] + cut
            text = cut
    return GenerationResult(
        prompt=prompt, full_text=full, generated_text=text, prompt_tokens=len(prompt_ids),
        generated_tokens=len(generated), total_tokens=len(prompt_ids) + len(generated),
        token_ids=prompt_ids + generated, step_tokens=list(generated), stop_reason=reason)
