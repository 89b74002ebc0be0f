"""CLI fixes from issue 11, on the tiny llama (no network): negative --edge values, the sign
of the knockout's logit change, ``lens --target`` in the plot, the attention grid's colour
bar, and steering vectors scaled relative to the residual norm."""

from __future__ import annotations

import json

import matplotlib.figure
import pytest
import torch

import torch_mi.plots
from torch_mi.cli.main import main
from torch_mi.interp.knockout import KnockoutSpec, run_knockout


@pytest.fixture(scope="module")
def tiny_dir(tiny_models):
    return str(tiny_models["llama"].path)


def run_json(capsys, argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ---- knockout ------------------------------------------------------------------------------
@pytest.mark.parametrize(("edge", "expected"), [("-1,3", [5, 3]), ("-1,-3", [5, 3]),
                                                ("-2,0", [4, 0])])
def test_knockout_accepts_negative_edge_positions(capsys, tiny_dir, edge, expected):
    """``--edge -1,3`` used to stop in argparse ("expected one argument")."""
    data = run_json(capsys, ["knockout", "Hello", "--model", tiny_dir, "--layer", "0",
                             "--edge", edge])  # <s> H e l l o: 6 tokens
    assert data["edge"] == expected


def test_negative_values_elsewhere_still_parse(capsys, tiny_dir):
    assert main(["knockout", "Hello", "--model", tiny_dir, "--edge", "-1,9"]) == 1
    assert "is not a causal edge" in capsys.readouterr().err
    assert main(["knockout", "Hello", "--model", tiny_dir, "--edge", "-x"]) == 2  # an option
    assert main(["attention", "Hello", "--model", tiny_dir, "--position", "-2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["query_position"] == 4


def test_knockout_logit_change_reads_ablated_minus_baseline(capsys, tiny_dir, loaded):
    model = loaded["llama"]
    data = run_json(capsys, ["knockout", "Hello", "--model", tiny_dir, "--layer", "1",
                             "--edge", "5,0", "--target", "x"])
    result = run_knockout(model, model.encode("Hello")[0], KnockoutSpec().layer(1).edge(5, 0))
    tid = ord("x")
    assert data["target_id"] == tid and "target_logit_diff" not in data
    expected = float(result.other_logits.reshape(-1)[tid] - result.baseline_logits.reshape(-1)[tid])
    assert data["target_logit_change"] == pytest.approx(expected, abs=1e-6)
    assert abs(expected) > 1e-6  # the sign is observable
    assert main(["knockout", "Hello", "--model", tiny_dir, "--layer", "1", "--edge", "5,0",
                 "--target", "x"]) == 0
    assert f"logit change, ablated - baseline: {expected:+.4f}" in capsys.readouterr().out


def test_knockout_target_of_several_tokens_is_refused(capsys, tiny_dir):
    """The target used to resolve silently to its last sub-token."""
    assert main(["knockout", "Hello", "--model", tiny_dir, "--target", "Paris"]) == 1
    assert "'Paris' is not a single token" in capsys.readouterr().err


# ---- lens --target ---------------------------------------------------------------------------
def _hf_lens_probs(tiny, ids, token_id):
    """HF oracle [L, S]: P(token) from each layer's output through the final norm and
    unembedding (the last layer: the model's own logits)."""
    hf = tiny.hf_copy()
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        inner = [hf.lm_head(hf.model.norm(h)) for h in out.hidden_states[1:-1]]
        logits = torch.stack([*inner, out.logits])[:, 0]  # [L, S, V]
    return torch.softmax(logits.float(), dim=-1)[..., token_id]


def test_lens_target_changes_the_plot(capsys, monkeypatch, tmp_path, tiny_models, loaded,
                                      tiny_dir):
    drawn = []
    original = torch_mi.plots.plot_heatmap

    def record(matrix, *args, **kwargs):
        drawn.append((matrix.clone(), kwargs.get("title", "")))
        return original(matrix, *args, **kwargs)

    monkeypatch.setattr(torch_mi.plots, "plot_heatmap", record)
    png = tmp_path / "lens.png"
    for target in (None, "x", "e"):
        argv = ["lens", "Hello", "--model", tiny_dir, "--plot", str(png)]
        run_json(capsys, argv + ([] if target is None else ["--target", target]))
    (top1, _), (grid_x, title_x), (grid_e, _) = drawn
    ids = loaded["llama"].encode("Hello")
    tiny = tiny_models["llama"]
    torch.testing.assert_close(grid_x, _hf_lens_probs(tiny, ids, ord("x")), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grid_e, _hf_lens_probs(tiny, ids, ord("e")), atol=1e-5, rtol=1e-4)
    assert "P('x')" in title_x and not torch.allclose(top1, grid_x)
    assert main(["lens", "Hello", "--model", tiny_dir, "--target", "Paris"]) == 1
    assert "'Paris' is not a single token" in capsys.readouterr().err


# ---- attention grid colour bar ---------------------------------------------------------------
def test_attention_grid_has_a_colour_bar(capsys, monkeypatch, tmp_path, tiny_dir):
    saved = []
    original = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        saved.append(fig)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    png = tmp_path / "att.png"
    run_json(capsys, ["attention", "Hello", "--model", tiny_dir, "--layer", "1", "--plot", str(png)])
    (fig,) = saved
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "attention weight" in bars[0].get_ylabel()
    assert bars[0].get_ylim() == (0.0, 1.0)
    assert png.read_bytes()[:4] == b"\x89PNG"


# ---- steering vectors: relative scale --------------------------------------------------------
def test_steer_relative_scale(capsys, tiny_dir, loaded):
    argv = ["steer", "Hi", "--model", tiny_dir, "--positive", "love", "--negative", "hate",
            "--max-new-tokens", "3", "--layer", "0", "--scale", "0.5"]
    rel = run_json(capsys, [*argv, "--scale-mode", "relative"])
    assert rel["scale_mode"] == "relative"
    assert rel["added_norm_over_residual_norm"] == pytest.approx(0.5)
    absolute = run_json(capsys, argv)
    assert absolute["scale_mode"] == "absolute"
    assert absolute["added_norm_over_residual_norm"] == pytest.approx(
        0.5 * absolute["vector_norm"] / absolute["residual_norm"])
    model = loaded["llama"]
    resid = model.forward(model.encode("Hi"),
                          torch_mi.HookSpec().capture("blocks.0.hook_resid_post"))
    norm = float(resid["blocks.0.hook_resid_post"][0].norm(dim=-1).mean())
    assert rel["residual_norm"] == pytest.approx(norm, rel=1e-5)
    assert main([*argv, "--scale-mode", "huge"]) == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err
