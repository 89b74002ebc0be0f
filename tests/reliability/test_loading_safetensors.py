"""Catalogue: hostile single-file safetensors checkpoints. Each case asserts the exact error
class and that the message names the offending tensor, field or value."""

from __future__ import annotations

import json
import os
import pickle
import re
import struct

import pytest
import torch
from safetensors.torch import save_file

import torch_mi as mi
from tests.reliability.exact import raises_exactly
from tests.reliability.loading_micro import (
    header_of,
    micro_tensors,
    refused_without_blocking,
    safetensors_bytes,
    write_folder,
)

EMBED = "model.embed_tokens.weight"


@pytest.fixture
def micro(tmp_path):
    return write_folder(tmp_path / "m")


def load(folder, **options):
    return mi.MIModel.from_pretrained(folder, device="cpu", **options)


def rewrite_header(folder, edit, data_edit=None) -> None:
    """Apply ``edit(header)`` (and ``data_edit(data)``) to the folder's model.safetensors."""
    path = folder / "model.safetensors"
    header, data = header_of(path)
    edit(header)
    if data_edit is not None:
        data = data_edit(data)
    path.write_bytes(safetensors_bytes(header, data))


def test_the_micro_checkpoint_loads(micro):
    model = load(micro)
    assert torch.isfinite(model.forward(torch.tensor([[1, 2, 3]])).output()).all()


# ---- byte ranges ---------------------------------------------------------------------------
def test_data_offsets_too_short_for_the_shape(micro):
    """The issue's example: [0, 4] for a [32, 16] F32 tensor used to read other tensors."""
    rewrite_header(micro, lambda h: h[EMBED].update(data_offsets=[0, 4]))
    with raises_exactly(mi.WeightError, match=rf"{EMBED}.*needs 2048 bytes.*\[0, 4\] span 4"):
        load(micro)


def test_overlapping_tensors(micro):
    """model.norm.weight is moved onto the first 64 bytes of the embedding."""
    def edit(header):
        begin = header[EMBED]["data_offsets"][0]
        header["model.norm.weight"]["data_offsets"] = [begin, begin + 64]

    rewrite_header(micro, edit)
    with raises_exactly(mi.WeightError, match=rf"tensors 'model\.norm\.weight' and '{EMBED}' "
                                              rf"overlap"):
        load(micro)


def test_offsets_past_the_end_of_the_data(micro):
    def edit(header):
        last = max((n for n in header if n != "__metadata__"),
                   key=lambda n: header[n]["data_offsets"][1])
        header[last]["data_offsets"][1] += 400
        header[last]["shape"][0] += 100
        edit.name = last

    rewrite_header(micro, edit)
    with raises_exactly(mi.WeightError, match=rf"tensor '{re.escape(edit.name)}' ends at byte "
                                              rf"\d+ of the data section, which has \d+"):
        load(micro)


def test_truncated_file(micro):
    path = micro / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with raises_exactly(mi.WeightError, match=r"model\.safetensors: tensor 'model\.norm\.weight' "
                                              r"ends at byte 22848 of the data section, which "
                                              r"has 22748; the file is truncated"):
        load(micro)


def test_stray_bytes_after_the_data(micro):
    path = micro / "model.safetensors"
    path.write_bytes(path.read_bytes() + b"\0" * 64)
    with raises_exactly(mi.WeightError, match="followed by stray bytes"):
        load(micro)


def test_gap_between_tensors(micro):
    def edit(header):
        for info in header.values():
            if isinstance(info, dict) and "data_offsets" in info:
                info["data_offsets"] = [o + 8 for o in info["data_offsets"]]

    rewrite_header(micro, edit, lambda data: b"\0" * 8 + data)
    with raises_exactly(mi.WeightError, match=r"8 bytes before tensor '.*' belong to no tensor"):
        load(micro)


def test_begin_after_end(micro):
    rewrite_header(micro, lambda h: h[EMBED].update(data_offsets=[100, 4]))
    with raises_exactly(mi.WeightError, match=rf"{EMBED}.*data_offsets \[100, 4\]"):
        load(micro)


def test_shape_with_a_huge_dimension(micro):
    rewrite_header(micro, lambda h: h[EMBED].update(shape=[2**62, 2**62]))
    with raises_exactly(mi.WeightError, match=rf"{EMBED}.*needs \d+ bytes"):
        load(micro)


# ---- header structure ----------------------------------------------------------------------
def test_entry_without_data_offsets(micro):
    rewrite_header(micro, lambda h: h[EMBED].pop("data_offsets"))
    with raises_exactly(mi.WeightError, match=rf"tensor '{EMBED}' must be an object with.*"
                                              rf"'data_offsets'"):
        load(micro)


def test_entry_that_is_not_an_object(micro):
    rewrite_header(micro, lambda h: h.update({EMBED: 5}))
    with raises_exactly(mi.WeightError, match=rf"tensor '{EMBED}' must be an object.*got int"):
        load(micro)


def test_header_that_is_a_json_list(micro):
    (micro / "model.safetensors").write_bytes(safetensors_bytes([1, 2, 3]))
    with raises_exactly(mi.WeightError, match="header must be a JSON object, got list"):
        load(micro)


def test_header_that_is_not_json(micro):
    (micro / "model.safetensors").write_bytes(safetensors_bytes(b"{not json"))
    with raises_exactly(mi.WeightError, match="header is not valid JSON"):
        load(micro)


def test_header_that_is_not_utf8(micro):
    (micro / "model.safetensors").write_bytes(safetensors_bytes(b'{"\xff\xfe": 1}'))
    with raises_exactly(mi.WeightError, match="header is not valid JSON"):
        load(micro)


def test_header_nested_too_deeply(micro):
    (micro / "model.safetensors").write_bytes(safetensors_bytes(b"[" * 200_000 + b"]" * 200_000))
    with raises_exactly(mi.WeightError, match="header is not valid JSON"):
        load(micro)


def test_header_length_beyond_the_file(micro):
    (micro / "model.safetensors").write_bytes(struct.pack("<Q", 10**6) + b"{}")
    with raises_exactly(mi.WeightError, match=r"header length 1000000 in a file of 10 bytes"):
        load(micro)


def test_header_length_over_the_library_limit(micro):
    (micro / "model.safetensors").write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with raises_exactly(mi.WeightError, match=rf"header length {2**63}.*at most 100000000"):
        load(micro)


def test_file_shorter_than_the_length_prefix(micro):
    (micro / "model.safetensors").write_bytes(b"\x01\x02")
    with raises_exactly(mi.WeightError, match=r"2 bytes, shorter than the 8-byte header length"):
        load(micro)


def test_duplicate_tensor_name_in_the_header(micro):
    header, data = header_of(micro / "model.safetensors")
    text = json.dumps(header)
    dup = text[:-1] + f', "{EMBED}": ' + json.dumps(header[EMBED]) + "}"
    (micro / "model.safetensors").write_bytes(safetensors_bytes(dup, data))
    with raises_exactly(mi.WeightError, match=rf"lists '{EMBED}' twice"):
        load(micro)


def test_unknown_dtype(micro):
    rewrite_header(micro, lambda h: h[EMBED].update(dtype="F4"))
    with raises_exactly(mi.WeightError, match=rf"{EMBED}.*unsupported dtype 'F4'"):
        load(micro)


def test_dtype_that_is_not_a_string(micro):
    rewrite_header(micro, lambda h: h[EMBED].update(dtype=["F32"]))
    with raises_exactly(mi.WeightError, match=rf"{EMBED}.*unsupported dtype \['F32'\]"):
        load(micro)


def test_negative_dimension(micro):
    rewrite_header(micro, lambda h: h[EMBED].update(shape=[-32, -16]))
    with raises_exactly(mi.WeightError, match=rf"{EMBED}.*shape \[-32, -16\]"):
        load(micro)


def test_float_dimension(micro):
    rewrite_header(micro, lambda h: h[EMBED].update(shape=[32.0, 16]))
    with raises_exactly(mi.WeightError, match=rf"{EMBED}.*shape \[32.0, 16\]"):
        load(micro)


def test_shape_that_is_a_string(micro):
    rewrite_header(micro, lambda h: h[EMBED].update(shape="32x16"))
    with raises_exactly(mi.WeightError, match=rf"{EMBED}.*shape '32x16'"):
        load(micro)


def test_metadata_that_is_not_string_to_string(micro):
    rewrite_header(micro, lambda h: h.update(__metadata__={"format": 1}))
    with raises_exactly(mi.WeightError, match="'__metadata__' must map strings to strings"):
        load(micro)


# ---- dtypes and values ---------------------------------------------------------------------
@pytest.mark.parametrize(("dtype", "name"), [(torch.int8, "I8"), (torch.bool, "BOOL"),
                                             (torch.int64, "I64"), (torch.uint8, "U8")])
def test_integer_and_bool_tensors_are_not_cast_into_a_float_model(tmp_path, dtype, name):
    tensors = micro_tensors()
    tensors[EMBED] = (tensors[EMBED] * 100).to(dtype)
    folder = write_folder(tmp_path / "m", tensors=tensors)
    with raises_exactly(mi.WeightError, match=rf"'{EMBED}' is stored as {name}.*floating-point"):
        load(folder)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_single_non_finite_weight_is_refused(tmp_path, bad):
    tensors = micro_tensors()
    tensors["model.layers.1.mlp.down_proj.weight"][3, 5] = bad
    folder = write_folder(tmp_path / "m", tensors=tensors)
    with raises_exactly(mi.WeightError, match=r"'model\.layers\.1\.mlp\.down_proj\.weight' holds 1 "
                                              r"non-finite value.*index \[3, 5\].*allow_nonfinite"):
        load(folder)


def test_allow_nonfinite_is_the_escape_hatch(tmp_path):
    tensors = micro_tensors()
    tensors["model.norm.weight"][0] = float("nan")
    model = load(write_folder(tmp_path / "m", tensors=tensors), allow_nonfinite=True)
    assert torch.isnan(model.backend.ln_final.weight[0])


def test_allow_nonfinite_must_be_a_bool(micro):
    with raises_exactly(mi.ConfigError, match="allow_nonfinite must be True or False, got 'yes'"):
        load(micro, allow_nonfinite="yes")


def test_nan_in_a_half_precision_checkpoint(tmp_path):
    tensors = {k: v.half() for k, v in micro_tensors().items()}
    tensors["model.layers.0.self_attn.k_proj.weight"][0, 0] = float("nan")
    with raises_exactly(mi.WeightError, match=r"self_attn\.k_proj\.weight' holds 1 non-finite"):
        load(write_folder(tmp_path / "m", tensors=tensors))


def test_nan_in_a_tied_head_that_should_equal_the_embedding(tmp_path):
    config = {**json.loads((write_folder(tmp_path / "x") / "config.json").read_text()),
              "tie_word_embeddings": True}
    tensors = micro_tensors()
    tensors["lm_head.weight"] = tensors[EMBED].clone()
    tensors["lm_head.weight"][0, 0] = float("nan")
    with raises_exactly(mi.WeightError, match=r"lm_head\.weight differs from it"):
        load(write_folder(tmp_path / "m", config=config, tensors=tensors))


# ---- special files -------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_weights_that_are_a_fifo(micro):
    (micro / "model.safetensors").unlink()
    os.mkfifo(micro / "model.safetensors")
    refused_without_blocking(lambda: load(micro), mi.WeightError,
                              r"model\.safetensors is a FIFO \(named pipe\), not a regular file")


def test_weights_that_are_a_directory(micro):
    (micro / "model.safetensors").unlink()
    (micro / "model.safetensors").mkdir()
    with raises_exactly(mi.WeightError, match=r"model\.safetensors is a directory"):
        load(micro)


# ---- no pickles, ever ------------------------------------------------------------------------
class _Payload:
    """Unpickling this calls ``open(marker, 'w')``: the canary file appears iff executed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_in_pytorch_model_bin_is_never_executed(tmp_path, micro):
    marker = tmp_path / "PWNED"
    (micro / "model.safetensors").unlink()
    with open(micro / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"model.embed_tokens.weight": _Payload(str(marker))}, handle)
    with raises_exactly(mi.WeightError, match=r"never pickles.*convert \.bin checkpoints"):
        load(micro)
    assert not marker.exists()
    pickle.loads((micro / "pytorch_model.bin").read_bytes())  # the payload is live...
    assert marker.exists()  # ...so its absence above proves it was never unpickled


def test_pickle_payload_named_model_safetensors_is_never_executed(tmp_path, micro):
    marker = tmp_path / "PWNED"
    (micro / "model.safetensors").write_bytes(pickle.dumps(_Payload(str(marker))))
    with raises_exactly(mi.WeightError, match=r"model\.safetensors"):
        load(micro)
    assert not marker.exists()


def test_safetensors_written_by_the_library_still_load_in_bf16(tmp_path):
    tensors = {k: v.bfloat16() for k, v in micro_tensors().items()}
    folder = write_folder(tmp_path / "m", tensors=tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    model = load(folder)
    assert torch.equal(model.backend.embed.weight, tensors[EMBED].float())

