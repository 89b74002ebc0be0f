"""CLI subcommands on a tiny local model (no network): output, JSON, plots, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from torch_mi.cli.main import main


@pytest.fixture(scope="module")
def tiny_dir(tiny_models):
    return str(tiny_models["llama"].path)


def run_json(capsys, argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_lens_json_and_plot(capsys, tiny_dir, tmp_path):
    png = tmp_path / "lens.png"
    data = run_json(capsys, ["lens", "Hello world", "--model", tiny_dir, "--plot", str(png)])
    assert data["n_layers"] == 2 and len(data["layers"]) == 2
    assert data["tokens"][0] == "<s>" and data["plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    top = data["layers"][-1]["predictions"][0]
    assert top["token"] == data["output"][0]["token"]  # last layer's lens = the model output
    assert top["probability"] == pytest.approx(data["output"][0]["probability"], abs=1e-6)


def test_lens_table(capsys, tiny_dir):
    assert main(["lens", "Hello", "--model", tiny_dir, "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "Logit lens" in out and "model output" in out and "first the top-1" in out


def test_lens_several_prompts(capsys, tiny_dir):
    data = run_json(capsys, ["lens", "ab", "cd", "--model", tiny_dir])
    assert [d["input"] for d in data] == ["ab", "cd"]


def test_predict(capsys, tiny_dir):
    data = run_json(capsys, ["predict", "Hello", "--model", tiny_dir, "--top-k", "4"])
    probs = [p["probability"] for p in data["predictions"]]
    assert len(probs) == 4 and probs == sorted(probs, reverse=True)
    assert data["input_ids"][0] == 1


def test_generate(capsys, tiny_dir):
    data = run_json(capsys, ["generate", "Hi", "--model", tiny_dir, "--max-new-tokens", "5",
                             "--ignore-eos"])
    assert data["generated_tokens"] == 5 and data["full_text"].startswith("<s>Hi")


def test_attention(capsys, tiny_dir, tmp_path):
    png = tmp_path / "att.png"
    data = run_json(capsys, ["attention", "Hello", "--model", tiny_dir, "--layer", "1",
                             "--plot", str(png)])
    assert data["layers"][0]["layer"] == 1 and png.exists()
    weights = [a["weight"] for a in data["layers"][0]["attended"]]
    assert weights == sorted(weights, reverse=True)


def test_inspect(capsys, tiny_dir):
    data = run_json(capsys, ["inspect", "--model", tiny_dir, "--layers", "-1"])
    assert data["config"]["model_type"] == "llama" and data["hook_points_total"] == 2 * 29 + 5
    assert ["blocks.1.attn.hook_k", ["batch", "seq", 2, 16]] in data["hook_points"]
    assert data["compatibility"].startswith("model is compatible")


@pytest.mark.parametrize(("argv", "message"), [
    (["lens", "x", "--model", "/no/such/dir"], "does not exist"),
    (["lens", "x", "--hook", "blocks.0.bogus"], "unknown lens hook"),
    (["attention", "x", "--layer", "9"], "layer 9 is out of range"),
])
def test_bad_input_is_one_line_and_non_zero(capsys, tiny_dir, argv, message):
    if "--model" not in argv:
        argv = [*argv, "--model", tiny_dir]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_installed_entry_point_fails_cleanly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "torch_mi", "lens", "x", "--model",
                             str(tmp_path / "missing.gguf")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("does not exist") and "Traceback" not in result.stderr
