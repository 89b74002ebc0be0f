"""What the logit lens reads with: target tokens, tuned-lens maps and per-layer metrics.

A target is a token id or a string that must be exactly one token (a silent last-sub-token
pick would measure the wrong thing). Tuned-lens maps are user-supplied per-layer affine
maps applied to the residual before the final norm and unembedding: ``(W, b)`` acts like
``torch.nn.Linear`` (``h @ W.T + b``, W [D, D], b [D]) and a module is called on [..., D].
Layers without a map read the plain lens.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence

import torch

from ..errors import InputError, TokenizerError
from ..model import LanguageModel
from .results import kl_divergence

LensMap = tuple[torch.Tensor, torch.Tensor] | torch.nn.Module
Target = str | int


def single_token_id(model: LanguageModel, target: object) -> int:
    """The id of ``target``: an int id of the vocabulary or a string that is one token."""
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        if not 0 <= int(target) < model.vocab_size:
            raise InputError(f"target id {int(target)} is outside the vocabulary "
                             f"(0..{model.vocab_size - 1})")
        return int(target)
    if not isinstance(target, str) or not target:
        raise InputError(f"target must be a token id (int) or a non-empty string of one token, "
                         f"got {type(target).__name__} {target!r:.40}")
    tok = model.require_tokenizer()
    strict = getattr(tok, "to_single_token", None)
    if strict is not None:
        return int(strict(target))
    ids = tok.encode_raw(target)
    if len(ids) != 1:
        raise TokenizerError(f"target {target!r} is {len(ids)} tokens ({ids[:8]}), not one; give "
                             f"a string that is a single token (mind the leading space, e.g. "
                             f"' Paris') or a token id")
    return int(ids[0])


def target_ids(model: LanguageModel, target: object, n_prompts: int,
               single: bool) -> list[int] | None:
    """One target id per prompt (None without a target); a list gives one per prompt."""
    if target is None:
        return None
    if isinstance(target, (list, tuple)):
        if single:
            raise InputError("one prompt takes one target (a token id or a one-token string), "
                             "not a list")
        if len(target) != n_prompts:
            raise InputError(f"{len(target)} targets for {n_prompts} prompts; give one target "
                             f"for all or one per prompt")
        return [single_token_id(model, t) for t in target]
    return [single_token_id(model, target)] * n_prompts


def _affine(layer: int, weight: object, bias: object, width: int,
            like: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    for name, t, shape in (("W", weight, (width, width)), ("b", bias, (width,))):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() \
                or tuple(t.shape) != shape:
            got = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise InputError(f"lens map of layer {layer}: {name} must be a float tensor of shape "
                             f"{list(shape)}, got {got}")
    w = weight.detach().to(device=like.device, dtype=like.dtype)
    b = bias.detach().to(device=like.device, dtype=like.dtype)
    return lambda h: h @ w.T + b  # [..., D] like torch.nn.Linear


def lens_maps(maps: Mapping[int, LensMap] | None, n_layers: int, width: int,
              like: torch.Tensor) -> dict[int, Callable[[torch.Tensor], torch.Tensor]]:
    """Checked per-layer maps (layer -> callable on [..., D]); InputError naming a bad one.
    ``like`` gives the dtype and device (W, b) are moved to."""
    if maps is None:
        return {}
    if not isinstance(maps, Mapping):
        raise InputError(f"lens must be a dict layer -> (W, b) or torch.nn.Module, got "
                         f"{type(maps).__name__}")
    out = {}
    for layer, value in maps.items():
        if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) \
                or not 0 <= layer < n_layers:
            raise InputError(f"lens map key {layer!r:.40} must be a layer index in "
                             f"0..{n_layers - 1}")
        if isinstance(value, torch.nn.Module):
            out[int(layer)] = value
        elif isinstance(value, Sequence) and len(value) == 2:
            out[int(layer)] = _affine(int(layer), value[0], value[1], width, like)
        else:
            raise InputError(f"lens map of layer {layer}: give (W, b) or a torch.nn.Module, got "
                             f"{type(value).__name__}")
    return out


def apply_map(fn: Callable[[torch.Tensor], torch.Tensor] | None, layer: int,
              resid: torch.Tensor) -> torch.Tensor:
    """``fn(resid)`` checked to keep the shape [..., D]; ``resid`` itself without a map."""
    if fn is None:
        return resid
    out = fn(resid)
    if not isinstance(out, torch.Tensor) or out.shape != resid.shape:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"lens map of layer {layer} must return a tensor of the residual's "
                         f"shape {list(resid.shape)}, got {got}")
    return out


def position_metrics(final_logits: torch.Tensor, layer_logits: torch.Tensor,
                     target: int | None) -> tuple[torch.Tensor, torch.Tensor | None,
                                                  torch.Tensor | None]:
    """Per position of one layer: KL(final || layer) [S] (float64), and with a target its
    probability [S] and rank [S] (0 = the top token; ties count in its favour)."""
    kl = kl_divergence(final_logits, layer_logits, reduction="none")
    if target is None:
        return kl, None, None
    logits = layer_logits.float()  # [S, V]
    prob = torch.softmax(logits, dim=-1)[:, target]
    rank = (logits > logits[:, target:target + 1]).sum(dim=-1)
    return kl, prob.cpu(), rank.cpu()
