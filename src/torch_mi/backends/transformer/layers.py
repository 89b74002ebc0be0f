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


SMALL_ROWS = 16  # up to here, rows are padded to a power of two (GEMMs that read weights)
EIGHTHS = (10, 13, 16)  # above, to 2**k times 1.25, 1.625 or 2 (three sizes per doubling)
CHEAP_PAD_ROWS = 64  # up to here a GEMM mostly reads its weights: padding is almost free
MAX_PAD_FRACTION = 8  # above, pad by at most rows / 8, else F.linear (about as fast there)
PAD_BYTES_LIMIT = 8 << 20  # and never add more than 8 MiB to an output


def bucket_rows(rows: int) -> int:
    """The row count oneDNN is called with for ``rows`` token rows.

    oneDNN (and ideep in front of it) caches a compiled primitive, ~0.6 MB of heap, for every
    distinct (rows, in, out) shape and keeps up to 1024 of them, so a service that sees many
    prompt lengths grew by ~3 MB per new length on SmolLM2 (5 linear shapes). Padding the
    rows up to 1, 2, 4, 8, 16, 20, 26, 32, 40, 52, 64, ... (three sizes per doubling) bounds
    that to ~21 shapes for lengths up to 600. One row stays exact: oneDNN takes a GEMV path
    there whose sums differ from the GEMM's; from two rows on, a padded call gives rows
    bit-identical to the unpadded call (tested at 1-16 threads)."""
    if rows <= SMALL_ROWS:
        return 1 << max(rows - 1, 0).bit_length()
    eighth = 1 << ((rows - 1).bit_length() - 4)  # 2**k < rows <= 2**(k+1): 2**(k-3)
    return next(step * eighth for step in EIGHTHS if step * eighth >= rows)


def padded_rows(rows: int, out_features: int, itemsize: int) -> int | None:
    """The bucket oneDNN computes ``rows`` rows in, or None to take F.linear instead.

    Padding is taken where it is cheap: always up to 64 rows (weight-bound GEMMs: 5 rows
    padded to 8 cost oneDNN ~nothing, while F.linear is 2x slower there), above that only by
    at most an eighth of the rows (513 rows would compute 640: F.linear is faster), and never
    by more than 8 MiB of output (the unembedding of a long prompt: 127 padding rows x 49152
    logits would be 25 MB)."""
    bucket = bucket_rows(rows)
    extra = bucket - rows
    if extra * out_features * itemsize > PAD_BYTES_LIMIT:
        return None
    if rows > CHEAP_PAD_ROWS and extra * MAX_PAD_FRACTION > rows:
        return None
    return bucket


def linear_rows(rows: int, out_features: int, dtype: torch.dtype,
                device: torch.device | str) -> int:
    """Rows of the buffer an inference Linear's output lives in, for memory plans: the
    bucket where the CPU fp32 oneDNN path pads (the output is a view of it), else ``rows``."""
    if dtype is not torch.float32 or torch.device(device).type != "cpu" \
            or not onednn_linear_available():
        return rows
    padded = padded_rows(rows, out_features, 4)
    return rows if padded is None else padded


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  relu: bool = False) -> torch.Tensor:
    """oneDNN's fused linear on ``x`` [..., in], the rows padded to :func:`bucket_rows`;
    ``relu``: with oneDNN's ReLU post-op fused in (ReLU is exact: the same bits as after).

    The result is bit-identical to the unpadded oneDNN call (or, past the padding limit, is
    F.linear's). It is a view of the padded buffer: the zero padding rows are never visible,
    and are freed with the result."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    padded = padded_rows(rows, weight.shape[0], x.element_size())
    post = "relu" if relu else "none"
    if padded == rows or rows == 0:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, post, [], "")
    if padded is None:
        out = F.linear(x, weight, bias)
        return out.relu_() if relu else out
    flat = x.new_empty(padded, x.shape[-1])
    flat[:rows].view(x.shape).copy_(x)
    flat[rows:].zero_()  # finite padding rows
    out = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, post, [], "")
    return out[:rows].view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """nn.Linear whose CPU fp32 inference runs on oneDNN's matmul.

    On this project's CPUs oneDNN's fp32 GEMM is 1.2-1.8x faster than the MKL sgemm behind
    F.linear for these shapes, on the same plain weights (no copy, no repacking). Rows are
    padded to a few bucket sizes so oneDNN's per-shape caches stay bounded (see
    :func:`bucket_rows` and :func:`padded_rows`). It has no autograd kernel, so anything that
    needs gradients takes F.linear; lower precisions always take F.linear so bf16/fp16
    results stay those of HF."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if (x.dtype is torch.float32 and x.device.type == "cpu"
                and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
                and onednn_linear_available()):
            return onednn_linear(x, weight, self.bias)
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
