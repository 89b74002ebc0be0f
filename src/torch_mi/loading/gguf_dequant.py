"""Dequantisation of ggml block formats straight into torch.

The common formats have torch kernels: each maps a batch of raw blocks
``uint8 [n, type_size]`` to ``float32 [n, block]`` with the same float32 operations, in the
same order, as ``gguf.quants.dequantize`` (the reference), so results agree bit for bit
while running multi-threaded (about 10x faster than the numpy reference here). Every other
format the ``gguf`` package can read (Q2_K, Q3_K, the IQ and TQ families, MXFP4, ...) is
dequantised by ``gguf.quants`` itself. ``dequantize_into`` walks a tensor in chunks of
blocks so the intermediates stay small (peak RAM near the destination size) and hands
chunks to a small thread pool: torch releases the GIL inside its kernels.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..errors import WeightError
from .gguf_reader import GGML_TYPES, ggml_type_name

QK_K = 256
CHUNK_ELEMENTS = 1 << 18  # elements dequantised per task (1 MiB of float32)

Kernel = Callable[[torch.Tensor], torch.Tensor]


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The float16 at byte ``start`` of each block, as float32 [n, 1]."""
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """[n, g, b] bytes -> [n, g, 2b]: low nibbles first, then high nibbles, per group."""
    return torch.cat((packed & 0x0F, packed >> 4), dim=-1)


def _bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """Little-endian bit ``j`` of the bytes [n, count // 8] as uint8 [n, count]."""
    shifts = torch.arange(8, dtype=torch.uint8)
    return ((packed.unsqueeze(-1) >> shifts) & 1).reshape(packed.shape[0], count)


def _q4_0(blocks: torch.Tensor) -> torch.Tensor:
    # block: d f16 | 16 bytes of nibbles (elements 0-15 low, 16-31 high)
    q = _nibbles(blocks[:, 2:18]).float() - 8.0  # [n,32]
    return _f16(blocks, 0) * q


def _q4_1(blocks: torch.Tensor) -> torch.Tensor:
    # block: d f16 | m f16 | 16 bytes of nibbles
    q = _nibbles(blocks[:, 4:20]).float()
    return _f16(blocks, 0) * q + _f16(blocks, 2)


def _q5(blocks: torch.Tensor, qh_at: int) -> torch.Tensor:
    """5-bit values 0..31: 4 low bits from nibbles, the 5th from a 32-bit mask."""
    low = _nibbles(blocks[:, qh_at + 4:qh_at + 20])  # [n,32]
    return low | (_bits(blocks[:, qh_at:qh_at + 4], 32) << 4)


def _q5_0(blocks: torch.Tensor) -> torch.Tensor:
    # block: d f16 | qh 4 bytes | 16 bytes of nibbles
    return _f16(blocks, 0) * (_q5(blocks, 2).float() - 16.0)


def _q5_1(blocks: torch.Tensor) -> torch.Tensor:
    # block: d f16 | m f16 | qh 4 bytes | 16 bytes of nibbles
    return _f16(blocks, 0) * _q5(blocks, 4).float() + _f16(blocks, 2)


def _q8_0(blocks: torch.Tensor) -> torch.Tensor:
    # block: d f16 | 32 int8
    return blocks[:, 2:34].view(torch.int8).float() * _f16(blocks, 0)


def _k_scales(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The eight 6-bit (scale, min) pairs of a Q4_K/Q5_K super-block, from 12 bytes."""
    groups = packed.reshape(-1, 3, 4)
    d, m, md = groups[:, 0], groups[:, 1], groups[:, 2]  # [n,4] each
    scale = torch.cat((d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)), dim=-1)
    minimum = torch.cat((m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)), dim=-1)
    return scale.float().unsqueeze(-1), minimum.float().unsqueeze(-1)  # [n,8,1]


def _k_affine(blocks: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """d * scale * q - dmin * min for super-blocks d f16 | dmin f16 | 12 scale bytes | ..."""
    n = blocks.shape[0]
    scale, minimum = _k_scales(blocks[:, 4:16])
    d = (_f16(blocks, 0).unsqueeze(-1) * scale)  # [n,8,1]
    dm = (_f16(blocks, 2).unsqueeze(-1) * minimum)
    return (d * q.float() - dm).reshape(n, QK_K)


def _q4_k(blocks: torch.Tensor) -> torch.Tensor:
    # super-block: d | dmin | scales 12 | 128 bytes: 4 groups of 32, low nibbles = sub-block 2i
    q = _nibbles(blocks[:, 16:144].reshape(-1, 4, 32)).reshape(-1, 8, 32)
    return _k_affine(blocks, q)


def _q5_k(blocks: torch.Tensor) -> torch.Tensor:
    # super-block: d | dmin | scales 12 | qh 32 bytes (bit s = sub-block s) | 128 nibble bytes
    n = blocks.shape[0]
    low = _nibbles(blocks[:, 48:176].reshape(n, 4, 32)).reshape(n, 8, 32)
    shifts = torch.arange(8, dtype=torch.uint8).reshape(1, 8, 1)
    high = (blocks[:, 16:48].reshape(n, 1, 32) >> shifts) & 1  # [n,8,32]
    return _k_affine(blocks, low | (high << 4))


def _q6_k(blocks: torch.Tensor) -> torch.Tensor:
    # super-block: ql 128 | qh 64 | 16 int8 scales | d f16; 16 sub-blocks of 16
    n = blocks.shape[0]
    ql = blocks[:, :128].reshape(n, 2, 1, 64) >> torch.tensor([0, 4], dtype=torch.uint8
                                                              ).reshape(1, 1, 2, 1)
    ql = (ql & 0x0F).reshape(n, 8, 32)
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8
                                                                 ).reshape(1, 1, 4, 1)
    qh = (qh & 0x03).reshape(n, 8, 32)
    q = ((ql | (qh << 4)).view(torch.int8) - 32).reshape(n, 16, 16).float()
    scales = blocks[:, 192:208].view(torch.int8).float()  # [n,16]
    d = (_f16(blocks, 208) * scales).reshape(n, 16, 1)
    return (d * q).reshape(n, QK_K)


KERNELS: dict[str, Kernel] = {
    "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0,
    "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k,
}
FLOAT_TYPES: dict[str, torch.dtype] = {"F32": torch.float32, "F16": torch.float16,
                                       "BF16": torch.bfloat16}
FAST_TYPES: tuple[str, ...] = (*FLOAT_TYPES, *KERNELS)


@functools.cache
def library_supports(name: str) -> bool:
    """Whether ``gguf.quants`` can dequantise this type (probed once on two empty blocks)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize as reference

    qtype = GGMLQuantizationType[name]
    try:
        reference(np.zeros(2 * GGML_QUANT_SIZES[qtype][1], np.uint8), qtype)
    except (NotImplementedError, ValueError, KeyError):
        return False
    return True


def supported_types() -> list[str]:
    from gguf import GGMLQuantizationType

    return [*FAST_TYPES, *(t.name for t in GGMLQuantizationType
                           if t.name not in FAST_TYPES and library_supports(t.name))]


def check_supported(type_id: int, tensor: str) -> str:
    """The type's name; WeightError naming it and the supported list if we cannot read it."""
    name = ggml_type_name(type_id)
    if name not in FLOAT_TYPES and name not in KERNELS and not library_supports(name):
        raise WeightError(f"tensor {tensor!r} is stored as ggml type {name}, which torch-mi "
                          f"cannot dequantise; supported types: {', '.join(supported_types())}."
                          f" Use a GGUF quantised to one of these (e.g. Q4_K_M, Q8_0)")
    return name


def dequantize(raw: torch.Tensor, type_id: int) -> torch.Tensor:
    """Raw bytes (uint8 [nbytes]) of one ggml tensor -> float32 [n_elements]."""
    out = torch.empty(_element_count(raw, type_id), dtype=torch.float32)
    dequantize_into(raw, type_id, out)
    return out


def _element_count(raw: torch.Tensor, type_id: int) -> int:
    _, block, type_size = GGML_TYPES[type_id]
    return raw.numel() // type_size * block


def dequantize_into(raw: torch.Tensor, type_id: int, out: torch.Tensor,
                    pool: ThreadPoolExecutor | None = None) -> None:
    """Dequantise raw bytes into the contiguous ``out`` (any float dtype, numel matching)."""
    name = check_supported(type_id, "<raw>")
    flat = out.view(-1)
    if flat.numel() != _element_count(raw, type_id):
        raise WeightError(f"internal error: {name} data holds {_element_count(raw, type_id)} "
                          f"values, destination has {flat.numel()}")
    if name in FLOAT_TYPES:
        flat.copy_(raw.view(FLOAT_TYPES[name]))
        return
    if name not in KERNELS:  # the gguf package's own numpy dequantiser
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize as reference

        values = reference(raw.numpy(), GGMLQuantizationType[name]).reshape(-1)
        flat.copy_(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)))
        return
    _, block, type_size = GGML_TYPES[type_id]
    blocks = raw.view(-1, type_size)
    per_chunk = max(1, CHUNK_ELEMENTS // block)
    kernel = KERNELS[name]

    def run(start: int) -> None:
        part = blocks[start:start + per_chunk]
        flat[start * block:(start + part.shape[0]) * block].copy_(kernel(part).view(-1))

    starts = range(0, blocks.shape[0], per_chunk)
    if pool is None or len(starts) == 1:
        for start in starts:
            run(start)
    else:
        for future in [pool.submit(run, s) for s in starts]:
            future.result()


def default_workers() -> int:
    """Threads for dequantisation: the cores torch may use, at most 8."""
    return max(1, min(8, torch.get_num_threads(), os.cpu_count() or 1))
