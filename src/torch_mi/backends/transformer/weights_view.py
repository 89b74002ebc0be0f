"""TransformerLens-layout weights of the generic transformer, as views of its parameters.

TL stores ``W_Q`` as [H, D, d] per layer; this model stores the fused projection ``qkv``
([H*d + 2*Hkv*d, D], rows [Q | K | V]) and ``gate_up`` ([2I, D], rows [gate | up]). A
per-layer weight here is a strided view of those parameters: no copy, and it shares their
storage (tested with ``untyped_storage().data_ptr()``). Two things cannot be views, and say
so:

* **Stacked over layers** (``weights.W_Q`` [L,H,D,d]): the layers are separate tensors, so
  stacking copies, exactly as TL's ``HookedTransformer.W_Q`` does (``torch.stack``). Use
  ``weights.layer(i).W_Q`` for a view.
* **GQA broadcast**: ``W_K``/``W_V``/``b_K``/``b_V`` are per KV head ([Hkv, D, d], TL's
  ``_W_K``) by default. ``broadcast=True`` repeats them to one per query head (TL's
  ``W_K``, a ``repeat_interleave`` copy: query head h reads KV head h // (H / Hkv)).

Absent biases are zeros of TL's shape (TL's converters store zeros too); they are new
tensors, not views. Differences from TL 3.9 (docs/from-transformerlens.md):

* ``W_E`` is the raw embedding table; Gemma's ``hook_embed`` is ``W_E[ids] * scale``
  (``config.embedding_scale``), which TL folds into its ``W_E``.
* In a gated MLP, ``b_in`` is the up projection's bias (inside ``hook_pre_linear``) and
  ``b_gate`` the gate's; TL's gated ``b_in`` is added after the product (its converters fill
  it with zeros and drop HF's MLP biases).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from ...errors import InputError
from ..protocol import WEIGHT_NAMES
from .config.types import MlpLayout
from .norms import GemmaRMSNorm, LayerNorm

MODEL_WEIGHTS = ("W_U", "b_U", "W_E")
LAYER_WEIGHTS = tuple(n for n in WEIGHT_NAMES if n not in MODEL_WEIGHTS)
KV_WEIGHTS = ("W_K", "W_V", "b_K", "b_V")


def _zeros(ref: torch.Tensor, *shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=ref.dtype, device=ref.device)


class LayerWeights:
    """One layer's weights in TL layout, each a view of the block's parameters."""

    def __init__(self, model: Any, layer: int) -> None:
        c = model.config
        self.layer = layer
        self._block = model.blocks[layer]
        self._h, self._kv, self._d = c.num_attention_heads, c.num_kv_heads, c.head_dim
        self._dim, self._mlp = c.hidden_size, c.intermediate_size
        self._gated = c.mlp_layout is not MlpLayout.Plain

    # ---- attention: qkv rows [Q | K | V], each head-major [heads, d, D] --------------------
    def _qkv(self, part: int) -> torch.Tensor:
        attn = self._block.attn
        return attn.qkv.weight.split(attn.split_sizes)[part]  # [heads*d, D] view

    def _qkv_bias(self, part: int, heads: int) -> torch.Tensor:
        attn = self._block.attn
        if attn.qkv.bias is None:
            return _zeros(attn.qkv.weight, heads, self._d)
        return attn.qkv.bias.split(attn.split_sizes)[part].view(heads, self._d)

    @property
    def W_Q(self) -> torch.Tensor:
        """[H, D, d] view."""
        return self._qkv(0).view(self._h, self._d, self._dim).transpose(1, 2)

    @property
    def W_K(self) -> torch.Tensor:
        """[Hkv, D, d] view (per KV head: TL's ``_W_K``)."""
        return self._qkv(1).view(self._kv, self._d, self._dim).transpose(1, 2)

    @property
    def W_V(self) -> torch.Tensor:
        """[Hkv, D, d] view (per KV head: TL's ``_W_V``)."""
        return self._qkv(2).view(self._kv, self._d, self._dim).transpose(1, 2)

    @property
    def W_O(self) -> torch.Tensor:
        """[H, d, D] view of o_proj [D, H*d]."""
        return self._block.attn.o_proj.weight.view(self._dim, self._h, self._d).permute(1, 2, 0)

    @property
    def b_Q(self) -> torch.Tensor:
        """[H, d]."""
        return self._qkv_bias(0, self._h)

    @property
    def b_K(self) -> torch.Tensor:
        """[Hkv, d] (per KV head)."""
        return self._qkv_bias(1, self._kv)

    @property
    def b_V(self) -> torch.Tensor:
        """[Hkv, d] (per KV head)."""
        return self._qkv_bias(2, self._kv)

    @property
    def b_O(self) -> torch.Tensor:
        """[D]."""
        o_proj = self._block.attn.o_proj
        return o_proj.bias if o_proj.bias is not None else _zeros(o_proj.weight, self._dim)

    # ---- MLP: gate_up rows [gate | up] (gated) or fc_in / fc_out (plain) --------------------
    def _mlp_in(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        mlp = self._block.mlp
        if not self._gated:
            return mlp.fc_in.weight, mlp.fc_in.bias  # [I, D], [I]
        w = mlp.gate_up.weight[self._mlp:]  # up rows
        return w, None if mlp.gate_up.bias is None else mlp.gate_up.bias[self._mlp:]

    @property
    def W_in(self) -> torch.Tensor:
        """[D, I] view (the up projection of a gated MLP)."""
        return self._mlp_in()[0].T

    @property
    def W_gate(self) -> torch.Tensor | None:
        """[D, I] view of the gate projection; None for a plain MLP (as TL)."""
        if not self._gated:
            return None
        return self._block.mlp.gate_up.weight[: self._mlp].T

    @property
    def W_out(self) -> torch.Tensor:
        """[I, D] view."""
        mlp = self._block.mlp
        return (mlp.down if self._gated else mlp.fc_out).weight.T

    @property
    def b_in(self) -> torch.Tensor:
        """[I]: the up (or fc_in) projection's bias."""
        w, b = self._mlp_in()
        return b if b is not None else _zeros(w, self._mlp)

    @property
    def b_gate(self) -> torch.Tensor | None:
        """[I] gate bias of a gated MLP (zeros without bias); None for a plain MLP."""
        if not self._gated:
            return None
        gate_up = self._block.mlp.gate_up
        if gate_up.bias is None:
            return _zeros(gate_up.weight, self._mlp)
        return gate_up.bias[: self._mlp]

    @property
    def b_out(self) -> torch.Tensor:
        """[D]."""
        out = self._block.mlp.down if self._gated else self._block.mlp.fc_out
        return out.bias if out.bias is not None else _zeros(out.weight, self._dim)

    def get(self, name: str, broadcast: bool = False) -> torch.Tensor | None:
        """The weight ``name``; ``broadcast=True`` repeats a KV weight to the H query heads
        (a copy, TL's ``W_K``; for other weights it changes nothing)."""
        check_weight_name(name, LAYER_WEIGHTS)
        if not isinstance(broadcast, bool):
            raise InputError(f"broadcast must be True or False, got {broadcast!r}")
        w = getattr(self, name)
        if broadcast and name in KV_WEIGHTS and self._kv != self._h:
            return torch.repeat_interleave(w, self._h // self._kv, dim=0)
        return w


class TransformerWeights:
    """TL-layout weights: ``layer(i).W_Q`` views, ``W_Q`` stacked [L, ...] (a copy)."""

    def __init__(self, model: Any) -> None:
        self._model = model

    @property
    def num_layers(self) -> int:
        return self._model.config.num_layers

    def layer(self, layer: int) -> LayerWeights:
        """Layer ``layer``'s weights (negative counts from the end)."""
        n = self.num_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
            raise InputError(f"layer must be an int in {-n}..{n - 1}, got {layer!r}")
        return LayerWeights(self._model, layer % n)

    __getitem__ = layer

    def stacked(self, name: str, broadcast: bool = False) -> torch.Tensor | None:
        """``name`` stacked over layers [L, ...] (a copy, as TL's properties); None for
        ``W_gate``/``b_gate`` of a plain MLP."""
        check_weight_name(name, LAYER_WEIGHTS)
        parts = [self.layer(i).get(name, broadcast) for i in range(self.num_layers)]
        return None if parts[0] is None else torch.stack(parts)

    def get(self, name: str, layer: int | None = None,
            broadcast: bool = False) -> torch.Tensor | None:
        """A weight by TL name: one layer's view, or stacked when ``layer`` is None."""
        check_weight_name(name, WEIGHT_NAMES)
        if name in MODEL_WEIGHTS:
            if layer is not None:
                raise InputError(f"{name} belongs to the whole model; call get({name!r}) "
                                 f"without a layer")
            return getattr(self, name)
        if layer is None:
            return self.stacked(name, broadcast)
        return self.layer(layer).get(name, broadcast)

    @property
    def W_U(self) -> torch.Tensor:
        """[D, V] view of the unembedding (of W_E when tied)."""
        return self._model.unembed.weight.T

    @property
    def b_U(self) -> torch.Tensor:
        """[V] zeros (these families have no unembedding bias)."""
        unembed = self._model.unembed
        return unembed.bias if unembed.bias is not None else _zeros(
            unembed.weight, unembed.weight.shape[0])

    @property
    def W_E(self) -> torch.Tensor:
        """[V, D] raw embedding table (before ``config.embedding_scale``)."""
        return self._model.embed.weight

    def final_norm(self) -> NormWeights:
        """The final norm as a linear map given its cached scale (TL's ``ln_final.w``/``b``):
        out = gain * (x - mean if centred) / scale + bias."""
        return norm_weights(self._model.ln_final)

    @property
    def norm_centred(self) -> bool:
        """Whether this model's norms subtract the mean (LayerNorm) before scaling."""
        return isinstance(self._model.ln_final, LayerNorm)

    def __getattr__(self, name: str) -> torch.Tensor | None:
        if name in LAYER_WEIGHTS:
            return self.stacked(name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"TransformerWeights(layers={self.num_layers}, names={list(WEIGHT_NAMES)})"


class NormWeights(NamedTuple):
    """A norm's effective gain [D] (Gemma's 1 + w, TL's folded ``w``), bias [D] or None,
    and whether it centres its input."""

    gain: torch.Tensor
    bias: torch.Tensor | None
    centred: bool


def norm_weights(norm: torch.nn.Module) -> NormWeights:
    if isinstance(norm, GemmaRMSNorm):  # a new tensor: 1 + w
        return NormWeights(1.0 + norm.weight.float(), None, False)
    return NormWeights(norm.weight, getattr(norm, "bias", None), isinstance(norm, LayerNorm))


def check_weight_name(name: object, allowed: tuple[str, ...]) -> None:
    if name not in allowed:
        raise InputError(f"unknown weight {name!r}: use one of {', '.join(allowed)}")
