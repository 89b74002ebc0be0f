"""Fill a backend's parameters from a tensor source, with strict accounting.

The weight map (from the architecture registry) says where each checkpoint tensor goes;
every tensor must be consumed, every parameter filled, every shape must match, and every
loaded value must be finite (a single NaN would silently poison every forward pass).
``check_names`` runs the name half of the accounting before anything is allocated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import Protocol

import torch
from torch import nn

from ..backends.registry import Target, WeightMap
from ..errors import WeightError

# Buffers some checkpoints carry that are recomputed, never loaded.
IGNORED_TENSORS = (re.compile(r"(^|\.)rotary_emb\.inv_freq$"),)
NONFINITE_HINT = ("pass allow_nonfinite=True to from_pretrained only to inspect a broken "
                  "checkpoint")


class TensorSource(Protocol):
    """Anything that can list checkpoint tensors and copy one into a destination."""

    def names(self) -> Iterator[str]: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def copy_into(self, name: str, dest: torch.Tensor) -> None: ...


def is_ignored(name: str, skip_prefixes: tuple[str, ...] = ()) -> bool:
    """A checkpoint tensor that is deliberately not loaded (recomputed, or a skipped part)."""
    return any(p.search(name) for p in IGNORED_TENSORS) or name.startswith(skip_prefixes)


def check_names(names: Iterable[str], weights: WeightMap,
                *, skip_prefixes: tuple[str, ...] = ()) -> None:
    """The missing/unused half of the accounting, from the checkpoint's index alone: run
    before allocating so a config that does not match its checkpoint costs nothing."""
    present = set(names)
    unused = sorted(n for n in present - set(weights.targets)
                    if not is_ignored(n, skip_prefixes) and n != weights.tied_head)
    missing = sorted(set(weights.targets) - present)
    _raise_if_bad(unused, missing, [])


def _expected_shape(param: torch.Tensor, rows: tuple[int, int] | None) -> tuple[int, ...]:
    if rows is None:
        return tuple(param.shape)
    return (rows[1] - rows[0], *param.shape[1:])


def load_weights(model: nn.Module, source: TensorSource, weights: WeightMap,
                 *, skip_prefixes: tuple[str, ...] = (), check_finite: bool = True) -> None:
    """Fill every parameter of ``model`` from ``source``; raise one WeightError that lists
    every unused tensor, every missing tensor and every shape mismatch.

    ``skip_prefixes`` names checkpoint parts deliberately not loaded (a vision tower);
    ``check_finite`` refuses a tensor holding NaN or infinity, naming it."""
    mapping: dict[str, Target] = dict(weights.targets)
    params = dict(model.named_parameters())
    unmapped = sorted(set(params) - {t.param for t in mapping.values()})
    if unmapped:  # the model and the map disagree: a bug in torch-mi, not in the checkpoint
        raise WeightError(f"internal error: no checkpoint tensor maps to {unmapped}")
    seen: set[str] = set()
    unused: list[str] = []
    mismatched: list[str] = []
    tied_head: str | None = None
    for name in source.names():
        target = mapping.get(name)
        if target is None:
            if is_ignored(name, skip_prefixes):
                continue
            if name == weights.tied_head:
                tied_head = name
                continue
            unused.append(name)
            continue
        param = params[target.param]
        expected = _expected_shape(param, target.rows)
        got = tuple(source.shape(name))
        if got != expected:
            mismatched.append(f"{name}: checkpoint {list(got)}, model expects {list(expected)}")
            continue
        dest = param.data if target.rows is None else param.data[target.rows[0]:target.rows[1]]
        source.copy_into(name, dest)
        if check_finite:
            stored_as = getattr(source, "stored_name", None)
            require_finite(name, dest, None if stored_as is None else stored_as(name))
        seen.add(name)
    missing = sorted(set(mapping) - seen - {m.split(":")[0] for m in mismatched})
    _raise_if_bad(unused, missing, mismatched)
    if tied_head is not None:
        _check_tied_head(source, tied_head, params[weights.tied_to])


def require_finite(name: str, values: torch.Tensor, stored_as: str | None = None) -> None:
    """WeightError naming ``name`` (and ``stored_as``, the name in the file when it differs,
    as GGUF's do) if ``values`` holds a NaN or an infinity. One reduction pass (NaN
    propagates through min/max), no temporary the size of the tensor."""
    if values.numel() == 0 or not values.is_floating_point():
        return
    low, high = torch.aminmax(values.detach())
    if math.isfinite(float(low)) and math.isfinite(float(high)):
        return
    bad = ~torch.isfinite(values.detach())
    count = int(bad.sum())
    first = tuple(int(i) for i in bad.nonzero()[0].tolist())
    value = float(values.detach()[first])
    where = "" if stored_as in (None, name) else f" (stored as '{stored_as}')"
    raise WeightError(f"checkpoint tensor '{name}'{where} holds {count} non-finite value(s) (first: "
                      f"{value} at index {list(first)}); the checkpoint is corrupt, download "
                      f"or convert it again ({NONFINITE_HINT})")


def _raise_if_bad(unused: list[str], missing: list[str], mismatched: list[str]) -> None:
    if not (unused or missing or mismatched):
        return
    lines = ["the checkpoint does not match the model config:"]
    for title, items in (("missing tensors", missing), ("unused checkpoint tensors", unused),
                         ("shape mismatches", mismatched)):
        if items:
            shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {item}" for item in shown)
    lines.append("  Check that config.json belongs to these weights (model_type, sizes, "
                 "tie_word_embeddings, biases).")
    raise WeightError("\n".join(lines))


def _check_tied_head(source: TensorSource, name: str, embed: torch.Tensor) -> None:
    """A tied model may still ship lm_head.weight; accept it only if it is the embedding."""
    if tuple(source.shape(name)) != tuple(embed.shape):
        raise WeightError(f"{name} has shape {list(source.shape(name))} but the config ties it to "
                          f"the embedding {list(embed.shape)}; set tie_word_embeddings to false")
    head = torch.empty(embed.shape, dtype=embed.dtype, device=embed.device)
    source.copy_into(name, head)
    if not torch.equal(head, embed.data):
        raise WeightError(f"config.json ties the output head to the embedding, but the "
                          f"checkpoint's {name} differs from it; set tie_word_embeddings to false")
