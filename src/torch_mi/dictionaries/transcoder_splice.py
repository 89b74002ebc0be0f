"""Splicing a transcoder (per-layer or cross-layer) into the forward.

Two interventions share one :class:`_TranscoderState`: a read at ``feature_input_hook`` of
layer ``s`` encodes the activation and leaves it unchanged (features kept in the call's
scratch space), and a write at ``feature_output_hook`` of layer ``l`` replaces that output
by the reconstruction ``sum_{s<=l} f_s W_dec_s[:, l-s] + b_dec_l (+ W_skip x_l)``
(per-layer transcoders: ``s = l`` only), plus the error term when asked. Reads fire before
writes within a layer (``hook_resid_mid`` comes before ``hook_mlp_out``).

Decoder slices, biases and skip matrices of the spliced layers are read once per splice
and kept on the activation's device (a CLT of L layers keeps L(L+1)/2 slices): build one
splice and reuse the HookSpec across forwards. Encoders follow the transcoder's
one-resident-encoder policy, so each forward streams the spliced layers' encoders. Internals are as for SAEs
(:mod:`torch_mi.dictionaries.splice`), hook points a spec may capture or intervene on:
input / acts at the read point, recons / error / output at the write point (an intervention
at a read point's ``hook_sae_acts_post`` changes what every spliced layer decodes from it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from torch_mi.dictionaries.clt import CrossLayerTranscoder
from torch_mi.dictionaries.feature_edits import FeatureEdit, apply_edits, clt_indices
from torch_mi.dictionaries.splice import fire_internal, splice_point
from torch_mi.errors import ConfigError, InterventionError
from torch_mi.hooks.call import ForwardCall
from torch_mi.hooks.interventions import Intervention
from torch_mi.hooks.points import HookPoint, as_point
from torch_mi.hooks.spec import HookSpec

READ_NAMES = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post")
WRITE_NAMES = ("hook_sae_recons", "hook_sae_error", "hook_sae_output")


class _TranscoderState:
    """What the reads and writes of one transcoder splice share (weights cached lazily)."""

    def __init__(self, clt: CrossLayerTranscoder, use_error_term: bool,
                 edits: tuple[FeatureEdit, ...], capture: frozenset[str]) -> None:
        c = clt.config
        self.clt, self.use_error_term, self.edits, self.capture = clt, use_error_term, edits, capture
        self.indices = {layer: [clt_indices(e, layer, c.n_layers, c.n_features_per_layer)
                                for e in edits] for layer in range(c.n_layers)}
        self._weights: dict[tuple, torch.Tensor] = {}

    def sources(self, layer: int) -> range:
        return range(layer + 1) if self.clt.config.is_cross_layer else range(layer, layer + 1)

    def weight(self, key: tuple, device: torch.device) -> torch.Tensor | None:
        """("dec", s, l) [F, D], ("bias", l) [D] or ("skip", l) [D, D] fp32 on ``device``."""
        if key not in self._weights:
            clt = self.clt
            if key[0] == "dec":
                value = clt.decoder_slice(key[1], key[2])
            elif key[0] == "bias":
                value = clt.decoder_bias(key[1])
            else:
                try:
                    value = clt.load_skip_matrix(key[1])
                except ConfigError:  # no W_skip in this layer's file
                    value = None
            self._weights[key] = None if value is None else value.to(device, torch.float32)
        value = self._weights[key]
        return value if value is None or value.device == device else value.to(device)

    def recons(self, acts: dict[int, torch.Tensor], layer: int, x: torch.Tensor,
               device: torch.device) -> torch.Tensor:
        """Reconstruction at ``layer`` [B,S,D] fp32 from features ``{source: [B,S,F]}``."""
        out = self.weight(("bias", layer), device)
        for s in self.sources(layer):
            out = out + acts[s].to(device) @ self.weight(("dec", s, layer), device)
        skip = self.weight(("skip", layer), device)
        if skip is not None:
            out = out + x.to(device, torch.float32) @ skip.T
        return out


@dataclass(frozen=True, eq=False)
class TranscoderRead(Intervention):
    """Encode layer ``layer``'s input into the call's scratch; the activation is unchanged."""

    state: _TranscoderState
    layer: int

    def provided_points(self, point: HookPoint) -> tuple[HookPoint, ...]:
        return tuple(as_point(splice_point(point, n)) for n in READ_NAMES)

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        st, wanted = self.state, self.state.capture
        x0 = tensor.to(torch.float32)                               # tensor itself if fp32
        x = fire_internal(call, wanted, point, "hook_sae_input", x0)
        pre0 = st.clt.encode_pre_activation(x, self.layer)          # [B,S,F] fp32
        pre = fire_internal(call, wanted, point, "hook_sae_acts_pre", pre0)
        acts = st.clt.activate(pre, self.layer)
        edited = apply_edits(acts, st.edits, st.indices[self.layer]) if st.edits else acts
        edited = fire_internal(call, wanted, point, "hook_sae_acts_post", edited)
        if x is not x0 or pre is not pre0:
            # The clean features for the error term: the layer's own input, unhooked.
            acts = st.clt.activate(st.clt.encode_pre_activation(tensor, self.layer), self.layer)
        call.scratch[(st, self.layer)] = (acts, edited, x, tensor)
        return tensor


@dataclass(frozen=True, eq=False)
class TranscoderWrite(Intervention):
    """Replace layer ``layer``'s output by the reconstruction (+ error term)."""

    state: _TranscoderState
    layer: int

    def provided_points(self, point: HookPoint) -> tuple[HookPoint, ...]:
        return tuple(as_point(splice_point(point, n)) for n in WRITE_NAMES)

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        st, wanted = self.state, self.state.capture
        clean, edited = {}, {}
        for s in st.sources(self.layer):
            found = call.scratch.get((st, s))
            if found is None:
                raise InterventionError(
                    f"transcoder splice at {point}: the features of layer {s} were not encoded "
                    f"before this write (input hook {st.clt.config.input_point(s)}); the input "
                    f"hook must fire before the output hook")
            clean[s], edited[s] = found[:2]
        own = call.scratch.get((st, self.layer))
        x, x_clean = (own[2], own[3]) if own is not None else (None, None)
        built = st.recons(edited, self.layer, x, tensor.device)       # [B,S,D] fp32
        recons = fire_internal(call, wanted, point, "hook_sae_recons", built)
        output = recons
        if st.use_error_term:
            same = recons is built and all(edited[s] is clean[s] for s in clean)
            base = recons if same else st.recons(clean, self.layer, x_clean, tensor.device)
            error = fire_internal(call, wanted, point, "hook_sae_error",
                                  tensor.to(torch.float32) - base)
            output = recons + error
        output = fire_internal(call, wanted, point, "hook_sae_output", output)
        return output.to(dtype=tensor.dtype)


def splice_transcoder(spec: HookSpec, clt: CrossLayerTranscoder, *, use_error_term: bool,
                      edits: tuple[FeatureEdit, ...], capture: frozenset[str],
                      layers: Iterable[int] | None) -> HookSpec:
    """Reads at every layer a spliced write needs, writes at ``layers`` (default all)."""
    n = clt.config.n_layers
    if not isinstance(use_error_term, bool):
        raise InterventionError(f"use_error_term must be True or False, got {use_error_term!r:.40}")
    for edit in edits:
        if not isinstance(edit, FeatureEdit):
            raise InterventionError(f"edits must be FeatureEdit values, got {type(edit).__name__}")
    chosen = sorted(set(range(n) if layers is None else layers))
    for layer in chosen:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
            raise InterventionError(f"layer {layer!r} is out of range: this transcoder has "
                                    f"layers 0..{n - 1}")
    if not chosen:
        raise InterventionError("layers= is empty: name at least one layer to splice")
    state = _TranscoderState(clt, use_error_term, edits, capture)
    reads = sorted({s for layer in chosen for s in state.sources(layer)})
    for s in reads:
        spec.intervene(clt.config.input_point(s), TranscoderRead(state, s))
    for layer in chosen:
        spec.intervene(clt.config.output_point(layer), TranscoderWrite(state, layer))
    return spec


__all__ = ["TranscoderRead", "TranscoderWrite", "splice_transcoder"]
