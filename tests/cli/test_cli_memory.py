"""``torch-mi memory`` on a tiny local model: JSON, table, plot and one-line errors."""

from __future__ import annotations

import json

import pytest

from torch_mi.cli import main as cli_main
from torch_mi.cli.commands import memory as memory_cmd


@pytest.fixture()
def cli(monkeypatch, tiny_models):
    """``main`` with the memory subcommand registered; the glibc mmap threshold is left alone
    so the rest of the test session keeps its allocator settings."""
    calls = []
    monkeypatch.setattr(memory_cmd, "fix_malloc_mmap_threshold", lambda: calls.append(1) or True)
    model = str(tiny_models["llama"].path)

    def run(*argv: str) -> int:
        return cli_main.main(["memory", *argv, "--model", model, "--device", "cpu"])

    run.allocator_calls = calls
    return run


def test_json_has_estimate_and_measured(cli, capsys):
    assert cli("Hello", "--capture", "all", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["seq_len"] == 6 and data["batch"] == 1  # <s> + 5 bytes
    estimate, measured = data["estimate"], data["measured"]
    assert set(estimate["breakdown_bytes"]) == {"weights", "captures", "logits", "transient"}
    assert estimate["num_captures"] == 2 * 29 + 5  # 29 points per layer (GQA) + 5 model-wide
    assert estimate["explicit_attention_layers"] == [0, 1]
    assert sum(estimate["breakdown_bytes"].values()) == estimate["total_bytes"]
    assert measured["compared_with"] == "ram" and measured["forward_peak_bytes"] >= 0
    assert isinstance(measured["estimate_error_pct"], float) or measured["forward_peak_bytes"] == 0
    assert measured["report"]["before"]["ram_bytes"] > 0 and measured["peak_method"]
    assert cli.allocator_calls == [1]


def test_synthetic_batch_and_presets(cli, capsys):
    assert cli("--seq-len", "40", "--batch", "3", "--capture", "attn", "--hook",
               "blocks.0.hook_resid_post", "--no-run", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["batch"], data["seq_len"], data["measured"]) == (3, 40, None)
    points = data["estimate"]["per_point_bytes"]
    assert points["blocks.1.attn.hook_pattern"] == 3 * 4 * 40 * 40 * 4
    assert sorted(points) == ["blocks.0.attn.hook_pattern", "blocks.0.hook_resid_post",
                              "blocks.1.attn.hook_pattern"]
    assert cli("--seq-len", "8", "--capture", "resid", "--no-run", "--json") == 0
    resid = json.loads(capsys.readouterr().out)["estimate"]["per_point_bytes"]
    assert len(resid) == 2 * 3 and all("resid" in name for name in resid)


def test_table_and_plot(cli, capsys, tmp_path):
    png = tmp_path / "memory.png"
    assert cli("--seq-len", "16", "--capture", "all", "--plot", str(png)) == 0
    out = capsys.readouterr().out
    assert "estimate (MB)" in out and "forward" in out and "peak" in out
    assert "estimate vs measured" in out and "explicit attention path" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("argv", "message"), [
    (("--hook", "blocks.9.hook_resid_post"), "layer 9 is out of range"),
    (("--hook", "blocks.0.hook_resid_pots"), "Did you mean"),
    (("Hi", "--seq-len", "4"), "not both"),
    (("--seq-len", "0"), "--seq-len must be >= 1"),
    (("--batch", "0"), "--batch must be >= 1"),
])
def test_errors_are_one_line(cli, capsys, argv, message):
    assert cli(*argv, "--no-run") == 1
    err = capsys.readouterr().err
    assert err.startswith("torch-mi memory: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
