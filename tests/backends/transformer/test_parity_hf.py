"""Forward parity with HuggingFace transformers (eager) on tiny random models, fp32, 1e-5."""

from __future__ import annotations

import math

import pytest
import torch

import torch_mi as mi
from tests.helpers.tiny_models import hf_run

TOL = dict(atol=1e-5, rtol=1e-5)
HP = mi.HookPoint


def capture_everything(model: mi.MIModel, *, results: bool = False) -> mi.HookSpec:
    """Every point; the per-head results only when asked, because hooking them makes the
    attention output their sum (as TransformerLens does), not HF's o_proj matmul."""
    return mi.HookSpec().capture(*(p for p in model.hook_points()
                                   if results or p.variant != "AttnResult"))


def test_logits_residuals_and_patterns_match_hf(variant, tiny_models, loaded):
    tiny, model = tiny_models[variant], loaded[variant]
    ref = hf_run(tiny.hf, tiny.input_ids)
    cache = model.forward(tiny.input_ids, capture_everything(model))
    torch.testing.assert_close(cache.output(), ref.logits, **TOL)
    n = model.num_layers
    for i in range(n):
        torch.testing.assert_close(cache[HP.ResidPre(i)], ref.hidden_states[i], **TOL)
        torch.testing.assert_close(cache[HP.AttnPattern(i)], ref.attentions[i], **TOL)
    for i in range(n - 1):
        torch.testing.assert_close(cache[HP.ResidPost(i)], ref.hidden_states[i + 1], **TOL)
    torch.testing.assert_close(cache[HP.ResidPost(n - 1)], ref.last_layer_output, **TOL)
    torch.testing.assert_close(cache[HP.FinalNorm], ref.hidden_states[n], **TOL)


def test_every_declared_hook_point_has_its_declared_shape(variant, tiny_models, loaded):
    tiny, model = tiny_models[variant], loaded[variant]
    batch, seq = tiny.input_ids.shape
    cache = model.forward(tiny.input_ids, capture_everything(model, results=True))
    sizes = {"batch": batch, "seq": seq}
    for point, shape in model.hook_points().items():
        expected = tuple(math.prod(sizes.get(f) or int(f) for f in d.split("*"))
                         if isinstance(d, str) else d for d in shape)
        assert tuple(cache[point].shape) == expected, point


def test_fast_path_equals_explicit_path(variant, tiny_models, loaded):
    tiny, model = tiny_models[variant], loaded[variant]
    fast = model.forward(tiny.input_ids).output()
    patterns = mi.HookSpec().capture(*(HP.AttnPattern(i) for i in range(model.num_layers)))
    explicit = model.forward(tiny.input_ids, patterns).output()
    torch.testing.assert_close(fast, explicit, **TOL)


def test_gemma2_softcaps_bite(tiny_models, loaded):
    """Without soft-capping HF's own output moves far more than our tolerance, so parity at
    1e-5 above proves both caps are implemented."""
    tiny = tiny_models["gemma2"]
    uncapped = tiny.hf_copy()
    uncapped.config.attn_logit_softcapping = None
    uncapped.config.final_logit_softcapping = None
    for layer in uncapped.model.layers:
        layer.self_attn.attn_logit_softcapping = None
    with torch.no_grad():
        capped = tiny.hf(tiny.input_ids).logits
        free = uncapped(tiny.input_ids).logits
    assert (capped - free).abs().max() > 1.0
    assert free.abs().max() > 30.0  # the final cap (30) is exceeded without capping
    torch.testing.assert_close(loaded["gemma2"].forward(tiny.input_ids).output(), capped, **TOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_matches_hf_in_the_same_dtype(dtype, family, tiny_models):
    """Cast order (norms in fp32, Gemma's (1 + w) and embedding scale) follows HF in bf16/fp16:
    the explicit path agrees with HF eager to within one ulp (bit-identical on our CI CPU),
    the SDPA path to about two ulps."""
    from transformers import AutoModelForCausalLM

    tiny = tiny_models[family]
    hf = AutoModelForCausalLM.from_pretrained(tiny.path, dtype=dtype, attn_implementation="eager")
    model = mi.MIModel.from_pretrained(tiny.path, device="cpu", dtype=dtype)
    assert model.dtype == dtype
    with torch.no_grad():
        ref = hf(tiny.input_ids).logits.float()
    patterns = mi.HookSpec().capture(*(HP.AttnPattern(i) for i in range(model.num_layers)))
    explicit = model.forward(tiny.input_ids, patterns).output().float()
    fused = model.forward(tiny.input_ids).output().float()
    ulp = 2.0 ** (-7 if dtype == torch.bfloat16 else -10)
    torch.testing.assert_close(explicit, ref, atol=ulp, rtol=ulp)
    torch.testing.assert_close(fused, ref, atol=2 * ulp, rtol=2 * ulp)


def test_project_to_vocab_of_last_residual_equals_logits(variant, tiny_models, loaded):
    tiny, model = tiny_models[variant], loaded[variant]
    last = HP.ResidPost(model.num_layers - 1)
    cache = model.forward(tiny.input_ids, mi.HookSpec().capture(last))
    torch.testing.assert_close(model.project_to_vocab(cache[last]), cache.output(), **TOL)


def test_multimodal_gemma3_checkpoint_loads_its_language_model(tmp_path):
    """``model_type: gemma3`` (text + vision): the language model loads, the vision tower is
    deliberately skipped, and text-only logits equal HF's Gemma3ForConditionalGeneration."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    text = Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                            head_dim=16, sliding_window=8)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2, image_size=32, patch_size=8)
    config = Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(),
                          mm_tokens_per_image=4, image_token_index=299, boi_token_index=297,
                          eoi_token_index=298)
    torch.manual_seed(0)
    hf = Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * (0.02 if p.dim() > 1 else 0.1))
    hf.save_pretrained(tmp_path)
    model = mi.MIModel.from_pretrained(tmp_path, device="cpu")
    assert model.config.model_type == "gemma3" and model.config.qk_norm
    ids = torch.randint(3, 290, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
    torch.testing.assert_close(model.forward(ids).output(), ref, **TOL)


def test_capturing_every_point_changes_no_number(variant, tiny_models, loaded):
    """Captures only read: with every point captured (norm statistics, per-head inputs and
    d_mlp-wide points included) the logits are bit-identical to the explicit path's with
    patterns only. The one exception, the per-head results, moves them by fp32 summation
    order alone (their sum replaces the o_proj matmul, as in TransformerLens)."""
    tiny, model = tiny_models[variant], loaded[variant]
    patterns = mi.HookSpec().capture(*(HP.AttnPattern(i) for i in range(model.num_layers)))
    explicit = model.forward(tiny.input_ids, patterns).output()
    everything = model.forward(tiny.input_ids, capture_everything(model)).output()
    assert torch.equal(everything, explicit)
    with_results = model.forward(tiny.input_ids, capture_everything(model, results=True))
    scale = explicit.abs().max().item()
    torch.testing.assert_close(with_results.output(), explicit, rtol=1e-5, atol=1e-5 * scale)
    layer0 = with_results[HP.AttnResult(0)]  # [B,S,H,D]: their sum + bias is hook_attn_out
    bias = model.backend.blocks[0].attn.o_proj.bias
    attn_out = layer0.sum(dim=2) + (0 if bias is None else bias)
    if not model.config.use_post_norms:
        torch.testing.assert_close(attn_out, with_results[HP.AttnOut(0)], rtol=0, atol=0)
