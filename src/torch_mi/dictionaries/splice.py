"""Splicing a dictionary into the forward (SAELens ``HookedSAETransformer`` without
mutating the model): one :class:`Intervention` at the SAE's hook point.

The splice replaces the activation ``x`` at its hook by the reconstruction, or, with
``use_error_term=True``, by ``reconstruction(edited acts) + (x - reconstruction(acts))``,
so that without edits the forward is exact and with edits only the edited features'
decoder contributions change (SAELens computes its error term the same way, from the
clean reconstruction).

Internals are hook points of their own, ``f"{hook}.{name}"`` for the names in
:data:`SPLICE_NAMES` (``Intervention.provided_points``): a HookSpec holding the splice may
capture them or intervene on them like any point (an intervention at ``hook_sae_acts_post``
changes what is decoded, one at ``hook_sae_input`` what is encoded, ...; the error term
stays the clean one, as in SAELens). The ``capture`` option stores the same names too
(after any such intervention):

- ``hook_sae_input`` [B,S,d_in] the activation read (fp32; ``hook_z`` flattened as in SAELens),
- ``hook_sae_acts_pre`` / ``hook_sae_acts_post`` [B,S,F] pre-activations and features
  (after the edits: what is decoded),
- ``hook_sae_recons`` [B,S,d_in] the reconstruction of the edited features (after any
  run-time denormalisation; SAELens records it before),
- ``hook_sae_error`` (x - clean reconstruction) and ``hook_sae_output`` (what replaces
  the activation), both in the activation's shape.

Several dictionaries: one splice per hook; two at the same hook run in registration
order (each reads what the previous wrote) and the later one's captures overwrite.
Transcoders are spliced by :mod:`torch_mi.dictionaries.transcoder_splice`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from torch_mi.dictionaries.clt import CrossLayerTranscoder
from torch_mi.dictionaries.feature_edits import FeatureEdit, apply_edits, sae_indices
from torch_mi.dictionaries.sae import SparseAutoencoder
from torch_mi.dictionaries.sae_config import TopKStrategy
from torch_mi.errors import InterventionError
from torch_mi.hooks.call import ForwardCall
from torch_mi.hooks.interventions import Intervention
from torch_mi.hooks.points import HookPoint, as_point
from torch_mi.hooks.spec import HookSpec

SPLICE_NAMES = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post",
                "hook_sae_recons", "hook_sae_error", "hook_sae_output")


def capture_names(capture: bool | str | Iterable[str]) -> frozenset[str]:
    """``True`` -> every name; ``False`` -> none; names with or without ``hook_sae_``."""
    if capture is True:
        return frozenset(SPLICE_NAMES)
    if capture is False or capture is None:
        return frozenset()
    items = [capture] if isinstance(capture, str) else list(capture)
    out = set()
    for name in items:
        full = name if isinstance(name, str) and name.startswith("hook_sae_") else f"hook_sae_{name}"
        if full not in SPLICE_NAMES:
            raise InterventionError(f"unknown splice capture {name!r}; choose from "
                                    f"{list(SPLICE_NAMES)} (or True for all)")
        out.add(full)
    return frozenset(out)


def splice_point(point: HookPoint | str, name: str) -> str:
    """The cache key of a splice internal: ``splice_point('blocks.1.hook_resid_post',
    'hook_sae_acts_post') == 'blocks.1.hook_resid_post.hook_sae_acts_post'``."""
    return f"{point}.{name}"


def store(call: ForwardCall, wanted: frozenset[str], point: HookPoint, name: str,
          tensor: torch.Tensor) -> None:
    """Record one internal if asked (detached unless the spec keeps gradients)."""
    if name in wanted:
        call.cache.store(splice_point(point, name), tensor if call.keep_grad else tensor.detach())


def fire_internal(call: ForwardCall, wanted: frozenset[str], point: HookPoint, name: str,
                  tensor: torch.Tensor) -> torch.Tensor:
    """Fire the internal ``name`` of the splice at ``point`` (the spec's captures and
    interventions there), store it if ``capture=`` asks, and return what to go on with."""
    tensor = call.fire(as_point(splice_point(point, name)), tensor)
    store(call, wanted, point, name, tensor)
    return tensor


@dataclass(frozen=True, eq=False)
class SaeSplice(Intervention):
    """Replace the activation by the SAE's reconstruction (see the module docstring)."""

    sae: SparseAutoencoder
    use_error_term: bool = False
    edits: tuple[FeatureEdit, ...] = ()
    capture: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not isinstance(self.sae, SparseAutoencoder):
            raise InterventionError(f"SaeSplice needs a SparseAutoencoder, got "
                                    f"{type(self.sae).__name__}")
        if not isinstance(self.use_error_term, bool):
            raise InterventionError(f"use_error_term must be True or False, got "
                                    f"{self.use_error_term!r:.40}")
        edits = tuple(self.edits)
        for edit in edits:
            if not isinstance(edit, FeatureEdit):
                raise InterventionError(f"edits must be FeatureEdit values (FeatureEdit.ablate"
                                        f"(...), ...), got {type(edit).__name__}")
        object.__setattr__(self, "edits", edits)
        # Checked now so that a bad feature id fails when the spec is built.
        object.__setattr__(self, "_indices", [sae_indices(e, self.sae.d_sae) for e in edits])

    def _recons(self, acts: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """decode(acts) (+ W_skip x) in x's shape, fp32 on the SAE's device."""
        out = self.sae.decode(acts, x)
        skip = self.sae.tensors.get("W_skip")
        if skip is not None:
            flat = x.to(self.sae.device, torch.float32).reshape(-1, self.sae.d_in)
            out = out + (flat @ skip.T).reshape(out.shape)
        return out

    def provided_points(self, point: HookPoint) -> tuple[HookPoint, ...]:
        """The internals, ``f"{point}.{name}"`` for each of :data:`SPLICE_NAMES`."""
        return tuple(as_point(splice_point(point, name)) for name in SPLICE_NAMES)

    def _at(self, call: ForwardCall, point: HookPoint, name: str,
            value: torch.Tensor) -> torch.Tensor:
        return fire_internal(call, self.capture, point, name, value)

    def _wants(self, call: ForwardCall, point: HookPoint, name: str) -> bool:
        return name in self.capture or call.is_active(as_point(splice_point(point, name)))

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        sae, x, upstream = self.sae, tensor, False
        if self._wants(call, point, "hook_sae_input"):
            flat = sae._flatten(tensor)                          # [B,S,d_in] fp32
            fired = self._at(call, point, "hook_sae_input", flat)
            if fired is not flat:                                # the SAE reads the edited input
                x, upstream = fired.reshape(tensor.shape), True
        sae_in = sae._sae_in(x)[0]
        pre = sae._pre(sae_in)                                   # [B,S,F] fp32
        if self._wants(call, point, "hook_sae_acts_pre"):
            fired = self._at(call, point, "hook_sae_acts_pre", pre)
            pre, upstream = fired, upstream or fired is not pre
        acts = sae._encode(sae_in, TopKStrategy.AUTO, pre)       # [B,S,F] fp32
        edited = apply_edits(acts, self.edits, self._indices) if self.edits else acts
        decoded = self._at(call, point, "hook_sae_acts_post", edited)
        recons = self._recons(decoded, x)                        # x's shape, fp32
        flat = recons.reshape(*acts.shape[:-1], sae.d_in)
        fired = self._at(call, point, "hook_sae_recons", flat)
        changed = upstream or decoded is not acts or fired is not flat
        recons = fired.reshape(recons.shape) if fired is not flat else recons
        output = recons
        if self.use_error_term:
            # The clean reconstruction: the input's own features, no edits, no interventions.
            clean = (recons if not changed else
                     self._recons(acts if not upstream else sae.encode(tensor), tensor))
            error = self._at(call, point, "hook_sae_error",
                             tensor.to(sae.device, torch.float32) - clean)
            output = recons + error
        output = self._at(call, point, "hook_sae_output", output)
        return output.to(device=tensor.device, dtype=tensor.dtype)

    def __repr__(self) -> str:
        extra = f", edits={list(self.edits)}" if self.edits else ""
        return (f"SaeSplice({self.sae.config.hook_name!r}, d_sae={self.sae.d_sae}, "
                f"use_error_term={self.use_error_term}{extra})")


def splice(spec: HookSpec, dictionary: SparseAutoencoder | CrossLayerTranscoder, *,
           use_error_term: bool = False, edits: Iterable[FeatureEdit] = (),
           capture: bool | str | Iterable[str] = False,
           layers: Iterable[int] | None = None) -> HookSpec:
    """Attach ``dictionary`` to ``spec`` (returned, for chaining) so that the forward runs
    through its reconstruction.

    An SAE splices at its own hook point. A transcoder reads at ``feature_input_hook`` and
    writes at ``feature_output_hook`` of each layer in ``layers`` (default: all); a CLT's
    features of layer ``s`` write into every spliced layer ``l >= s``. ``edits`` ablate,
    clamp, scale or add features at positions; ``capture`` names the internals to store
    (``True``: all of :data:`SPLICE_NAMES`). A hook the model lacks is a HookError and an
    SAE whose width differs from the hook's an InterventionError, both at ``forward``.
    """
    if not isinstance(spec, HookSpec):
        raise InterventionError(f"splice needs a HookSpec to extend, got {type(spec).__name__}; "
                                f"use splice(mi.HookSpec(), sae)")
    wanted = capture_names(capture)
    if isinstance(dictionary, SparseAutoencoder):
        if layers is not None:
            raise InterventionError("layers= is for transcoders; an SAE splices at its own hook "
                                    f"({dictionary.config.hook_name})")
        return spec.intervene(dictionary.hook_point,
                              SaeSplice(dictionary, use_error_term, tuple(edits), wanted))
    if isinstance(dictionary, CrossLayerTranscoder):
        from torch_mi.dictionaries.transcoder_splice import splice_transcoder

        return splice_transcoder(spec, dictionary, use_error_term=use_error_term,
                                 edits=tuple(edits), capture=wanted, layers=layers)
    raise InterventionError(f"splice needs a SparseAutoencoder or a CrossLayerTranscoder, got "
                            f"{type(dictionary).__name__}")


__all__ = ["SPLICE_NAMES", "SaeSplice", "capture_names", "fire_internal", "splice", "splice_point"]
