"""CrossLayerTranscoder on files written in each published layout, against hand formulas.

circuit-tracer parity (golden files from its own venv) is a separate, later check.
"""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.testing import assert_close

from tests.dictionaries.clt_files import npz_path, write_clt, write_gemma_scope, write_plt
from torch_mi.dictionaries import CltFeatureId, CrossLayerTranscoder, TranscoderSchema
from torch_mi.dictionaries.clt_config import detect_schema
from torch_mi.errors import ConfigError, InterventionError
from torch_mi.hooks.points import HookPoint

L, F, D = 3, 16, 8


def _x(*shape: int, seed: int = 7) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _dense(sparse, n: int = F) -> torch.Tensor:
    return sparse.to_dense(n)


@pytest.fixture
def clt(tmp_path):
    t = write_clt(tmp_path / "clt", L, F, D)
    return CrossLayerTranscoder.from_local(tmp_path / "clt"), t


def test_detect_schema_from_listing():
    assert detect_schema(["W_enc_0.safetensors", "W_dec_0.safetensors"]) is TranscoderSchema.CLT_SPLIT
    both = ["W_enc_0.safetensors", "W_dec_0.safetensors", "layer_0.safetensors"]
    assert detect_schema(both) is TranscoderSchema.CLT_SPLIT  # CLT wins
    assert detect_schema(["layer_0.safetensors", "README.md"]) is TranscoderSchema.PLT_BUNDLE
    assert detect_schema([npz_path(0)]) is TranscoderSchema.GEMMA_SCOPE_NPZ
    with pytest.raises(ConfigError, match="unknown transcoder layout"):
        detect_schema(["model.safetensors", "cfg.json"])


def test_clt_config_and_hooks(clt):
    model, _ = clt
    c = model.config
    assert (c.schema, c.n_layers, c.d_model, c.n_features_per_layer) == (
        TranscoderSchema.CLT_SPLIT, L, D, F)
    assert c.n_features_total == L * F and c.is_cross_layer and not c.is_jump_relu
    assert c.model_name == "tiny/clt"
    assert c.input_point(1) == HookPoint.ResidMid(1)
    assert c.output_point(2) == HookPoint.MlpOut(2)


def test_clt_encode_matches_hand_formula(clt):
    model, t = clt
    x = _x(D)
    for layer in range(L):
        pre = model.encode_pre_activation(x, layer)
        assert_close(pre, t["W_enc"][layer] @ x + t["b_enc"][layer])
        acts = model.encode(x, layer)
        assert_close(_dense(acts), torch.relu(pre))  # encode == relu o pre
        values = [v for _, v in acts]
        assert values == sorted(values, reverse=True) and all(v > 0 for v in values)
        assert all(f.layer == layer for f, _ in acts)


def test_top_k_is_prefix_of_encode(clt):
    model, _ = clt
    x = _x(2, D, seed=3)[1]
    full = model.encode(x, 1)
    assert len(full) > 2
    for k in (0, 1, 2, len(full) - 1, len(full), len(full) + 5):
        top = model.top_k(x, 1, k)
        assert top.features == full.features[:k]
    with pytest.raises(InterventionError):
        model.top_k(x, 1, -1)


def test_top_k_with_ties_matches_encode(tmp_path):
    t = write_clt(tmp_path / "tie", 1, F, D)
    t["W_enc"][0][:] = 0.0
    t["b_enc"][0][:] = torch.tensor([1.0, 2.0, 2.0, 2.0] * 4)
    from safetensors.torch import save_file
    save_file({"W_enc_0": t["W_enc"][0], "b_enc_0": t["b_enc"][0], "b_dec_0": t["b_dec"][0]},
              str(tmp_path / "tie" / "W_enc_0.safetensors"))
    model = CrossLayerTranscoder.from_local(tmp_path / "tie")
    x = _x(D)
    for k in range(0, F + 1):
        assert model.top_k(x, 0, k).features == model.encode(x, 0).features[:k]


def test_stream_and_free_keeps_one_encoder(clt):
    model, _ = clt
    x = _x(D)
    model.encode(x, 0)
    ref = weakref.ref(model._encoder.weight)
    model.encode(x, 1)
    assert model.loaded_encoder_layer() == 1
    assert ref() is None  # layer 0's encoder was freed
    model.unload_encoder()
    assert model.loaded_encoder_layer() is None


def test_clt_reconstruction_is_per_layer_sum(clt):
    model, t = clt
    x = _x(L, 5, D, seed=11)
    acts = [torch.relu(x[s] @ t["W_enc"][s].T + t["b_enc"][s]) for s in range(L)]
    hand = torch.stack([sum(acts[s] @ t["W_dec"][s][:, lyr - s, :] for s in range(lyr + 1))
                        + t["b_dec"][lyr] for lyr in range(L)])
    assert_close(model.forward(x), hand)
    assert_close(model.reconstruct(dict(enumerate(acts)), 1), hand[1])
    with pytest.raises(InterventionError, match="missing"):
        model.reconstruct({1: acts[1]}, 1)


def test_clt_decoder_vectors_and_steering_cache(clt):
    model, t = clt
    f = CltFeatureId(1, 5)
    assert_close(model.decoder_vector(f, 2), t["W_dec"][1][5, 1])
    assert_close(model.decoder_vector(f), t["W_dec"][1][5, 0])
    got = model.extract_decoder_vectors([CltFeatureId(0, 3), f], 2)
    assert_close(got[CltFeatureId(0, 3)], t["W_dec"][0][3, 2])
    assert_close(got[f], t["W_dec"][1][5, 1])
    assert_close(model.decoder_slice(0, 1), t["W_dec"][0][:, 1, :])
    assert_close(model.decoder_bias(2), t["b_dec"][2])
    model.cache_steering_vectors_all_downstream([CltFeatureId(0, 1), f])
    assert model.steering_cache_len() == L + (L - 1)
    assert_close(model.steering_vector(CltFeatureId(0, 1), 2), t["W_dec"][0][1, 2])
    model.clear_steering_cache()
    assert model.steering_cache_len() == 0
    with pytest.raises(InterventionError, match="cannot write to layer 0"):
        model.decoder_vector(f, 0)
    with pytest.raises(InterventionError, match="out of range"):
        model.decoder_vector(CltFeatureId(0, F), 0)
    with pytest.raises(InterventionError, match="cache_steering_vectors"):
        model.steering_vector(f, 1)
    with pytest.raises(ConfigError, match="no skip matrix"):
        model.load_skip_matrix(0)


def test_clt_bf16_files(tmp_path):
    t = write_clt(tmp_path / "bf", 2, F, D, dtype=torch.bfloat16, jump=True)
    model = CrossLayerTranscoder.from_local(tmp_path / "bf")
    assert model.config.is_jump_relu
    x = _x(D)
    pre = t["W_enc"][1].float() @ x + t["b_enc"][1].float()
    thr = t["threshold"][1].float()
    assert_close(model.encode_pre_activation(x, 1), pre)
    assert_close(_dense(model.encode(x, 1)), pre * (pre > thr), rtol=1e-5, atol=1e-5)
    vec = model.decoder_vector(CltFeatureId(0, 2), 1)
    assert vec.dtype == torch.bfloat16 and torch.equal(vec, t["W_dec"][0][2, 1])


def test_plt_bundle_with_skip(tmp_path):
    t = write_plt(tmp_path / "plt", L, F, D, skip=True)["layers"]
    model = CrossLayerTranscoder.from_local(tmp_path / "plt")
    c = model.config
    assert c.schema is TranscoderSchema.PLT_BUNDLE and c.has_skip and not c.is_cross_layer
    x = _x(4, D, seed=5)
    p = t[2]
    acts = torch.relu(x @ p["W_enc"].T + p["b_enc"])
    assert_close(model.encode_dense(x, 2), acts)
    assert_close(model.load_skip_matrix(2), p["W_skip"])
    hand = x @ p["W_skip"].T + acts @ p["W_dec"] + p["b_dec"]  # W_skip x + W_dec f + b_dec
    assert_close(model.reconstruct({2: acts}, 2, inputs=x), hand)
    with pytest.raises(InterventionError, match="skip connection"):
        model.reconstruct({2: acts}, 2)
    model.cache_steering_vectors_all_downstream([CltFeatureId(1, 0)])
    assert model.steering_cache_len() == 1  # per-layer: only its own layer
    with pytest.raises(InterventionError, match="per-layer"):
        model.decoder_vector(CltFeatureId(1, 0), 2)
    full = torch.stack([x @ t[lyr]["W_skip"].T
                        + torch.relu(x @ t[lyr]["W_enc"].T + t[lyr]["b_enc"]) @ t[lyr]["W_dec"]
                        + t[lyr]["b_dec"] for lyr in range(L)])
    assert_close(model.forward(torch.stack([x] * L)), full)


def test_plt_jump_relu_passes_negative_above_threshold(tmp_path):
    t = write_plt(tmp_path / "pj", 1, F, D, skip=False, jump=True)["layers"][0]
    model = CrossLayerTranscoder.from_local(tmp_path / "pj")
    assert model.config.is_jump_relu and not model.config.has_skip
    x = _x(D, seed=9)
    pre = t["W_enc"] @ x + t["b_enc"]
    expected = pre * (pre > t["activation_function.threshold"])
    assert_close(model.encode_dense(x, 0), expected)


def test_gemma_scope_npz(tmp_path):
    t = write_gemma_scope(tmp_path / "gs", 2, F, D)["layers"]
    model = CrossLayerTranscoder.from_local(tmp_path / "gs")
    c = model.config
    assert c.schema is TranscoderSchema.GEMMA_SCOPE_NPZ and c.is_jump_relu
    assert (c.d_model, c.n_features_per_layer, c.n_layers) == (D, F, 2)
    assert c.input_point(1) == HookPoint.parse("blocks.1.ln2.hook_normalized")
    assert not c.input_point(1).is_custom
    x = _x(D, seed=4)
    pre = x @ t[1]["W_enc"] + t[1]["b_enc"]  # W_enc is [D, F] on disk
    assert_close(model.encode_pre_activation(x, 1), pre)
    assert_close(_dense(model.encode(x, 1)), pre * (pre > t[1]["threshold"]))
    assert_close(model.decoder_vector(CltFeatureId(0, 3)), t[0]["W_dec"][3])
    acts = pre * (pre > t[1]["threshold"])
    assert_close(model.reconstruct({1: acts}, 1), acts @ t[1]["W_dec"] + t[1]["b_dec"])


def test_transcoder_set_config(tmp_path):
    t = write_plt(tmp_path / "w", 2, F, D, skip=False)["layers"]
    cfg = tmp_path / "set" / "config.yaml"
    cfg.parent.mkdir()
    cfg.write_text("model_name: tiny\nmodel_kind: transcoder_set\n"
                   "feature_input_hook: mlp.hook_in\nfeature_output_hook: hook_mlp_out\n"
                   f"transcoders:\n  - ../w/layer_0.safetensors\n  - {tmp_path}/w/layer_1.safetensors\n")
    model = CrossLayerTranscoder.from_local(cfg)
    assert model.config.schema is TranscoderSchema.PLT_BUNDLE and model.config.n_layers == 2
    assert model.config.input_point(0) == HookPoint.MlpPre(0)  # TL mlp.hook_in
    x = _x(D)
    assert_close(model.encode_dense(x, 1), torch.relu(t[1]["W_enc"] @ x + t[1]["b_enc"]))


def test_gemma_scope_transcoder_set(tmp_path):
    t = write_gemma_scope(tmp_path / "gs", 2, F, D)["layers"]
    (tmp_path / "gs" / "config.yaml").write_text(
        "model_kind: transcoder_set\nfeature_input_hook: ln2.hook_normalized\n"
        f"transcoders:\n  - {npz_path(0)}\n  - {npz_path(1)}\n")
    model = CrossLayerTranscoder.from_local(tmp_path / "gs")
    assert model.config.schema is TranscoderSchema.GEMMA_SCOPE_NPZ
    x = _x(D)
    pre = x @ t[0]["W_enc"] + t[0]["b_enc"]
    assert_close(model.encode_dense(x, 0), pre * (pre > t[0]["threshold"]))


def test_from_pretrained_downloads_lazily(tmp_path, monkeypatch):
    """Hub path: schema from the listing; a layer file is fetched only when first used."""
    import huggingface_hub

    t = write_clt(tmp_path / "repo", L, F, D)
    fetched: list[str] = []

    def fake_list(repo_id, revision=None):
        assert repo_id == "someone/tiny-clt"
        return sorted(p.name for p in (tmp_path / "repo").iterdir())

    def fake_download(repo_id, filename, revision=None):
        fetched.append(filename)
        return str(tmp_path / "repo" / filename)

    monkeypatch.setattr(huggingface_hub, "list_repo_files", fake_list)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = CrossLayerTranscoder.from_pretrained("someone/tiny-clt")
    assert model.config.model_name == "tiny/clt"
    assert fetched == ["config.yaml", "W_enc_0.safetensors"]  # listing + sizes only
    x = _x(D)
    assert_close(model.encode_pre_activation(x, 2), t["W_enc"][2] @ x + t["b_enc"][2])
    assert "W_enc_2.safetensors" in fetched and "W_enc_1.safetensors" not in fetched

    def failing(repo_id, revision=None):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", failing)
    from torch_mi.errors import DownloadError
    with pytest.raises(DownloadError, match="cannot list"):
        CrossLayerTranscoder.from_pretrained("someone/tiny-clt")
