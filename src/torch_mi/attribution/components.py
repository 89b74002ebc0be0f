"""The nodes of an attribution graph, from one plain forward (batch 1, no gradients).

Active features are found by encoding each layer's ``feature_input_hook`` activation
(positions ``< zero_positions`` zeroed, as circuit-tracer zeroes the BOS position) and
ordered by (layer, position, feature). Each active feature has an encoder row (its
pre-activation direction, the gradient injected for it as a target) and decoder rows
already scaled by its activation, one per output layer it writes to. Error nodes are
``mlp_out - reconstruction`` per (layer, position), zero at the zeroed positions; token
nodes are the embeddings that enter the stream (``hook_embed``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torch_mi.dictionaries.clt import CrossLayerTranscoder
from torch_mi.dictionaries.types import CltFeatureId
from torch_mi.hooks.spec import HookSpec


@dataclass
class DecoderGroup:
    """The active features that write into one output layer: ``rows`` index the active
    features [m], ``pos`` their positions [m], ``vecs`` activation x decoder row [m, D]."""

    rows: torch.Tensor
    pos: torch.Tensor
    vecs: torch.Tensor


@dataclass
class Components:
    """Everything attribution needs about one prompt (fp32, on the model's device)."""

    active: torch.Tensor          # [n, 3] long: (layer, pos, feature)
    values: torch.Tensor          # [n] activations
    encoders: torch.Tensor        # [n, D] encoder rows
    decoders: list[DecoderGroup]  # one per output layer
    errors: torch.Tensor          # [L, S, D]
    tokens: torch.Tensor          # [S, D] embeddings as they enter the stream
    logits: torch.Tensor          # [V] last-position logits (after any soft-cap)

    @property
    def n_features(self) -> int:
        return int(self.active.shape[0])


def _encode_layer(clt: CrossLayerTranscoder, x: torch.Tensor, layer: int, zero: int):
    """Active (pos, feature, value, encoder row) of one layer's input x [S, D]."""
    acts = clt.encode_dense(x, layer).to(x.device)  # [S, F] fp32 (transcoder may sit elsewhere)
    acts[:zero] = 0
    pos, feat = acts.nonzero(as_tuple=True)
    weight, _, _ = clt.encoder_weights(layer)
    return pos, feat, acts[pos, feat], weight[feat].to(x.device)


def _decoder_group(clt: CrossLayerTranscoder, active: torch.Tensor, values: torch.Tensor,
                   target: int, device: torch.device) -> DecoderGroup:
    cross = clt.config.is_cross_layer
    rows = torch.nonzero((active[:, 0] <= target) if cross else (active[:, 0] == target)).flatten()
    if rows.numel() == 0:
        d = clt.config.d_model
        return DecoderGroup(rows, rows.clone(), torch.zeros(0, d, device=device))
    ids = [CltFeatureId(int(layer), int(f)) for layer, f in active[rows][:, [0, 2]].tolist()]
    table = clt.extract_decoder_vectors(ids, target)
    vecs = torch.stack([table[i] for i in ids]).to(device) * values[rows, None]  # [m, D]
    return DecoderGroup(rows, active[rows, 1], vecs)


def compute_components(model, ids: torch.Tensor, clt: CrossLayerTranscoder,
                       skips: list[torch.Tensor | None], zero_positions: int = 1) -> Components:
    """One forward of ``ids`` [1, S] capturing the transcoder's inputs and outputs."""
    c, n_layers = clt.config, clt.config.n_layers
    spec = HookSpec().capture("hook_embed")
    for layer in range(n_layers):
        spec.capture(c.input_point(layer), c.output_point(layer))
    with torch.no_grad():
        cache = model.forward(ids, spec, last_logits_only=True)
    logits = cache.output()[0, -1].float()  # [V]
    found = [_encode_layer(clt, cache[c.input_point(layer)][0].float(), layer, zero_positions)
             for layer in range(n_layers)]
    clt.unload_encoder()
    layers = torch.cat([torch.full_like(pos, layer) for layer, (pos, *_rest) in enumerate(found)])
    active = torch.stack([layers, torch.cat([f[0] for f in found]),
                          torch.cat([f[1] for f in found])], dim=1)  # [n, 3]
    values = torch.cat([f[2] for f in found])
    encoders = torch.cat([f[3] for f in found])
    device = logits.device
    decoders = [_decoder_group(clt, active, values, layer, device) for layer in range(n_layers)]
    errors = []
    for layer, group in enumerate(decoders):
        x = cache[c.input_point(layer)][0].float()   # [S, D]
        out = cache[c.output_point(layer)][0].float()
        recon = clt.decoder_bias(layer).to(device).expand_as(out).clone()
        recon.index_add_(0, group.pos, group.vecs)
        if skips[layer] is not None:
            recon = recon + x @ skips[layer].to(device).T
        error = out - recon
        error[:zero_positions] = 0
        errors.append(error)
    tokens = cache["hook_embed"][0].float()
    return Components(active, values, encoders, decoders, torch.stack(errors), tokens, logits)


__all__ = ["Components", "DecoderGroup", "compute_components"]
