"""An independent RWKV-6 / RWKV-7 forward written from the formulas (inventory §5.5-5.8,
oracles.md §4.1), on the HF-layout tensors of a checkpoint: one sequence, explicit loops
over heads and time steps, plain tensor ops, nothing from torch_mi.

Returns logits [S,V], the residual after every layer [L,S,D] and the final WKV state of
every layer [L,H,d(key),d(value)].
"""

from __future__ import annotations

import math

import torch

NORM_EPS = 1e-5


def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + NORM_EPS) * w + b


def shift_delta(h: torch.Tensor) -> torch.Tensor:
    """previous token - current token, zeros before the first."""
    return torch.cat([torch.zeros_like(h[:1]), h[:-1]]) - h


def head_norm(y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, n: int,
              eps: float) -> torch.Tensor:
    """GroupNorm with one group per head of size n, affine over D."""
    out = torch.empty_like(y)
    for lo in range(0, y.shape[-1], n):
        part = y[:, lo:lo + n]
        mu = part.mean(-1, keepdim=True)
        var = ((part - mu) ** 2).mean(-1, keepdim=True)
        out[:, lo:lo + n] = (part - mu) / torch.sqrt(var + eps)
    return out * w + b


def _norm(t: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return layer_norm(x, t[name + ".weight"], t[name + ".bias"])


def ref_v6(t: dict[str, torch.Tensor], ids: list[int], n: int):
    """RWKV-6: ddlerp (order w,k,v,r,g), WKV-6 with bonus u, GroupNorm eps 64e-5."""
    layers = 1 + max(int(k.split(".")[2]) for k in t if k.startswith("rwkv.blocks."))
    x = _norm(t, "rwkv.blocks.0.pre_ln", t["rwkv.embeddings.weight"][ids])
    T, D = x.shape
    posts, states = [], []
    for i in range(layers):
        def A(name: str, i: int = i) -> torch.Tensor:
            return t[f"rwkv.blocks.{i}.attention.{name}"]

        h = _norm(t, f"rwkv.blocks.{i}.ln1", x)
        dx = shift_delta(h)
        m = torch.tanh((h + dx * A("time_maa_x").flatten()) @ A("time_maa_w1"))
        rank = A("time_maa_w2").shape[1]
        mixed = {}
        for c, name in enumerate("wkvrg"):
            lora = m[:, c * rank:(c + 1) * rank] @ A("time_maa_w2")[c]
            mixed[name] = h + dx * (A(f"time_maa_{name}").flatten() + lora)
        r = mixed["r"] @ A("receptance.weight").T
        k = mixed["k"] @ A("key.weight").T
        v = mixed["v"] @ A("value.weight").T
        g = torch.nn.functional.silu(mixed["g"] @ A("gate.weight").T)
        w = torch.exp(-torch.exp(A("time_decay").flatten()
                                 + torch.tanh(mixed["w"] @ A("time_decay_w1"))
                                 @ A("time_decay_w2")))
        y = torch.zeros(T, D, dtype=x.dtype)
        layer_state = []
        for hd in range(D // n):
            sl, u = slice(hd * n, (hd + 1) * n), A("time_faaaa")[hd]
            s = torch.zeros(n, n, dtype=r.dtype)
            for step in range(T):
                kv = torch.outer(k[step, sl], v[step, sl])
                y[step, sl] = r[step, sl] @ (torch.diag(u) @ kv + s)
                s = kv + torch.diag(w[step, sl]) @ s
            layer_state.append(s)
        states.append(torch.stack(layer_state))
        y = head_norm(y, A("ln_x.weight"), A("ln_x.bias"), n, NORM_EPS * 64)
        x = x + (y * g) @ A("output.weight").T

        def F(name: str, i: int = i) -> torch.Tensor:
            return t[f"rwkv.blocks.{i}.feed_forward.{name}"]

        h = _norm(t, f"rwkv.blocks.{i}.ln2", x)
        dx = shift_delta(h)
        key = torch.relu((h + dx * F("time_maa_k").flatten()) @ F("key.weight").T) ** 2
        gate = torch.sigmoid((h + dx * F("time_maa_r").flatten()) @ F("receptance.weight").T)
        x = x + gate * (key @ F("value.weight").T)
        posts.append(x)
    logits = _norm(t, "rwkv.ln_out", x) @ t["head.weight"].T
    return logits, torch.stack(posts), torch.stack(states)


def _lora(t: dict, base: str, x: torch.Tensor, act=None, bias: bool = True) -> torch.Tensor:
    hidden = x @ t[base + ".lora.0.weight"].T
    out = (act(hidden) if act else hidden) @ t[base + ".lora.2.weight"].T
    return out + t[base + ".lora.2.bias"] if bias else out


def _v7_head(r, w, k, v, kk, a, n):
    """One head's delta-rule recurrence: outputs [T,n] and the final state [n(key),n]."""
    s = torch.zeros(n, n, dtype=r.dtype)
    out = torch.zeros(r.shape[0], n, dtype=r.dtype)
    for step in range(r.shape[0]):
        removal = kk[step] @ s  # kkᵀ S
        s = (torch.diag(w[step]) @ s - torch.outer(kk[step] * a[step], removal)
             + torch.outer(k[step], v[step]))
        out[step] = r[step] @ s
    return out, s


def ref_v7(t: dict[str, torch.Tensor], ids: list[int], n: int):
    """RWKV-7: static lerp, value residual, delta rule, GroupNorm eps n*1e-5, bonus term."""
    layers = 1 + max(int(k.split(".")[2]) for k in t if k.startswith("model.layers."))
    x = _norm(t, "model.layers.0.pre_norm", t["model.embeddings.weight"][ids])
    T, D = x.shape
    posts, states, v_first = [], [], None
    for i in range(layers):
        p = f"model.layers.{i}.attn"
        h = _norm(t, f"model.layers.{i}.attn_norm", x)
        dx = shift_delta(h)
        xs = {c: h + dx * t[f"{p}.x_{c}"].flatten() for c in "rwkvag"}
        r = xs["r"] @ t[f"{p}.r_proj.weight"].T
        k = xs["k"] @ t[f"{p}.k_proj.weight"].T
        v = xs["v"] @ t[f"{p}.v_proj.weight"].T
        w = torch.exp(-math.exp(-0.5) * torch.sigmoid(_lora(t, f"{p}.w_lora", xs["w"], torch.tanh)))
        a = torch.sigmoid(_lora(t, f"{p}.a_lora", xs["a"]))
        g = _lora(t, f"{p}.g_lora", xs["g"], torch.sigmoid, bias=False)
        if i == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(_lora(t, f"{p}.v_lora", xs["v"]))
        y, bonus, layer_state = torch.zeros(T, D, dtype=x.dtype), torch.zeros(T, D, dtype=x.dtype), []
        for hd in range(D // n):
            sl = slice(hd * n, (hd + 1) * n)
            kk = k[:, sl] * t[f"{p}.k_k"][sl]
            kk = kk / kk.norm(dim=-1, keepdim=True)
            k_mod = k[:, sl] * (1 + (a[:, sl] - 1) * t[f"{p}.k_a"][sl])
            y[:, sl], s = _v7_head(r[:, sl], w[:, sl], k_mod, v[:, sl], kk, a[:, sl], n)
            layer_state.append(s)
            coef = (r[:, sl] * k_mod * t[f"{p}.r_k"][hd]).sum(-1, keepdim=True)
            bonus[:, sl] = coef * v[:, sl]
        states.append(torch.stack(layer_state))
        y = head_norm(y, t[f"{p}.g_norm.weight"], t[f"{p}.g_norm.bias"], n, n * NORM_EPS)
        x = x + ((y + bonus) * g) @ t[f"{p}.o_proj.weight"].T
        h = _norm(t, f"model.layers.{i}.ffn_norm", x)
        xk = h + shift_delta(h) * t[f"model.layers.{i}.ffn.x_k"]
        x = x + torch.relu(xk @ t[f"model.layers.{i}.ffn.key.weight"].T) ** 2 \
            @ t[f"model.layers.{i}.ffn.value.weight"].T
        posts.append(x)
    logits = _norm(t, "model.norm", x) @ t["lm_head.weight"].T
    return logits, torch.stack(posts), torch.stack(states)
