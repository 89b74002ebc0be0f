"""Hook points: the named places in a forward pass where tensors can be read or changed.

A :class:`HookPoint` is a small immutable value. Variants that carry a layer index are
constructors (``HookPoint.ResidPost(3)``); variants without data are attributes
(``HookPoint.Embed``). ``str(point)`` gives the TransformerLens-style string and
``HookPoint.parse(s)`` reads it back; strings are accepted wherever a point is taken.

Canonical strings (shapes for the generic transformer; B batch, S positions, D hidden,
H query heads, Hkv key/value heads, d head dim, I MLP width, V vocab):

==========================================  =============  ===============================
string                                      shape          where
==========================================  =============  ===============================
``hook_embed``                              [B,S,D]        token embedding (after Gemma's scale)
``blocks.{i}.hook_resid_pre``               [B,S,D]        input of layer i
``blocks.{i}.ln1.hook_normalized``          [B,S,D]        output of the pre-attention norm
``blocks.{i}.attn.hook_q``                  [B,H,S,d]      query projection, before RoPE
``blocks.{i}.attn.hook_k`` / ``hook_v``     [B,Hkv,S,d]    key/value projection (KV heads, no GQA repeat)
``blocks.{i}.attn.hook_rot_q`` / ``rot_k``  [B,H|Hkv,S,d]  after RoPE
``blocks.{i}.attn.hook_scores``             [B,H,S,S]      scaled scores after soft-cap, before any mask
``blocks.{i}.attn.hook_pattern``            [B,H,S,S]      softmax probabilities (fully masked row = 0)
``blocks.{i}.attn.hook_z``                  [B,S,H,d]      per-head mixed values (TL layout)
``blocks.{i}.hook_attn_out``                [B,S,D]        attention output (after Gemma-2 post-norm)
``blocks.{i}.hook_resid_mid``               [B,S,D]        residual after the attention add
``blocks.{i}.mlp.hook_pre``                 [B,S,D]        normalised MLP input
``blocks.{i}.mlp.hook_hidden``              [B,S,I]        input of the down projection (neuron basis)
``blocks.{i}.mlp.hook_post``                [B,S,D]        MLP output, before Gemma-2 post-FF norm
``blocks.{i}.hook_mlp_out``                 [B,S,D]        what the MLP adds to the residual
``blocks.{i}.hook_resid_post``              [B,S,D]        output of layer i
``hook_final_norm``                         [B,S,D]        after the final norm, before unembedding
==========================================  =============  ===============================

TransformerLens aliases that mean exactly the same tensor are accepted by ``parse``:
``ln_final.hook_normalized`` -> ``hook_final_norm``; ``blocks.{i}.ln2.hook_normalized`` and
``blocks.{i}.mlp.hook_in`` -> ``blocks.{i}.mlp.hook_pre``.
"""

from __future__ import annotations

import re
from typing import ClassVar

# Variant name -> string suffix after "blocks.{i}." (per-layer variants).
LAYER_VARIANTS: dict[str, str] = {
    "ResidPre": "hook_resid_pre",
    "Ln1Normalized": "ln1.hook_normalized",
    "AttnQ": "attn.hook_q",
    "AttnK": "attn.hook_k",
    "AttnV": "attn.hook_v",
    "AttnRotQ": "attn.hook_rot_q",
    "AttnRotK": "attn.hook_rot_k",
    "AttnScores": "attn.hook_scores",
    "AttnPattern": "attn.hook_pattern",
    "AttnZ": "attn.hook_z",
    "AttnOut": "hook_attn_out",
    "ResidMid": "hook_resid_mid",
    "MlpPre": "mlp.hook_pre",
    "MlpHidden": "mlp.hook_hidden",
    "MlpPost": "mlp.hook_post",
    "MlpOut": "hook_mlp_out",
    "ResidPost": "hook_resid_post",
    "RwkvState": "rwkv.hook_state",
    "RwkvDecay": "rwkv.hook_decay",
    "RwkvEffectiveAttn": "rwkv.hook_effective_attn",
}

# Variant name -> full string (model-wide variants without a layer).
GLOBAL_VARIANTS: dict[str, str] = {
    "Embed": "hook_embed",
    "FinalNorm": "hook_final_norm",
}

# Exact-equivalent TransformerLens spellings.
LAYER_ALIASES: dict[str, str] = {
    "ln2.hook_normalized": "MlpPre",
    "mlp.hook_in": "MlpPre",
}
GLOBAL_ALIASES: dict[str, str] = {
    "ln_final.hook_normalized": "FinalNorm",
}

_SUFFIX_TO_VARIANT = {suffix: name for name, suffix in LAYER_VARIANTS.items()}
_SUFFIX_TO_VARIANT.update(LAYER_ALIASES)
_STRING_TO_GLOBAL = {s: name for name, s in GLOBAL_VARIANTS.items()}
_STRING_TO_GLOBAL.update(GLOBAL_ALIASES)
_LAYER_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


class HookPoint:
    """A named location in a forward pass (immutable, hashable, ordered by layer then name)."""

    __slots__ = ("_hash", "_str", "layer", "variant")

    variant: str
    layer: int | None

    # Data-less variants, filled in below the class body.
    Embed: ClassVar[HookPoint]
    FinalNorm: ClassVar[HookPoint]

    def __init__(self, variant: str, layer: int | None = None, *, _custom: str | None = None):
        if variant == "Custom":
            text = _custom
        elif variant in GLOBAL_VARIANTS:
            text = GLOBAL_VARIANTS[variant]
        elif variant in LAYER_VARIANTS:
            if not isinstance(layer, int) or isinstance(layer, bool):
                raise TypeError(f"HookPoint.{variant} needs an integer layer, got {layer!r}")
            text = f"blocks.{layer}.{LAYER_VARIANTS[variant]}"
        else:
            raise ValueError(f"unknown hook variant {variant!r}")
        object.__setattr__(self, "variant", variant)
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "_str", text)
        object.__setattr__(self, "_hash", hash(text))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("HookPoint is immutable")

    # ---- constructors for per-layer variants --------------------------------------------
    @classmethod
    def ResidPre(cls, layer: int) -> HookPoint:
        return cls("ResidPre", layer)

    @classmethod
    def Ln1Normalized(cls, layer: int) -> HookPoint:
        return cls("Ln1Normalized", layer)

    @classmethod
    def AttnQ(cls, layer: int) -> HookPoint:
        return cls("AttnQ", layer)

    @classmethod
    def AttnK(cls, layer: int) -> HookPoint:
        return cls("AttnK", layer)

    @classmethod
    def AttnV(cls, layer: int) -> HookPoint:
        return cls("AttnV", layer)

    @classmethod
    def AttnRotQ(cls, layer: int) -> HookPoint:
        return cls("AttnRotQ", layer)

    @classmethod
    def AttnRotK(cls, layer: int) -> HookPoint:
        return cls("AttnRotK", layer)

    @classmethod
    def AttnScores(cls, layer: int) -> HookPoint:
        return cls("AttnScores", layer)

    @classmethod
    def AttnPattern(cls, layer: int) -> HookPoint:
        return cls("AttnPattern", layer)

    @classmethod
    def AttnZ(cls, layer: int) -> HookPoint:
        return cls("AttnZ", layer)

    @classmethod
    def AttnOut(cls, layer: int) -> HookPoint:
        return cls("AttnOut", layer)

    @classmethod
    def ResidMid(cls, layer: int) -> HookPoint:
        return cls("ResidMid", layer)

    @classmethod
    def MlpPre(cls, layer: int) -> HookPoint:
        return cls("MlpPre", layer)

    @classmethod
    def MlpHidden(cls, layer: int) -> HookPoint:
        return cls("MlpHidden", layer)

    @classmethod
    def MlpPost(cls, layer: int) -> HookPoint:
        return cls("MlpPost", layer)

    @classmethod
    def MlpOut(cls, layer: int) -> HookPoint:
        return cls("MlpOut", layer)

    @classmethod
    def ResidPost(cls, layer: int) -> HookPoint:
        return cls("ResidPost", layer)

    @classmethod
    def RwkvState(cls, layer: int) -> HookPoint:
        return cls("RwkvState", layer)

    @classmethod
    def RwkvDecay(cls, layer: int) -> HookPoint:
        return cls("RwkvDecay", layer)

    @classmethod
    def RwkvEffectiveAttn(cls, layer: int) -> HookPoint:
        return cls("RwkvEffectiveAttn", layer)

    @classmethod
    def Custom(cls, name: str) -> HookPoint:
        """A backend-declared point with a free-form name (validated against the model)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"HookPoint.Custom needs a non-empty string, got {name!r}")
        return cls("Custom", None, _custom=name)

    # ---- string round trip ----------------------------------------------------------------
    @classmethod
    def parse(cls, text: str | HookPoint) -> HookPoint:
        """Read a TransformerLens-style string (aliases included).

        Strings that name no known variant become ``HookPoint.Custom(text)``; a model rejects
        those at the start of ``forward`` unless it declares them, with close-match hints.
        """
        if isinstance(text, HookPoint):
            return text
        if not isinstance(text, str):
            raise TypeError(f"hook point must be a HookPoint or a string, got {type(text).__name__}")
        text = text.strip()
        if text in _STRING_TO_GLOBAL:
            return getattr(cls, _STRING_TO_GLOBAL[text])
        match = _LAYER_RE.match(text)
        if match and match.group(2) in _SUFFIX_TO_VARIANT:
            return cls(_SUFFIX_TO_VARIANT[match.group(2)], int(match.group(1)))
        return cls.Custom(text)

    @property
    def is_custom(self) -> bool:
        return self.variant == "Custom"

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        if self.variant == "Custom":
            return f"HookPoint.Custom({self._str!r})"
        if self.layer is None:
            return f"HookPoint.{self.variant}"
        return f"HookPoint.{self.variant}({self.layer})"

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HookPoint):
            return self._str == other._str
        if isinstance(other, str):
            return self._str == HookPoint.parse(other)._str
        return NotImplemented

    def _sort_key(self) -> tuple[int, int, str]:
        if self.variant == "Embed":
            return (0, -1, "")
        if self.variant == "FinalNorm":
            return (2, 0, "")
        return (1, self.layer if self.layer is not None else 1 << 30, self._str)

    def __lt__(self, other: HookPoint) -> bool:
        return self._sort_key() < other._sort_key()

    def __reduce__(self):  # pickling/copy support for an immutable slotted class
        return (HookPoint.parse, (self._str,))


HookPoint.Embed = HookPoint("Embed")
HookPoint.FinalNorm = HookPoint("FinalNorm")

HookLike = HookPoint | str


def as_point(point: HookLike) -> HookPoint:
    """Accept a HookPoint or its string and return the HookPoint."""
    return HookPoint.parse(point)
