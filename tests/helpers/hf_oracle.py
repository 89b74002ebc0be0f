"""HF-side oracles for gradient and patching tests: autograd through the tiny HF models
with forward hooks at layer inputs/outputs and at ``o_proj``'s input (TL's z, flattened)."""

from __future__ import annotations

import torch


def loss_weights(vocab: int) -> torch.Tensor:
    return torch.randn(vocab, generator=torch.Generator().manual_seed(3))  # [V]


def loss(logits: torch.Tensor) -> torch.Tensor:
    """A scalar of every row's last-position logits (a fixed random direction)."""
    return (logits[:, -1].float() * loss_weights(logits.shape[-1])).sum()


def _output_tensor(output):
    return output[0] if isinstance(output, tuple) else output


def hf_grads(hf, ids: torch.Tensor, modify: dict | None = None,
             loss_fn=loss) -> dict[str, torch.Tensor]:
    """d loss / d activation in HF: 'resid_pre0', 'resid_post{i}' (before ``modify[i]``
    runs on layer i's output) and 'z{i}' (o_proj's input [B,S,H*d])."""
    modify = modify or {}
    acts: dict[str, torch.Tensor] = {}
    layers = hf.model.layers

    def pre_first(_module, args, kwargs):
        acts["resid_pre0"] = args[0] if args else kwargs["hidden_states"]

    def post(i):
        def hook(_module, _inputs, output):
            out = _output_tensor(output)
            acts[f"resid_post{i}"] = out
            if i not in modify:
                return None
            new = modify[i](out)
            return (new, *output[1:]) if isinstance(output, tuple) else new
        return hook

    def z_hook(i):
        def hook(_module, args):
            acts[f"z{i}"] = args[0]
        return hook

    handles = [layers[0].register_forward_pre_hook(pre_first, with_kwargs=True)]
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(post(i)))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(z_hook(i)))
    try:
        with torch.enable_grad():
            value = loss_fn(hf(ids).logits)
            names = list(acts)
            grads = torch.autograd.grad(value, [acts[n] for n in names], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    return {n: (torch.zeros_like(acts[n]) if g is None else g)
            for n, g in zip(names, grads, strict=True)}


def hf_logits(hf, ids: torch.Tensor, *, z: dict | None = None, q: dict | None = None,
              resid_pre: dict | None = None) -> torch.Tensor:
    """HF logits with functions applied to o_proj's input (``z[i]``, [B,S,H*d]), to
    q_proj's output (``q[i]``, [B,S,H*d]) and to layer i's input (``resid_pre[i]``); each
    returns the tensor to use (or records it and returns it unchanged)."""
    handles = []
    layers = hf.model.layers
    for i, fn in (z or {}).items():
        handles.append(layers[i].self_attn.o_proj.register_forward_pre_hook(
            lambda _m, args, fn=fn: (fn(args[0]),)))
    for i, fn in (q or {}).items():
        handles.append(layers[i].self_attn.q_proj.register_forward_hook(
            lambda _m, _args, out, fn=fn: fn(out)))
    for i, fn in (resid_pre or {}).items():
        def pre(_m, args, kwargs, fn=fn):
            if args:
                return (fn(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}
        handles.append(layers[i].register_forward_pre_hook(pre, with_kwargs=True))
    try:
        with torch.no_grad():
            return hf(ids).logits
    finally:
        for handle in handles:
            handle.remove()
