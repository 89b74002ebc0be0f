"""Channel mixes (the RWKV "FFN"), with TL's MLP points on the neurons.

    RWKV-6: out = sigmoid(receptance(x + δ*maa_r)) * value(relu(key(x + δ*maa_k))^2)
    RWKV-7: out = value(relu(key(x + δ*x_k))^2)            (no receptance gate)

``mlp.hook_pre`` is ``key(.)`` and ``mlp.hook_post`` the ``relu(.)^2`` neurons [B,S,I].
"""

from __future__ import annotations

import torch
from torch import nn

from ...hooks.runtime import HookRuntime
from .config import RwkvConfig, RwkvVersion
from .ops import linear, param, token_shift


class ChannelMix(nn.Module):
    def __init__(self, config: RwkvConfig) -> None:
        super().__init__()
        d, i = config.hidden_size, config.intermediate_size
        self.v6 = config.version is RwkvVersion.V6
        if self.v6:
            self.time_maa_k, self.time_maa_r = param(1, 1, d), param(1, 1, d)
            self.receptance = linear(d, d)
        else:
            self.x_k = param(d)
        self.key = linear(d, i)
        self.value = linear(i, d)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None, hooks: HookRuntime,
                p) -> torch.Tensor:
        """x: ln2 output [B,S,D]; prev [B,D] or None -> channel-mix output [B,S,D]."""
        dx = token_shift(x, prev)
        mix_k = self.time_maa_k if self.v6 else self.x_k
        xk = torch.addcmul(x, dx, mix_k)
        if hooks.is_active(p.mlp_pre_act) or hooks.check_finite:  # the pre-activation is read
            hidden = torch.relu(hooks.fire(p.mlp_pre_act, self.key(xk)))  # [B,S,I]
        else:  # nothing reads it: the ReLU runs inside the GEMM
            hidden = self.key.forward_relu(xk)
        # squared in place unless autograd keeps relu's output
        hidden = hooks.fire(p.mlp_hidden, hidden.square() if hidden.requires_grad
                            else hidden.square_())
        out = self.value(hidden)
        if self.v6:
            out = torch.sigmoid(self.receptance(torch.addcmul(x, dx, self.time_maa_r))) * out
        return out
