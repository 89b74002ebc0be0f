"""Gemma Scope NPZ and sparsify folders written to their published layouts, checked against
the formats' own formulas written out by hand; bad files give typed errors, nothing unpickled."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import torch_mi as mi
from torch_mi.dictionaries import SaeArchitecture, SparseAutoencoder
from torch_mi.errors import ConfigError, DownloadError, InterventionError, WeightError
from torch_mi.hooks.points import HookPoint

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "sae_lens"
D, F = 32, 96
TOL = dict(rtol=1e-5, atol=1e-5)


def _gemma_scope(folder: Path, threshold: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {"W_enc": rng.standard_normal((D, F)).astype(np.float32) * 0.3,   # [d_in, d_sae]
              "W_dec": rng.standard_normal((F, D)).astype(np.float32) * 0.3,   # [d_sae, d_in]
              "b_enc": rng.standard_normal(F).astype(np.float32) * 0.1,
              "b_dec": rng.standard_normal(D).astype(np.float32) * 0.1}
    if threshold:
        arrays["threshold"] = (rng.random(F) * 0.5).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "params.npz", **arrays)
    return arrays


def test_gemma_scope_npz_is_jumprelu_on_raw_input(tmp_path):
    a = {k: torch.from_numpy(v) for k, v in _gemma_scope(tmp_path / "layer_3").items()}
    sae = SparseAutoencoder.from_npz(tmp_path / "layer_3" / "params.npz", hook_layer=3)
    assert sae.config.architecture is SaeArchitecture.JUMPRELU
    assert sae.hook_point == HookPoint.ResidPost(3) and not sae.config.apply_b_dec_to_input
    x = torch.randn(2, 4, D)
    pre = x @ a["W_enc"] + a["b_enc"]                     # no b_dec subtraction in Gemma Scope
    acts = pre * (pre > a["threshold"])
    torch.testing.assert_close(sae.encode(x), acts, **TOL)
    torch.testing.assert_close(sae.reconstruct(x), acts @ a["W_dec"] + a["b_dec"], **TOL)
    assert 0 < int((acts > 0).sum()) < acts.numel()
    # from_local finds params.npz in the folder; hook_name overrides the default hook
    sae2 = SparseAutoencoder.from_local(tmp_path / "layer_3", hook_layer=3,
                                        hook_name="blocks.3.hook_mlp_out")
    assert sae2.hook_point == HookPoint.MlpOut(3)
    with pytest.raises(ConfigError, match="hook_layer"):
        SparseAutoencoder.from_local(tmp_path / "layer_3")


def test_gemma_scope_npz_without_threshold_is_relu(tmp_path):
    a = {k: torch.from_numpy(v) for k, v in _gemma_scope(tmp_path, threshold=False).items()}
    sae = SparseAutoencoder.from_npz(tmp_path / "params.npz", hook_layer=0)
    assert sae.config.architecture is SaeArchitecture.RELU
    x = torch.randn(5, D)
    torch.testing.assert_close(sae.encode(x), torch.relu(x @ a["W_enc"] + a["b_enc"]), **TOL)


def _sparsify(folder: Path, k: int = 6, skip: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    t = {"encoder.weight": torch.randn(F, D, generator=g) * 0.3,   # nn.Linear(d_in, num_latents)
         "encoder.bias": torch.randn(F, generator=g) * 0.1,
         "W_dec": torch.randn(F, D, generator=g) * 0.3,
         "b_dec": torch.randn(D, generator=g) * 0.1}
    if skip:
        t["W_skip"] = torch.randn(D, D, generator=g) * 0.1
    folder.mkdir(parents=True)
    save_file(t, str(folder / "sae.safetensors"))
    cfg = {"expansion_factor": 3, "normalize_decoder": True, "num_latents": F, "k": k,
           "multi_topk": False, "skip_connection": skip, "d_in": D}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return t


def test_sparsify_folder_is_topk_of_relu(tmp_path):
    t = _sparsify(tmp_path / "layers.2")
    sae = SparseAutoencoder.from_local(tmp_path / "layers.2")
    assert (sae.config.architecture, sae.config.k) == (SaeArchitecture.TOPK, 6)
    assert sae.hook_point == HookPoint.ResidPost(2)
    x = torch.randn(3, 7, D)
    # sparsify: relu(encoder(x - b_dec)).topk(k); decode = acts @ W_dec + b_dec
    pre = torch.relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"])
    vals, idx = pre.topk(6, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, idx, vals)
    torch.testing.assert_close(sae.encode(x), acts, **TOL)
    torch.testing.assert_close(sae.reconstruct(x), acts @ t["W_dec"] + t["b_dec"], **TOL)
    # a skip connection adds x @ W_skip.T to the reconstruction
    ts = _sparsify(tmp_path / "model.layers.5", skip=True)
    with_skip = SparseAutoencoder.from_local(tmp_path / "model.layers.5")
    torch.testing.assert_close(with_skip.reconstruct(x),
                               acts @ ts["W_dec"] + ts["b_dec"] + x @ ts["W_skip"].T, **TOL)
    _sparsify(tmp_path / "layers.4.mlp")
    assert SparseAutoencoder.from_local(tmp_path / "layers.4.mlp").hook_point == HookPoint.MlpOut(4)
    _sparsify(tmp_path / "weird")
    with pytest.raises(ConfigError, match="hook_name"):
        SparseAutoencoder.from_local(tmp_path / "weird")


def _copy_golden(case: str, dest: Path, edit=None, drop: str | None = None) -> Path:
    dest.mkdir(parents=True)
    cfg = json.loads((GOLDEN / case / "cfg.json").read_text())
    if edit:
        edit(cfg)
    (dest / "cfg.json").write_text(json.dumps(cfg))
    from safetensors.torch import load_file
    w = load_file(str(GOLDEN / case / "sae_weights.safetensors"))
    if drop:
        del w[drop]
    save_file(w, str(dest / "sae_weights.safetensors"))
    return dest


def test_bad_configs_and_weights_are_typed_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown SAE architecture 'matryoshka_x'"):
        SparseAutoencoder.from_local(_copy_golden(
            "standard", tmp_path / "a", lambda c: c.update(architecture="matryoshka_x")))
    with pytest.raises(WeightError, match="threshold"):
        SparseAutoencoder.from_local(_copy_golden("jumprelu", tmp_path / "b", drop="threshold"))
    with pytest.raises(WeightError, match="shape"):
        SparseAutoencoder.from_local(_copy_golden("standard", tmp_path / "c",
                                                  lambda c: c.update(d_sae=128)))
    with pytest.raises(ConfigError, match="normalize_activations"):
        SparseAutoencoder.from_local(_copy_golden(
            "standard", tmp_path / "d", lambda c: c.update(normalize_activations="whiten")))
    with pytest.raises(ConfigError, match="transcoder"):
        SparseAutoencoder.from_local(_copy_golden(
            "standard", tmp_path / "e", lambda c: c.update(architecture="skip_transcoder")))
    with pytest.raises(ConfigError, match="does not exist"):
        SparseAutoencoder.from_local(tmp_path / "missing")


class _Boom:
    def __reduce__(self):
        return (pytest.fail, ("unpickled!",))


def test_pickle_files_are_refused_unread(tmp_path):
    for name in ("ae.pt", "sae.pth"):
        (tmp_path / name).write_bytes(pickle.dumps(_Boom()))
        with pytest.raises(WeightError, match="pickle"):
            SparseAutoencoder.from_local(tmp_path / name)
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / "ae.pt").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(WeightError, match="pickle"):
        SparseAutoencoder.from_local(folder)
    npz = tmp_path / "obj" / "params.npz"
    npz.parent.mkdir()
    np.savez(npz, W_enc=np.array([_Boom()], dtype=object))   # object array -> needs pickle
    with pytest.raises(WeightError, match="pickled"):
        SparseAutoencoder.from_npz(npz, hook_layer=0)


def test_captured_hook_feeds_the_sae_and_wrong_width_is_refused(loaded, tmp_path):
    model = loaded["llama"]                      # d_model 64, 4 heads of 16, 2 layers
    resid_sae = SparseAutoencoder.from_local(GOLDEN / "standard")       # blocks.0.hook_resid_post
    z_sae = SparseAutoencoder.from_local(GOLDEN / "hook_z")             # blocks.1.attn.hook_z
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    cache = model.forward(ids, mi.HookSpec().capture(resid_sae.hook_point, z_sae.hook_point))
    z = cache[z_sae.hook_point]
    assert z.shape == (1, 5, 4, 16)              # TL's hook_z: [B,S,H,d_head]
    torch.testing.assert_close(z_sae.encode(z), z_sae.encode(z.reshape(1, 5, 64)), rtol=0, atol=0)
    assert resid_sae.encode(cache[resid_sae.hook_point]).shape == (1, 5, 256)
    _gemma_scope(tmp_path)                                              # d_in 32 != 64
    narrow = SparseAutoencoder.from_npz(tmp_path / "params.npz", hook_layer=0)
    with pytest.raises(InterventionError, match="d_in=32"):
        narrow.encode(cache[resid_sae.hook_point])


def _fake_hub_cache(cache: Path, repo: str, files: dict[str, Path]) -> None:
    """The huggingface_hub cache layout: refs/main -> snapshots/<commit>/<files>."""
    base = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    for rel, src in files.items():
        dest = base / "snapshots" / commit / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src.read_bytes())


def test_from_pretrained_uses_the_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    _gemma_scope(tmp_path / "npz")
    _fake_hub_cache(tmp_path / "hub", "org/saes", {
        "blocks.0.hook_resid_post/cfg.json": GOLDEN / "jumprelu" / "cfg.json",
        "blocks.0.hook_resid_post/sae_weights.safetensors": GOLDEN / "jumprelu" / "sae_weights.safetensors",
        "layer_5/width_16k/average_l0_7/params.npz": tmp_path / "npz" / "params.npz"})
    sae = SparseAutoencoder.from_pretrained("org/saes", "blocks.0.hook_resid_post")
    local = SparseAutoencoder.from_local(GOLDEN / "jumprelu")
    x = torch.randn(3, 64)
    torch.testing.assert_close(sae.encode(x), local.encode(x), rtol=0, atol=0)
    npz = SparseAutoencoder.from_pretrained("org/saes", "layer_5/width_16k/average_l0_7/params.npz")
    assert npz.hook_point == HookPoint.ResidPost(5)
    with pytest.raises(DownloadError, match="cache"):
        SparseAutoencoder.from_pretrained("org/not-cached", "blocks.0.hook_resid_post")
    with pytest.raises(DownloadError, match="cfg.json"):
        SparseAutoencoder.from_pretrained("org/saes", "blocks.9.hook_resid_post")
    with pytest.raises(DownloadError, match="relative"):
        SparseAutoencoder.from_pretrained("org/saes", "../../etc")
