"""BlinkDL ``.pth`` checkpoints (loading/pth.py): read only with ``weights_only=True``,
version and config from the keys and shapes, names mapped onto the HF layouts, strict
accounting. Hostile files are refused with typed errors and are never unpickled."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch

import torch_mi as mi
from tests.helpers.rwkv import TinyRwkvShape, make_v6, make_v7, write_hf_folder, write_pth
from tests.reliability.exact import raises_exactly
from torch_mi.loading.pth import pth_hf_config, rwkv_version

IDS = torch.tensor([[5, 17, 200, 3, 99, 42, 7, 255, 0, 128]])
MAKERS = {"v6": make_v6, "v7": make_v7}


def load(path, **options):
    return mi.MIModel.from_pretrained(path, device="cpu", **options)


@pytest.fixture(scope="module", params=["v6", "v7"])
def version(request):
    return request.param


@pytest.fixture(scope="module")
def pair(version, tmp_path_factory):
    """(the .pth model, the same weights through the HF folder layout)."""
    root = tmp_path_factory.mktemp(f"pth-{version}")
    sd = MAKERS[version]()
    return load(write_pth(sd, root / "m.pth")), load(write_hf_folder(sd, root / "hf"))


# ---- what a good file gives ----------------------------------------------------------------
def test_config_inferred_from_shapes_equals_the_hf_config(pair, version):
    from_pth, from_hf = pair
    assert from_pth.config == from_hf.config
    assert from_pth.config.model_type == {"v6": "rwkv6", "v7": "rwkv7"}[version]
    assert from_pth.num_layers == 3 and from_pth.num_heads == 4


def test_pth_weights_equal_the_hf_layout_weights(pair):
    from_pth, from_hf = pair
    params = dict(from_hf.backend.named_parameters())
    for name, tensor in from_pth.backend.named_parameters():
        assert torch.equal(tensor, params[name]), name
    torch.testing.assert_close(from_pth.forward(IDS).output(), from_hf.forward(IDS).output(),
                               rtol=0, atol=0)


def test_version_and_config_from_keys():
    assert rwkv_version(make_v6(), "x") == "v6"
    assert rwkv_version(make_v7(), "x") == "v7"
    hf = pth_hf_config(make_v7(), "x")
    assert (hf["head_dim"], hf["num_heads"], hf["decay_low_rank_dim"], hf["a_low_rank_dim"],
            hf["v_low_rank_dim"], hf["gate_low_rank_dim"]) == (64, 4, 32, 32, 16, 48)
    assert pth_hf_config(make_v6(), "x")["head_size"] == 32


def test_v7_without_layer0_value_lora_loads_the_same(tmp_path):
    """Layer 0 has no value residual: its v0/v1/v2 are dropped whether present or not."""
    full = make_v7()
    unused = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")
    stripped = {k: v for k, v in full.items() if k not in unused}
    with_them = load(write_pth(full, tmp_path / "full.pth"))
    without = load(write_pth(stripped, tmp_path / "stripped.pth"))
    torch.testing.assert_close(without.forward(IDS).output(), with_them.forward(IDS).output(),
                               rtol=0, atol=0)


def test_bf16_pth_is_converted_to_the_requested_dtype(tmp_path, version):
    sd = {k: v.bfloat16() for k, v in MAKERS[version]().items()}
    model = load(write_pth(sd, tmp_path / "m.pth"), dtype="float32")
    reference = load(write_hf_folder({k: v.float() for k, v in sd.items()}, tmp_path / "hf"))
    assert model.dtype == torch.float32
    torch.testing.assert_close(model.forward(IDS).output(), reference.forward(IDS).output(),
                               rtol=0, atol=0)


def test_world_vocabulary_next_to_the_pth_is_attached(tmp_path):
    import rwkv  # the dev extra; it ships BlinkDL's vocabulary file

    shape = TinyRwkvShape(vocab=65536, hidden=64, layers=1, head_size=32)
    path = write_pth(make_v6(shape=shape), tmp_path / "m.pth")
    assert load(path).tokenizer is None  # BlinkDL checkpoints ship without one
    shutil.copy(Path(rwkv.__file__).parent / "rwkv_vocab_v20230424.txt", tmp_path)
    model = load(path)
    ids = model.tokenizer.encode("def fibonacci(n):\n    ")
    assert list(ids) == [7334, 21676, 41943, 41, 111, 501, 28352]
    assert model.forward_text("def fibonacci(n):").output().shape == (1, 6, 65536)


# ---- hostile files: never unpickled ------------------------------------------------------
class _Payload:
    """Unpickling this calls ``open(marker, 'w')``: the canary file appears iff executed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_without_executing(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    sd = make_v6()
    sd["emb.weight"] = _Payload(str(marker))
    torch.save(sd, path)
    with raises_exactly(mi.WeightError, match=r"evil\.pth.*weights_only=True"):
        load(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live...
    assert marker.exists()  # ...so its absence above proves it was never unpickled


def test_raw_pickle_named_pth_is_refused_without_executing(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"emb.weight": _Payload(str(marker))}))
    with raises_exactly(mi.WeightError, match=r"evil\.pth"):
        load(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload, match", [
    ([torch.zeros(2)], r"holds a list, not a dict of tensors"),
    (torch.zeros(3), r"holds a Tensor, not a dict"),
    ({"emb.weight": torch.zeros(2), "_strategy": "cpu fp32"}, r"'_strategy' \(str\)"),
    ({"emb.weight": torch.zeros(2), 7: torch.zeros(2)}, r"7 \(Tensor\)"),
    ({"emb.weight": {"nested": torch.zeros(2)}}, r"'emb.weight' \(dict\)"),
    ({"emb.weight": torch.zeros(4, 2, dtype=torch.int8)}, r"emb\.weight \(torch\.int8.*not dense "
                                                          r"floating"),
])
def test_not_a_flat_float_tensor_dict(tmp_path, payload, match):
    path = tmp_path / "bad.pth"
    torch.save(payload, path)
    with raises_exactly(mi.WeightError, match=match):
        load(path)


def test_garbage_and_legacy_format_are_weight_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with raises_exactly(mi.WeightError, match=r"garbage\.pth: cannot be read"):
        load(garbage)
    legacy = tmp_path / "legacy.pth"  # pre-1.6 format: cannot be memory-mapped
    torch.save(make_v6(), legacy, _use_new_zipfile_serialization=False)
    with raises_exactly(mi.WeightError, match=r"legacy\.pth: cannot be read"):
        load(legacy)


def test_missing_path_is_a_config_error(tmp_path):
    with raises_exactly(mi.ConfigError, match=r"checkpoint file .*nothere\.pth does not exist"):
        load(tmp_path / "nothere.pth")
    with raises_exactly(mi.ConfigError, match=r"nothere\.pth does not exist"):
        load(str(tmp_path / "nothere.pth"))


# ---- wrong contents -----------------------------------------------------------------------
def test_missing_tensor_is_named(tmp_path, version):
    sd = MAKERS[version]()
    del sd["blocks.1.att.key.weight"]
    hf_name = {"v6": "rwkv.blocks.1.attention.key.weight",
               "v7": "model.layers.1.attn.k_proj.weight"}[version]
    with raises_exactly(mi.WeightError, match=rf"missing tensors \(1\):\s+{hf_name}"):
        load(write_pth(sd, tmp_path / "m.pth"))


def test_missing_sizing_tensor_is_named(tmp_path, version):
    sd = MAKERS[version]()
    del sd["emb.weight"]
    with raises_exactly(mi.WeightError, match=r"missing tensor 'emb\.weight'"):
        load(write_pth(sd, tmp_path / "m.pth"))


def test_unknown_tensor_is_named(tmp_path, version):
    sd = MAKERS[version]()
    sd["blocks.1.att.time_state"] = torch.zeros(4, 32, 32)
    with raises_exactly(mi.WeightError,
                        match=r"(?s)unused checkpoint tensors \(1\):.*time_state"):
        load(write_pth(sd, tmp_path / "m.pth"))


def test_wrong_shape_is_named(tmp_path, version):
    sd = MAKERS[version]()
    sd["blocks.2.ffn.value.weight"] = sd["blocks.2.ffn.value.weight"][:, :-1].clone()
    with raises_exactly(mi.WeightError,
                        match=r"(?s)shape mismatches.*s\.2\..*value\.weight: checkpoint"):
        load(write_pth(sd, tmp_path / "m.pth"))


def test_nonfinite_value_names_the_stored_tensor(tmp_path, version):
    sd = MAKERS[version]()
    sd["blocks.1.ln2.weight"][3] = float("nan")
    path = write_pth(sd, tmp_path / "m.pth")
    with raises_exactly(mi.WeightError, match=r"stored as 'blocks\.1\.ln2\.weight'"):
        load(path)
    assert load(path, allow_nonfinite=True).num_layers == 3


@pytest.mark.parametrize("keys, match", [
    (["emb.weight", "blocks.0.att.time_first", "blocks.0.att.time_mix_k"], "neither RWKV-6"),
    (["emb.weight", "blocks.0.att.time_maa_x", "blocks.0.att.r_k"], "both RWKV-6 and RWKV-7"),
])
def test_not_an_rwkv6_or_rwkv7_checkpoint(tmp_path, keys, match):
    path = write_pth({k: torch.zeros(4, 4) for k in keys}, tmp_path / "m.pth")
    with raises_exactly(mi.ConfigError, match=match):
        load(path)
