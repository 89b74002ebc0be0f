"""Micro checkpoints for the loading catalogue and the file fuzzers.

Built without transformers in milliseconds: a 2-layer LLaMA folder (config.json +
model.safetensors, 16-wide) and a 1-layer LLaMA GGUF written byte by byte, so hostile
variants (a type id no format defines, arrays nested 200k deep) can be written exactly.
"""

from __future__ import annotations

import json
import re
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from torch_mi.loading.gguf_tokenizer import byte_alphabet

MICRO: dict[str, Any] = dict(
    model_type="llama", hidden_size=16, intermediate_size=32, num_hidden_layers=2,
    num_attention_heads=2, num_key_value_heads=1, vocab_size=32, max_position_embeddings=64,
    rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
    eos_token_id=2,
)


def micro_config(**changes: Any) -> dict[str, Any]:
    """MICRO with ``changes`` applied (a value of ``...`` deletes the key)."""
    config = {**MICRO, **changes}
    return {k: v for k, v in config.items() if v is not ...}


def micro_tensors(config: dict[str, Any] | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Finite random tensors with the HF LLaMA names and shapes ``config`` implies."""
    c = config or MICRO
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = c["num_key_value_heads"] * (h // c["num_attention_heads"])
    g = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h),
                                          "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        })
    return {name: torch.randn(shape, generator=g) * 0.1 for name, shape in shapes.items()}


def write_folder(folder: Path, config: dict[str, Any] | None = None,
                 tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """A model folder: config.json and model.safetensors (micro defaults)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config if config is not None else MICRO))
    save_file(tensors if tensors is not None else micro_tensors(), folder / "model.safetensors")
    return folder


def safetensors_bytes(header: Any, data: bytes = b"") -> bytes:
    """A safetensors file with an arbitrary (possibly hostile) JSON header."""
    text = header if isinstance(header, (bytes, str)) else json.dumps(header)
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw + data


def header_of(path: Path) -> tuple[dict[str, Any], bytes]:
    """(header dict, data section) of a safetensors file, to edit and re-write."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def refused_without_blocking(call, error: type[Exception], match: str) -> None:
    """``call`` must raise exactly ``error`` matching ``match`` within 10 s: opening a FIFO
    blocks forever, so it runs in a daemon thread that a hang cannot take down the suite."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed to the assertions below
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert outcome, "the load blocked on a special file"
    assert type(outcome[0]) is error, repr(outcome[0])
    assert re.search(match, str(outcome[0])), str(outcome[0])


# ---- GGUF, byte by byte -------------------------------------------------------------------
U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10
F32_TYPE, Q8_0_TYPE = 0, 8


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_value(kind: int, value: Any) -> bytes:
    """The payload of one metadata value of GGUF type ``kind`` (arrays: (item type, list))."""
    if kind == STRING:
        return _string(value)
    if kind == ARRAY:
        item_kind, items = value
        return struct.pack("<IQ", item_kind, len(items)) + b"".join(
            gguf_value(item_kind, item) for item in items)
    fmt = {U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q"}[kind]
    return struct.pack(fmt, value)


def gguf_kv(key: str, kind: int, value: Any) -> bytes:
    return _string(key) + struct.pack("<I", kind) + gguf_value(kind, value)


def gguf_offsets(tensors: list[tuple[str, tuple[int, ...], int, bytes]],
                 alignment: int = 32) -> list[int]:
    """The aligned data offsets gguf_file gives ``tensors``."""
    offsets, size = [], 0
    for _name, _dims, _type, raw in tensors:
        size += -size % alignment
        offsets.append(size)
        size += len(raw)
    return offsets


def gguf_file(kvs: list[bytes], tensors: list[tuple[str, tuple[int, ...], int, bytes]],
              alignment: int = 32, n_tensors: int | None = None, n_kv: int | None = None,
              offsets: list[int] | None = None) -> bytes:
    """A GGUF v3 file: metadata entries ``kvs`` (from gguf_kv), tensors (name, GGUF dims,
    type id, raw data) laid out aligned; counts and offsets can be overridden to lie."""
    infos, data, placed = b"", b"", gguf_offsets(tensors, alignment)
    for (_name, _dims, _type, raw), offset in zip(tensors, placed, strict=True):
        data += b"\0" * (offset - len(data)) + raw
    for index, (name, dims, type_id, _raw) in enumerate(tensors):
        offset = placed[index] if offsets is None else offsets[index]
        infos += _string(name) + struct.pack("<I", len(dims)) + struct.pack(
            f"<{len(dims)}Q", *dims) + struct.pack("<IQ", type_id, offset)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + infos
    return body + b"\0" * (-len(body) % alignment) + data


_SCALAR_WIDTH = {U32: 4, I32: 4, F32: 4, BOOL: 1, U64: 8}


def gguf_int_fields(kvs: list[bytes], tensors: list[tuple[str, tuple[int, ...], int, bytes]]
                    ) -> list[tuple[int, int]]:
    """(offset, width) of every integer field of the file gguf_file(kvs, tensors) writes:
    counts, lengths, value types, array headers, scalars, dims, type ids, data offsets."""
    fields, pos = [(4, 4), (8, 8), (16, 8)], 24
    for kv in kvs:
        (key_len,) = struct.unpack_from("<Q", kv, 0)
        kind_at = 8 + key_len
        (kind,) = struct.unpack_from("<I", kv, kind_at)
        fields += [(pos, 8), (pos + kind_at, 4)]
        if kind == ARRAY:
            fields += [(pos + kind_at + 4, 4), (pos + kind_at + 8, 8)]
        elif kind == STRING:
            fields.append((pos + kind_at + 4, 8))
        elif kind in _SCALAR_WIDTH:
            fields.append((pos + kind_at + 4, _SCALAR_WIDTH[kind]))
        pos += len(kv)
    for name, dims, _type, _raw in tensors:
        fields.append((pos, 8))
        pos += 8 + len(name.encode())
        fields.append((pos, 4))
        pos += 4
        fields += [(pos + 8 * i, 8) for i in range(len(dims))]
        pos += 8 * len(dims)
        fields += [(pos, 4), (pos + 4, 8)]
        pos += 12
    return fields


GGUF_MICRO = dict(hidden=32, heads=2, kv_heads=1, ffn=64, layers=1)
_MODEL_KVS: dict[str, dict[str, tuple[int, Any]]] = {
    "llama": {"rope.freq_base": (F32, 10000.0)},
    "gemma3": {"attention.key_length": (U32, 16), "attention.value_length": (U32, 16),
               "rope.freq_base": (F32, 1e6), "attention.sliding_window": (U32, 4)},
}


def gguf_micro_kvs(arch: str = "llama", **override: tuple[int, Any] | None) -> list[bytes]:
    """Metadata of the micro GGUF of ``arch`` (llama or gemma3; byte-level tokenizer);
    ``override`` maps a key (without the arch prefix for model keys) to (type, value), or
    None to drop it."""
    m = GGUF_MICRO
    tokens = [*byte_alphabet(), "<|endoftext|>"]
    model = {"block_count": (U32, m["layers"]), "context_length": (U32, 64),
             "embedding_length": (U32, m["hidden"]), "feed_forward_length": (U32, m["ffn"]),
             "attention.head_count": (U32, m["heads"]),
             "attention.head_count_kv": (U32, m["kv_heads"]),
             "attention.layer_norm_rms_epsilon": (F32, 1e-5), **_MODEL_KVS[arch]}
    entries: dict[str, tuple[int, Any]] = {
        "general.architecture": (STRING, arch),
        **{f"{arch}.{key}": value for key, value in model.items()},
        "tokenizer.ggml.model": (STRING, "gpt2"), "tokenizer.ggml.pre": (STRING, "default"),
        "tokenizer.ggml.tokens": (ARRAY, (STRING, tokens)),
        "tokenizer.ggml.merges": (ARRAY, (STRING, [])),
        "tokenizer.ggml.eos_token_id": (U32, len(tokens) - 1),
    }
    for key, value in override.items():
        full = key if key.startswith(("general.", "tokenizer.", f"{arch}.")) else f"{arch}.{key}"
        if value is None:
            entries.pop(full, None)
        else:
            entries[full] = value
    return [gguf_kv(key, kind, value) for key, (kind, value) in entries.items()]


def _q8_0(values: np.ndarray) -> bytes:
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    return quantize(values.astype(np.float32), GGMLQuantizationType.Q8_0).tobytes()


def gguf_micro_tensors(seed: int = 0, arch: str = "llama"
                       ) -> list[tuple[str, tuple[int, ...], int, bytes]]:
    """(name, GGUF dims, type id, raw bytes) of every tensor of the micro model (tied head;
    the Q projection is Q8_0 so the dequantiser runs too; gemma3 adds its four norms and
    QK-norm)."""
    m = GGUF_MICRO
    h, f, v = m["hidden"], m["ffn"], 257
    head = h // m["heads"]
    kv = m["kv_heads"] * head
    rng = np.random.default_rng(seed)

    def f32(*shape: int) -> bytes:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32).tobytes()

    out = [("token_embd.weight", (h, v), F32_TYPE, f32(v, h)),
           ("output_norm.weight", (h,), F32_TYPE, f32(h))]
    for i in range(m["layers"]):
        out += [(f"blk.{i}.attn_norm.weight", (h,), F32_TYPE, f32(h)),
                (f"blk.{i}.ffn_norm.weight", (h,), F32_TYPE, f32(h)),
                (f"blk.{i}.attn_q.weight", (h, h), Q8_0_TYPE,
                 _q8_0(rng.standard_normal((h, h)) * 0.1)),
                (f"blk.{i}.attn_k.weight", (h, kv), F32_TYPE, f32(kv, h)),
                (f"blk.{i}.attn_v.weight", (h, kv), F32_TYPE, f32(kv, h)),
                (f"blk.{i}.attn_output.weight", (h, h), F32_TYPE, f32(h, h)),
                (f"blk.{i}.ffn_gate.weight", (h, f), F32_TYPE, f32(f, h)),
                (f"blk.{i}.ffn_up.weight", (h, f), F32_TYPE, f32(f, h)),
                (f"blk.{i}.ffn_down.weight", (f, h), F32_TYPE, f32(h, f))]
        if arch == "gemma3":
            out += [(f"blk.{i}.{n}.weight", (h,), F32_TYPE, f32(h))
                    for n in ("post_attention_norm", "post_ffw_norm")]
            out += [(f"blk.{i}.{n}.weight", (head,), F32_TYPE, f32(head))
                    for n in ("attn_q_norm", "attn_k_norm")]
    return out


def write_gguf_micro(path: Path, arch: str = "llama", **override: tuple[int, Any] | None
                     ) -> Path:
    """The micro GGUF of ``arch`` at ``path`` (metadata overrides as in gguf_micro_kvs)."""
    path.write_bytes(gguf_file(gguf_micro_kvs(arch, **override), gguf_micro_tensors(arch=arch)))
    return path
