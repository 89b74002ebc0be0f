"""Residual-stream decomposition and direct logit attribution (TransformerLens's
``ActivationCache`` helpers, as functions of a :class:`HookCache`).

The residual stream before the final norm is a sum of parts: the embedding, each layer's
attention output (itself the sum of its heads' ``attn.hook_result`` plus ``b_O``) and each
MLP output. The final norm is not linear, but given its cached scale (``ln_final.hook_scale``)
it is: ``apply_ln_to_stack`` divides every part by that scale (TL semantics), so the parts'
contributions to a logit difference sum to the model's own difference exactly, up to fp32.

Stacks are [n_parts, B, S, D] (or [n_parts, B, D] with an integer ``pos_slice``); labels
follow TL ("embed", "3_attn_out", "3_mlp_out", "L3H5", "3_pre", "final_post").
``decomposition_hooks(model)`` captures everything these functions read.

Not linear, hence refused where it matters: Gemma 2/3's post-attention norm sits between
the heads and ``hook_attn_out`` (per-head parts raise InputError there; use
``heads=False``), and a final logit soft-cap (Gemma 2) makes the parts sum to the
pre-soft-cap difference (``unembed.hook_out``), which is what ``logit_diff`` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import HookError, InputError
from ..hooks.cache import HookCache
from ..hooks.points import HookPoint
from ..hooks.spec import HookSpec
from ..model import LanguageModel

PosSlice = int | slice | Sequence[int] | torch.Tensor | None


def _point(text: str) -> HookPoint:
    return HookPoint.parse(text)


def _pos(t: torch.Tensor, pos_slice: PosSlice, dim: int = -2) -> torch.Tensor:
    """TL's Slice on the position dimension: an int drops it, anything else keeps it."""
    if pos_slice is None:
        return t
    index: list[Any] = [slice(None)] * t.dim()
    if isinstance(pos_slice, (list, tuple)):
        pos_slice = torch.tensor(pos_slice, dtype=torch.long, device=t.device)
    index[dim] = pos_slice
    return t[tuple(index)]


def _num_layers(cache: HookCache, num_layers: int | None) -> int:
    if num_layers is not None:
        return num_layers
    layers = [p.layer for p in cache if p.layer is not None]
    if not layers:
        raise HookError("the cache holds no per-layer point; capture with "
                        "decomposition_hooks(model) or pass num_layers")
    return max(layers) + 1


def _layer_arg(layer: int | None, n: int) -> int:
    if layer is None or layer == -1:
        return n
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= n:
        raise InputError(f"layer must be an int in 0..{n} (or None / -1 for the final "
                         f"residual), got {layer!r}")
    return layer


def decomposition_hooks(model: LanguageModel, *, heads: bool = True) -> HookSpec:
    """A HookSpec capturing what every function here reads, for all layers."""
    points = ["hook_embed", "ln_final.hook_scale", "hook_final_norm"]
    for i in range(model.num_layers):
        points += [f"blocks.{i}.{n}" for n in ("hook_resid_pre", "hook_resid_mid",
                                               "hook_resid_post", "hook_attn_out",
                                               "hook_mlp_out", "ln1.hook_scale",
                                               "ln2.hook_scale")]
        if heads:
            points.append(f"blocks.{i}.attn.hook_result")
    return HookSpec().capture(*points)


def apply_ln_to_stack(cache: HookCache, stack: torch.Tensor, layer: int | None = None, *,
                      mlp_input: bool = False, pos_slice: PosSlice = None,
                      centred: bool = False, num_layers: int | None = None) -> torch.Tensor:
    """Divide every part of ``stack`` [n, B, S, D] by a cached norm scale (TL semantics).

    ``layer`` None / -1 / num_layers: ``ln_final.hook_scale``; else layer's ``ln1`` (``ln2``
    with ``mlp_input``). The gain is not applied (TL with unfolded weights); ``centred``
    subtracts each part's mean first (LayerNorm models: StarCoder2)."""
    n = _num_layers(cache, num_layers) if layer not in (None, -1) else None
    if layer is None or layer == -1 or layer == n:
        key = "ln_final.hook_scale"
    else:
        key = f"blocks.{_layer_arg(layer, n)}.ln{2 if mlp_input else 1}.hook_scale"
    scale = _pos(cache.require(key), pos_slice)  # [B,S,1] or [B,1]
    if stack.shape[-1] == 0 or stack.dim() < scale.dim():
        raise InputError(f"stack must be [n_parts, *{list(scale.shape[:-1])}, D], got "
                         f"{list(stack.shape)}")
    if centred:
        stack = stack - stack.mean(dim=-1, keepdim=True)
    return stack / scale


def decompose_resid(cache: HookCache, layer: int | None = None, *, mlp_input: bool = False,
                    incl_embeds: bool = True, pos_slice: PosSlice = None,
                    apply_ln: bool = False, return_labels: bool = False,
                    num_layers: int | None = None):
    """The parts whose sum is the residual before ``layer`` (None: the final residual):
    embed, then each earlier layer's attn_out and mlp_out [n, B, S, D]."""
    n = _num_layers(cache, num_layers)
    layer = _layer_arg(layer, n)
    names = ["hook_embed"] if incl_embeds else []
    labels = ["embed"] if incl_embeds else []
    for i in range(layer):
        names += [f"blocks.{i}.hook_attn_out", f"blocks.{i}.hook_mlp_out"]
        labels += [f"{i}_attn_out", f"{i}_mlp_out"]
    if mlp_input and layer < n:
        names.append(f"blocks.{layer}.hook_attn_out")
        labels.append(f"{layer}_attn_out")
    stack = _stack(cache, names, pos_slice)
    if apply_ln:
        stack = apply_ln_to_stack(cache, stack, layer, mlp_input=mlp_input,
                                  pos_slice=pos_slice, num_layers=n)
    return (stack, labels) if return_labels else stack


def accumulated_resid(cache: HookCache, layer: int | None = None, incl_mid: bool = False,
                      apply_ln: bool = False, *, pos_slice: PosSlice = None,
                      mlp_input: bool = False, return_labels: bool = False,
                      project: Any = None, num_layers: int | None = None):
    """The residual stream as it accumulates: resid_pre of layers 0..layer (resid_mid
    too with ``incl_mid``), and ``final_post`` when ``layer`` is None [n, B, S, D].

    ``apply_ln`` at the final layer recomputes the final norm on each entry (TL's logit
    lens) and needs ``project``: a callable applying the final norm (e.g. the backend's
    ``ln_final``); at an earlier layer it divides by the cached scale of that layer."""
    n = _num_layers(cache, num_layers)
    layer = _layer_arg(layer, n)
    names, labels = [], []
    for i in range(layer + 1):
        if i == n:
            names.append(f"blocks.{n - 1}.hook_resid_post")
            labels.append("final_post")
            continue
        names.append(f"blocks.{i}.hook_resid_pre")
        labels.append(f"{i}_pre")
        if (incl_mid and i < layer) or (mlp_input and i == layer):
            names.append(f"blocks.{i}.hook_resid_mid")
            labels.append(f"{i}_mid")
    stack = _stack(cache, names, pos_slice)
    if apply_ln and layer == n:
        if project is None:
            raise InputError("accumulated_resid(apply_ln=True) at the final layer recomputes "
                             "the final norm per entry (TL): pass project=<final norm>")
        stack = torch.stack([project(part) for part in stack])
    elif apply_ln:
        stack = apply_ln_to_stack(cache, stack, layer, mlp_input=mlp_input,
                                  pos_slice=pos_slice, num_layers=n)
    return (stack, labels) if return_labels else stack


def stack_head_results(cache: HookCache, layer: int | None = None, *,
                       pos_slice: PosSlice = None, incl_remainder: bool = False,
                       apply_ln: bool = False, return_labels: bool = False,
                       num_layers: int | None = None):
    """Every head's ``attn.hook_result`` of layers 0..layer-1 as parts [n*H, B, S, D]
    (labels "L{l}H{h}"); ``incl_remainder`` appends the residual minus their sum."""
    n = _num_layers(cache, num_layers)
    layer = _layer_arg(layer, n)
    parts, labels = [], []
    for i in range(layer):
        result = _pos(cache.require(f"blocks.{i}.attn.hook_result"), pos_slice, -3)  # [..,H,D]
        parts.append(result.movedim(-2, 0))
        labels += [f"L{i}H{h}" for h in range(result.shape[-2])]
    if incl_remainder:
        resid = _pos(_residual_before(cache, layer, n), pos_slice)
        total = torch.cat(parts).sum(0) if parts else torch.zeros_like(resid)
        parts.append((resid - total)[None])
        labels.append("remainder")
    if not parts:
        shape = _pos(cache.require("hook_embed"), pos_slice).shape
        stack = cache.require("hook_embed").new_zeros(0, *shape)
    else:
        stack = torch.cat(parts)
    if apply_ln:
        stack = apply_ln_to_stack(cache, stack, layer, pos_slice=pos_slice, num_layers=n)
    return (stack, labels) if return_labels else stack


def _residual_before(cache: HookCache, layer: int, n: int) -> torch.Tensor:
    if layer == 0:
        return cache.require("hook_embed")
    return cache.require(f"blocks.{layer - 1}.hook_resid_post")


def _stack(cache: HookCache, names: list[str], pos_slice: PosSlice) -> torch.Tensor:
    if not names:
        raise InputError("nothing to stack: layer 0 without the embedding has no parts")
    return torch.stack([_pos(cache.require(name), pos_slice) for name in names])


@dataclass
class LogitAttribution:
    """Direct logit attribution at one position: ``parts`` [n_parts, B] sum to
    ``logit_diff`` [B] (the model's own difference, before any final soft-cap)."""

    labels: list[str]
    parts: torch.Tensor  # [n_parts, B]
    logit_diff: torch.Tensor  # [B]

    def total(self) -> torch.Tensor:
        """The sum of the parts [B] (equals ``logit_diff`` up to fp32)."""
        return self.parts.sum(dim=0)

    def as_dict(self, batch_index: int = 0) -> dict[str, float]:
        return {lab: float(v) for lab, v in zip(self.labels, self.parts[:, batch_index],
                                                strict=True)}

    def top(self, k: int = 10, batch_index: int = 0) -> list[tuple[str, float]]:
        """The k parts with the largest |contribution| for one prompt."""
        pairs = sorted(self.as_dict(batch_index).items(), key=lambda kv: -abs(kv[1]))
        return pairs[:k]


def logit_attribution(model: LanguageModel, cache: HookCache, tokens: Any,
                      incorrect_tokens: Any = None, *, pos: int = -1,
                      heads: bool = True) -> LogitAttribution:
    """Split ``logit(tokens) - logit(incorrect_tokens)`` at position ``pos`` into the
    embedding, per-head (``heads``) or per-layer attention, the attention biases, the MLPs
    and the final norm's bias, with the cached final scale (run with
    ``decomposition_hooks(model)``).

    ``tokens``: a token id, a single-token string, a sequence of B ids/strings, or a
    direction [D] / [B, D] in the unembedding's input space (then ``incorrect_tokens`` must
    be None)."""
    weights = model.weights
    norm = weights.final_norm()
    direction = _direction(model, weights, tokens)
    if incorrect_tokens is not None:
        direction = direction - _direction(model, weights, incorrect_tokens)
    n = model.num_layers
    if heads and getattr(model.config, "use_post_norms", False):
        raise InputError("per-head parts need hook_attn_out to be the sum of the heads; this "
                         "family's post-attention norm is not linear: pass heads=False")
    stack, labels = _attribution_stack(cache, weights, n, heads, pos)  # [n_parts, B, D]
    scaled = apply_ln_to_stack(cache, stack, None, pos_slice=pos, centred=norm.centred)
    gain = norm.gain.to(scaled.dtype)
    parts = (scaled * (gain * direction)).sum(-1)  # [n_parts, B]
    if norm.bias is not None:  # a constant part: bias . direction
        labels.append("ln_final_bias")
        parts = torch.cat([parts, (norm.bias * direction).sum(-1).expand(1, parts.shape[1])])
    return LogitAttribution(labels, parts, _model_diff(cache, model, tokens, incorrect_tokens,
                                                       pos, direction))


def _attribution_stack(cache: HookCache, weights: Any, n: int, heads: bool,
                       pos: int) -> tuple[torch.Tensor, list[str]]:
    parts = [_pos(cache.require("hook_embed"), pos)[None]]  # [1,B,D]
    labels = ["embed"]
    for i in range(n):
        if heads:
            result = _pos(cache.require(f"blocks.{i}.attn.hook_result"), pos, -3)  # [B,H,D]
            parts.append(result.movedim(-2, 0))
            labels += [f"L{i}H{h}" for h in range(result.shape[-2])]
            b_o = weights.layer(i).b_O
            parts.append(b_o.expand_as(result[:, 0])[None])
            labels.append(f"{i}_attn_bias")
        else:
            parts.append(_pos(cache.require(f"blocks.{i}.hook_attn_out"), pos)[None])
            labels.append(f"{i}_attn_out")
        parts.append(_pos(cache.require(f"blocks.{i}.hook_mlp_out"), pos)[None])
        labels.append(f"{i}_mlp_out")
    return torch.cat(parts), labels


def _direction(model: LanguageModel, weights: Any, tokens: Any) -> torch.Tensor:
    """W_U columns of ``tokens`` ([D] or [B, D]); a float tensor is taken as a direction."""
    if isinstance(tokens, torch.Tensor) and tokens.is_floating_point():
        if tokens.shape[-1] != model.hidden_size or tokens.dim() > 2:
            raise InputError(f"a direction must be [D] or [B, D] with D = {model.hidden_size}, "
                             f"got {list(tokens.shape)}")
        return tokens.to(device=model.device, dtype=torch.float32)
    ids = _token_ids(model, tokens)
    return weights.W_U[:, ids].movedim(0, -1).float()  # [D] or [B, D]


def _token_ids(model: LanguageModel, tokens: Any) -> torch.Tensor:
    if isinstance(tokens, torch.Tensor):
        ids = tokens.tolist()
    elif isinstance(tokens, (str, int)) or not isinstance(tokens, Sequence):
        ids = tokens
    else:
        ids = list(tokens)
    single = not isinstance(ids, list)
    resolved = [_token_id(model, t) for t in ([ids] if single else ids)]
    out = torch.tensor(resolved, dtype=torch.long, device=model.device)
    return out[0] if single else out


def _token_id(model: LanguageModel, token: Any) -> int:
    if isinstance(token, str):
        ids = model.require_tokenizer().encode_raw(token)
        if len(ids) != 1:
            raise InputError(f"{token!r} is {len(ids)} tokens, not one; pass a token id or a "
                             f"single-token string")
        return ids[0]
    if isinstance(token, bool) or not isinstance(token, int) \
            or not 0 <= token < model.vocab_size:
        raise InputError(f"token must be a string or an id in 0..{model.vocab_size - 1}, "
                         f"got {token!r}")
    return token


def _model_diff(cache: HookCache, model: LanguageModel, tokens: Any, incorrect: Any,
                pos: int, direction: torch.Tensor) -> torch.Tensor:
    """The model's own (pre-soft-cap) logit difference [B]: from ``unembed.hook_out`` or
    the captured final-norm output, else from the output logits."""
    if isinstance(tokens, torch.Tensor) and tokens.is_floating_point():
        final = cache.get("hook_final_norm")
        if final is None:
            raise HookError("with a direction, capture 'hook_final_norm' to compare against "
                            "the model's own value")
        return (_pos(final, pos).float() * direction).sum(-1)
    logits = cache.get("unembed.hook_out")
    logits = cache.output() if logits is None else logits
    values = _pos(logits, pos).float()  # [B, V]
    ids = _token_ids(model, tokens).expand(values.shape[0])
    diff = values.gather(-1, ids[:, None])[:, 0]
    if incorrect is not None:
        bad = _token_ids(model, incorrect).expand(values.shape[0])
        diff = diff - values.gather(-1, bad[:, None])[:, 0]
    return diff
