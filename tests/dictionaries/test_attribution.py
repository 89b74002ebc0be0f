"""Seed attribution (decoder-projection scoring) against hand formulas on the written files."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tests.dictionaries.clt_files import write_clt, write_gemma_scope, write_plt
from torch_mi.dictionaries import (
    AttributionEdge,
    AttributionGraph,
    CltFeatureId,
    CrossLayerTranscoder,
    SaeConfig,
    SaeFeatureId,
    SparseAutoencoder,
    build_attribution_graph,
    build_attribution_graph_batch,
    rank_features_max_over_targets,
    score_features_by_decoder_projection,
    score_features_by_decoder_projection_batch,
)
from torch_mi.errors import InterventionError

L, F, D = 3, 16, 8


@pytest.fixture(scope="module")
def clt(tmp_path_factory):
    root = tmp_path_factory.mktemp("clt")
    t = write_clt(root, L, F, D)
    return CrossLayerTranscoder.from_local(root), t


@pytest.fixture(scope="module")
def plt_(tmp_path_factory):
    root = tmp_path_factory.mktemp("plt")
    t = write_plt(root, L, F, D)
    return CrossLayerTranscoder.from_local(root), t


def _sae(W_dec: torch.Tensor, hook: str = "blocks.1.hook_resid_post") -> SparseAutoencoder:
    f, d = W_dec.shape
    cfg = SaeConfig(d_in=d, d_sae=f, hook_name=hook)
    return SparseAutoencoder(cfg, {"W_enc": torch.zeros(d, f), "W_dec": W_dec,
                                   "b_enc": torch.zeros(f), "b_dec": torch.zeros(d)})


def _hand(t: dict, target: int, direction: torch.Tensor, cosine: bool = False) -> dict:
    """{feature: W_dec_s[f, target-s] . direction} for every s <= target (hand formula)."""
    out = {}
    u = direction / direction.norm() if cosine else direction
    for s in range(target + 1):
        rows = t["W_dec"][s][:, target - s, :]
        for i in range(F):
            score = float(rows[i] @ u)
            out[CltFeatureId(s, i)] = score / float(rows[i].norm()) if cosine else score
    return out


@pytest.mark.parametrize("cosine", [False, True])
def test_clt_scores_equal_hand_formula(clt, cosine):
    model, t = clt
    direction = torch.randn(D, generator=torch.Generator().manual_seed(5))
    got = score_features_by_decoder_projection(model, direction, 2, cosine=cosine)
    want = _hand(t, 2, direction, cosine)
    assert len(got) == 3 * F and {f for f, _ in got} == set(want)
    assert_close(torch.tensor([s for _, s in got]), torch.tensor([want[f] for f, _ in got]),
                 rtol=1e-5, atol=1e-6)
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)
    # the seed's top_k keeps the first k of the full ranking
    top = score_features_by_decoder_projection(model, direction, 2, top_k=5, cosine=cosine)
    assert top == got[:5]
    # target 0: only source layer 0 at offset 0
    only0 = score_features_by_decoder_projection(model, direction, 0)
    assert {f.layer for f, _ in only0} == {0} and len(only0) == F


def test_unembedding_column_direction_picks_aligned_feature(tmp_path):
    """An SAE whose feature 3 writes exactly a token's unembedding column ranks it first."""
    gen = torch.Generator().manual_seed(0)
    W_U = torch.randn(D, 11, generator=gen)  # [D, vocab]
    W_dec = torch.randn(F, D, generator=gen) * 0.1
    W_dec[3] = W_U[:, 7] * 2.0
    sae = _sae(W_dec)
    graph = build_attribution_graph(sae, W_U[:, 7], cosine=True)
    assert graph.target_layer == 1
    assert graph[0].feature == SaeFeatureId(3)
    assert graph[0].score == pytest.approx(1.0, abs=1e-6)
    raw = build_attribution_graph(sae, W_U[:, 7])
    assert_close(torch.tensor([e.score for e in raw]),
                 torch.stack([W_dec[e.feature.index] @ W_U[:, 7] for e in raw]))


def test_per_layer_schemas_use_only_the_target_layer(plt_, tmp_path):
    model, t = plt_
    direction = torch.randn(D, generator=torch.Generator().manual_seed(1))
    got = score_features_by_decoder_projection(model, direction, 1)
    assert {f.layer for f, _ in got} == {1}
    want = t["layers"][1]["W_dec"] @ direction
    assert_close(torch.tensor([s for _, s in got]), want[[f.index for f, _ in got]])
    write_gemma_scope(tmp_path / "gs")
    gs = CrossLayerTranscoder.from_local(tmp_path / "gs")
    got = score_features_by_decoder_projection(gs, torch.ones(D), 0, top_k=3)
    assert len(got) == 3 and {f.layer for f, _ in got} == {0}


def test_batch_equals_single(clt):
    model, _ = clt
    gen = torch.Generator().manual_seed(2)
    dirs = [torch.randn(D, generator=gen) for _ in range(3)]
    batch = score_features_by_decoder_projection_batch(model, dirs, 1, top_k=7, cosine=True)
    singles = [score_features_by_decoder_projection(model, d, 1, top_k=7, cosine=True)
               for d in dirs]
    for got, want in zip(batch, singles, strict=True):  # same ranking, scores to fp32 rounding
        assert [f for f, _ in got] == [f for f, _ in want]
        assert_close(torch.tensor([s for _, s in got]), torch.tensor([s for _, s in want]))
    graphs = build_attribution_graph_batch(model, dirs, 1)
    assert [len(g) for g in graphs] == [2 * F] * 3 and all(g.target_layer == 1 for g in graphs)


def test_ties_and_nonfinite_are_deterministic():
    W_dec = torch.zeros(6, 4)
    W_dec[[1, 4, 2], 0] = 1.0  # three features tie at score 1
    W_dec[5, 0] = float("nan")  # dropped
    graph = build_attribution_graph(_sae(W_dec), torch.tensor([1.0, 0, 0, 0]))
    assert [e.feature.index for e in graph] == [1, 2, 4, 0, 3]
    assert [e.score for e in graph] == [1.0, 1.0, 1.0, 0.0, 0.0]
    # a zero direction with cosine: the direction is left as is (norm <= 1e-10), scores 0
    zero = build_attribution_graph(_sae(W_dec), torch.zeros(4), cosine=True)
    assert all(e.score == 0.0 for e in zero)


def test_graph_methods():
    edges = [AttributionEdge(CltFeatureId(0, i), s, 2) for i, s in enumerate([0.5, -3.0, 2.0, 0.1])]
    g = AttributionGraph(2, edges)
    assert [e.score for e in g.edges] == [2.0, 0.5, 0.1, -3.0]
    assert len(g) == 4 and not g.is_empty() and g.target_layer == 2
    assert g.top_k(2).features() == [CltFeatureId(0, 2), CltFeatureId(0, 0)]
    assert g.threshold(0.5).features() == [CltFeatureId(0, 2), CltFeatureId(0, 0),
                                           CltFeatureId(0, 1)]  # |score| >= 0.5
    assert g.top_k(0).is_empty() and g.threshold(10).is_empty()
    assert g.into_edges() == g.edges
    d = g.to_dict()
    assert d["target_layer"] == 2 and d["edges"][0] == {
        "feature": str(CltFeatureId(0, 2)), "layer": 0, "index": 2, "score": 2.0,
        "target_layer": 2}
    with pytest.raises(InterventionError, match="k must be"):
        g.top_k(-1)
    with pytest.raises(InterventionError, match="finite"):
        g.threshold(float("nan"))


def test_max_over_target_layers(clt):
    model, t = clt
    direction = torch.randn(D, generator=torch.Generator().manual_seed(9))
    got = rank_features_max_over_targets(model, direction)
    assert len(got) == L * F
    u = direction / direction.norm()
    for edge in got[:10] + got[-3:]:
        s, i = edge.feature.layer, edge.feature.index
        cos = [float(t["W_dec"][s][i, o] @ u / t["W_dec"][s][i, o].norm())
               for o in range(L - s)]
        assert edge.score == pytest.approx(max(cos), abs=1e-5)
        assert edge.target_layer == s + cos.index(max(cos))
    scores = [e.score for e in got]
    assert scores == sorted(scores, reverse=True)
    assert rank_features_max_over_targets(model, direction, top_k=4) == got[:4]
    only = rank_features_max_over_targets(model, direction, source_layers=[2])
    assert {e.feature.layer for e in only} == {2} and all(e.target_layer == 2 for e in only)


def test_errors_are_typed(clt):
    model, _ = clt
    with pytest.raises(InterventionError, match=r"\[8\]"):
        score_features_by_decoder_projection(model, torch.ones(D + 1), 1)
    with pytest.raises(InterventionError, match=r"\[8\]"):
        score_features_by_decoder_projection(model, torch.ones(1, D), 1)
    with pytest.raises(InterventionError, match="out of range"):
        score_features_by_decoder_projection(model, torch.ones(D), L)
    with pytest.raises(InterventionError, match="target_layer"):
        score_features_by_decoder_projection(model, torch.ones(D))
    with pytest.raises(InterventionError, match="top_k"):
        score_features_by_decoder_projection(model, torch.ones(D), 0, top_k=-2)
    with pytest.raises(InterventionError, match="no directions"):
        score_features_by_decoder_projection_batch(model, [], 0)
    with pytest.raises(InterventionError, match="writes at layer 1"):
        score_features_by_decoder_projection(_sae(torch.ones(4, D)), torch.ones(D), 0)
    with pytest.raises(InterventionError, match="CrossLayerTranscoder"):
        rank_features_max_over_targets(_sae(torch.ones(4, D)), torch.ones(D))
    with pytest.raises(InterventionError, match="SparseAutoencoder or CrossLayerTranscoder"):
        build_attribution_graph(object(), torch.ones(D))  # type: ignore[arg-type]
