"""Fill a backend's parameters from a tensor source, with strict accounting.

The weight map (from the architecture registry) says where each checkpoint tensor goes;
every tensor must be consumed, every parameter filled, every shape must match.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol

import torch
from torch import nn

from ..backends.registry import Target, WeightMap
from ..errors import WeightError

# Buffers some checkpoints carry that are recomputed, never loaded.
IGNORED_TENSORS = (re.compile(r"(^|\.)rotary_emb\.inv_freq$"),)


class TensorSource(Protocol):
    """Anything that can list checkpoint tensors and copy one into a destination."""

    def names(self) -> Iterator[str]: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def copy_into(self, name: str, dest: torch.Tensor) -> None: ...


def _expected_shape(param: torch.Tensor, rows: tuple[int, int] | None) -> tuple[int, ...]:
    if rows is None:
        return tuple(param.shape)
    return (rows[1] - rows[0], *param.shape[1:])


def load_weights(model: nn.Module, source: TensorSource, weights: WeightMap,
                 *, skip_prefixes: tuple[str, ...] = ()) -> None:
    """Fill every parameter of ``model`` from ``source``; raise one WeightError that lists
    every unused tensor, every missing tensor and every shape mismatch.

    ``skip_prefixes`` names checkpoint parts deliberately not loaded (a vision tower)."""
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
            if any(p.search(name) for p in IGNORED_TENSORS) or name.startswith(skip_prefixes):
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
        seen.add(name)
    missing = sorted(set(mapping) - seen - {m.split(":")[0] for m in mismatched})
    _raise_if_bad(unused, missing, mismatched)
    if tied_head is not None:
        _check_tied_head(source, tied_head, params[weights.tied_to])


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
