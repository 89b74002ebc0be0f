"""Rotary position embeddings with HF's scaling types (default, linear, dynamic, yarn,
longrope, llama3), computed with HF's formulas and dtypes so cos/sin match bit for bit.

Static types compute ``inv_freq`` once; ``dynamic`` and ``longrope`` depend on the longest
position of the current call (HF keeps that as module state; here it is a pure function).
"""

from __future__ import annotations

import math

import torch

from ...errors import InputError
from .config.types import RopeConfig, TransformerConfig

# RoPE types that are designed to run past max_position_embeddings (HF's dynamic NTK
# recomputes its frequencies for the call's length).
_SELF_EXTENDING = ("dynamic",)


def _exponents(dim: int, device: torch.device | None) -> torch.Tensor:
    return torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim


def _default(rope: RopeConfig, dim: int, device) -> tuple[torch.Tensor, float]:
    return 1.0 / (rope.theta ** _exponents(dim, device)), 1.0


def _linear(rope: RopeConfig, dim: int, device) -> tuple[torch.Tensor, float]:
    inv_freq, _ = _default(rope, dim, device)
    return inv_freq / rope.factor, 1.0


def _dynamic(rope: RopeConfig, dim: int, device, seq_len: int, max_pos: int):
    if seq_len <= max_pos:  # HF keeps the init-time frequencies here
        return _default(rope, dim, device)
    factor = rope.factor
    seq = torch.tensor(seq_len, dtype=torch.int64)
    # Kept as a float32 tensor expression, as HF computes it.
    base = rope.theta * ((factor * seq / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    return 1.0 / (base.to(device) ** _exponents(dim, device)), 1.0


def _yarn(rope: RopeConfig, dim: int, device) -> tuple[torch.Tensor, float]:
    factor, original = rope.factor, rope.original_max_position_embeddings

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = rope.attention_factor
    if attention is None:
        if rope.mscale and rope.mscale_all_dim:
            attention = float(mscale(factor, rope.mscale) / mscale(factor, rope.mscale_all_dim))
        else:
            attention = mscale(factor)
    beta_fast, beta_slow = rope.beta_fast or 32, rope.beta_slow or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(rope.theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = rope.theta ** (torch.arange(0, dim, 2).to(device=device, dtype=torch.float) / dim)
    extrapolation = 1.0 / pos_freqs
    interpolation = 1.0 / (factor * pos_freqs)
    keep = 1 - ramp.to(device=device, dtype=torch.float)
    return interpolation * (1 - keep) + extrapolation * keep, attention


def _longrope(rope: RopeConfig, dim: int, device, seq_len: int) -> tuple[torch.Tensor, float]:
    original = rope.original_max_position_embeddings
    attention = rope.attention_factor
    if attention is None:
        factor = rope.factor
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    factors = rope.long_factor if seq_len > original else rope.short_factor
    ext = torch.tensor(factors, dtype=torch.float32, device=device)
    return 1.0 / (ext * rope.theta ** _exponents(dim, device)), attention


def _llama3(rope: RopeConfig, dim: int, device) -> tuple[torch.Tensor, float]:
    inv_freq, _ = _default(rope, dim, device)
    factor, low_ff, high_ff = rope.factor, rope.low_freq_factor, rope.high_freq_factor
    old_len = rope.original_max_position_embeddings
    low_wavelen, high_wavelen = old_len / low_ff, old_len / high_ff
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled), 1.0


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on the first ``cos.shape[-1]`` dims of x [B,H,S,d]; cos/sin [B,1,S,r]."""
    rot = cos.shape[-1]
    if rot == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)


class RotaryEmbedding:
    """cos/sin tables for given positions (no learned state)."""

    def __init__(self, rope: RopeConfig, rotary_dim: int, max_position_embeddings: int):
        self.rope = rope
        self.dim = rotary_dim
        self.max_pos = max_position_embeddings
        self.dynamic = rope.rope_type in ("dynamic", "longrope")
        self._static: dict[torch.device, tuple[torch.Tensor, float]] = {}

    def inv_freq(self, device: torch.device, seq_len: int) -> tuple[torch.Tensor, float]:
        """Inverse frequencies [r/2] (fp32) and the cos/sin scale for a call of ``seq_len``."""
        rope, dim = self.rope, self.dim
        if rope.rope_type == "dynamic":
            return _dynamic(rope, dim, device, seq_len, self.max_pos)
        if rope.rope_type == "longrope":
            return _longrope(rope, dim, device, seq_len)
        if device not in self._static:
            builder = {"default": _default, "linear": _linear, "yarn": _yarn, "llama3": _llama3}
            self._static[device] = builder[rope.rope_type](rope, dim, device)
        return self._static[device]

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype):
        """cos, sin of shape [B,1,S,r] in ``dtype`` for integer positions [B,S]."""
        seq_len = int(positions.max()) + 1 if self.dynamic else 0
        inv_freq, scale = self.inv_freq(positions.device, seq_len)
        freqs = positions[..., None].float() * inv_freq  # [B,S,r/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        if scale != 1.0:
            cos, sin = cos * scale, sin * scale
        return cos.to(dtype).unsqueeze(1), sin.to(dtype).unsqueeze(1)


# ---- the context limit ---------------------------------------------------------------
def context_limit(config: TransformerConfig) -> int | None:
    """Positions the model was trained for: ``max_position_embeddings`` (None when it is
    unset or when every layer's RoPE type extends itself past it)."""
    limit = config.max_position_embeddings
    ropes = [config.rope] + ([config.rope_local] if config.rope_local is not None else [])
    if not limit or limit <= 0 or all(r.rope_type in _SELF_EXTENDING for r in ropes):
        return None
    return int(limit)


def check_context(config: TransformerConfig, positions: int) -> None:
    """InputError if a call needs more than the model's context, saying what RoPE scaling
    would allow (the caller may opt in with ``allow_long_context=True``)."""
    limit = context_limit(config)
    if limit is None or positions <= limit:
        return
    factor = float(math.ceil(positions / limit))
    raise InputError(
        f"the input reaches {positions} positions (cached + new), beyond this model's context "
        f"of {limit} (max_position_embeddings; RoPE type {config.rope.rope_type!r}): positions "
        f"past {limit} were never trained, so the outputs are unreliable. Shorten the input "
        f"(or trim the KV cache), pass allow_long_context=True to run anyway, or load the "
        f"model with RoPE scaling: 'rope_scaling': {{'rope_type': 'yarn' (or 'dynamic', "
        f"'linear'), 'factor': {factor}}} in config.json would cover "
        f"{int(factor) * limit} positions")
