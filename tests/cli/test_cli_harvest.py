"""``torch-mi harvest`` and ``torch-mi harvest inspect``."""

from __future__ import annotations

import json

from torch_mi.cli.main import main
from torch_mi.harvest import ActivationStore


def test_harvest_then_inspect(tiny_models, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"document number {i} " * 5}) + "\n"
                            for i in range(12)))
    out = tmp_path / "out"
    args = ["harvest", "--data", str(data), "--points", "blocks.0.hook_resid_post,hook_embed",
            "--out", str(out), "--seq-len", "16", "--batch-size", "4", "--max-tokens", "160",
            "--model", str(tiny_models["llama"].path), "--device", "cpu", "--json"]
    assert main(args) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["tokens"] == 160 and done["status"] == "complete"
    assert ActivationStore(out).points == ["blocks.0.hook_resid_post", "hook_embed"]
    assert main(args) == 0  # a rerun keeps every verified shard
    assert json.loads(capsys.readouterr().out)["written"] == 0

    assert main(["harvest", "inspect", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["verified"] and shown["tokens"] == 160 and shown["packing"] == "pack"
    assert main(["harvest", "inspect", str(out)]) == 0
    assert "verified" in capsys.readouterr().out

    shard = out / "shard-000000.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-3] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert main(["harvest", "inspect", str(out), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["bad_shards"] == [shard.name]


def test_harvest_bad_input_is_one_line(tiny_models, tmp_path, capsys):
    model = ["--model", str(tiny_models["llama"].path), "--device", "cpu"]
    assert main(["harvest", "--points", "hook_embed", "--out", str(tmp_path / "o")]) == 1
    assert "needs --data" in capsys.readouterr().err
    assert main(["harvest", "--data", str(tmp_path / "none.txt"), "--points", "hook_embed",
                 "--out", str(tmp_path / "o"), *model]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    assert main(["harvest", "inspect", str(tmp_path)]) == 1
    assert "no harvest" in capsys.readouterr().err
    assert main(["harvest", "list", str(tmp_path)]) == 1
    assert "usage: torch-mi harvest inspect DIR" in capsys.readouterr().err
