"""Building blocks with HF's exact numerics: activations, soft-caps, the oneDNN linear and
the two MLP shapes (norms are in ``norms``). Choices are made when a module is built."""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

from ...hooks.runtime import HookRuntime
from .config.types import Activation, MlpLayout, TransformerConfig


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATION_FNS = {
    Activation.Silu: F.silu,
    Activation.Gelu: F.gelu,
    Activation.GeluApprox: gelu_tanh,
}


class SoftCap(nn.Module):
    """tanh(x / cap) * cap (Gemma 2 attention scores and final logits)."""

    def __init__(self, cap: float) -> None:
        super().__init__()
        self.cap = cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / self.cap) * self.cap


def make_softcap(cap: float | None) -> nn.Module:
    return SoftCap(cap) if cap else nn.Identity()


@functools.cache
def onednn_linear_available() -> bool:
    """Whether oneDNN's fused linear op exists and agrees with F.linear in this build.

    ``TORCH_MI_LINEAR=aten`` forces plain ``F.linear`` (MKL sgemm on x86 CPUs)."""
    if os.environ.get("TORCH_MI_LINEAR", "onednn") != "onednn":
        return False
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        x, w, b = torch.randn(3, 16), torch.randn(8, 16), torch.randn(8)
        return bool(torch.allclose(op(x, w, b, "none", [], ""), F.linear(x, w, b), atol=1e-5))
    except RuntimeError:
        return False


class Linear(nn.Linear):
    """nn.Linear whose CPU fp32 inference runs on oneDNN's matmul.

    On this project's CPUs oneDNN's fp32 GEMM is 1.2-1.8x faster than the MKL sgemm behind
    F.linear for these shapes, on the same plain weights (no copy, no repacking). It has
    no autograd kernel, so anything that needs gradients takes F.linear; lower precisions
    always take F.linear so bf16/fp16 results stay those of HF."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if (x.dtype is torch.float32 and x.device.type == "cpu"
                and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
                and onednn_linear_available()):
            return torch.ops.mkldnn._linear_pointwise(x, weight, self.bias, "none", [], "")
        return F.linear(x, weight, self.bias)


def linear(n_in: int, n_out: int, bias: bool) -> nn.Linear:
    """A frozen linear layer whose storage is filled by the loader."""
    layer = Linear(n_in, n_out, bias=bias)
    layer.weight.requires_grad_(False)
    if bias:
        layer.bias.requires_grad_(False)
    return layer


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)); gate and up share one matmul (rows [gate | up])."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d, i, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_up = linear(d, 2 * i, bias)  # [2I, D]
        self.down = linear(i, d, bias)  # [D, I]
        self.act = ACTIVATION_FNS[config.activation]
        self.intermediate_size = i

    def forward(self, x: torch.Tensor, hooks: HookRuntime, p) -> torch.Tensor:
        gate, up = self.gate_up(x).split(self.intermediate_size, dim=-1)  # [B,S,I] views
        gate = hooks.fire(p.mlp_pre_act, gate)
        up = hooks.fire(p.mlp_pre_linear, up)
        hidden = hooks.fire(p.mlp_hidden, self.act(gate) * up)  # [B,S,I] neurons
        return self.down(hidden)


class PlainMLP(nn.Module):
    """c_proj(act(c_fc(x))) (StarCoder2)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d, i, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.fc_in = linear(d, i, bias)
        self.fc_out = linear(i, d, bias)
        self.act = ACTIVATION_FNS[config.activation]

    def forward(self, x: torch.Tensor, hooks: HookRuntime, p) -> torch.Tensor:
        pre = hooks.fire(p.mlp_pre_act, self.fc_in(x))  # [B,S,I]
        return self.fc_out(hooks.fire(p.mlp_hidden, self.act(pre)))


def make_mlp(config: TransformerConfig) -> nn.Module:
    return PlainMLP(config) if config.mlp_layout is MlpLayout.Plain else GatedMLP(config)
