"""A TransformerLens string means TransformerLens 3.x's tensor, for the raw model in fp32.

The oracle is TL's own ``HookedTransformer`` built from the same HF weights with raw
processing (no LayerNorm folding, no centring, no value-bias folding), itself checked
against HF's logits first. For every key of TL's ``run_with_cache``, in the default pass and
in passes with TL's optional points switched on, torch-mi accepts the string and returns
the same shape and values; an intervention by TL string moves the logits exactly as TL's
``run_with_hooks`` does with the equivalent hook function.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import torch_mi as mi
from tests.helpers.tiny_models import TinyModel
from tests.helpers.transformerlens import build_tiny_mha, hooked_transformer

pytest.importorskip("transformer_lens")

# Grouped-query (gemma: multi-query) tiny models from tests/helpers/tiny_models.py, and one
# multi-head llama built here: TL's use_attn_in needs as many KV heads as query heads.
GQA_VARIANTS = ("llama", "qwen2", "gemma", "gemma2", "gemma3", "mistral", "phi3", "qwen3")
MHA = "llama_mha"

PASSES: dict[str, dict[str, bool]] = {
    "default": {},
    "split_qkv": dict(use_split_qkv_input=True, use_attn_result=True, use_hook_mlp_in=True,
                      use_hook_tokens=True),
    "attn_in": dict(use_attn_in=True),  # TL forbids it with use_split_qkv_input, and GQA
}
CASES = [(v, p) for v in GQA_VARIANTS for p in ("default", "split_qkv")]
CASES += [(MHA, p) for p in PASSES]
# Per-layer keys each flagged pass must add (so a flag that silently did nothing fails).
NEW_KEYS = {"split_qkv": ("hook_q_input", "hook_k_input", "hook_v_input", "attn.hook_result",
                          "hook_mlp_in"),
            "attn_in": ("hook_attn_in",)}

# Every TL key the comparison leaves out, with its reason; any other left-out key fails.
NOT_PRODUCED = {
    r"hook_tokens": "TL's use_hook_tokens records the int64 input ids, not an activation; "
                    "torch-mi has no such point (the ids are forward's argument)",
}
NOT_COMPARED_IN_FLAGGED_PASSES = {
    r"blocks\.\d+\.ln1\.hook_(scale|normalized)":
        "with use_split_qkv_input/use_attn_in TL runs ln1 on the per-head inputs "
        "([B,S,heads,1|D]; the cache keeps its last call); torch-mi's ln1 points keep the "
        "default-pass meaning and are compared in the default pass",
}

# torch-mi's own strings (not TL keys, so no TL tensor to compare with).
OWN_STRINGS = re.compile(r"blocks\.\d+\.(attn\.hook_in|attn\.hook_scores|mlp\.hook_in|mlp\.hook_out)")


@dataclass
class Subject:
    tiny: TinyModel
    model: mi.MIModel
    hf_logits: torch.Tensor


@pytest.fixture(scope="module")
def subjects(tiny_models, loaded, tmp_path_factory) -> dict[str, Subject]:
    class Lazy(dict):
        def __missing__(self, variant: str) -> Subject:
            if variant == MHA:
                tiny = build_tiny_mha(tmp_path_factory.mktemp("tl_names"))
                model = mi.MIModel.from_pretrained(tiny.path, device="cpu")
            else:
                tiny, model = tiny_models[variant], loaded[variant]
            with torch.no_grad():
                hf_logits = tiny.hf(tiny.input_ids).logits
            self[variant] = Subject(tiny, model, hf_logits)
            return self[variant]

    return Lazy()


@pytest.fixture(scope="module")
def oracles(subjects) -> dict[tuple[str, str], Any]:
    """(variant, pass) -> TL HookedTransformer, built once for the module."""

    class Lazy(dict):
        def __missing__(self, key: tuple[str, str]) -> Any:
            variant, pass_name = key
            tiny = subjects[variant].tiny
            self[key] = hooked_transformer(tiny.family, tiny.hf, **PASSES[pass_name])
            return self[key]

    return Lazy()


def assert_matches(ours: torch.Tensor, ref: torch.Tensor, what: str, rel: float = 2e-5) -> None:
    """Two-sided closeness: rtol 1e-5 plus an atol of ``rel`` times the largest finite |ref|.
    Non-finite entries (the -inf of masked scores) must be equal."""
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != TL {tuple(ref.shape)}"
    finite = ref[torch.isfinite(ref)]
    scale = finite.abs().max().item() if finite.numel() else 0.0
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=rel * scale,
                               msg=lambda m: f"{what}: {m}")


def run_tl(subject: Subject, tl: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """TL's logits and cache, after checking TL itself agrees with HF (else nothing below
    would mean anything)."""
    with torch.no_grad():
        logits, cache = tl.run_with_cache(subject.tiny.input_ids)
    assert_matches(logits, subject.hf_logits, "TL vs HF logits")
    return logits, dict(cache.items())


def _reason(key: str, table: dict[str, str]) -> str | None:
    return next((why for pattern, why in table.items() if re.fullmatch(pattern, key)), None)


def partition(keys: list[str], model: mi.MIModel,
              pass_name: str) -> tuple[list[str], dict[str, str | None]]:
    """TL keys to compare, and the left-out ones with their reason (None: unexplained)."""
    declared = set(model.hook_points())
    flagged = pass_name != "default"
    compared: list[str] = []
    left_out: dict[str, str | None] = {}
    for key in keys:
        per_head = _reason(key, NOT_COMPARED_IN_FLAGGED_PASSES) if flagged else None
        if per_head is not None:
            left_out[key] = per_head
        elif mi.HookPoint.parse(key) in declared:
            compared.append(key)
        else:
            left_out[key] = _reason(key, NOT_PRODUCED)
    return compared, left_out


@pytest.mark.parametrize(("variant", "pass_name"), CASES)
def test_every_transformerlens_key_is_tls_tensor(variant, pass_name, subjects, oracles):
    subject = subjects[variant]
    model, ids = subject.model, subject.tiny.input_ids
    tl_logits, tl_cache = run_tl(subject, oracles[variant, pass_name])
    compared, left_out = partition(list(tl_cache), model, pass_name)
    unexplained = sorted(k for k, why in left_out.items() if why is None)
    assert not unexplained, f"TL keys torch-mi does not produce, with no stated reason: {unexplained}"
    for suffix in NEW_KEYS.get(pass_name, ()):
        assert f"blocks.0.{suffix}" in compared, f"{pass_name} pass lacks blocks.0.{suffix}"
    cache = model.forward(ids, mi.HookSpec().capture(*compared))
    assert_matches(cache.output(), tl_logits, "logits")
    for key in compared:
        assert_matches(cache[key], tl_cache[key], key)
    for key in left_out:
        if _reason(key, NOT_PRODUCED):  # still rejected: else it belongs in the comparison
            with pytest.raises(mi.HookError):
                model.forward(ids, mi.HookSpec().capture(key))


@pytest.mark.parametrize("variant", [*GQA_VARIANTS, MHA])
def test_every_declared_point_is_a_checked_tl_key_or_our_own(variant, subjects, oracles):
    """The converse: no TL-looking string of ours escapes the comparison above."""
    subject = subjects[variant]
    tl_points: set[mi.HookPoint] = set()
    for pass_name in (p for v, p in CASES if v == variant):
        _, tl_cache = run_tl(subject, oracles[variant, pass_name])
        tl_points |= {mi.HookPoint.parse(key) for key in tl_cache}
    unchecked = sorted(str(p) for p in subject.model.hook_points()
                       if p not in tl_points and not OWN_STRINGS.fullmatch(str(p)))
    assert not unchecked, f"declared points never compared with TL: {unchecked}"


@pytest.mark.parametrize("variant", [*GQA_VARIANTS, MHA])
def test_hook_attn_in_is_declared_only_without_grouped_query_attention(variant, subjects):
    model = subjects[variant].model
    declared = mi.HookPoint.parse("blocks.0.hook_attn_in") in model.hook_points()
    assert declared == (model.config.num_kv_heads == model.config.num_attention_heads)


# --- interventions by TL string ----------------------------------------------------------

# (TL string, the TL pass whose model has that point)
POINTS = [
    ("hook_embed", "default"),
    ("blocks.0.hook_resid_pre", "default"),
    ("blocks.0.ln1.hook_scale", "default"),
    ("blocks.0.ln1.hook_normalized", "default"),
    ("blocks.0.hook_q_input", "split_qkv"),
    ("blocks.0.hook_k_input", "split_qkv"),
    ("blocks.0.hook_v_input", "split_qkv"),
    ("blocks.0.attn.hook_q", "default"),
    ("blocks.0.attn.hook_k", "default"),
    ("blocks.0.attn.hook_v", "default"),
    ("blocks.0.attn.hook_rot_q", "default"),
    ("blocks.1.attn.hook_rot_k", "default"),
    ("blocks.0.attn.hook_attn_scores", "default"),
    ("blocks.0.attn.hook_pattern", "default"),
    ("blocks.0.attn.hook_z", "default"),
    ("blocks.0.attn.hook_result", "split_qkv"),
    ("blocks.0.hook_attn_out", "default"),
    ("blocks.0.hook_mlp_in", "split_qkv"),
    ("blocks.1.hook_resid_mid", "default"),
    ("blocks.1.ln2.hook_scale", "default"),
    ("blocks.1.ln2.hook_normalized", "default"),
    ("blocks.1.mlp.hook_pre", "default"),
    ("blocks.1.mlp.hook_pre_linear", "default"),
    ("blocks.1.mlp.hook_post", "default"),
    ("blocks.1.hook_mlp_out", "default"),
    ("ln_final.hook_scale", "default"),
    ("ln_final.hook_normalized", "default"),
    ("unembed.hook_in", "default"),
    ("unembed.hook_out", "default"),
]
EXTRA_POINTS = {
    "gemma2": [("blocks.0.ln1_post.hook_normalized", "default"),
               ("blocks.1.ln2_post.hook_scale", "default")],
    "gemma3": [("blocks.1.attn.q_norm.hook_normalized", "default"),
               ("blocks.1.attn.k_norm.hook_scale", "default"),
               ("blocks.0.ln2_post.hook_normalized", "default")],
    MHA: [("blocks.0.hook_attn_in", "attn_in")],
}
INTERVENTION_CASES = [(v, *p) for v in ("llama", "gemma2", "gemma3", MHA)
                      for p in POINTS + EXTRA_POINTS.get(v, [])]

TLHook = Callable[[torch.Tensor, Any], torch.Tensor]


def replacement(key: str, captured: torch.Tensor) -> torch.Tensor:
    """A value that differs everywhere but stays well-formed: patterns stay causal and
    normalised, masked scores stay -inf, norm scales stay positive."""
    if key.endswith("hook_pattern"):
        g = torch.Generator().manual_seed(11)
        bumped = captured * (1.0 + torch.rand(captured.shape, generator=g))
        return bumped / bumped.sum(-1, keepdim=True)
    return captured * 1.5 + 0.1


def interventions(key: str, captured: torch.Tensor) -> dict[str, tuple[mi.Intervention, TLHook]]:
    """Replace, Add and (where the model survives it) Zero, each as torch-mi's Intervention
    and as the equivalent TL hook function."""
    new = replacement(key, captured)
    finite = captured[torch.isfinite(captured)]
    g = torch.Generator().manual_seed(5)
    delta = 0.1 * finite.abs().max() * torch.randn(captured.shape, generator=g)
    kinds = {"replace": (mi.Intervention.Replace(new), lambda act, hook: new.clone()),
             "add": (mi.Intervention.Add(delta), lambda act, hook: act + delta)}
    if not key.endswith("hook_scale"):  # a zero rms divides by zero
        kinds["zero"] = (mi.Intervention.Zero, lambda act, hook: torch.zeros_like(act))
    return kinds


@pytest.mark.parametrize(("variant", "key", "pass_name"), INTERVENTION_CASES)
def test_intervention_by_tl_string_equals_tl_run_with_hooks(variant, key, pass_name, subjects,
                                                            oracles):
    subject, tl = subjects[variant], oracles[variant, pass_name]
    ids = subject.tiny.input_ids
    clean, tl_cache = run_tl(subject, tl)
    for kind, (intervention, tl_hook) in interventions(key, tl_cache[key]).items():
        with torch.no_grad():
            expected = tl.run_with_hooks(ids, fwd_hooks=[(key, tl_hook)])
        assert not torch.equal(expected, clean), f"{kind} at {key} left TL's logits unchanged"
        got = subject.model.forward(ids, mi.HookSpec().intervene(key, intervention)).output()
        assert_matches(got, expected, f"{kind} at {key}", rel=1e-4)
