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

from ..errors import HookError

_LAYER = "{layer}"
_LAYER_PREFIX = "blocks.{layer}."


@dataclass(frozen=True)
class PointKind:
    """One kind of hook point.

    ``template`` is the full string with ``{layer}`` for per-layer kinds
    (``"blocks.{layer}.hook_resid_pre"``) or a fixed string (``"hook_embed"``); ``aliases``
    are other spellings that mean exactly the same tensor. ``neg_inf_ok`` marks kinds whose
    tensor holds ``-inf`` by design (masked attention scores): ``HookSpec(check_finite=True)``
    and payload checks accept ``-inf`` there and still refuse NaN and +inf."""

    variant: str
    template: str
    aliases: tuple[str, ...] = ()
    doc: str = ""
    neg_inf_ok: bool = False

    @property
    def per_layer(self) -> bool:
        return _LAYER in self.template

    def string(self, layer: int | None) -> str:
        return self.template.format(layer=layer) if self.per_layer else self.template


_KINDS: dict[str, PointKind] = {}
_BY_SUFFIX: dict[str, str] = {}  # per-layer: text after "blocks.{i}." -> variant
_BY_STRING: dict[str, str] = {}  # model-wide: full string -> variant
# A layer number is canonical ASCII (no sign, no leading zero) and at most MAX_LAYER_DIGITS
# long; anything else is not a layer number (Python's int() would accept "01", "١" and
# fail on 5,000 digits).
MAX_LAYER_DIGITS = 9
_LAYER_RE = re.compile(rf"^blocks\.(0|[1-9][0-9]{{0,{MAX_LAYER_DIGITS - 1}}})\.(.+)$", re.ASCII)
_ANY_LAYER_RE = re.compile(r"^blocks\.([^.]*)\.(.+)$", re.DOTALL)
_SHOWN = 80  # characters of a hostile string quoted in a message


class HookTypeError(HookError, TypeError):
    """A hook point was given as a value of the wrong type (also a TypeError, so code that
    catches TypeError from the constructors keeps working)."""


def shown(value: object) -> str:
    """``repr(value)`` for a message, shortened when long (and safe for huge ints, whose
    repr raises past 4,300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _short_int(value)
    if isinstance(value, str) and len(value) > _SHOWN:
        return repr(value[:_SHOWN]) + f"... ({len(value)} characters)"
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


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
            kind = _KINDS.get(variant) if isinstance(variant, str) else None
            if kind is None:
                raise HookError(f"unknown hook variant {variant!r}; declared kinds: "
                                f"{', '.join(_KINDS)}")
            _check_layer(kind, layer)
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
        if not isinstance(name, str):
            raise HookTypeError(f"HookPoint.Custom needs a non-empty string, got "
                                f"{type(name).__name__} {name!r}")
        if not name.strip():
            raise HookTypeError(f"HookPoint.Custom needs a non-empty string, got {name!r}; "
                                f"see model.hook_points() for the valid names")
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
            raise HookError(f"a hook point must be a HookPoint or its string (e.g. "
                            f"'blocks.0.hook_resid_post'), got {type(text).__name__} "
                            f"{shown(text)}")
        text = text.strip()
        if not text:
            raise HookError("empty hook point string: name a point such as "
                            "'blocks.0.hook_resid_post' (model.hook_points() lists them all)")
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
            try:
                return self._str == HookPoint.parse(other)._str
            except HookError:  # "" names no point: unequal, never an exception
                return False
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


def _check_layer(kind: PointKind, layer: object) -> None:
    """HookTypeError unless a per-layer kind gets an int that fits a layer number (and a
    model-wide kind gets None)."""
    if not kind.per_layer:
        if layer is not None:
            raise HookTypeError(f"HookPoint.{kind.variant} has no layer, got {shown(layer)}")
        return
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise HookTypeError(f"HookPoint.{kind.variant} needs an integer layer, got "
                            f"{type(layer).__name__} {shown(layer)}")
    if abs(layer) >= 10 ** MAX_LAYER_DIGITS:
        raise HookTypeError(f"HookPoint.{kind.variant}: layer {_short_int(layer)} is out of "
                            f"range for any model; give a layer index 0..num_layers - 1")


def _short_int(value: int) -> str:
    """An int for a message without converting thousands of digits."""
    if abs(value) < 10 ** 30:
        return str(value)
    return f"{'-' if value < 0 else ''}~2**{abs(value).bit_length() - 1}"


def layer_hint(point: HookPoint) -> str:
    """For a Custom point spelled like a per-layer point with a non-canonical layer number
    (``blocks.01.``, ``blocks.١.``, 5,000 digits), say how to write it; else ""."""
    match = _ANY_LAYER_RE.match(point._str)
    if not point.is_custom or match is None or match.group(2) not in _BY_SUFFIX:
        return ""
    number = match.group(1)
    return (f" The layer number {shown(number)} is not canonical: write layers with ASCII "
            f"digits 0-9, no sign, no leading zeros and at most {MAX_LAYER_DIGITS} digits "
            f"(e.g. 'blocks.1.{match.group(2)}').")


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
    """``stream_point("resid_post", 3) == HookPoint.ResidPost(3)``; HookError otherwise."""
    if not isinstance(name, str) or name not in STREAM_POINTS:
        raise HookError(f"unknown stream point {name!r}; choose one of {sorted(STREAM_POINTS)}")
    return HookPoint(STREAM_POINTS[name].variant, layer)


HookLike = HookPoint | str


def as_point(point: HookLike) -> HookPoint:
    """Accept a HookPoint or its string and return the HookPoint."""
    return HookPoint.parse(point)
