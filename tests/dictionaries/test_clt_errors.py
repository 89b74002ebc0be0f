"""Bad transcoder input -> typed, actionable errors; nothing is ever unpickled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.dictionaries.clt_files import npz_path, write_clt, write_gemma_scope, write_plt
from torch_mi.dictionaries import CltFeatureId, CrossLayerTranscoder
from torch_mi.errors import ConfigError, InterventionError, MIError, WeightError

F, D = 16, 8
MARKER: list[str] = []


class _Evil:
    """Unpickling this would append to MARKER (and could have run anything)."""

    def __reduce__(self):
        return (MARKER.append, ("unpickled",))


def test_missing_layer_files(tmp_path):
    write_clt(tmp_path / "a", 3, F, D)
    (tmp_path / "a" / "W_dec_1.safetensors").unlink()
    with pytest.raises(WeightError, match=r"W_dec_\{l\}.*missing for layers \[1\]"):
        CrossLayerTranscoder.from_local(tmp_path / "a")
    write_clt(tmp_path / "b", 3, F, D)
    (tmp_path / "b" / "W_enc_1.safetensors").unlink()
    with pytest.raises(WeightError, match=r"missing for layers \[1\]"):
        CrossLayerTranscoder.from_local(tmp_path / "b")
    write_plt(tmp_path / "c", 3, F, D)
    (tmp_path / "c" / "layer_0.safetensors").unlink()
    with pytest.raises(WeightError, match=r"missing for layers \[0\]"):
        CrossLayerTranscoder.from_local(tmp_path / "c")


def test_missing_file_named_in_transcoder_set(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "model_kind: transcoder_set\ntranscoders:\n  - nope/layer_0.safetensors\n")
    with pytest.raises(WeightError, match="does not exist"):
        CrossLayerTranscoder.from_local(tmp_path / "config.yaml")


def test_shape_mismatch_between_layers(tmp_path):
    write_clt(tmp_path / "a", 2, F, D)
    save_file({"W_enc_1": torch.zeros(F, D + 1), "b_enc_1": torch.zeros(F),
               "b_dec_1": torch.zeros(D + 1)}, str(tmp_path / "a" / "W_enc_1.safetensors"))
    with pytest.raises(WeightError, match=r"layer 1: W_enc_1 .* shape \(16, 9\)"):
        CrossLayerTranscoder.from_local(tmp_path / "a")
    write_clt(tmp_path / "b", 2, F, D)
    save_file({"W_dec_0": torch.zeros(F, 1, D)}, str(tmp_path / "b" / "W_dec_0.safetensors"))
    with pytest.raises(WeightError, match=r"W_dec_0 .* expected \(16, 2, 8\)"):
        CrossLayerTranscoder.from_local(tmp_path / "b")


def test_jump_relu_threshold_missing(tmp_path):
    write_gemma_scope(tmp_path / "gs", 1, F, D, threshold=False)
    with pytest.raises(WeightError, match="threshold"):
        CrossLayerTranscoder.from_local(tmp_path / "gs")
    write_clt(tmp_path / "c", 2, F, D, jump=True)
    save_file({"W_enc_1": torch.zeros(F, D), "b_enc_1": torch.zeros(F), "b_dec_1": torch.zeros(D)},
              str(tmp_path / "c" / "W_enc_1.safetensors"))
    with pytest.raises(WeightError, match="JumpReLU transcoder without 'threshold_1'"):
        CrossLayerTranscoder.from_local(tmp_path / "c")


def test_pickle_bearing_npz_is_refused_without_unpickling(tmp_path):
    write_gemma_scope(tmp_path / "gs", 1, F, D)
    path = tmp_path / "gs" / npz_path(0)
    arrays = dict(np.load(path))
    arrays["extra"] = np.array([_Evil()], dtype=object)
    np.savez(path, **arrays)
    MARKER.clear()
    with pytest.raises(WeightError, match="Python objects"):
        CrossLayerTranscoder.from_local(tmp_path / "gs")
    assert MARKER == []


def test_pickle_files_refused(tmp_path):
    (tmp_path / "p").mkdir()
    torch.save({"W_enc": torch.zeros(2)}, tmp_path / "p" / "transcoder.pt")
    with pytest.raises(WeightError, match="never unpickles"):
        CrossLayerTranscoder.from_local(tmp_path / "p")
    (tmp_path / "config.yaml").write_text(
        "model_kind: transcoder_set\ntranscoders:\n  - p/transcoder.pt\n")
    with pytest.raises(WeightError, match="pickle"):
        CrossLayerTranscoder.from_local(tmp_path / "config.yaml")
    (tmp_path / "fake").mkdir()
    fake = tmp_path / "fake" / npz_path(0)
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"\x80\x04K\x01.")  # a pickle, named params.npz
    with pytest.raises(WeightError, match="not a readable NPZ"):
        CrossLayerTranscoder.from_local(tmp_path / "fake")


def test_unknown_schema_and_bad_configs(tmp_path):
    (tmp_path / "u").mkdir()
    save_file({"W": torch.zeros(2)}, str(tmp_path / "u" / "model.safetensors"))
    with pytest.raises(ConfigError, match="unknown transcoder layout"):
        CrossLayerTranscoder.from_local(tmp_path / "u")
    with pytest.raises(WeightError, match="does not exist"):
        CrossLayerTranscoder.from_local(tmp_path / "nowhere")
    cases = {
        "- a\n- b\n": "mapping",
        "model_kind: sae\n": "not supported",
        "model_kind: transcoder_set\n": "non-empty 'transcoders:'",
        "model_kind: transcoder_set\ntranscoders: [a.npz, b.safetensors]\n": "suffixes",
        "model_kind: transcoder_set\ntranscoders: [a.safetensors]\nfeature_input_hook: 3\n":
            "feature_input_hook",
        "a: [\n": "not valid YAML",
    }
    for i, (text, message) in enumerate(cases.items()):
        cfg = tmp_path / f"c{i}.yaml"
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=message):
            CrossLayerTranscoder.from_local(cfg)


def test_bad_call_arguments(tmp_path):
    write_clt(tmp_path / "a", 2, F, D)
    model = CrossLayerTranscoder.from_local(tmp_path / "a")
    x = torch.randn(D)
    with pytest.raises(InterventionError, match="d_model=8"):
        model.encode(torch.randn(D + 1), 0)
    with pytest.raises(InterventionError, match="ONE position"):
        model.encode(torch.randn(2, D), 0)
    with pytest.raises(InterventionError, match="out of range"):
        model.encode(x, 2)
    with pytest.raises(InterventionError, match="out of range"):
        model.encode_pre_activation(x, -1)
    with pytest.raises(InterventionError, match="activations must be"):
        model.reconstruct({0: torch.zeros(F + 1)}, 0)
    with pytest.raises(InterventionError, match="all 2 layers"):
        model.forward(torch.zeros(3, 1, D))
    with pytest.raises(InterventionError, match="CltFeatureId"):
        model.decoder_vector("L0:1", 0)  # type: ignore[arg-type]
    model.encode(x, 1)
    with pytest.raises(MIError):  # a failed call leaves the resident encoder as it was
        model.encode(x, 5)
    assert model.loaded_encoder_layer() == 1
    with pytest.raises(InterventionError):
        model.cache_steering_vectors([(CltFeatureId(1, 0), 0)])
    assert model.steering_cache_len() == 0
