"""The CLI on tiny random RWKV models with a world vocabulary: an HF folder (v6) and a
BlinkDL ``.pth`` (v7), through lens, predict, generate, inspect, memory and state-knockout."""

from __future__ import annotations

import json

import pytest
import torch

import torch_mi as mi
from tests.helpers.rwkv_world import write_world_model
from torch_mi.cli.main import main
from torch_mi.hooks.state import StateKnockoutSpec
from torch_mi.interp.rwkv_state import run_state_knockout

PROMPT = "Hello the world"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_rwkv")
    return {"v6": str(write_world_model("v6", root / "v6")),
            "v7": str(write_world_model("v7", root / "v7", pth=True))}


@pytest.fixture(scope="module")
def models(paths):
    return {v: mi.MIModel.from_pretrained(p, device="cpu") for v, p in paths.items()}


@pytest.fixture(params=["v6", "v7"])
def version(request):
    return request.param


def run_json(capsys, argv):
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_predict_matches_the_model(capsys, paths, models, version):
    data = run_json(capsys, ["predict", PROMPT, "--model", paths[version], "--top-k", "5"])
    model = models[version]
    ids = model.tokenizer.encode(PROMPT)
    assert data["input_ids"] == ids  # the world tokenizer adds no BOS
    logits = model.forward(torch.tensor([ids])).output()[0, -1]
    top = logits.topk(5)
    assert [p["token_id"] for p in data["predictions"]] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor([p["logit"] for p in data["predictions"]]),
                               top.values, rtol=0, atol=1e-5)


def test_lens_last_layer_is_the_output(capsys, paths, models, version, tmp_path):
    png = tmp_path / "lens.png"
    data = run_json(capsys, ["lens", PROMPT, "--model", paths[version], "--plot", str(png)])
    assert data["n_layers"] == models[version].num_layers == len(data["layers"])
    top = data["layers"][-1]["predictions"][0]
    assert top["token"] == data["output"][0]["token"]
    assert top["probability"] == pytest.approx(data["output"][0]["probability"], abs=1e-6)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generate_cached_equals_recompute(capsys, paths, version):
    argv = ["generate", PROMPT, "--model", paths[version], "--max-new-tokens", "12",
            "--ignore-eos"]
    cached = run_json(capsys, argv)
    again = run_json(capsys, [*argv, "--recompute"])
    assert cached["generated_tokens"] == 12 and cached["token_ids"] == again["token_ids"]
    assert cached["full_text"].startswith(PROMPT)
    sampled = run_json(capsys, [*argv, "--temperature", "1.0", "--seed", "3"])
    assert sampled["token_ids"] == run_json(capsys, [*argv, "--temperature", "1.0",
                                                     "--seed", "3"])["token_ids"]


def test_inspect(capsys, paths, models, version):
    data = run_json(capsys, ["inspect", "--model", paths[version], "--layers", "-1"])
    model = models[version]
    assert data["config"]["version"].startswith("RWKV-" + version[1])
    assert data["hook_points_total"] == len(model.hook_points())
    heads, d = model.num_heads, model.config.head_dim
    assert ["blocks.2.rwkv.hook_state", ["batch", heads, d, d]] in data["hook_points"]
    assert data["compatibility"].startswith("model is compatible with GenericRwkv")


def test_memory_estimate_and_measurement(capsys, paths, version):
    est = run_json(capsys, ["memory", "--model", paths[version], "--seq-len", "32",
                            "--capture", "resid", "--no-run"])
    assert est["measured"] is None
    e = est["estimate"]
    assert e["breakdown_bytes"]["logits"] == 32 * 320 * 4  # [1, 32, V=320] fp32
    hidden = 128 if version == "v6" else 256
    assert e["per_point_bytes"]["blocks.0.hook_resid_post"] == 32 * hidden * 4
    assert e["num_captures"] == 3 * 3 and e["breakdown_bytes"]["captures"] == 9 * 32 * hidden * 4
    ran = run_json(capsys, ["memory", PROMPT, "--model", paths[version], "--capture", "all"])
    assert ran["measured"]["forward_peak_bytes"] is not None


def test_memory_table_names_the_rwkv_estimate(capsys, paths):
    assert main(["memory", "--model", paths["v6"], "--seq-len", "16", "--no-run"]) == 0
    assert "simple estimate for GenericRwkv" in capsys.readouterr().out


def test_state_knockout(capsys, paths, models, version, tmp_path):
    png = tmp_path / "sk.png"
    data = run_json(capsys, ["state-knockout", PROMPT, "--model", paths[version],
                             "--positions", "0,1", "--top-k", "4", "--plot", str(png)])
    model = models[version]
    ids = model.tokenizer.encode(PROMPT)
    expected = run_state_knockout(model, ids, StateKnockoutSpec().positions([0, 1]))
    assert data["kl_divergence"] == pytest.approx(expected.kl_divergence(), rel=1e-9)
    assert data["kl_divergence"] > 0 and len(data["top_changed"]) == 4
    assert len(data["per_layer_kl"]) == model.num_layers
    one = run_state_knockout(model, ids, StateKnockoutSpec().positions([0, 1]).layer(1))
    assert data["per_layer_kl"][1] == pytest.approx(one.kl_divergence(), rel=1e-9)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["state-knockout", PROMPT, "--model", paths[version], "--layers", "-1"]) == 0
    assert "per-layer effect" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["state-knockout", PROMPT, "--positions", "99"], "--positions: [99] out of range"),
    (["state-knockout", PROMPT, "--layers", "7"], "--layers: [7] out of range"),
    (["state-knockout", PROMPT, "--top-k", "0"], "--top-k"),
    (["state-knockout", PROMPT, "--positions", "a"], "--positions"),
])
def test_state_knockout_bad_input_is_one_line(capsys, paths, argv, message):
    assert main([*argv, "--model", paths["v6"]]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_state_knockout_refuses_a_transformer(capsys, tiny_models):
    argv = ["state-knockout", "Hello", "--model", str(tiny_models["llama"].path)]
    assert main(argv) == 1
    assert "needs an RWKV model" in capsys.readouterr().err
