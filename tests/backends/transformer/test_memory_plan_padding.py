"""The memory plan sizes every Linear output as layers.py allocates it.

On CPU fp32 the inference linears run on oneDNN with the token rows padded to a bucket
(``layers.bucket_rows``); the output is a view of the padded buffer, so a captured q/k/v,
gate|up, o_proj, down or unembedding output keeps the padded storage alive. The oracle is
the forward itself: the storage bytes of every tensor it hands back.
"""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from torch_mi.backends.transformer import layers
from torch_mi.backends.transformer.layers import linear_rows, onednn_linear_available
from torch_mi.hooks.points import HookPoint

# 100 rows pad to 104 on every tiny width; 129 would pad to 160 (24% more work), so the
# linears take F.linear there and nothing is padded.
PADDED, REFUSED = (1, 100), (1, 129)
FAMILIES = ("llama", "gemma2", "starcoder2", "qwen3")  # gated; post-norms + soft-caps;
# plain MLP with biases; QK-norm
COPY_NAMES = ("qkv_in", "o_proj_in", "gate_up_in", "down_in", "fc_in_in", "unembed_in")


def forward_storages(model: mi.MIModel, batch: int, seq: int, with_result: bool):
    """The plan and, for each captured point, (planned bytes, bytes of the real storage)."""
    points = [p for p in model.hook_points() if with_result or p.variant != "AttnResult"]
    spec = mi.HookSpec().capture(*points)
    plan = model.backend.memory_plan(spec, batch, seq)
    ids = torch.randint(3, model.vocab_size, (batch, seq),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cache = model.forward(ids, spec)
    sizes = {str(p): (plan.key_bytes(plan.key(p)), cache[p].untyped_storage().nbytes())
             for p in points}
    sizes["logits"] = (plan.logits_bytes, cache.output().untyped_storage().nbytes())
    return plan, sizes


def assert_planned_as_allocated(sizes: dict) -> None:
    wrong = {name: pair for name, pair in sizes.items() if pair[0] != pair[1]}
    assert not wrong, f"planned vs real storage bytes differ: {wrong}"


@pytest.mark.parametrize("with_result", [False, True], ids=["o_proj", "hook_result"])
@pytest.mark.parametrize("shape", [PADDED, (2, 50), REFUSED], ids=["100", "2x50", "129"])
@pytest.mark.parametrize("name", FAMILIES)
def test_every_captured_storage_is_planned_at_its_real_size(loaded, name, shape, with_result):
    """Captures keep storages: q/k/v keep the whole (padded) QKV buffer, mlp.hook_out and
    hook_attn_out the padded down / o_proj buffer (not with hook_result: no o_proj call)."""
    model = loaded[name]
    plan, sizes = forward_storages(model, *shape, with_result)
    assert_planned_as_allocated(sizes)
    tokens = shape[0] * shape[1]
    config = model.backend.config
    qkv_unpadded = tokens * plan.qkv_features * 4
    padded = onednn_linear_available() and shape != REFUSED
    assert (sizes["blocks.0.attn.hook_q"][1] > qkv_unpadded) is padded
    assert (sizes["logits"][1] > tokens * config.vocab_size * 4) is (
        padded and not config.final_logit_softcapping)  # the soft-cap makes a new tensor


def linear_items(plan) -> dict:
    """Every item of layer 0's and the head's stages, by key."""
    stages = [*plan.layer_stages(0), *plan.head_stages()]
    return {item.key: item.nbytes for stage in stages for item in stage.items}


def test_linear_outputs_and_input_copies_follow_linear_rows(loaded):
    """Outputs span linear_rows(...) rows; where they differ from the tokens, the padded input
    copy [padded, in] of onednn_linear is alive during that call."""
    model, (batch, seq) = loaded["llama"], PADDED
    c, tokens = model.backend.config, batch * seq
    plan = model.backend.memory_plan(mi.HookSpec(), batch, seq)
    items = linear_items(plan)

    def rows(out: int) -> int:
        return linear_rows(tokens, out, torch.float32, "cpu")

    q_out, q_in = plan.qkv_features, c.num_attention_heads * c.head_dim
    d, inner, vocab = c.hidden_size, c.intermediate_size, c.vocab_size
    assert items[("qkv", 0)] == rows(q_out) * q_out * 4
    assert items[("gate_up", 0)] == rows(2 * inner) * 2 * inner * 4
    assert items[("t", HookPoint.AttnOut(0))] == rows(d) * d * 4  # o_proj's output
    assert items[("t", HookPoint.MlpPost(0))] == rows(d) * d * 4  # down's output
    assert items[("logits",)] == plan.logits_bytes == rows(vocab) * vocab * 4
    calls = {"qkv_in": (d, q_out), "o_proj_in": (q_in, d), "gate_up_in": (d, 2 * inner),
             "down_in": (inner, d), "unembed_in": (d, vocab)}
    expected = {name: rows(out) * n_in * 4 for name, (n_in, out) in calls.items()
                if rows(out) != tokens}
    copies = {key[1]: n for key, n in items.items() if key[0] == "tmp" and key[1] in COPY_NAMES}
    assert copies == expected
    if onednn_linear_available():
        assert set(copies) == set(calls)  # 100 -> 104 rows for every tiny width


def test_plain_mlp_pads_fc_in_and_fc_out(loaded):
    model, (batch, seq) = loaded["starcoder2"], PADDED
    c, tokens = model.backend.config, batch * seq
    items = linear_items(model.backend.memory_plan(mi.HookSpec(), batch, seq))
    pre_rows = linear_rows(tokens, c.intermediate_size, torch.float32, "cpu")
    assert items[("t", HookPoint.MlpPreAct(0))] == pre_rows * c.intermediate_size * 4
    names = {key[1] for key in items if key[0] == "tmp"}
    assert ({"fc_in_in", "down_in"} <= names) is onednn_linear_available()
    assert "gate_up_in" not in names


@pytest.mark.parametrize("shape", [REFUSED, (1, 128)], ids=["refused", "bucket"])
def test_no_padding_no_copies(loaded, shape):
    """129 rows: padding refused (F.linear); 128 rows: already a bucket (no copy)."""
    plan = loaded["llama"].backend.memory_plan(mi.HookSpec(), *shape)
    items = linear_items(plan)
    assert not {key for key in items if key[0] == "tmp" and key[1] in COPY_NAMES}
    assert items[("qkv", 0)] == shape[0] * shape[1] * plan.qkv_features * 4


def test_bf16_takes_f_linear_unpadded(tiny_models):
    """Lower precisions never pad (F.linear keeps HF's numerics): plan and forward agree."""
    model = mi.MIModel.from_pretrained(tiny_models["llama"].path, device="cpu",
                                       dtype=torch.bfloat16)
    plan, sizes = forward_storages(model, *PADDED, with_result=False)
    assert_planned_as_allocated(sizes)
    assert sizes["logits"][0] == 100 * model.vocab_size * 2
    assert not {k for k in linear_items(plan) if k[0] == "tmp" and k[1] in COPY_NAMES}


def test_without_onednn_nothing_is_padded(loaded, monkeypatch):
    """TORCH_MI_LINEAR=aten (or a build without oneDNN): F.linear everywhere, exact rows."""
    monkeypatch.setattr(layers, "onednn_linear_available", lambda: False)
    plan, sizes = forward_storages(loaded["llama"], *PADDED, with_result=False)
    assert_planned_as_allocated(sizes)
    assert sizes["blocks.0.attn.hook_q"][0] == 100 * plan.qkv_features * 4
    assert not {k for k in linear_items(plan) if k[0] == "tmp" and k[1] in COPY_NAMES}
