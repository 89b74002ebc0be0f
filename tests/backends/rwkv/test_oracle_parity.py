"""GenericRwkv against BlinkDL's ``rwkv`` package (the reference implementation).

Tiny random RWKV-6 and RWKV-7 models (every parameter perturbed, 4 heads, 3 layers) are
written in BlinkDL format, run by the package in a subprocess (tests/helpers/rwkv_oracle.py),
and loaded by torch-mi two ways per version: the HF folder layout of the version (v6
``RWKV/v6-Finch-*-HF`` names, v7 fla-hub names), converted by tests/helpers/rwkv.py, and the
``.pth`` itself through loading/pth.py. Logits, every ``hook_resid_mid`` / ``hook_resid_post``,
the final WKV states and token-shift states agree to 1e-5 in fp32, relative to each
tensor's scale: ``atol = 1e-5 * max(1, max|expected|)``, ``rtol = 1e-5``. The scale matters
because fp32 itself is not closer than that: measured against a float64 evaluation of the
same equations, the package's own logits (|logit| <= 12) are off by 2e-5 and ours by 3e-5,
and the 24-step WKV states (|S| <= 23) accumulate errors of the same relative size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import torch_mi as mi
from tests.helpers.rwkv import make_v6, make_v7, write_hf_folder, write_pth
from tests.helpers.rwkv_oracle import OracleResult, run_oracle

SEQ = 24
IDS = torch.randint(0, 256, (SEQ,), generator=torch.Generator().manual_seed(3)).tolist()
RTOL = 1e-5
MAKERS = {"v6": make_v6, "v7": make_v7}


@dataclass(frozen=True)
class Case:
    version: str
    sd: dict[str, torch.Tensor]
    pth: Path
    folder: Path
    oracle: OracleResult


@pytest.fixture(scope="module", params=["v6", "v7"])
def case(request, tmp_path_factory) -> Case:
    version = request.param
    root = tmp_path_factory.mktemp(f"rwkv-{version}")
    sd = MAKERS[version]()
    pth = write_pth(sd, root / f"tiny-{version}.pth")
    folder = write_hf_folder(sd, root / "hf")
    return Case(version, sd, pth, folder, run_oracle(pth, IDS, version))


@pytest.fixture(scope="module", params=["hf", "pth"])
def ours(request, case) -> tuple[Case, mi.MIModel]:
    path = case.folder if request.param == "hf" else case.pth
    return case, mi.MIModel.from_pretrained(path, device="cpu", dtype="float32")


def _ids() -> torch.Tensor:
    return torch.tensor([IDS])


def close(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    """assert_close at 1e-5 of the expected tensor's scale (see the module docstring)."""
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, atol=RTOL * scale, rtol=RTOL,
                               msg=lambda m: f"{what}: {m}")


def test_oracle_is_self_consistent(case):
    # The v7 residual driver repeats the package's forward_seq: it must give its logits.
    assert case.oracle.glue_max_diff == 0.0
    hidden = 256 if case.version == "v7" else 128
    assert case.oracle.logits.shape == (SEQ, 256)
    assert case.oracle.resid_post.shape == case.oracle.resid_mid.shape == (3, SEQ, hidden)
    assert case.oracle.wkv.abs().amax(dim=(-1, -2)).min() > 1e-2  # every head's state is used
    # The captured residuals are the ones the package turned into its logits.
    sd = case.sd
    final = torch.nn.functional.layer_norm(case.oracle.resid_post[-1], (hidden,),
                                           sd["ln_out.weight"], sd["ln_out.bias"])
    torch.testing.assert_close(final @ sd["head.weight"].T, case.oracle.logits, rtol=0, atol=0)


def test_logits_match_oracle(ours):
    case, model = ours
    logits = model.forward(_ids()).output()  # [1,S,V]
    close(logits[0], case.oracle.logits, "logits")


def test_every_residual_matches_oracle(ours):
    case, model = ours
    L = model.num_layers
    spec = mi.HookSpec().capture(*[f"blocks.{i}.hook_resid_{w}" for i in range(L)
                                   for w in ("mid", "post")])
    cache = model.forward(_ids(), spec)
    for i in range(L):
        close(cache[f"blocks.{i}.hook_resid_mid"][0], case.oracle.resid_mid[i],
              f"resid_mid {i}")
        close(cache[f"blocks.{i}.hook_resid_post"][0], case.oracle.resid_post[i],
              f"resid_post {i}")


def test_final_wkv_state_hook_matches_oracle(ours):
    case, model = ours
    L = model.num_layers
    spec = mi.HookSpec().capture(*[f"blocks.{i}.rwkv.hook_state" for i in range(L)])
    cache = model.forward(_ids(), spec)
    for i in range(L):
        # both [H, d_k, d_v]: key index first (the oracle transposes the package's v7 S[v,k])
        close(cache[f"blocks.{i}.rwkv.hook_state"][0], case.oracle.wkv[i], f"state {i}")


def test_recurrent_state_matches_oracle(ours):
    case, model = ours
    state = model.make_state()
    model.forward(_ids(), state=state)
    for i in range(model.num_layers):
        layer = state.layer(i)
        close(layer.att_x[0], case.oracle.att_x[i], f"att_x {i}")
        close(layer.wkv[0], case.oracle.wkv[i], f"wkv {i}")
        close(layer.ffn_x[0], case.oracle.ffn_x[i], f"ffn_x {i}")


def test_split_prompt_through_state_matches_oracle(ours):
    case, model = ours
    state = model.make_state()
    first = model.forward(_ids()[:, :10], state=state).output()
    rest = model.forward(_ids()[:, 10:], state=state).output()
    close(torch.cat([first, rest], dim=1)[0], case.oracle.logits, "logits")


def test_wrong_weights_are_detected(case, tmp_path):
    """The comparison has teeth: one perturbed tensor moves the logits past the tolerance."""
    sd = MAKERS[case.version]()
    name = "blocks.2.att.time_faaaa" if case.version == "v6" else "blocks.2.att.r_k"
    sd[name] = sd[name] * 1.01
    model = mi.MIModel.from_pretrained(write_pth(sd, tmp_path / "p.pth"), device="cpu")
    logits = model.forward(_ids()).output()[0]
    with pytest.raises(AssertionError):
        close(logits, case.oracle.logits, "logits")
