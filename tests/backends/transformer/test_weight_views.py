"""TransformerLens-layout weight views: same values as TL 3.9's HookedTransformer (raw
weights, fp32) and HF's modules, per-layer views share the parameters' storage, stacking
and GQA broadcast are copies, bad names and layers are typed errors."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.helpers.transformerlens import hooked_transformer

pytest.importorskip("transformer_lens")

TL_VARIANTS = ("llama", "qwen2", "gemma", "phi3", "qwen3")
ATTN = ("W_Q", "W_O", "b_Q", "b_O")
KV = ("W_K", "W_V", "b_K", "b_V")
MLP = ("W_in", "W_gate", "W_out", "b_in", "b_out")


@pytest.fixture(scope="module")
def tl_models(tiny_models):
    class Lazy(dict):
        def __missing__(self, variant):
            tiny = tiny_models[variant]
            self[variant] = hooked_transformer(tiny.family, tiny.hf)
            return self[variant]

    return Lazy()


@pytest.mark.parametrize("variant", TL_VARIANTS)
def test_weights_equal_transformerlens(variant, loaded, tl_models):
    model, tl = loaded[variant], tl_models[variant]
    grouped = model.config.num_kv_heads != model.num_heads
    for i, block in enumerate(tl.blocks):
        ours = model.weights.layer(i)
        for name in ATTN + MLP:
            torch.testing.assert_close(getattr(ours, name), getattr(block.attn if name in ATTN
                                                                    else block.mlp, name),
                                       rtol=0, atol=0, msg=f"layer {i} {name}")
        for name in KV:  # per KV head = TL's _W_K; broadcast = TL's W_K
            per_kv = getattr(block.attn, "_" + name) if grouped else getattr(block.attn, name)
            torch.testing.assert_close(getattr(ours, name), per_kv, rtol=0, atol=0)
            torch.testing.assert_close(ours.get(name, broadcast=True),
                                       getattr(block.attn, name), rtol=0, atol=0)
    for name in ("W_Q", "W_O", "W_in", "W_gate", "W_out", "b_O"):  # stacked, as TL's
        torch.testing.assert_close(getattr(model, name), getattr(tl, name), rtol=0, atol=0)
    torch.testing.assert_close(model.weights.get("W_K", broadcast=True), tl.W_K, rtol=0, atol=0)
    torch.testing.assert_close(model.W_U, tl.W_U, rtol=0, atol=0)
    torch.testing.assert_close(model.b_U, tl.b_U, rtol=0, atol=0)
    scale = model.config.embedding_scale  # TL folds Gemma's sqrt(D) into W_E
    expected_e = tl.W_E if scale is None else tl.W_E / torch.tensor(scale, dtype=torch.float32)
    torch.testing.assert_close(model.W_E, expected_e)


def test_biases_equal_hf_modules(tiny_models, loaded):
    """llama3 has attention and MLP biases (TL's llama converter drops them: HF is the
    oracle); gated b_in is the up projection's bias, b_gate the gate's."""
    hf, model = tiny_models["llama3"].hf, loaded["llama3"]
    h, kv, d = model.num_heads, model.config.num_kv_heads, model.config.head_dim
    for i, layer in enumerate(hf.model.layers):
        ours, attn, mlp = model.weights.layer(i), layer.self_attn, layer.mlp
        torch.testing.assert_close(ours.b_Q, attn.q_proj.bias.view(h, d), rtol=0, atol=0)
        torch.testing.assert_close(ours.b_K, attn.k_proj.bias.view(kv, d), rtol=0, atol=0)
        torch.testing.assert_close(ours.b_V, attn.v_proj.bias.view(kv, d), rtol=0, atol=0)
        torch.testing.assert_close(ours.b_O, attn.o_proj.bias, rtol=0, atol=0)
        torch.testing.assert_close(ours.b_in, mlp.up_proj.bias, rtol=0, atol=0)
        torch.testing.assert_close(ours.b_gate, mlp.gate_proj.bias, rtol=0, atol=0)
        torch.testing.assert_close(ours.b_out, mlp.down_proj.bias, rtol=0, atol=0)
        torch.testing.assert_close(ours.W_K, attn.k_proj.weight.view(kv, d, -1).transpose(1, 2),
                                   rtol=0, atol=0)


def test_plain_mlp_weights_equal_hf(tiny_models, loaded):
    hf, model = tiny_models["starcoder2"].hf, loaded["starcoder2"]
    for i, layer in enumerate(hf.model.layers):
        ours = model.weights.layer(i)
        assert ours.W_gate is None and ours.b_gate is None
        torch.testing.assert_close(ours.W_in, layer.mlp.c_fc.weight.T, rtol=0, atol=0)
        torch.testing.assert_close(ours.b_in, layer.mlp.c_fc.bias, rtol=0, atol=0)
        torch.testing.assert_close(ours.W_out, layer.mlp.c_proj.weight.T, rtol=0, atol=0)
    assert model.W_gate is None
    torch.testing.assert_close(model.W_U, hf.lm_head.weight.T, rtol=0, atol=0)


def _param_of(block, name):
    attn, mlp = block.attn, block.mlp
    if name in ("W_Q", "W_K", "W_V"):
        return attn.qkv.weight
    if name in ("b_Q", "b_K", "b_V"):
        return attn.qkv.bias
    if name in ("W_O", "b_O"):
        return attn.o_proj.weight if name == "W_O" else attn.o_proj.bias
    if name in ("W_in", "W_gate", "b_in", "b_gate"):
        return getattr(mlp, "gate_up", None) and (mlp.gate_up.weight if name.startswith("W")
                                                  else mlp.gate_up.bias)
    return mlp.down.weight if name == "W_out" else mlp.down.bias


@pytest.mark.parametrize("variant", ("llama", "llama3", "gemma", "starcoder2"))
def test_per_layer_weights_are_views_of_the_parameters(variant, loaded):
    model = loaded[variant]
    backend = model.backend
    for i, block in enumerate(backend.blocks):
        ours = model.weights.layer(i)
        names = ATTN + KV + MLP + ("b_gate",)
        if variant == "starcoder2":  # plain MLP: fc_in / fc_out
            names = ATTN + KV
            for name, param in (("W_in", block.mlp.fc_in.weight), ("b_in", block.mlp.fc_in.bias),
                                ("W_out", block.mlp.fc_out.weight)):
                assert ours.get(name).untyped_storage().data_ptr() == \
                    param.untyped_storage().data_ptr(), name
        for name in names:
            param = _param_of(block, name)
            if param is None:  # no such bias: zeros, a new tensor
                assert not getattr(ours, name).any(), name
                continue
            view = getattr(ours, name)
            assert view.untyped_storage().data_ptr() == param.untyped_storage().data_ptr(), name
    assert model.W_U.untyped_storage().data_ptr() == \
        backend.unembed.weight.untyped_storage().data_ptr()
    assert model.W_E.data_ptr() == backend.embed.weight.data_ptr()
    # Stacking over layers and GQA broadcast copy (documented), as TL's properties do.
    stacked = model.W_Q
    assert stacked.untyped_storage().data_ptr() != \
        backend.blocks[0].attn.qkv.weight.untyped_storage().data_ptr()


def test_per_head_result_is_z_times_w_o(loaded, tiny_models):
    """The W_O view reproduces hook_result: result[:, :, h] = z[:, :, h] @ W_O[h]."""
    model, tiny = loaded["qwen2"], tiny_models["qwen2"]
    cache = model.forward(tiny.input_ids, mi.HookSpec().capture("blocks.1.attn.hook_z",
                                                                "blocks.1.attn.hook_result"))
    z = cache["blocks.1.attn.hook_z"]  # [B,S,H,d]
    expected = torch.einsum("bshd,hdD->bshD", z, model.weights.layer(1).W_O)
    torch.testing.assert_close(cache["blocks.1.attn.hook_result"], expected,
                               rtol=1e-5, atol=1e-6)


def test_bad_names_and_layers_are_typed_errors(loaded):
    model = loaded["llama"]
    with pytest.raises(mi.InputError, match="unknown weight 'W_X'"):
        model.weights.get("W_X")
    with pytest.raises(mi.InputError, match="layer must be an int in -2..1"):
        model.weights.layer(2)
    with pytest.raises(mi.InputError, match="layer must be an int"):
        model.weights.layer(True)
    with pytest.raises(mi.InputError, match="whole model"):
        model.weights.get("W_U", layer=0)
    with pytest.raises(mi.InputError, match="broadcast must be True or False"):
        model.weights.layer(0).get("W_K", broadcast="yes")
    with pytest.raises(AttributeError, match="W_X"):
        model.W_X  # noqa: B018
    torch.testing.assert_close(model.weights.layer(-1).W_Q, model.weights.layer(1).W_Q)
    torch.testing.assert_close(model.weights.get("W_Q", layer=1), model.W_Q[1])
