"""Hook points: the named places in a forward pass where tensors can be read or changed.

Every kind of point is declared once, as a :class:`PointKind` (its constructor name, its
string, its exact-equivalent aliases). Declaring a kind creates its constructor on
:class:`HookPoint` (``HookPoint.ResidPost(3)``, or the attribute ``HookPoint.Embed`` for
kinds without a layer) and teaches ``HookPoint.parse`` its strings. The kinds every
residual-stream language model has are declared below; each backend declares its own
(attention internals, RWKV state, ...) next to its shapes, in its hook table
(:mod:`torch_mi.hooks.table`). HOOKS.md lists them all.

``str(point)`` gives the TransformerLens-style string and ``HookPoint.parse(s)`` reads it
back; strings are accepted wherever a point is taken.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

_LAYER = "{layer}"
_LAYER_PREFIX = "blocks.{layer}."


@dataclass(frozen=True)
class PointKind:
    """One kind of hook point.

    ``template`` is the full string with ``{layer}`` for per-layer kinds
    (``"blocks.{layer}.hook_resid_pre"``) or a fixed string (``"hook_embed"``); ``aliases``
    are other spellings that mean exactly the same tensor."""

    variant: str
    template: str
    aliases: tuple[str, ...] = ()
    doc: str = ""

    @property
    def per_layer(self) -> bool:
        return _LAYER in self.template

    def string(self, layer: int | None) -> str:
        return self.template.format(layer=layer) if self.per_layer else self.template


_KINDS: dict[str, PointKind] = {}
_BY_SUFFIX: dict[str, str] = {}  # per-layer: text after "blocks.{i}." -> variant
_BY_STRING: dict[str, str] = {}  # model-wide: full string -> variant
_LAYER_RE = re.compile(r"^blocks\.(0|[1-9][0-9]*)\.(.+)$", re.ASCII)


def _suffix(template: str) -> str:
    if not template.startswith(_LAYER_PREFIX) or template.count(_LAYER) != 1:
        raise ValueError(f"per-layer hook template {template!r} must start with 'blocks.{{layer}}.'")
    return template[len(_LAYER_PREFIX):]


def declare_point_kind(kind: PointKind) -> PointKind:
    """Register ``kind`` (idempotent for the same declaration) and create its constructor."""
    known = _KINDS.get(kind.variant)
    if known is not None:
        if known != kind:
            raise ValueError(f"hook point kind {kind.variant!r} is already declared as {known}")
        return known
    spellings = (kind.template, *kind.aliases)
    table = _BY_SUFFIX if kind.per_layer else _BY_STRING
    keys = [_suffix(s) for s in spellings] if kind.per_layer else list(spellings)
    for key in keys:
        if key in table:
            raise ValueError(f"hook string {key!r} already names {table[key]}")
    for key in keys:
        table[key] = kind.variant
    _KINDS[kind.variant] = kind
    if kind.per_layer:
        setattr(HookPoint, kind.variant, _layer_constructor(kind))
    else:
        setattr(HookPoint, kind.variant, HookPoint(kind.variant))
    return kind


def _layer_constructor(kind: PointKind) -> classmethod:
    def construct(cls: type[HookPoint], layer: int) -> HookPoint:
        return cls(kind.variant, layer)

    construct.__name__ = kind.variant
    construct.__doc__ = kind.doc or f"``{kind.template}``"
    return classmethod(construct)


def point_kind(variant: str) -> PointKind:
    return _KINDS[variant]


def point_kinds() -> dict[str, PointKind]:
    """Every declared kind, by variant name, in declaration order."""
    return dict(_KINDS)


class HookPoint:
    """A named location in a forward pass (immutable, hashable, ordered by layer then name)."""

    __slots__ = ("_hash", "_str", "layer", "variant")

    variant: str
    layer: int | None

    # Model-wide kinds are attributes, created when declared (below and by backends).
    Embed: ClassVar[HookPoint]
    FinalNorm: ClassVar[HookPoint]

    def __init__(self, variant: str, layer: int | None = None, *, _custom: str | None = None):
        if variant == "Custom":
            text = _custom
        else:
            kind = _KINDS.get(variant)
            if kind is None:
                raise ValueError(f"unknown hook variant {variant!r}")
            if kind.per_layer:
                if not isinstance(layer, int) or isinstance(layer, bool):
                    raise TypeError(f"HookPoint.{variant} needs an integer layer, got {layer!r}")
            elif layer is not None:
                raise TypeError(f"HookPoint.{variant} has no layer, got {layer!r}")
            text = kind.string(layer)
        object.__setattr__(self, "variant", variant)
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "_str", text)
        object.__setattr__(self, "_hash", hash(text))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("HookPoint is immutable")

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

        Strings that name no declared kind become ``HookPoint.Custom(text)``; a model rejects
        those at the start of ``forward`` unless it declares them, with close-match hints.
        Layer numbers are ASCII digits without leading zeros (anything else is Custom).
        """
        if isinstance(text, HookPoint):
            return text
        if not isinstance(text, str):
            raise TypeError(f"hook point must be a HookPoint or a string, got {type(text).__name__}")
        text = text.strip()
        if text in _BY_STRING:
            return getattr(cls, _BY_STRING[text])
        match = _LAYER_RE.match(text)
        if match and match.group(2) in _BY_SUFFIX:
            return cls(_BY_SUFFIX[match.group(2)], int(match.group(1)))
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
        if self.layer is not None:
            return (1, self.layer, self._str)
        if self.variant == "Custom":
            return (1, 1 << 30, self._str)
        if self.variant in _LAST:
            return (2, 0, self._str)
        return (0, -1, self._str)

    def __lt__(self, other: HookPoint) -> bool:
        return self._sort_key() < other._sort_key()

    def __reduce__(self):  # pickling/copy support for an immutable slotted class
        return (HookPoint.parse, (self._str,))


# Model-wide kinds that come after the blocks (sorting puts them last).
_LAST: set[str] = set()


def declare_final_kind(kind: PointKind) -> PointKind:
    """Declare a model-wide kind that fires after the last block (sorts after the layers)."""
    _LAST.add(kind.variant)
    return declare_point_kind(kind)


# ---- the kinds every residual-stream language model has (TransformerLens strings) -------
EMBED = declare_point_kind(PointKind("Embed", "hook_embed", doc="token embedding [B,S,D]"))
RESID_PRE = declare_point_kind(PointKind(
    "ResidPre", "blocks.{layer}.hook_resid_pre", doc="input of layer i [B,S,D]"))
ATTN_OUT = declare_point_kind(PointKind(
    "AttnOut", "blocks.{layer}.hook_attn_out", doc="what the mixing sub-layer adds [B,S,D]"))
RESID_MID = declare_point_kind(PointKind(
    "ResidMid", "blocks.{layer}.hook_resid_mid", doc="residual after the first add [B,S,D]"))
MLP_OUT = declare_point_kind(PointKind(
    "MlpOut", "blocks.{layer}.hook_mlp_out", doc="what the MLP adds to the residual [B,S,D]"))
RESID_POST = declare_point_kind(PointKind(
    "ResidPost", "blocks.{layer}.hook_resid_post", doc="output of layer i [B,S,D]"))
FINAL_NORM = declare_final_kind(PointKind(
    "FinalNorm", "hook_final_norm", aliases=("unembed.hook_in",),
    doc="final norm output (after its gain): the unembedding's input [B,S,D]"))

# Short names of the residual-stream points every backend has; analyses (logit lens,
# patching, probing, steering vectors) take these names for "which tensor of each layer".
STREAM_POINTS: dict[str, PointKind] = {
    "resid_pre": RESID_PRE, "resid_mid": RESID_MID, "resid_post": RESID_POST,
    "attn_out": ATTN_OUT, "mlp_out": MLP_OUT,
}


def stream_point(name: str, layer: int) -> HookPoint:
    """``stream_point("resid_post", 3) == HookPoint.ResidPost(3)``; ValueError otherwise."""
    if name not in STREAM_POINTS:
        raise ValueError(f"unknown stream point {name!r}; choose one of {sorted(STREAM_POINTS)}")
    return HookPoint(STREAM_POINTS[name].variant, layer)


HookLike = HookPoint | str


def as_point(point: HookLike) -> HookPoint:
    """Accept a HookPoint or its string and return the HookPoint."""
    return HookPoint.parse(point)
