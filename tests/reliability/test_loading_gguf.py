"""Catalogue: hostile GGUF files, written byte by byte (tests/reliability/loading_micro.py).
Structural damage is a WeightError naming the tensor or key; bad model metadata is a
ConfigError naming the full key; bad tokenizer metadata is a TokenizerError."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
import torch

import torch_mi as mi
from tests.reliability.exact import raises_exactly
from tests.reliability.loading_micro import (
    ARRAY,
    F32,
    STRING,
    U32,
    U64,
    gguf_file,
    gguf_kv,
    gguf_micro_kvs,
    gguf_micro_tensors,
    gguf_offsets,
    write_gguf_micro,
)
from torch_mi.loading.gguf_reader import MAX_ARRAY_DEPTH

NAN = float("nan")


def load(path, **options):
    return mi.MIModel.from_pretrained(path, device="cpu", **options)


def write(tmp_path, kvs=None, tensors=None, **layout) -> object:
    path = tmp_path / "x.gguf"
    path.write_bytes(gguf_file(gguf_micro_kvs() if kvs is None else kvs,
                               gguf_micro_tensors() if tensors is None else tensors, **layout))
    return path


def with_tensor(name: str, **change) -> list:
    """The micro tensors with one entry's fields (dims, type_id, raw) replaced."""
    out = []
    for entry in gguf_micro_tensors():
        if entry[0] == name:
            fields = dict(zip(("name", "dims", "type_id", "raw"), entry, strict=True))
            fields.update(change)
            entry = (fields["name"], fields["dims"], fields["type_id"], fields["raw"])
        out.append(entry)
    return out


def test_the_micro_gguf_loads(tmp_path):
    model = load(write_gguf_micro(tmp_path / "m.gguf"))
    assert torch.isfinite(model.forward(torch.tensor([[1, 2, 3]])).output()).all()
    assert model.tokenizer.decode(model.tokenizer.encode("hi")) == "hi"


# ---- structure: WeightError ----------------------------------------------------------------
def test_tensor_type_id_no_format_defines(tmp_path):
    """The issue's example: type id 99 used to be a raw KeyError."""
    path = write(tmp_path, tensors=with_tensor("blk.0.attn_k.weight", type_id=99))
    with raises_exactly(mi.WeightError, match=r"tensor 'blk\.0\.attn_k\.weight' has ggml type id "
                                              r"99, which no GGUF version defines"):
        load(path)


def test_metadata_arrays_nested_200k_deep(tmp_path):
    """The issue's example: 200k nested arrays used to raise RecursionError."""
    deep = (b"\x04\x00\x00\x00\x00\x00\x00\x00bomb" + struct.pack("<I", ARRAY)
            + struct.pack("<IQ", ARRAY, 1) * 200_000 + struct.pack("<IQ", U32, 0))
    path = write(tmp_path, kvs=[*gguf_micro_kvs(), deep])
    start = time.perf_counter()
    with raises_exactly(mi.WeightError, match=rf"metadata key 'bomb' nests arrays more than "
                                              rf"{MAX_ARRAY_DEPTH} deep"):
        load(path)
    assert time.perf_counter() - start < 1.0


def test_string_array_claiming_2_to_the_60_items(tmp_path):
    bomb = b"\x04\x00\x00\x00\x00\x00\x00\x00huge" + struct.pack("<IIQ", ARRAY, STRING, 2**60)
    path = write(tmp_path, kvs=[bomb, *gguf_micro_kvs()])
    with raises_exactly(mi.WeightError, match=rf"an array claims {2**60} items"):
        load(path)


def test_nested_array_claiming_2_to_the_60_items(tmp_path):
    bomb = b"\x04\x00\x00\x00\x00\x00\x00\x00huge" + struct.pack("<IIQ", ARRAY, ARRAY, 2**60)
    path = write(tmp_path, kvs=[bomb, *gguf_micro_kvs()])
    with raises_exactly(mi.WeightError, match=rf"an array claims {2**60} items"):
        load(path)


def test_numeric_array_claiming_more_than_the_file(tmp_path):
    bomb = b"\x04\x00\x00\x00\x00\x00\x00\x00huge" + struct.pack("<IIQ", ARRAY, U64, 2**40)
    path = write(tmp_path, kvs=[bomb, *gguf_micro_kvs()])
    with raises_exactly(mi.WeightError, match=r"the file is truncated or corrupt \(needs "
                                              rf"{8 * 2**40} bytes"):
        load(path)


def test_duplicate_metadata_key(tmp_path):
    kvs = [*gguf_micro_kvs(), gguf_kv("llama.block_count", U32, 7)]
    with raises_exactly(mi.WeightError, match=r"metadata key 'llama\.block_count' is listed twice"):
        load(write(tmp_path, kvs=kvs))


def test_unknown_metadata_value_type(tmp_path):
    odd = b"\x03\x00\x00\x00\x00\x00\x00\x00odd" + struct.pack("<I", 77) + b"\0" * 8
    with raises_exactly(mi.WeightError, match=r"metadata key 'odd' has unknown value type 77"):
        load(write(tmp_path, kvs=[*gguf_micro_kvs(), odd]))


def test_misaligned_tensor_offset(tmp_path):
    offsets = [0, 32 * 257 * 4 + 4] + [0] * 9
    with raises_exactly(mi.WeightError, match=r"tensor 'output_norm\.weight' starts at data "
                                              r"offset 32900, not a multiple of general\.alignment 32"):
        load(write(tmp_path, offsets=offsets))


def test_overlapping_tensors(tmp_path):
    offsets = gguf_offsets(gguf_micro_tensors())
    offsets[1] = offsets[0]  # output_norm.weight onto the start of token_embd.weight
    path = write(tmp_path, offsets=offsets)
    with raises_exactly(mi.WeightError, match=r"tensors 'output_norm\.weight' and "
                                              r"'token_embd\.weight' overlap"):
        load(path)


def test_tensor_past_the_end_of_the_file(tmp_path):
    path = write(tmp_path, tensors=with_tensor("token_embd.weight", dims=(32, 2**40)))
    with raises_exactly(mi.WeightError, match=r"tensor 'token_embd\.weight' extends past the end"):
        load(path)


def test_tensor_with_five_dimensions(tmp_path):
    path = write(tmp_path, tensors=with_tensor("output_norm.weight", dims=(2, 2, 2, 2, 2)))
    with raises_exactly(mi.WeightError, match=r"tensor 'output_norm\.weight' has 5 dimensions"):
        load(path)


def test_quantised_row_not_a_multiple_of_the_block(tmp_path):
    path = write(tmp_path, tensors=with_tensor("blk.0.attn_q.weight", dims=(16, 64)))
    with raises_exactly(mi.WeightError, match=r"tensor 'blk\.0\.attn_q\.weight' \(Q8_0\) has a row "
                                              r"of 16 elements, not a multiple of the block size 32"):
        load(path)


def test_integer_tensor_type_for_a_float_weight(tmp_path):
    raw = np.zeros(32, np.int32).tobytes()
    path = write(tmp_path, tensors=with_tensor("output_norm.weight", type_id=26, raw=raw))
    with raises_exactly(mi.WeightError, match=r"'output_norm\.weight' is stored as ggml type I32, "
                                              r"which torch-mi cannot dequantise"):
        load(path)


@pytest.mark.parametrize("alignment", [0, 3])
def test_alignment_that_is_not_a_power_of_two(tmp_path, alignment):
    kvs = [*gguf_micro_kvs(), gguf_kv("general.alignment", U32, alignment)]
    with raises_exactly(mi.WeightError, match=rf"general\.alignment {alignment} is not a power"):
        load(write(tmp_path, kvs=kvs))


def test_tensor_count_that_cannot_fit(tmp_path):
    with raises_exactly(mi.WeightError, match=r"corrupt header \(18446744073709551615 tensors"):
        load(write(tmp_path, n_tensors=2**64 - 1))


def test_key_length_beyond_the_file(tmp_path):
    bomb = struct.pack("<Q", 2**62) + b"key"
    with raises_exactly(mi.WeightError, match=rf"needs {2**62} bytes at offset 32"):
        load(write(tmp_path, kvs=[bomb]))


def test_nan_weight_in_a_gguf(tmp_path):
    values = np.ones(32, np.float32)
    values[7] = np.nan
    path = write(tmp_path, tensors=with_tensor("output_norm.weight", raw=values.tobytes()))
    with raises_exactly(mi.WeightError, match=r"GGUF x\.gguf.*'model\.norm\.weight' \(stored as "
                                              r"'output_norm\.weight'\) holds 1 "
                                              r"non-finite value.*index \[7\]"):
        load(path)
    model = load(path, allow_nonfinite=True)
    assert torch.isnan(model.backend.ln_final.weight[7])


def test_infinite_scale_in_a_quantised_block(tmp_path):
    tensors = gguf_micro_tensors()
    name, _dims, _type_id, raw = next(t for t in tensors if t[0] == "blk.0.attn_q.weight")
    raw = bytearray(raw)
    raw[0:2] = np.array([np.inf], np.float16).tobytes()  # the first block's scale
    path = write(tmp_path, tensors=with_tensor(name, raw=bytes(raw)))
    with raises_exactly(mi.WeightError, match=r"'model\.layers\.0\.self_attn\.q_proj\.weight' \(stored "
                                              r"as 'blk\.0\.attn_q\.weight'\) holds "
                                              r"\d+ non-finite"):
        load(path)


# ---- model metadata: ConfigError -----------------------------------------------------------
BAD_METADATA = [
    ("freq_base_nan", {"rope.freq_base": (F32, NAN)},
     r"'llama\.rope\.freq_base' must be a finite number, got nan"),
    ("freq_base_zero", {"rope.freq_base": (F32, 0.0)},
     r"'llama\.rope\.freq_base' must be positive, got 0\.0"),
    ("freq_base_negative", {"rope.freq_base": (F32, -1.0)},
     r"'llama\.rope\.freq_base' must be positive, got -1\.0"),
    ("epsilon_nan", {"attention.layer_norm_rms_epsilon": (F32, NAN)},
     r"'llama\.attention\.layer_norm_rms_epsilon' must be a finite number, got nan"),
    ("epsilon_negative", {"attention.layer_norm_rms_epsilon": (F32, -1e-5)},
     r"'llama\.attention\.layer_norm_rms_epsilon' must be positive"),
    ("epsilon_string", {"attention.layer_norm_rms_epsilon": (STRING, "1e-5")},
     r"'llama\.attention\.layer_norm_rms_epsilon' must be a number, got '1e-5'"),
    ("scaling_factor_nan", {"rope.scaling.type": (STRING, "linear"),
                            "rope.scaling.factor": (F32, NAN)},
     r"'llama\.rope\.scaling\.factor' must be a finite number, got nan"),
    ("scaling_type_number", {"rope.scaling.type": (U32, 3)},
     r"'llama\.rope\.scaling\.type' must be a string, got 3"),
    ("head_count_float", {"attention.head_count": (F32, 2.0)},
     r"'llama\.attention\.head_count' must be a non-negative integer, got 2\.0"),
    ("head_count_zero", {"attention.head_count": (U32, 0)},
     r"'llama\.attention\.head_count' must be positive"),
    ("kv_heads_zero", {"attention.head_count_kv": (U32, 0)},
     r"'num_kv_heads' must be a positive integer, got 0"),
    ("block_count_string", {"block_count": (STRING, "1")},
     r"'llama\.block_count' must be a non-negative integer, got '1'"),
    ("block_count_astronomical", {"block_count": (U64, 2**40)},
     r"'llama\.block_count' = 1099511627776 exceeds 1,048,576"),
    ("block_count_per_layer_array", {"block_count": (ARRAY, (U32, [1, 2]))},
     r"'llama\.block_count' varies per layer"),
    ("nested_array_for_a_size", {"embedding_length": (ARRAY, (ARRAY, [(U32, [32])]))},
     r"'llama\.embedding_length' must be a non-negative integer, got \[array"),
    ("missing_embedding_length", {"embedding_length": None},
     r"required metadata key 'llama\.embedding_length' is missing"),
    ("unsupported_architecture", {"general.architecture": (STRING, "gpt2")},
     r"GGUF architecture 'gpt2' is not supported"),
    ("architecture_not_a_string", {"general.architecture": (U32, 1)},
     r"GGUF architecture 1 is not supported"),
]


@pytest.mark.parametrize(("override", "match"), [c[1:] for c in BAD_METADATA],
                         ids=[c[0] for c in BAD_METADATA])
def test_bad_model_metadata(tmp_path, override, match):
    with raises_exactly(mi.ConfigError, match=match):
        load(write(tmp_path, kvs=gguf_micro_kvs(**override)))


# ---- tokenizer metadata: TokenizerError ----------------------------------------------------
BAD_TOKENIZER = [
    ("tokens_not_strings", {"tokenizer.ggml.tokens": (ARRAY, (U32, [1, 2, 3]))},
     r"tokenizer\.ggml\.tokens must be a list of strings"),
    ("token_types_strings", {"tokenizer.ggml.token_type": (ARRAY, (STRING, ["x"] * 257))},
     r"tokenizer\.ggml\.token_type must be an array of integers"),
    ("token_types_wrong_count", {"tokenizer.ggml.token_type": (ARRAY, (U32, [1, 1]))},
     r"tokenizer\.ggml\.token_type has 2 entries for 257 tokens"),
    ("scores_nan", {"tokenizer.ggml.scores": (ARRAY, (F32, [NAN] * 257))},
     r"tokenizer\.ggml\.scores holds NaN or infinite values"),
    ("merges_not_pairs", {"tokenizer.ggml.merges": (ARRAY, (STRING, ["a b c"]))},
     r"tokenizer\.ggml\.merges entries must be 'left right'"),
    ("add_bos_array", {"tokenizer.ggml.add_bos_token": (ARRAY, (U32, [1, 0]))},
     r"tokenizer\.ggml\.add_bos_token must be true/false"),
    ("unknown_model", {"tokenizer.ggml.model": (STRING, "bert")},
     r"tokenizer type 'bert' is not supported"),
]


@pytest.mark.parametrize(("override", "match"), [c[1:] for c in BAD_TOKENIZER],
                         ids=[c[0] for c in BAD_TOKENIZER])
def test_bad_tokenizer_metadata(tmp_path, override, match):
    with raises_exactly(mi.TokenizerError, match=match):
        load(write(tmp_path, kvs=gguf_micro_kvs(**override)))


def test_truncated_before_the_tensor_data(tmp_path):
    path = write_gguf_micro(tmp_path / "m.gguf")
    path.write_bytes(path.read_bytes()[:-1000])
    with raises_exactly(mi.WeightError, match=r"tensor '.*' extends past the end of the file"):
        load(path)


def test_f32_tensor_directory_entry_with_zero_rows(tmp_path):
    path = write(tmp_path, tensors=with_tensor("output_norm.weight", dims=(0,), raw=b""))
    with raises_exactly(mi.WeightError, match=r"model\.norm\.weight: checkpoint \[0\], model "
                                              r"expects \[32\]"):
        load(path)
