"""RWKV-6 (Finch) time mix: data-dependent token shift (ddlerp) and WKV-6 with bonus ``u``.

    δ = shift(x) - x;  m = tanh((x + δ*maa_x) @ maa_w1) -> 5 x [B,S,32] @ maa_w2[c]
    x_c = x + δ*(maa_c + m_c) for c in (w, k, v, r, g)         (this order)
    r, k, v = projections; g = silu(gate(x_g))                    [rwkv.hook_r|k|v|g]
    w = -exp(time_decay + tanh(x_w @ decay_w1) @ decay_w2)        [rwkv.hook_w] (fp32)
    decay = exp(w) in (0,1)                                       [rwkv.hook_decay]
    y = WKV-6(r, k, v, decay, u) -> final state                   [rwkv.hook_state]
    effective attention from r, k, decay, u (if captured)     [rwkv.hook_effective_attn]
    out = output(GroupNorm_H(y) * g)        (eps = norm_eps * head_size_divisor**2)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...hooks.runtime import HookRuntime
from .chunks import prepare6
from .config import RwkvConfig
from .effective_attn import effective_attn_v6
from .ops import group_norm, heads, linear, merge, param, token_shift, wide
from .wkv import wkv6
from .wkv_chunked import wkv6_chunked


class TimeMix6(nn.Module):
    def __init__(self, config: RwkvConfig) -> None:
        super().__init__()
        d, lo = config.hidden_size, config.lora_dims
        self.head_dim, self.eps = config.head_dim, config.group_norm_eps()
        for name in ("x", "w", "k", "v", "r", "g"):
            setattr(self, f"time_maa_{name}", param(1, 1, d))
        self.time_maa_w1 = param(d, 5 * lo.time_mix_extra_dim)
        self.time_maa_w2 = param(5, lo.time_mix_extra_dim, d)
        self.time_decay = param(1, 1, d)
        self.time_decay_w1 = param(d, lo.time_decay_extra_dim)
        self.time_decay_w2 = param(lo.time_decay_extra_dim, d)
        self.time_faaaa = param(config.num_heads, config.head_dim)
        self.receptance, self.key, self.value, self.gate, self.output = (
            linear(d, d) for _ in range(5))
        self.ln_x = nn.GroupNorm(config.num_heads, d, eps=self.eps)
        self.ln_x.requires_grad_(False)

    def mixed_inputs(self, x: torch.Tensor, prev: torch.Tensor | None) -> list[torch.Tensor]:
        """ddlerp: the five mixed inputs x_w, x_k, x_v, x_r, x_g, each [B,S,D]."""
        b, s, d = x.shape
        dx = token_shift(x, prev)
        m = torch.tanh(torch.addcmul(x, dx, self.time_maa_x) @ self.time_maa_w1)  # [B,S,5*m]
        m = m.view(b * s, 5, -1).transpose(0, 1)  # [5,B*S,m]
        m = torch.bmm(m, self.time_maa_w2).view(5, b, s, d)  # w, k, v, r, g
        maa = torch.stack([self.time_maa_w, self.time_maa_k, self.time_maa_v,
                           self.time_maa_r, self.time_maa_g])  # [5,1,1,D]
        m.add_(maa)  # m is the bmm's fresh output (autograd keeps none of it)
        if m.requires_grad:
            return list(torch.addcmul(x, dx, m).unbind(0))  # [5,B,S,D]
        return list(torch.addcmul(x, dx, m, out=m).unbind(0))  # one pass, into m

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None, state: torch.Tensor,
                hooks: HookRuntime, p, write_scale: torch.Tensor | None = None, *,
                chunked: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x: ln1 output [B,S,D]; prev [B,D] or None; state [B,H,d,d] fp32; write_scale
        [S] (state knockout/steering) or None -> (time-mix output [B,S,D], final state)."""
        n = self.head_dim
        xw, xk, xv, xr, xg = self.mixed_inputs(x, prev)
        r = hooks.fire(p.r, heads(self.receptance(xr), n))
        k = hooks.fire(p.k, heads(self.key(xk), n))
        v = hooks.fire(p.v, heads(self.value(xv), n))
        raw = self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2
        w = hooks.fire(p.w, heads(-torch.exp(wide(raw)), n))  # log-decay, fp32
        decay = hooks.fire(p.decay, torch.exp(w))
        g = hooks.fire(p.g, heads(F.silu(self.gate(xg)), n))
        attention = hooks.is_active(p.effective_attn)  # [B,H,S,S], only when asked for
        # The chunk pieces, built once for the chunked WKV and effective attention.
        pieces = (prepare6(r, k, decay, self.time_faaaa, write_scale)
                  if chunked or attention else None)
        if chunked and pieces is not None:  # block-parallel, the recurrence's numbers
            y, state = wkv6_chunked(r, k, v, decay, self.time_faaaa, state, write_scale, pieces)
        else:
            y, state = wkv6(r, k, v, decay, self.time_faaaa, state, write_scale)
        state = hooks.fire(p.state, state)
        if attention:
            hooks.fire(p.effective_attn, effective_attn_v6(
                r, k, decay, self.time_faaaa, write_scale,
                None if hooks.intervenes(p.decay) else w, pieces))
        y = group_norm(y, self.ln_x.weight, self.ln_x.bias, self.eps).to(x.dtype)
        return self.output(y * merge(g)), state
