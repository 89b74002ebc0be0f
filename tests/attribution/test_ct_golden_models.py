"""The circuit-tracer attribution golden models load here as the identical weights.

tests/golden/circuit_tracer_attribution/ was written by circuit-tracer 0.5.0 with
transformers 4.57.3 (tests/oracles/circuit_tracer_attribution_golden.py); its README
describes every file. These checks pin the premise of the attribution parity tests: our
loader and transformers 5 reproduce the logits stored from the other venv, and
circuit-tracer's own Gemma-3 replacement model does not (its shared-RoPE bug).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import torch_mi as mi
from torch_mi.errors import MIError

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "circuit_tracer_attribution"
TOKENS = json.loads((GOLDEN / "meta.json").read_text())["tokens"]
CASES = {"model": "llama_logits", "gemma3": "gemma3_logits"}


def test_golden_folder_is_small_and_complete():
    size = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file())
    assert size < 3 << 20
    for run in ("clt_full", "clt_capped", "plt_full", "plt_capped"):
        assert (GOLDEN / f"{run}.safetensors").is_file()
        assert (GOLDEN / "neuronpedia" / f"{run}.json").is_file()
    assert "circuit-tracer 0.5.0" in (GOLDEN / "VERSION").read_text()


@pytest.mark.parametrize("folder", sorted(CASES))
def test_mimodel_logits_equal_circuit_tracer_venv_hf_logits(folder: str):
    ref = load_file(str(GOLDEN / f"{CASES[folder]}.safetensors"))["hf_logits"]  # [S,V]
    model = mi.MIModel.from_pretrained(GOLDEN / folder, device="cpu")
    with torch.no_grad():
        logits = model.forward(torch.tensor([TOKENS])).output()[0]
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-4)
    assert model.encode("The cat")[0].tolist() == TOKENS[1:]


def test_replacement_logits_match_hf_for_llama_but_not_gemma3():
    llama = load_file(str(GOLDEN / "llama_logits.safetensors"))
    for case in ("clt", "plt"):
        torch.testing.assert_close(llama[f"{case}_replacement_logits"], llama["hf_logits"],
                                   rtol=1e-5, atol=1e-4)
    gemma = load_file(str(GOLDEN / "gemma3_logits.safetensors"))
    torch.testing.assert_close(gemma["tl_logits"], gemma["hf_logits"], rtol=1e-5, atol=1e-4)
    with pytest.raises(AssertionError):  # circuit-tracer's TL backend: one RoPE for all layers
        torch.testing.assert_close(gemma["ct_replacement_logits"], gemma["hf_logits"],
                                   rtol=1e-3, atol=1e-2)


def test_golden_model_with_a_mismatched_config_is_refused(tmp_path):
    """A copy whose config disagrees with its weights fails typed, not with garbage logits."""
    folder = tmp_path / "model"
    shutil.copytree(GOLDEN / "model", folder)
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = 48
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MIError):
        mi.MIModel.from_pretrained(folder, device="cpu")
