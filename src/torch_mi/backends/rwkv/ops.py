"""Small pieces shared by the RWKV-6 and RWKV-7 mixes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..transformer.layers import onednn_linear, onednn_linear_available


def param(*shape: int) -> nn.Parameter:
    """An unfilled frozen parameter (the loader fills it)."""
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


ONEDNN_MIN_WEIGHT = 1 << 19  # weight elements from which a one-row oneDNN call pays off


class Linear(nn.Linear):
    """nn.Linear whose CPU fp32 inference runs on oneDNN's matmul (the transformer
    backend's ``onednn_linear``: same weights, no copy), except one-row products with a
    small weight.

    oneDNN's GEMM gives each row the same bits whatever the row count (from two rows on),
    so a sequence rounds the same in one call as continued from a state in several; and
    it reads a weight streamed from memory for one row 1.4-2x faster than F.linear
    (measured from DRAM, as in a generation step: 768x768 127 vs 193 µs, 3072x768 361 vs
    751 µs). But it costs ~20 µs more per call, which one-row products with small weights
    (the LoRAs: 64x768 27 vs 20 µs) never win back: those keep F.linear (a one-row product
    is a GEMV with its own rounding either way)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._onednn(x):
            return onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

    def forward_relu(self, x: torch.Tensor) -> torch.Tensor:
        """relu(self(x)), the ReLU fused into oneDNN's GEMM where it runs (one pass over
        the output saved; ReLU is exact, so the same bits)."""
        if self._onednn(x):
            return onednn_linear(x, self.weight, self.bias, relu=True)
        return torch.relu(F.linear(x, self.weight, self.bias))

    def _onednn(self, x: torch.Tensor) -> bool:
        weight = self.weight
        return (x.dtype is torch.float32 and x.device.type == "cpu"
                and (weight.numel() >= ONEDNN_MIN_WEIGHT or x.numel() > x.shape[-1])
                and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
                and onednn_linear_available())


def linear(n_in: int, n_out: int, bias: bool = False) -> nn.Linear:
    """A frozen linear layer (filled by the loader)."""
    layer = Linear(n_in, n_out, bias=bias)
    layer.requires_grad_(False)
    return layer


def wide(x: torch.Tensor) -> torch.Tensor:
    """x in at least fp32 (fp16/bf16 are upcast; fp64 stays fp64 for exactness checks)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def scaled(k: torch.Tensor, write_scale: torch.Tensor | None) -> torch.Tensor:
    """k [B,S,H,d] with each position's state write kᵀv scaled (state knockout / steering:
    ``write_scale`` [S], or None for no change)."""
    return k if write_scale is None else k * write_scale.to(k)[None, :, None, None]


def token_shift(x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
    """δ = shifted - x for x [B,S,D]: position 0 is shifted against ``prev`` [B,D] (the
    previous call's last position) or zeros, position t against x[:, t-1]."""
    first = prev[:, None].to(x.dtype) if prev is not None else torch.zeros_like(x[:, :1])
    if x.shape[1] == 1:  # a generation step: one op
        return first - x
    if x.requires_grad and torch.is_grad_enabled():  # out= ops do not record gradients
        return torch.cat([first, x[:, :-1]], dim=1) - x
    dx = torch.empty_like(x)  # one pass, no shifted copy: the same numbers as cat - x
    torch.sub(first, x[:, :1], out=dx[:, :1])
    torch.sub(x[:, :-1], x[:, 1:], out=dx[:, 1:])
    return dx


def heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B,S,D] -> [B,S,H,d] (a view)."""
    return x.view(*x.shape[:-1], x.shape[-1] // head_dim, head_dim)


def merge(x: torch.Tensor) -> torch.Tensor:
    """[B,S,H,d] -> [B,S,D]."""
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def group_norm(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               eps: float) -> torch.Tensor:
    """Per-head GroupNorm of y [B,S,H,d] in (at least) fp32 with the affine over D ->
    [B,S,D]."""
    b, s, h, d = y.shape
    yw = wide(y)
    out = F.group_norm(yw.reshape(b * s, h * d), h, weight.to(yw.dtype), bias.to(yw.dtype), eps)
    return out.view(b, s, h * d)


class LoRA(nn.Module):
    """fla's LoRA block ``up(act(down(x)))``: down [r,D] without bias, up [D,r] with an
    optional bias; HF names ``lora.0`` (down) and ``lora.2`` (up)."""

    def __init__(self, dim: int, rank: int, bias: bool) -> None:
        super().__init__()
        self.down = linear(dim, rank)
        self.up = linear(rank, dim, bias=bias)

    def forward(self, x: torch.Tensor, act=None) -> torch.Tensor:
        hidden = self.down(x)
        return self.up(act(hidden) if act is not None else hidden)
