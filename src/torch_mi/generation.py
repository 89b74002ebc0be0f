"""Text generation through the same hook sites as ``forward``.

Default mode keeps the backend's decoding state (``model.make_state()``: a KV cache for
transformers, the recurrent state for RWKV, so a step costs O(1) there): the prompt is
processed once, then one position per step, so each step's hooks and interventions see
only the new position (an ``Add`` of a [D] vector therefore steers every generated token).
``recompute=True`` re-runs the whole sequence every step instead, as upstream did (hooks
see all positions, interventions re-apply to the prompt each step; docs/porting.md:
generation). Batches of unequal prompts are left-padded (RWKV refuses padding with an
InputError: padding tokens would enter its state).

Text is decoded with ``errors="replace"`` for stop strings and results: sampled tokens may
end inside a multi-byte character (the RWKV world tokenizer works on bytes and decodes
strictly), which must neither stop generation with a TokenizerError nor hide a stop string;
``token_ids`` always hold the exact ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import HookError, InputError
from .hooks.spec import HookSpec
from .model import LanguageModel
from .prompts import prompt_rows
from .sampling import GenerationResult, check_int, check_real
from .tokenizer import pad_batch


@dataclass(frozen=True)
class SamplingConfig:
    """Greedy when temperature == 0; otherwise temperature, then top-k, then top-p.

    Every field is type- and range-checked here (a string, NaN, inf or a fractional top-k
    is an InputError naming the argument), so sampling never meets a bad value."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperature", check_real(
            "temperature", self.temperature, low=0.0, hint="0 = greedy, 1 = the model's "
            "distribution"))
        if self.top_k is not None:
            check_int("top_k", self.top_k, low=1)
        if self.top_p is not None:
            top_p = check_real("top_p", self.top_p, low=0.0, high=1.0)
            if top_p == 0.0:
                raise InputError("top_p must be in (0, 1], got 0.0; use temperature=0 for greedy")
            object.__setattr__(self, "top_p", top_p)


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


def check_logits(logits: torch.Tensor, step: int) -> None:
    """HookError if a row of logits [B,V] holds NaN or +inf, or only -inf: sampling from it
    would be meaningless (greedy would silently pick the NaN)."""
    bad_row = torch.isnan(logits).any(-1) | torch.isposinf(logits).any(-1) \
        | torch.isneginf(logits).all(-1)
    if bool(bad_row.any()):
        rows = bad_row.nonzero().flatten().tolist()
        raise HookError(
            f"generation step {step}: the logits of row(s) {rows[:10]} are not usable (NaN, "
            f"+inf, or every token -inf), so no token can be chosen. Run model.forward(ids, "
            f"HookSpec(check_finite=True)) to find the first hook point that goes non-finite")


def choose_tokens(logits: torch.Tensor, cfg: SamplingConfig,
                  generator: torch.Generator | None) -> torch.Tensor:
    """One token id per row of logits [B,V]."""
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float()
    # Shifting by the row maximum changes no probability and keeps logits / temperature
    # finite for tiny temperatures (1e-45 would otherwise overflow to inf and then NaN).
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    probs = torch.softmax(filter_logits(shifted, cfg), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class StopRules:
    """Stop ids (default: the tokenizer's EOS ids) and stop strings."""

    def __init__(self, stop, eos_ids: Sequence[int] = (), vocab_size: int | None = None) -> None:
        items = _stop_items(stop)
        for item in items:
            if isinstance(item, str) and not item:
                raise InputError("stop: an empty stop string would match at once; remove it")
            if isinstance(item, int) and vocab_size is not None and not 0 <= item < vocab_size:
                raise InputError(f"stop: token id {item} is outside the vocabulary "
                                 f"(0..{vocab_size - 1}), so it could never stop generation")
        self.strings = [s for s in items if isinstance(s, str)]
        self.ids = {int(s) for s in items if isinstance(s, int)}
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


def _stop_items(stop) -> list:
    """``stop`` as a list of strings and ids; InputError for anything else."""
    if stop is None:
        return []
    items = [stop] if isinstance(stop, (str, int)) else stop
    if isinstance(items, (bytes, dict)) or not isinstance(items, (list, tuple, set, frozenset)):
        raise InputError(f"stop must be a string, a token id or a list of them, got "
                         f"{type(stop).__name__}")
    items = list(items)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise InputError(f"stop: each entry must be a string or an int token id, got "
                             f"{type(item).__name__} {item!r}")
    return items


@dataclass(frozen=True)
class _Options:
    """The checked options of one generate call."""

    cfg: SamplingConfig
    generator: torch.Generator | None
    hooks: HookSpec | None
    recompute: bool
    extra: dict


def _options(model: LanguageModel, temperature, top_k, top_p, seed, hooks, flags: dict) -> _Options:
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise InputError(f"{name} must be True or False, got {type(value).__name__} "
                             f"{value!r}")
    if hooks is not None and not isinstance(hooks, HookSpec):
        raise HookError(f"hooks must be a HookSpec (or None), got {type(hooks).__name__}")
    cfg = SamplingConfig(temperature, top_k, top_p)
    generator = None
    if seed is not None:
        seed = check_int("seed", seed, low=0, high=2 ** 64 - 1)
        generator = torch.Generator(model.device).manual_seed(seed)
    extra = {"allow_long_context": True} if flags["allow_long_context"] else {}
    return _Options(cfg, generator, hooks, flags["recompute"], extra)


def _check_context(model: LanguageModel, rows: list[list[int]], steps: int,
                   allowed: bool) -> None:
    """Refuse before any work a generation that would run past the model's context."""
    backend = getattr(model, "backend", model)
    limit_of = getattr(backend, "context_limit", None)
    limit = limit_of() if callable(limit_of) and not allowed else None
    needed = max(len(r) for r in rows) + steps - 1  # the last token is never fed back
    if limit is not None and steps and needed > limit:
        raise InputError(
            f"max_new_tokens={steps} after a prompt of {max(len(r) for r in rows)} tokens "
            f"needs {needed} positions, beyond this model's context of {limit} "
            f"(max_position_embeddings); lower max_new_tokens to at most "
            f"{max(limit - max(len(r) for r in rows) + 1, 0)}, or pass "
            f"allow_long_context=True to run past it anyway")


def generate(model: LanguageModel, prompts, max_new_tokens: int = 32, *, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             stop=None, ignore_eos: bool = False, hooks: HookSpec | None = None,
             recompute: bool = False, allow_long_context: bool = False):
    """Generate continuations; a single prompt gives a GenerationResult, a list gives a list.

    ``stop`` holds stop strings and/or stop ids; the tokenizer's EOS ids also stop unless
    ``ignore_eos``. A stop id is not output; a stop string and what follows it are cut.
    Every argument is checked before any work (InputError naming it).
    """
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=0)
    opts = _options(model, temperature, top_k, top_p, seed, hooks,
                    {"ignore_eos": ignore_eos, "recompute": recompute,
                     "allow_long_context": allow_long_context})
    rows, single = prompt_rows(model, prompts)
    if any(not r for r in rows):
        raise InputError("empty prompt: it encodes to no tokens; give at least one token")
    _check_context(model, rows, max_new_tokens, allow_long_context)
    tok = model.tokenizer
    rules = StopRules(stop, tok.eos_token_ids if tok is not None and not ignore_eos else (),
                      model.vocab_size)
    batch = _Batch([list(r) for r in rows], [[] for _ in rows], [False] * len(rows),
                   ["max_new_tokens"] * len(rows))
    pad = tok.padding_id if tok is not None else 0
    ids, mask = pad_batch(rows, pad)
    _run(model, batch, ids.to(model.device), mask.to(model.device), max_new_tokens, opts, rules)
    results = [_result(model, r, g, why, prompts if single else None, rules)
               for r, g, why in zip(rows, batch.generated, batch.reasons, strict=True)]
    return results[0] if single else results


def _run(model: LanguageModel, batch: _Batch, ids, mask, steps: int, opts: _Options,
         rules: StopRules) -> None:
    padded = bool((mask == 0).any())
    state = None if opts.recompute else model.make_state()
    step_input, all_ids = ids, ids
    for step in range(steps):
        attention = mask if padded else None
        if opts.recompute:
            out = model.forward(all_ids, opts.hooks, attention_mask=attention,
                                last_logits_only=True, **opts.extra)
        else:
            out = model.forward(step_input, opts.hooks, attention_mask=attention, state=state,
                                last_logits_only=True, **opts.extra)
        logits = out.output()[:, -1].float()
        check_logits(logits, step)
        tokens = choose_tokens(logits, opts.cfg, opts.generator)
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
            text = model.tokenizer.decode(batch.generated[i], errors="replace")
            if rules.cut(text) is not None:
                batch.done[i], batch.reasons[i] = True, "stop_string"


def _result(model: LanguageModel, prompt_ids: list[int], generated: list[int], reason: str,
            prompt_text: str | None, rules: StopRules) -> GenerationResult:
    tok = model.tokenizer
    if tok is None:
        prompt, text, full = "", "", ""
    else:
        prompt = prompt_text if isinstance(prompt_text, str) \
            else tok.decode(prompt_ids, errors="replace")
        text = tok.decode(generated, errors="replace")
        full = tok.decode(prompt_ids + generated, errors="replace")
        if reason == "stop_string":  # the stop string and what follows are not output
            cut = rules.cut(text)
            if full.endswith(text):
                full = full[: len(full) - len(text)] + cut
            text = cut
    return GenerationResult(
        prompt=prompt, full_text=full, generated_text=text, prompt_tokens=len(prompt_ids),
        generated_tokens=len(generated), total_tokens=len(prompt_ids) + len(generated),
        token_ids=prompt_ids + generated, step_tokens=list(generated), stop_reason=reason)
