"""GGUF format handling on small files: dequantisation of every supported ggml type against
``gguf.quants.dequantize``, tiny written GGUF models against transformers' GGUF loader,
metadata translation (RoPE scaling) and typed errors for bad input."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

import torch_mi as mi
from tests.helpers.gguf import add_metadata
from torch_mi.backends.transformer.config.gguf_keys import llama3_factors
from torch_mi.loading import gguf_dequant
from torch_mi.loading.gguf_model import read_gguf_config
from torch_mi.loading.gguf_reader import GGUFFile
from torch_mi.loading.gguf_tokenizer import byte_alphabet

QUANTISABLE = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.BF16, Q.F16)  # gguf.quants.quantize
K_QUANTS = (Q.Q4_K, Q.Q5_K, Q.Q6_K)  # dequantise-only in the gguf package
ALL_SUPPORTED = (*QUANTISABLE, *K_QUANTS, Q.F32)
# Byte offsets of the float16 scale fields in each block (kept finite in random blocks).
F16_FIELDS = {Q.Q4_0: (0,), Q.Q4_1: (0, 2), Q.Q5_0: (0,), Q.Q5_1: (0, 2), Q.Q8_0: (0,),
              Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


def random_blocks(qtype: Q, rows: int, cols: int, seed: int = 0, scale: float = 0.02
                  ) -> np.ndarray:
    """Random raw bytes [rows, row_bytes] of a block format (any bit pattern is a valid
    block), with finite float16 scales so the values stay in a sane range."""
    block, size = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    for at in F16_FIELDS[qtype]:
        halves = (rng.uniform(-1, 1, blocks.shape[0]) * scale).astype(np.float16)
        blocks[:, at:at + 2] = halves.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, cols // block * size)


def encode(values: np.ndarray, qtype: Q, seed: int = 0) -> np.ndarray:
    """values [rows, cols] in ``qtype``'s on-disk form (random blocks for the K-quants)."""
    if qtype == Q.F32:
        return values.astype(np.float32)
    if qtype == Q.F16:
        return values.astype(np.float16)
    if qtype in K_QUANTS:
        return random_blocks(qtype, *values.shape, seed=seed)
    return gguf_quantize(values.astype(np.float32), qtype)


def ours(raw: np.ndarray, qtype: Q, dtype: torch.dtype = torch.float32,
         pool: ThreadPoolExecutor | None = None) -> torch.Tensor:
    flat = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    block, size = GGML_QUANT_SIZES[qtype]
    out = torch.empty(flat.size // size * block, dtype=dtype)
    gguf_dequant.dequantize_into(torch.from_numpy(flat.copy()), int(qtype), out, pool)
    return out


def reference(raw: np.ndarray, qtype: Q) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(gguf_dequantize(raw, qtype))).reshape(-1)


# ---- dequantisation ------------------------------------------------------------------------
@pytest.mark.parametrize("qtype", ALL_SUPPORTED, ids=lambda q: q.name)
def test_dequantize_matches_gguf_package(qtype):
    values = np.random.default_rng(1).normal(0, 0.05, size=(24, 512)).astype(np.float32)
    raw = encode(values, qtype, seed=int(qtype))
    torch.testing.assert_close(ours(raw, qtype), reference(raw, qtype), atol=0, rtol=0)


@pytest.mark.parametrize("qtype", [q for q in F16_FIELDS], ids=lambda q: q.name)
def test_dequantize_random_blocks_bit_exact(qtype):
    """Every bit pattern of the quantised payload, several chunks, the thread pool."""
    raw = random_blocks(qtype, 8, 2 * gguf_dequant.CHUNK_ELEMENTS // 8 + 256, seed=7)
    with ThreadPoolExecutor(2) as pool:
        got = ours(raw, qtype, pool=pool)
    torch.testing.assert_close(got, reference(raw, qtype), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q8_0, Q.F16, Q.BF16], ids=lambda q: q.name)
def test_dequantize_into_half_precision_is_rounded_fp32(qtype, dtype):
    values = np.random.default_rng(2).normal(0, 0.05, size=(4, 256)).astype(np.float32)
    raw = encode(values, qtype, seed=3)
    torch.testing.assert_close(ours(raw, qtype, dtype), reference(raw, qtype).to(dtype),
                               atol=0, rtol=0)


# ---- tiny GGUF files -----------------------------------------------------------------------

def write_gguf(path: Path, arch: str, kv: dict[str, Any],
               tensors: dict[str, tuple[np.ndarray, Q]]) -> Path:
    """A GGUF with metadata ``kv`` and tensors given as (values [rows, cols] or [n], type)."""
    writer = GGUFWriter(path, arch)
    add_metadata(writer, kv)
    for i, (name, (values, qtype)) in enumerate(tensors.items()):
        data = encode(values if values.ndim == 2 else values[None], qtype, seed=i)
        if values.ndim == 1:
            data = data[0]
        if data.dtype == np.uint8:
            writer.add_tensor(name, data, raw_dtype=qtype)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def byte_level_tokenizer() -> dict[str, Any]:
    tokens = [*byte_alphabet(), "Ġt", "he", "<|endoftext|>"]
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default",
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": ["Ġ t", "h e"],
            "tokenizer.ggml.token_type": [1] * (len(tokens) - 1) + [3],
            "tokenizer.ggml.bos_token_id": len(tokens) - 1,
            "tokenizer.ggml.eos_token_id": len(tokens) - 1}


TINY = dict(hidden=256, layers=2, heads=4, kv_heads=2, ffn=512, vocab=259)
LAYER_TYPES = {  # per block: attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down
    0: (Q.Q4_0, Q.Q5_1, Q.Q4_1, Q.Q5_0, Q.Q4_K, Q.Q5_K, Q.Q6_K),
    1: (Q.F16, Q.BF16, Q.F32, Q.Q8_0, Q.Q6_K, Q.Q4_K, Q.Q5_K),
}


def llama_tensors(rng: np.random.Generator, untied: bool = True) -> dict:
    h, f, v = TINY["hidden"], TINY["ffn"], TINY["vocab"]
    head_dim = h // TINY["heads"]
    kv = TINY["kv_heads"] * head_dim

    def w(rows: int, cols: int) -> np.ndarray:
        return rng.normal(0, 0.05, size=(rows, cols)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1 + 0.1 * rng.normal(size=h)).astype(np.float32)

    tensors = {"token_embd.weight": (w(v, h), Q.Q8_0), "output_norm.weight": (norm(), Q.F32)}
    if untied:
        tensors["output.weight"] = (w(v, h), Q.BF16)
    for i in range(TINY["layers"]):
        q, k, vt, o, gate, up, down = LAYER_TYPES[i]
        tensors.update({
            f"blk.{i}.attn_norm.weight": (norm(), Q.F32), f"blk.{i}.ffn_norm.weight": (norm(), Q.F32),
            f"blk.{i}.attn_q.weight": (w(h, h), q), f"blk.{i}.attn_k.weight": (w(kv, h), k),
            f"blk.{i}.attn_v.weight": (w(kv, h), vt), f"blk.{i}.attn_output.weight": (w(h, h), o),
            f"blk.{i}.ffn_gate.weight": (w(f, h), gate), f"blk.{i}.ffn_up.weight": (w(f, h), up),
            f"blk.{i}.ffn_down.weight": (w(h, f), down),
        })
    return tensors


def llama_metadata(**extra: Any) -> dict[str, Any]:
    h = TINY["hidden"]
    return {"llama.block_count": TINY["layers"], "llama.context_length": 128,
            "llama.embedding_length": h, "llama.feed_forward_length": TINY["ffn"],
            "llama.attention.head_count": TINY["heads"],
            "llama.attention.head_count_kv": TINY["kv_heads"], "llama.rope.freq_base": 10000.0,
            "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.vocab_size": TINY["vocab"],
            "llama.rope.dimension_count": h // TINY["heads"], **byte_level_tokenizer(), **extra}


@pytest.fixture
def tiny_llama(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    return write_gguf(tmp_path / "tiny-llama.gguf", "llama", llama_metadata(), llama_tensors(rng))


def transformers_logits(path: Path, ids: torch.Tensor) -> torch.Tensor:
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        return model(ids).logits


def test_tiny_llama_every_quant_type_matches_transformers(tiny_llama):
    """Q/K un-permutation, untied head and all supported types, end to end."""
    model = mi.MIModel.from_pretrained(tiny_llama, device="cpu")
    assert not model.backend.config.tie_word_embeddings
    ids = torch.randint(0, TINY["vocab"], (2, 12), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.forward(ids).output(), transformers_logits(tiny_llama, ids),
                               atol=1e-5, rtol=1e-5)


def test_tiny_gemma3_matches_transformers(tmp_path):
    """Sliding/full layer pattern, QK-norm, sandwich norms and the stored (1 + w)."""
    rng = np.random.default_rng(1)
    h, head_dim, f, layers, v = 256, 64, 512, 6, TINY["vocab"]

    def w(rows: int, cols: int) -> np.ndarray:
        return rng.normal(0, 0.05, size=(rows, cols)).astype(np.float32)

    def norm(n: int = h) -> tuple[np.ndarray, Q]:
        return (1 + 0.1 * rng.normal(size=n)).astype(np.float32), Q.F32

    tensors = {"token_embd.weight": (w(v, h), Q.Q8_0), "output_norm.weight": norm()}
    for i in range(layers):
        tensors.update({f"blk.{i}.{n}.weight": norm() for n in (
            "attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm")})
        tensors.update({f"blk.{i}.attn_q_norm.weight": norm(head_dim),
                        f"blk.{i}.attn_k_norm.weight": norm(head_dim),
                        f"blk.{i}.attn_q.weight": (w(2 * head_dim, h), Q.Q5_0),
                        f"blk.{i}.attn_k.weight": (w(head_dim, h), Q.Q8_0),
                        f"blk.{i}.attn_v.weight": (w(head_dim, h), Q.Q8_0),
                        f"blk.{i}.attn_output.weight": (w(h, 2 * head_dim), Q.Q4_0),
                        f"blk.{i}.ffn_gate.weight": (w(f, h), Q.Q4_K),
                        f"blk.{i}.ffn_up.weight": (w(f, h), Q.Q5_K),
                        f"blk.{i}.ffn_down.weight": (w(h, f), Q.Q6_K)})
    kv = {"gemma3.block_count": layers, "gemma3.context_length": 128,
          "gemma3.embedding_length": h, "gemma3.feed_forward_length": f,
          "gemma3.attention.head_count": 2, "gemma3.attention.head_count_kv": 1,
          "gemma3.attention.key_length": head_dim, "gemma3.attention.value_length": head_dim,
          "gemma3.rope.freq_base": 1e6, "gemma3.attention.sliding_window": 4,
          "gemma3.attention.layer_norm_rms_epsilon": 1e-6, **byte_level_tokenizer()}
    path = write_gguf(tmp_path / "tiny-gemma3.gguf", "gemma3", kv, tensors)
    model = mi.MIModel.from_pretrained(path, device="cpu")
    assert model.backend.config.layer_types == ("sliding_attention",) * 5 + ("full_attention",)
    ids = torch.randint(0, v, (1, 10), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model.forward(ids).output(), transformers_logits(path, ids),
                               atol=1e-5, rtol=1e-5)


# ---- RoPE metadata -------------------------------------------------------------------------
def tiny_with(tmp_path: Path, extra_kv: dict, extra_tensors: dict | None = None) -> Path:
    tensors = llama_tensors(np.random.default_rng(0), untied=False)
    tensors.update(extra_tensors or {})
    return write_gguf(tmp_path / "t.gguf", "llama", llama_metadata(**extra_kv), tensors)


def test_rope_linear_and_yarn_scaling_are_read(tmp_path):
    linear = read_gguf_config(tiny_with(tmp_path, {"llama.rope.scaling.type": "linear",
                                                   "llama.rope.scaling.factor": 4.0}))
    assert (linear.rope.rope_type, linear.rope.factor) == ("linear", 4.0)
    yarn = read_gguf_config(tiny_with(tmp_path, {
        "llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 8.0,
        "llama.rope.scaling.original_context_length": 16}))
    assert (yarn.rope.rope_type, yarn.rope.factor) == ("yarn", 8.0)
    assert yarn.rope.original_max_position_embeddings == 16


def test_unknown_rope_scaling_is_refused(tmp_path):
    path = tiny_with(tmp_path, {"llama.rope.scaling.type": "longrope",
                                "llama.rope.scaling.factor": 4.0})
    with pytest.raises(mi.ConfigError, match="longrope"):
        read_gguf_config(path)


def test_llama3_rope_freqs_tensor_is_recognised(tmp_path):
    """llama.cpp folds Llama-3.1 RoPE scaling into rope_freqs; transformers' own llama3
    frequencies (the oracle) give the factors we write."""
    transformers = pytest.importorskip("transformers")
    params = dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                  high_freq_factor=4.0, original_max_position_embeddings=8192)
    cfg = transformers.LlamaConfig(hidden_size=256, num_attention_heads=4, rope_parameters=params,
                                   max_position_embeddings=131072)
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    plain = 1.0 / (10000.0 ** (torch.arange(0, 64, 2).float() / 64))
    factors = (plain / scaled).numpy().astype(np.float32)
    config = mi.MIModel.from_pretrained(
        tiny_with(tmp_path, {}, {"rope_freqs.weight": (factors, Q.F32)}), device="cpu"
    ).backend.config
    assert config.rope.rope_type == "llama3"
    assert (config.rope.factor, config.rope.low_freq_factor, config.rope.high_freq_factor,
            config.rope.original_max_position_embeddings) == (8.0, 1.0, 4.0, 8192)
    np.testing.assert_allclose(llama3_factors(1e4, 64, 8.0, 1.0, 4.0, 8192), factors, rtol=1e-5)


def test_unrecognised_rope_freqs_is_refused(tmp_path):
    odd = np.linspace(1, 3, 32).astype(np.float32)
    with pytest.raises(mi.ConfigError, match="rope_freqs"):
        read_gguf_config(tiny_with(tmp_path, {}, {"rope_freqs.weight": (odd, Q.F32)}))


# ---- errors ----------------------------------------------------------------------------------
def test_unsupported_architecture_is_a_config_error(tmp_path):
    path = write_gguf(tmp_path / "gpt2.gguf", "gpt2",
                      {"gpt2.block_count": 1, **byte_level_tokenizer()},
                      {"token_embd.weight": (np.zeros((4, 32), np.float32), Q.F32)})
    with pytest.raises(mi.ConfigError, match=r"'gpt2' is not supported.*gemma3, llama"):
        mi.MIModel.from_pretrained(path, device="cpu")


def write_with_ffn_up(path, raw: np.ndarray, qtype) -> None:
    """The tiny llama with blk.1.ffn_up.weight replaced by raw blocks of ``qtype``."""
    tensors = llama_tensors(np.random.default_rng(0), untied=False)
    tensors.pop("blk.1.ffn_up.weight")
    writer = GGUFWriter(path, "llama")
    add_metadata(writer, llama_metadata())
    for i, (name, (values, kind)) in enumerate(tensors.items()):
        data = encode(values if values.ndim == 2 else values[None], kind, seed=i)
        writer.add_tensor(name, data if values.ndim == 2 else data[0],
                          raw_dtype=kind if data.dtype == np.uint8 else None)
    writer.add_tensor("blk.1.ffn_up.weight", raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_unsupported_quant_type_names_it(tmp_path):
    block, size = GGML_QUANT_SIZES[Q.Q8_1]
    raw = np.zeros((TINY["ffn"], TINY["hidden"] // block * size), np.uint8)
    write_with_ffn_up(tmp_path / "q81.gguf", raw, Q.Q8_1)
    with pytest.raises(mi.WeightError, match=r"Q8_1.*supported types: F32, F16, BF16, Q4_0"):
        mi.MIModel.from_pretrained(tmp_path / "q81.gguf", device="cpu")


@pytest.mark.parametrize("qtype", [Q.TQ2_0, Q.TQ1_0, Q.MXFP4])
def test_other_types_fall_back_to_the_gguf_package(tmp_path, qtype):
    from gguf.quants import dequantize as reference
    from gguf.quants import quantize

    values = np.random.default_rng(3).standard_normal((TINY["ffn"], TINY["hidden"]))
    raw = quantize(values.astype(np.float32), qtype)
    write_with_ffn_up(tmp_path / "tq.gguf", raw, qtype)
    model = mi.MIModel.from_pretrained(tmp_path / "tq.gguf", device="cpu")
    up = model.backend.blocks[1].mlp.gate_up.weight[TINY["ffn"]:]
    torch.testing.assert_close(up, torch.from_numpy(reference(raw, qtype)), atol=0, rtol=0)


def test_unexpected_and_missing_tensors_are_weight_errors(tmp_path):
    extra = tiny_with(tmp_path, {}, {"blk.0.mystery.weight": (np.ones((2, 32), np.float32), Q.F32)})
    with pytest.raises(mi.WeightError, match=r"(?s)unused checkpoint tensors.*blk\.0\.mystery"):
        mi.MIModel.from_pretrained(extra, device="cpu")
    tensors = llama_tensors(np.random.default_rng(0), untied=False)
    del tensors["blk.1.ffn_down.weight"]
    missing = write_gguf(tmp_path / "missing.gguf", "llama", llama_metadata(), tensors)
    with pytest.raises(mi.WeightError, match=r"(?s)missing tensors.*layers\.1\.mlp\.down_proj"):
        mi.MIModel.from_pretrained(missing, device="cpu")


@pytest.mark.parametrize("damage", ["magic", "version", "value_type", "header_cut", "data_cut",
                                    "empty"])
def test_corrupt_files_raise_typed_errors(tiny_llama, tmp_path, damage):
    data = bytearray(tiny_llama.read_bytes())
    with GGUFFile(tiny_llama) as file:
        data_start = file.data_start
    if damage == "magic":
        data[:4] = b"GGML"
    elif damage == "version":
        data[4:8] = (99).to_bytes(4, "little")
    elif damage == "value_type":  # the first key's value type (after 24-byte header + key)
        key_len = int.from_bytes(data[24:32], "little")
        data[32 + key_len:36 + key_len] = (77).to_bytes(4, "little")
    elif damage == "header_cut":
        data = data[:data_start // 2]
    elif damage == "data_cut":
        data = data[:data_start + 1000]
    else:
        data = bytearray()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(bytes(data))
    with pytest.raises(mi.WeightError):
        mi.MIModel.from_pretrained(broken, device="cpu")


def test_llama3_factor_formula_is_one_in_high_and_factor_in_low_band():
    factors = llama3_factors(5e5, 128, 32.0, 1.0, 4.0, 8192)
    assert factors[0] == 1.0 and factors[-1] == 32.0
    assert np.all(np.diff(factors) >= 0)
    assert math.isclose(float(factors.max()), 32.0)


def test_tokenizer_less_gguf_loads_without_a_tokenizer(tmp_path):
    kv = {k: v for k, v in llama_metadata().items() if not k.startswith("tokenizer.")}
    path = write_gguf(tmp_path / "bare.gguf", "llama", kv,
                      llama_tensors(np.random.default_rng(0), untied=False))
    model = mi.MIModel.from_pretrained(path, device="cpu")
    assert model.tokenizer is None
    assert model.forward(torch.tensor([[1, 2, 3]])).output().shape == (1, 3, TINY["vocab"])


def test_inconsistent_tokenizer_metadata_is_a_tokenizer_error(tmp_path):
    kv = llama_metadata(**{"tokenizer.ggml.merges": ["Ġ t", "q z"]})  # "qz" is no token
    path = write_gguf(tmp_path / "bad-merges.gguf", "llama", kv,
                      llama_tensors(np.random.default_rng(0), untied=False))
    with pytest.raises(mi.TokenizerError, match="inconsistent"):
        mi.MIModel.from_pretrained(path, device="cpu")
    kv = llama_metadata(**{"tokenizer.ggml.model": "bert"})
    path = write_gguf(tmp_path / "bert.gguf", "llama", kv,
                      llama_tensors(np.random.default_rng(0), untied=False))
    with pytest.raises(mi.TokenizerError, match="'bert' is not supported"):
        mi.MIModel.from_pretrained(path, device="cpu")
