"""The BlinkDL ``rwkv`` package (0.8.32) as the RWKV oracle, one subprocess per call.

RWKV-7 exists in the package only when ``RWKV_V7_ON=1`` is set before import (it then
replaces the v6 class), so each version runs in its own interpreter: ``run_oracle`` starts
this file as a script, which loads the ``.pth`` with strategy ``cpu fp32`` and writes its
results to a temporary ``.pt`` that the parent reads back with ``weights_only=True``.

What comes back (T tokens, L layers, H heads, d head size, C = H·d):

- ``logits`` [T, V]: the package's own ``forward(ids, None, full_output=True)``.
- ``att_x`` / ``ffn_x`` [L, C]: the final token-shift states (ln1 / ln2 output of the
  last token), ``wkv`` [L, H, d_k, d_v]: the final WKV matrices, **key index first** for
  both versions (the package keeps v6 as [H, k, v] and v7 as [H, v, k]; v7 is transposed
  here so the two versions share one layout).
- ``resid_mid`` / ``resid_post`` [L, T, C]: the residual stream after each layer's time-mix
  and after its channel-mix. The package has no hooks and is not edited; the residuals are
  read by wrapping its per-layer functions: for v6 the instance's ``att_seq_v6_0`` and
  ``ffn_seq_v6`` (``RWKV_JIT_ON=0`` keeps them plain methods, called by the package's own
  ``forward``); for v7, whose forward is TorchScript, by driving the package's scripted
  ``RWKV_x070_TMix_seq`` / ``RWKV_x070_CMix_seq`` over its loaded weights with the same
  glue as its ``forward_seq``. ``glue_max_diff`` is the largest |logit| difference between
  that driver and the package's ``forward`` (0 when the glue is the same computation).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class OracleResult:
    logits: torch.Tensor  # [T, V]
    att_x: torch.Tensor  # [L, C]
    wkv: torch.Tensor  # [L, H, d_k, d_v]
    ffn_x: torch.Tensor  # [L, C]
    resid_mid: torch.Tensor  # [L, T, C]
    resid_post: torch.Tensor  # [L, T, C]
    glue_max_diff: float


def run_oracle(pth: Path, ids: list[int], version: str, *, timeout: float = 120) -> OracleResult:
    """Run the ``rwkv`` package on ``pth`` (a BlinkDL checkpoint) over ``ids``."""
    if version not in ("v6", "v7"):
        raise ValueError(f"version must be 'v6' or 'v7', got {version!r}")
    env = {**os.environ, "RWKV_JIT_ON": "0", "RWKV_CUDA_ON": "0", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("RWKV_V7_ON", None)
    if version == "v7":
        env["RWKV_V7_ON"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "oracle.pt"
        cmd = [sys.executable, str(Path(__file__).resolve()), version, str(Path(pth).resolve()),
               json.dumps([int(i) for i in ids]), str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"rwkv oracle ({version}) failed:\n{done.stdout}\n{done.stderr}")
        raw = torch.load(out, weights_only=True)
    return OracleResult(glue_max_diff=float(raw.pop("glue_max_diff")), **raw)


# ---- the subprocess side (imports rwkv; never imported by the test process) ----------------
def _run_v6(pth: str, ids: list[int]) -> dict:
    from rwkv.model import RWKV

    model = RWKV(model=pth, strategy="cpu fp32", verbose=False)
    mids: list[torch.Tensor] = []
    posts: list[torch.Tensor] = []
    att, ffn = model.att_seq_v6_0, model.ffn_seq_v6

    def att_wrapped(*args):
        x, *rest = att(*args)
        mids.append(x.clone())
        return (x, *rest)

    def ffn_wrapped(*args):
        x, *rest = ffn(*args)
        posts.append(x.clone())
        return (x, *rest)

    model.att_seq_v6_0, model.ffn_seq_v6 = att_wrapped, ffn_wrapped  # instance attributes
    logits, state = model.forward(ids, None, full_output=True)
    L = model.args.n_layer
    return {"logits": logits, "att_x": torch.stack(state[0::3][:L]),
            "wkv": torch.stack(state[1::3][:L]),  # v6 keeps [H, k, v]
            "ffn_x": torch.stack(state[2::3][:L]), "resid_mid": torch.stack(mids),
            "resid_post": torch.stack(posts), "glue_max_diff": torch.tensor(0.0)}


def _drive_v7(model, ids: list[int]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """The package's forward_seq with the per-layer outputs kept (same calls, same order)."""
    import torch.nn.functional as F
    from rwkv import model as rwkv_model

    z, C = model.z, model.n_embd
    state = model.generate_zero_state()
    x = z["emb.weight"][ids]
    v_first = torch.empty_like(x)
    mids, posts = [], []
    for i in range(model.n_layer):
        b, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        xx = F.layer_norm(x, (C,), weight=z[b + "ln1.weight"], bias=z[b + "ln1.bias"])
        names = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "w1", "w2", "a0", "a1", "a2",
                 "v0", "v1", "v2", "g1", "g2", "k_k", "k_a", "r_k", "receptance.weight",
                 "key.weight", "value.weight", "output.weight", "ln_x.weight", "ln_x.bias")
        xx, state[i * 3], state[i * 3 + 1], v_first = rwkv_model.RWKV_x070_TMix_seq(
            i, model.n_head, model.head_size, xx, state[i * 3], v_first, state[i * 3 + 1],
            *(z[a + n] for n in names))
        x = x + xx
        mids.append(x.clone())
        xx = F.layer_norm(x, (C,), weight=z[b + "ln2.weight"], bias=z[b + "ln2.bias"])
        xx, state[i * 3 + 2] = rwkv_model.RWKV_x070_CMix_seq(
            xx, state[i * 3 + 2], z[f + "x_k"], z[f + "key.weight"], z[f + "value.weight"])
        x = x + xx
        posts.append(x.clone())
    x = F.layer_norm(x, (C,), weight=z["ln_out.weight"], bias=z["ln_out.bias"])
    return x @ z["head.weight"], mids, posts


def _run_v7(pth: str, ids: list[int]) -> dict:
    from rwkv.model import RWKV

    model = RWKV(model=pth.removesuffix(".pth"), strategy="cpu fp32")
    with torch.no_grad():
        logits, state = model.forward(ids, None, full_output=True)
        driven, mids, posts = _drive_v7(model, ids)
    L = model.n_layer
    return {"logits": logits.float(), "att_x": torch.stack(state[0::3][:L]),
            "wkv": torch.stack(state[1::3][:L]).transpose(-1, -2).contiguous(),  # [H,v,k]->[H,k,v]
            "ffn_x": torch.stack(state[2::3][:L]), "resid_mid": torch.stack(mids),
            "resid_post": torch.stack(posts),
            "glue_max_diff": (driven - logits).abs().max()}


def _main(argv: list[str]) -> None:
    version, pth, ids, out = argv
    torch.set_grad_enabled(False)
    result = (_run_v6 if version == "v6" else _run_v7)(pth, json.loads(ids))
    torch.save({k: v.detach().clone().contiguous() for k, v in result.items()}, out)


if __name__ == "__main__":
    # Run as a script, this folder is sys.path[0], where tests/helpers/rwkv.py would shadow
    # the rwkv package.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(here)]
    _main(sys.argv[1:])
