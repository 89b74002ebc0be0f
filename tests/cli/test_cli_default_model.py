"""The CLI on the embedded default model (SmolLM2-135M-Instruct), no --model given."""

from __future__ import annotations

import json
import re

import pytest

from torch_mi.cli.main import main

PROMPT = "The capital of France is"


def run_json(capsys, argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_lens_table_ends_in_paris_and_plots(capsys, tmp_path):
    png = tmp_path / "lens.png"
    assert main(["lens", PROMPT, "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"^│\s+\d+ │", line)]
    assert len(rows) == 30 and "' Paris'" in rows[-1]
    assert "model output: ' Paris'" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_lens_json(capsys):
    data = run_json(capsys, ["lens", PROMPT])
    assert data["layers"][-1]["predictions"][0]["token"] == " Paris"
    assert data["output"][0]["probability"] == pytest.approx(0.7725, abs=0.01)
    assert isinstance(data["first_top1"], int)


def test_predict_generate_attention_inspect(capsys, tmp_path):
    pred = run_json(capsys, ["predict", PROMPT, "--top-k", "5"])
    assert pred["predictions"][0]["token"] == " Paris"
    gen = run_json(capsys, ["generate", PROMPT, "--max-new-tokens", "8"])
    assert gen["generated_text"].startswith(" Paris")
    att = run_json(capsys, ["attention", PROMPT, "--layer", "-1", "--plot", str(tmp_path / "a.png")])
    assert att["layers"][0]["layer"] == 29 and (tmp_path / "a.png").exists()
    info = run_json(capsys, ["inspect"])
    # 5 model-wide points, 29 per layer (GQA: no hook_attn_in; no post-norms or QK-norm)
    assert info["config"]["num_layers"] == 30 and info["hook_points_total"] == 5 + 30 * 29


def test_knockout_steer_patch_memory(capsys, tmp_path):
    ko = run_json(capsys, ["knockout", PROMPT])
    assert ko["layer"] == 15 and ko["edge"] == [4, 0] and ko["kl_divergence"] > 0
    steer = run_json(capsys, ["steer", PROMPT, "--doses", "1,2,4"])
    assert [p["scale"] for p in steer["points"]] == [1.0, 2.0, 4.0]
    patch = run_json(capsys, ["patch", PROMPT, "The capital of Poland is", "--plot",
                              str(tmp_path / "p.png")])
    assert patch["answer"] == " Paris" and (tmp_path / "p.png").exists()
    memory = run_json(capsys, ["memory", PROMPT, "--capture", "all"])
    assert memory["estimate"]["total_bytes"] > 500e6


def test_bad_layer_on_the_default_model_is_one_line(capsys):
    assert main(["attention", PROMPT, "--layer", "30"]) == 1
    err = capsys.readouterr().err
    assert "layer 30 is out of range" in err and err.count("\n") == 1
