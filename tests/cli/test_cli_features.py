"""``torch-mi features`` and ``feature-steer`` on a tiny Llama with dictionaries written here;
activations and KL checked against HF transformers with hand-written hooks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch.testing import assert_close

from tests.dictionaries.clt_files import write_clt
from torch_mi.cli.main import main
from torch_mi.interp.results import kl_divergence

D, F, PROMPT = 64, 32, "Hello wor"


def write_sae(folder, layer: int = 0, seed: int = 0) -> dict:
    """A standard (ReLU) SAELens folder reading blocks.{layer}.hook_resid_post."""
    gen = torch.Generator().manual_seed(seed)
    t = {"W_enc": torch.randn(D, F, generator=gen) * 0.3, "b_enc": torch.randn(F, generator=gen) * 0.1,
         "W_dec": torch.randn(F, D, generator=gen) * 0.2, "b_dec": torch.randn(D, generator=gen) * 0.05}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(t, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({
        "d_in": D, "d_sae": F, "architecture": "standard", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "metadata": {"hook_name": f"blocks.{layer}.hook_resid_post"}}))
    return t


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return tiny_models["llama"]


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sae")
    return folder, write_sae(folder)


@pytest.fixture(scope="module")
def clt_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clt")
    return folder, write_clt(folder, L=2, F=16, D=D)


def run_json(capsys, argv):
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def fails(capsys, argv, match: str) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err, err


def hf_logits(tiny, ids, layer: int | None = None, edit=None) -> torch.Tensor:
    """Last-position logits of the HF model, ``edit(hidden [1,S,D])`` applied to layer's output."""
    handle = None
    if edit is not None:
        def hook(_m, _i, out):
            h = out[0] if isinstance(out, tuple) else out
            h = edit(h)
            return (h, *out[1:]) if isinstance(out, tuple) else h
        handle = tiny.hf.model.layers[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            return tiny.hf(ids).logits[0, -1].float()
    finally:
        if handle is not None:
            handle.remove()


def test_features_sae_json_matches_hand_formula(capsys, tiny, loaded, sae_dir, tmp_path):
    folder, t = sae_dir
    png = tmp_path / "feat.png"
    data = run_json(capsys, ["features", "--dict", str(folder), "--prompt", PROMPT, "--model",
                             str(tiny.path), "--top-k", "3", "--plot", str(png)])
    ids = loaded["llama"].encode(PROMPT)
    with torch.no_grad():
        x = tiny.hf(ids, output_hidden_states=True).hidden_states[1][0]  # resid_post of layer 0
    acts = torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])  # [S, F] (sae-lens standard)
    assert data["tokens"] == loaded["llama"].to_str_tokens(ids[0])
    assert data["layers"] == [0] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for pos in data["positions"]:
        row = acts[pos["position"]]
        want = torch.sort(row[row > 0], descending=True).values[:3]
        got = torch.tensor([f["activation"] for f in pos["features"]])
        assert pos["n_active"] == int((row > 0).sum())
        assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert [f["feature"] for f in pos["features"]] == [f"SAE:{f['index']}" for f in pos["features"]]


def test_features_clt_layer_and_table(capsys, tiny, clt_dir, tmp_path):
    folder, _ = clt_dir
    data = run_json(capsys, ["features", PROMPT, "--dict", str(folder), "--model", str(tiny.path),
                             "--layer", "-1"])
    assert data["layers"] == [1]
    assert all(f["layer"] == 1 and f["feature"].startswith("L1:")
               for p in data["positions"] for f in p["features"])
    every = run_json(capsys, ["features", PROMPT, "--dict", str(folder), "--model", str(tiny.path)])
    assert every["layers"] == [0, 1]
    assert main(["features", PROMPT, "--dict", str(folder), "--model", str(tiny.path)]) == 0
    out = capsys.readouterr().out
    assert "Top 5 features per position" in out and "clt_split" in out


def test_features_errors(capsys, tiny, sae_dir, clt_dir, tmp_path):
    sae, clt = str(sae_dir[0]), str(clt_dir[0])
    model = ["--model", str(tiny.path)]
    fails(capsys, ["features", PROMPT, "--dict", str(tmp_path / "nope"), *model], "does not exist")
    fails(capsys, ["features", PROMPT, "--prompt", "x", "--dict", sae, *model], "give the prompt once")
    fails(capsys, ["features", "--dict", sae, *model], "give the prompt once")
    fails(capsys, ["features", PROMPT, "--dict", sae, "--top-k", "0", *model], "--top-k must be >= 1")
    fails(capsys, ["features", PROMPT, "--dict", clt, "--layer", "2", *model], "out of range")
    npz = tmp_path / "params.npz"
    import numpy as np
    np.savez(npz, W_enc=np.zeros((D, F), np.float32))
    fails(capsys, ["features", PROMPT, "--dict", str(npz), *model], "--layer")
    bad = tmp_path / "wide"
    write_sae(bad)
    cfg = json.loads((bad / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = "blocks.5.hook_resid_post"  # the model has 2 layers
    (bad / "cfg.json").write_text(json.dumps(cfg))
    assert main(["features", PROMPT, "--dict", str(bad), *model]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_feature_steer_inject_matches_hf(capsys, tiny, loaded, sae_dir):
    folder, t = sae_dir
    base = ["feature-steer", PROMPT, "--dict", str(folder), "--model", str(tiny.path),
            "--feature", "3", "--max-new-tokens", "3"]
    zero = run_json(capsys, [*base, "--strength", "0"])
    assert zero["kl_divergence"] == 0.0 and zero["steered"] == zero["baseline"]
    data = run_json(capsys, [*base, "--strength", "8"])
    ids = loaded["llama"].encode(PROMPT)
    want = kl_divergence(hf_logits(tiny, ids),
                         hf_logits(tiny, ids, 0, lambda h: h + 8 * t["W_dec"][3]))
    assert data["kl_divergence"] == pytest.approx(want, rel=1e-3, abs=1e-7) and want > 1e-4
    assert data["mode"] == "inject" and data["feature"] == "SAE:3"
    last = run_json(capsys, [*base, "--strength", "8", "--position", "-1"])
    mask = torch.zeros(ids.shape[1], 1)
    mask[-1] = 1
    want_last = kl_divergence(hf_logits(tiny, ids),
                              hf_logits(tiny, ids, 0, lambda h: h + mask * 8 * t["W_dec"][3]))
    assert last["kl_divergence"] == pytest.approx(want_last, rel=1e-3, abs=1e-7)


def test_feature_steer_ablate_matches_hf(capsys, tiny, loaded, sae_dir):
    folder, t = sae_dir
    ids = loaded["llama"].encode(PROMPT)
    with torch.no_grad():
        x = tiny.hf(ids, output_hidden_states=True).hidden_states[1][0]
    acts = torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
    feature = int(acts[-1].argmax())  # active at the last position
    data = run_json(capsys, ["feature-steer", PROMPT, "--dict", str(folder), "--model",
                             str(tiny.path), "--feature", str(feature), "--ablate",
                             "--max-new-tokens", "2"])

    def ablate(h):
        a = torch.relu((h[0] - t["b_dec"]) @ t["W_enc"] + t["b_enc"])[:, feature]  # [S]
        return h - (a[:, None] * t["W_dec"][feature])[None]

    want = kl_divergence(hf_logits(tiny, ids), hf_logits(tiny, ids, 0, ablate))
    assert data["mode"] == "ablate" and want > 0
    assert data["kl_divergence"] == pytest.approx(want, rel=1e-3, abs=1e-7)


def test_feature_steer_clt_writes_every_downstream_layer(capsys, tiny, loaded, clt_dir):
    folder, t = clt_dir
    data = run_json(capsys, ["feature-steer", PROMPT, "--dict", str(folder), "--model",
                             str(tiny.path), "--feature", "0:5", "--strength", "4",
                             "--max-new-tokens", "2"])
    ids = loaded["llama"].encode(PROMPT)
    handles = [tiny.hf.model.layers[layer].register_forward_hook(
        lambda _m, _i, out, v=t["W_dec"][0][5, layer]: (
            (out[0] + 4 * v, *out[1:]) if isinstance(out, tuple) else out + 4 * v))
        for layer in (0, 1)]
    try:
        with torch.no_grad():
            steered = tiny.hf(ids).logits[0, -1].float()
    finally:
        for h in handles:
            h.remove()
    want = kl_divergence(hf_logits(tiny, ids), steered)
    assert data["kl_divergence"] == pytest.approx(want, rel=1e-3, abs=1e-7) and want > 1e-4
    assert main(["feature-steer", PROMPT, "--dict", str(folder), "--model", str(tiny.path),
                 "--feature", "5", "--layer", "1", "--max-new-tokens", "1"]) == 0
    assert "KL(baseline || steered)" in capsys.readouterr().out


@pytest.mark.parametrize("extra, match", [
    (["--feature", "x"], "INDEX or LAYER:INDEX"),
    (["--feature", "99"], "out of range"),
    (["--feature", "1:2"], "plain index"),
    (["--feature", "1", "--strength", "nan"], "finite"),
    (["--feature", "1", "--position", "99"], "out of range"),
    (["--feature", "1", "--position", "first"], "integer or 'all'"),
    (["--feature", "1", "--max-new-tokens", "0"], ">= 1"),
])
def test_feature_steer_errors(capsys, tiny, sae_dir, extra, match):
    fails(capsys, ["feature-steer", PROMPT, "--dict", str(sae_dir[0]), "--model", str(tiny.path),
                   *extra], match)


def test_feature_steer_clt_errors(capsys, tiny, clt_dir):
    base = ["feature-steer", PROMPT, "--dict", str(clt_dir[0]), "--model", str(tiny.path)]
    fails(capsys, [*base, "--feature", "5"], "needs its layer")
    fails(capsys, [*base, "--feature", "2:0"], "out of range")
    fails(capsys, [*base, "--feature", "0:16"], "out of range")
