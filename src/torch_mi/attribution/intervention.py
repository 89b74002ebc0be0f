"""Set transcoder features to chosen values and run the model (circuit-tracer's
``feature_intervention``), on the dictionaries package's transcoder splice.

The splice with ``use_error_term=True`` and clamp edits writes, at every layer a feature
reaches, ``reconstruction(edited) + (mlp_out - reconstruction(clean))``, i.e. the real MLP
output plus ``(value - activation) x decoder row``; later features are re-encoded from
the changed stream. ``freeze_attention=True`` replaces every attention pattern by the
clean run's, so the effect travels through the residual stream and MLPs only.

Positions before ``zero_positions`` (the BOS) carry no features in the replacement model:
their activations are reported as 0, so setting a feature there to ``value`` adds
``value x decoder row`` (an ``add`` edit, not a clamp of the real activation), as
circuit-tracer does (its delta is ``value - cached activation`` with the cache zeroed at
``zero_positions``); ``value = 0`` there is a no-op.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from torch_mi.attribution.engine import open_transcoders, prompt_ids
from torch_mi.attribution.replacement import check_transcoders
from torch_mi.dictionaries.clt import CrossLayerTranscoder
from torch_mi.dictionaries.feature_edits import FeatureEdit
from torch_mi.dictionaries.splice import splice, splice_point
from torch_mi.dictionaries.types import CltFeatureId
from torch_mi.errors import InterventionError
from torch_mi.hooks.interventions import Intervention
from torch_mi.hooks.spec import HookSpec


@dataclass(frozen=True)
class InterventionOutput:
    logits: torch.Tensor       # [1, S, V] after the intervention
    activations: torch.Tensor  # [L, S, F] features encoded in the intervened run (before
    #                            the edits; positions < zero_positions zeroed)


def _edits(interventions: Sequence, clt: CrossLayerTranscoder, n_pos: int,
           zero_positions: int) -> list[FeatureEdit]:
    c = clt.config
    edits = []
    for item in interventions:
        if not isinstance(item, (tuple, list)) or len(item) != 4:
            raise InterventionError(f"each intervention is (layer, position, feature, value), "
                                    f"got {item!r:.60}")
        layer, pos, feature, value = item
        for name, v, high in (("layer", layer, c.n_layers), ("position", pos, n_pos),
                              ("feature", feature, c.n_features_per_layer)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v < high:
                raise InterventionError(f"intervention {item!r:.60}: {name} {v!r} is out of "
                                        f"range 0..{high - 1}")
        kind = FeatureEdit.add if pos < zero_positions else FeatureEdit.clamp
        edits.append(kind(CltFeatureId(int(layer), int(feature)), value, int(pos)))
    return edits


def _frozen_patterns(model, ids: torch.Tensor) -> HookSpec:
    """A spec replacing every attention pattern by the one of a clean run on ``ids``."""
    points = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.num_layers)]
    with torch.no_grad():
        cache = model.forward(ids, HookSpec().capture(*points), last_logits_only=True)
    spec = HookSpec()
    for point in points:
        spec.intervene(point, Intervention.Replace(cache[point]))
    return spec


def feature_intervention(model, prompt: str | Sequence[int] | torch.Tensor,
                         interventions: Sequence[tuple[int, int, int, float]],
                         transcoders: CrossLayerTranscoder | str | Path, *,
                         freeze_attention: bool = True, zero_positions: int = 1
                         ) -> InterventionOutput:
    """Logits and feature activations with features set to values: ``interventions`` is a
    list of ``(layer, position, feature, value)``."""
    if not isinstance(freeze_attention, bool):
        raise InterventionError(f"freeze_attention must be True or False, got "
                                f"{freeze_attention!r}")
    if (isinstance(zero_positions, bool) or not isinstance(zero_positions, numbers.Integral)
            or zero_positions < 0):
        raise InterventionError(f"zero_positions must be an int >= 0, got {zero_positions!r}")
    clt = open_transcoders(transcoders, model.device)
    check_transcoders(model, clt)
    ids = prompt_ids(model, prompt)
    edits = _edits(interventions, clt, ids.shape[1], zero_positions)
    spec = _frozen_patterns(model, ids) if freeze_attention and edits else HookSpec()
    splice(spec, clt, use_error_term=True, edits=edits, capture=("acts_pre",))
    with torch.no_grad():
        cache = model.forward(ids, spec)
    c = clt.config
    acts = []
    for layer in range(c.n_layers):
        pre = cache[splice_point(c.input_point(layer), "hook_sae_acts_pre")][0]  # [S, F]
        layer_acts = clt.activate(pre, layer)
        layer_acts[:zero_positions] = 0
        acts.append(layer_acts)
    clt.unload_encoder()
    return InterventionOutput(cache.output(), torch.stack(acts))


__all__ = ["InterventionOutput", "feature_intervention"]
