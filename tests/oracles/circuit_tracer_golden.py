"""Write the circuit-tracer golden files under tests/golden/circuit_tracer/ (own venv).

circuit-tracer pins transformers<=4.57.3, so it cannot live in the dev environment; the suite
compares against these committed outputs instead of importing it. Recreate them with (about
a minute to build the venv; the script itself takes a few seconds on CPU):

    python3 -m venv /tmp/venvD && /tmp/venvD/bin/pip install torch==2.13.0 \
        && /tmp/venvD/bin/pip install circuit-tracer
    /tmp/venvD/bin/python tests/oracles/circuit_tracer_golden.py

Every transcoder is built with circuit-tracer's own classes (``CrossLayerTranscoder``,
``SingleLayerTranscoder`` with ``JumpReLU``), random fp32 weights, saved with its own
``to_safetensors``, then put through circuit-tracer's cache writer
(``save_transcoders_to_cache``, Hub calls redirected to the local staging folder), so each
case folder is exactly what circuit-tracer writes: ``config.yaml`` (``model_kind``,
``feature_input_hook``, ``feature_output_hook``, ...) plus ``W_enc_{l}`` / ``W_dec_{l}``
(CLT) or ``layer_{l}.safetensors`` (per-layer set) files. The outputs are computed by the
transcoder that circuit-tracer's ``load_transcoders_from_cache`` reads back from that folder
and stored in ``io.safetensors``:

* ``x`` [L, S, D]: the inputs at ``feature_input_hook`` of every layer;
* ``pre`` [L, S, F]: ``encode_layer(..., apply_activation_function=False)``;
* ``feats`` [L, S, F]: ``encode_layer`` (== ``encode``) per layer;
* ``recon`` [L, S, D]: ``decode`` (CLT: cross-layer sums ``sum_{s<=l} f_s W_dec_s[:, l-s]
  + b_dec_l``; per-layer: ``f_l W_dec_l + b_dec_l + x_l W_skip_l^T``).

Thresholds are drawn partly negative on purpose: circuit-tracer's JumpReLU is
``x * (x > threshold)`` with no ReLU inside, so negative pre-activations above a negative
threshold pass through, and a loader that adds a ReLU would be caught.

circuit-tracer 0.5.0's ``CrossLayerTranscoder.to_safetensors`` does not write ``W_skip`` (and
``load_clt`` never reads one), so a CLT with a skip connection has no circuit-tracer on-disk
form; skip connections are covered by the per-layer set.
"""

from __future__ import annotations

import importlib.metadata as md
import shutil
import tempfile
from pathlib import Path

import circuit_tracer.utils.caching as ct_cache
import torch
import yaml
from circuit_tracer.transcoder.activation_functions import JumpReLU
from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder
from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "golden" / "circuit_tracer"
L, D, F, S = 3, 64, 32, 6
CPU, F32 = torch.device("cpu"), torch.float32
HOOKS = {"clt": ("hook_resid_mid", "hook_mlp_out"),
         "plt": ("ln2.hook_normalized", "hook_mlp_out")}
# name -> (kind, jump_relu, skip)
CASES = {"clt_jumprelu": ("clt", True, False), "clt_relu": ("clt", False, False),
         "plt_jumprelu_skip": ("plt", True, True), "plt_relu": ("plt", False, False)}


def thresholds(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Two in three positive, one in three negative (the no-ReLU-inside convention)."""
    return torch.rand(shape, generator=g) * 2.4 - 0.8


def build_clt(jump: bool, g: torch.Generator) -> CrossLayerTranscoder:
    clt = CrossLayerTranscoder(L, F, D, activation_function="jump_relu" if jump else "relu",
                               lazy_decoder=False, device=CPU, dtype=F32)
    with torch.no_grad():
        clt.W_enc.copy_(torch.randn(clt.W_enc.shape, generator=g) * 0.3)
        clt.b_enc.copy_(torch.randn(clt.b_enc.shape, generator=g) * 0.5)
        clt.b_dec.copy_(torch.randn(clt.b_dec.shape, generator=g) * 0.1)
        if jump:
            clt.activation_function.threshold.copy_(
                thresholds(clt.activation_function.threshold.shape, g))
        for w in clt.W_dec:
            w.copy_(torch.randn(w.shape, generator=g) * 0.1)
    return clt


def build_plt(layer: int, jump: bool, skip: bool, g: torch.Generator) -> SingleLayerTranscoder:
    act = JumpReLU(thresholds((F,), g), 0.1) if jump else torch.nn.functional.relu
    tc = SingleLayerTranscoder(D, F, act, layer, skip_connection=skip, device=CPU, dtype=F32)
    with torch.no_grad():
        tc.W_enc.copy_(torch.randn(F, D, generator=g) * 0.3)
        tc.W_dec.copy_(torch.randn(F, D, generator=g) * 0.1)
        tc.b_enc.copy_(torch.randn(F, generator=g) * 0.5)
        tc.b_dec.copy_(torch.randn(D, generator=g) * 0.1)
        if skip:
            tc.W_skip.copy_(torch.randn(D, D, generator=g) * 0.05)
    return tc


def stage(name: str, kind: str, jump: bool, skip: bool, g: torch.Generator, root: Path):
    """Save with circuit-tracer's to_safetensors into a staging "repo" with its config.yaml."""
    repo = root / name
    repo.mkdir()
    hook_in, hook_out = HOOKS[kind]
    config = {"model_name": "tiny-llama", "feature_input_hook": hook_in,
              "feature_output_hook": hook_out}
    if kind == "clt":
        original = build_clt(jump, g)
        original.to_safetensors(str(repo))
        config["model_kind"] = "cross_layer_transcoder"
    else:
        original = [build_plt(layer, jump, skip, g) for layer in range(L)]
        for layer, tc in enumerate(original):
            tc.to_safetensors(str(repo / f"layer_{layer}.safetensors"))
        config["model_kind"] = "transcoder_set"
        config["transcoders"] = [str(repo / f"layer_{layer}.safetensors") for layer in range(L)]
    (repo / "config.yaml").write_text(yaml.safe_dump(config))
    return repo, original


def cache_like_circuit_tracer(name: str, repo: Path) -> Path:
    """circuit-tracer's own cache writer, its Hub calls answered from ``repo``."""
    ct_cache.hf_hub_download = lambda **kw: str(repo / kw["filename"])
    ct_cache.snapshot_download = lambda *a, **kw: str(repo)
    shutil.rmtree(OUT / name, ignore_errors=True)
    return ct_cache.save_transcoders_to_cache(name, cache_dir=OUT, device=CPU, dtype=F32)


def outputs(tc, kind: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Encodings per layer and reconstructions, computed by circuit-tracer."""
    with torch.no_grad():
        pre = torch.stack([tc.encode_layer(x[i], i, apply_activation_function=False)
                           for i in range(L)])
        feats = torch.stack([tc.encode_layer(x[i], i) for i in range(L)])  # [L,S,F]
        # the batched einsum differs from the per-layer one by rounding only
        torch.testing.assert_close(tc.encode(x), feats, rtol=1e-5, atol=1e-5)
        recon = tc.decode(feats.to_sparse()) if kind == "clt" else tc.decode(feats, x)
    assert recon.shape == (L, S, D), recon.shape  # CLT decode sizes positions from the nnz
    return {"x": x, "pre": pre, "feats": feats, "recon": recon}


def hand_recon(tc, kind: str, x: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """The documented formulas, as a sanity check of what circuit-tracer computed."""
    if kind == "clt":
        return torch.stack([sum(feats[s] @ tc.W_dec[s][:, t - s] for s in range(t + 1))
                            + tc.b_dec[t] for t in range(L)])
    return torch.stack([feats[i] @ tc[i].W_dec + tc[i].b_dec
                        + (x[i] @ tc[i].W_skip.T if tc[i].W_skip is not None else 0)
                        for i in range(L)])


def write_case(name: str, g: torch.Generator, root: Path) -> None:
    kind, jump, skip = CASES[name]
    repo, original = stage(name, kind, jump, skip, g, root)
    folder = cache_like_circuit_tracer(name, repo)
    loaded, config = ct_cache.load_transcoders_from_cache(name, cache_dir=OUT, device=CPU,
                                                          dtype=F32, lazy_decoder=False)
    x = torch.randn(L, S, D, generator=g)  # [L,S,D]
    io = outputs(loaded, kind, x)
    with torch.no_grad():  # the files round-trip exactly, and the formulas hold
        ref = original if kind == "clt" else None
        if ref is not None:
            torch.testing.assert_close(ref.encode(x), io["feats"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hand_recon(loaded, kind, x, io["feats"]), io["recon"],
                                   rtol=1e-6, atol=1e-6)
    save_file({k: v.contiguous() for k, v in io.items()}, str(folder / "io.safetensors"))
    active = (io["feats"] != 0).float().sum(-1).mean().item()
    neg = (io["feats"] < 0).sum().item()
    print(f"{name:20s} {config['model_kind']:24s} L0 {active:5.1f}/{F} negative acts {neg:3d} "
          f"files {sorted(p.name for p in folder.iterdir())}")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            write_case(name, g, Path(tmp))
    versions = {p: md.version(p) for p in ("circuit-tracer", "torch")}
    (OUT / "VERSION").write_text("".join(f"{k} {v}\n" for k, v in versions.items()))
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({size / 1024:.0f} KiB), {versions}")


if __name__ == "__main__":
    main()
