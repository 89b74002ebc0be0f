"""Every checked adjacency column equals the direct effect recomputed in a frozen forward.

The oracle is the model run with HookSpec Replace/Apply interventions only (no gradient):
attention patterns and norm denominators replaced by the clean run's, every MLP output
replaced by the clean one plus the change of the transcoder's skip term, so the model is
affine in the residual stream. Removing one source node (a feature's activation x decoder
rows, an error vector, a token embedding) changes each target's pre-activation (W_enc .
input) and each target logit (minus the mean logit) by exactly minus the adjacency entry.
Transcoder weights are read straight from their safetensors files, and the oracle runs
in float64 (a double copy of the model), so a recomputed effect carries no fp32
cancellation noise from subtracting two large logit vectors.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

import torch_mi as mi
from tests.attribution.transcoders import encode, make_clt, make_plt, raw_weights
from torch_mi.attribution import attribute
from torch_mi.dictionaries import CrossLayerTranscoder
from torch_mi.hooks.points import as_point

CASES = [("llama", "clt"), ("gemma2", "plt"), ("gemma3", "plt"), ("qwen3", "clt"),
         ("starcoder2", "clt"), ("gemma3", "clt")]
NORMS = ("ln1", "ln2", "ln1_post", "ln2_post")


def frozen_points(model) -> list[str]:
    points = model.hook_points()
    out = ["ln_final.hook_scale"]
    for layer in range(model.num_layers):
        out.append(f"blocks.{layer}.attn.hook_pattern")
        out += [p for n in NORMS if as_point(p := f"blocks.{layer}.{n}.hook_scale") in points]
    return out


class FrozenModel:
    """Clean run of ``ids`` [1,S] and affine re-runs with source nodes removed."""

    def __init__(self, model, ids, clt: CrossLayerTranscoder, w: dict) -> None:
        self.model, self.ids, self.w, self.c = model, ids, w, clt.config
        self.ins = [str(self.c.input_point(layer)) for layer in range(model.num_layers)]
        self.outs = [str(self.c.output_point(layer)) for layer in range(model.num_layers)]
        spec = mi.HookSpec().capture(*frozen_points(model), *self.ins, *self.outs, "hook_embed",
                                     "unembed.hook_out")
        self.clean = model.forward(ids, spec)

    def skip(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        ws = self.w["W_skip"][layer]
        return 0 * x if ws is None else x @ ws.T

    def run(self, out_deltas: dict, embed_delta: torch.Tensor | None = None):
        clean, spec, now = self.clean, mi.HookSpec(), {}
        for point in frozen_points(self.model):
            spec.intervene(point, mi.Intervention.Replace(clean[point]))
        if embed_delta is not None:
            spec.intervene("hook_embed", mi.Intervention.Add(embed_delta))
        for layer, (pin, pout) in enumerate(zip(self.ins, self.outs, strict=True)):
            def stash(t, p, layer=layer):
                now[layer] = t
                return t

            def write(t, p, layer=layer, pin=pin, pout=pout):
                out = clean[pout] + self.skip(layer, now[layer]) - self.skip(layer, clean[pin])
                return out + out_deltas.get(layer, 0)
            spec.intervene(pin, mi.Intervention.Apply(stash))
            spec.intervene(pout, mi.Intervention.Apply(write))
        spec.capture(*self.ins, "unembed.hook_out")
        return self.model.forward(self.ids, spec)

    def errors(self) -> list[torch.Tensor]:
        """mlp_out - reconstruction per layer [S, D] (hand formula, BOS features zeroed)."""
        acts = []
        for layer, pin in enumerate(self.ins):
            a = encode(self.w, layer, self.clean[pin][0])
            a[0] = 0
            acts.append(a)
        out = []
        for layer, (pin, pout) in enumerate(zip(self.ins, self.outs, strict=True)):
            recon = self.w["b_dec"][layer] + self.skip(layer, self.clean[pin][0])
            sources = range(layer + 1) if self.c.is_cross_layer else [layer]
            for s in sources:
                recon = recon + acts[s] @ self.w["W_dec"][s][:, layer - s if self.c.is_cross_layer
                                                              else 0]
            out.append(self.clean[pout][0] - recon)
        return out


def expected_column(fm: FrozenModel, graph, result) -> torch.Tensor:
    """Minus the change of every feature target's pre-activation and every target logit."""
    col = torch.zeros(graph.n_nodes, dtype=torch.float64)
    for j, idx in enumerate(graph.selected_features.tolist()):
        layer, pos, feat = graph.active_features[idx].tolist()
        dx = result[fm.ins[layer]][0, pos] - fm.clean[fm.ins[layer]][0, pos]
        col[j] = -(fm.w["W_enc"][layer][feat] @ dx)
    dlogit = (result["unembed.hook_out"] - fm.clean["unembed.hook_out"])[0, -1]
    col[graph.logit_offset:] = -(dlogit[graph.logit_token_ids] - dlogit.mean())
    return col


def _check(graph, source: int, col: torch.Tensor) -> None:
    """1e-4 relative to the column's largest effect (floor: 1e-6 of the matrix's largest
    entry, the fp32 noise of an effect that is really zero)."""
    rows = list(range(graph.n_features)) + list(range(graph.logit_offset, graph.n_nodes))
    got, want = graph.adjacency_matrix[rows, source].double(), col[rows]
    scale = max(float(want.abs().max()), 1e-2 * float(graph.adjacency_matrix.abs().max()))
    assert_close(got, want, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize(("variant", "kind"), CASES)
def test_adjacency_columns_equal_frozen_forward_effects(variant, kind, tiny_models, loaded,
                                                        tmp_path):
    model = loaded[variant]
    n_layers, d = model.num_layers, model.hidden_size
    folder = (make_clt if kind == "clt" else make_plt)(tmp_path / kind, n_layers, d)
    clt = CrossLayerTranscoder.from_local(folder)
    w = raw_weights(folder, n_layers)
    ids = tiny_models[variant].input_ids[:1, :10]
    graph = attribute(model, ids, clt, max_n_logits=3, desired_logit_prob=0.99, batch_size=16)
    assert graph.n_features > 20
    model64 = mi.MIModel(copy.deepcopy(model.backend).double(), model.tokenizer)
    w = {k: [None if t is None else t.double() for t in v] for k, v in w.items()}
    fm = FrozenModel(model64, ids, clt, w)
    gen = torch.Generator().manual_seed(0)
    for i in torch.randperm(graph.n_features, generator=gen)[:3].tolist():
        layer, pos, feat = graph.active_features[graph.selected_features[i]].tolist()
        a = float(graph.activation_values[graph.selected_features[i]])
        targets = range(layer, n_layers) if clt.config.is_cross_layer else [layer]
        deltas = {}
        for t in targets:
            delta = torch.zeros(1, ids.shape[1], d, dtype=torch.float64)
            delta[0, pos] = -a * w["W_dec"][layer][feat, t - layer if clt.config.is_cross_layer
                                                   else 0]
            deltas[t] = delta
        _check(graph, i, expected_column(fm, graph, fm.run(deltas)))
    errors = fm.errors()
    for layer, pos in ((0, 3), (n_layers - 1, 7)):
        delta = torch.zeros(1, ids.shape[1], d, dtype=torch.float64)
        delta[0, pos] = -errors[layer][pos]
        source = graph.error_offset + layer * ids.shape[1] + pos
        _check(graph, source, expected_column(fm, graph, fm.run({layer: delta})))
    for pos in (0, 5):
        delta = torch.zeros(1, ids.shape[1], d, dtype=torch.float64)
        delta[0, pos] = -fm.clean["hook_embed"][0, pos]
        _check(graph, graph.token_offset + pos, expected_column(fm, graph, fm.run({}, delta)))
