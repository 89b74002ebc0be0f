"""GGUF tensors as a TensorSource: llama.cpp names -> HF names, dequantised on copy.

The generic ``load_weights`` then does the strict accounting (every tensor consumed, every
parameter filled, every shape checked) exactly as for safetensors. The family's
:class:`~torch_mi.backends.registry.GGUFFormat` says which llama.cpp storage conventions to
undo: Q/K rows permuted for its RoPE kernel (LLaMA), norms stored as ``1 + w`` (Gemma).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from ..backends.registry import GGUFFormat
from ..errors import WeightError
from .gguf_dequant import check_supported, default_workers, dequantize_into
from .gguf_reader import GGUFFile, GGUFTensorInfo

GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                "output": "lm_head"}
_BLOCK = re.compile(r"^blk\.(\d+)\.([a-z_0-9]+)\.(weight|bias)$")
_TOP = re.compile(r"^([a-z_]+)\.(weight|bias)$")


def hf_name(gguf_name: str, block_names: dict[str, str]) -> str:
    """The HF checkpoint name of a GGUF tensor; unknown names are returned unchanged so
    strict accounting reports them as unused."""
    match = _BLOCK.match(gguf_name)
    if match and match.group(2) in block_names:
        layer, part, kind = match.groups()
        return f"model.layers.{layer}.{block_names[part]}.{kind}"
    match = _TOP.match(gguf_name)
    if match and match.group(1) in GLOBAL_NAMES:
        return f"{GLOBAL_NAMES[match.group(1)]}.{match.group(2)}"
    return gguf_name


class GGUFTensorSource:
    """TensorSource over a GGUFFile; ``skip`` names tensors consumed elsewhere (config)."""

    def __init__(self, file: GGUFFile, gguf: GGUFFormat, config: object,
                 skip: frozenset[str] = frozenset(), workers: int | None = None) -> None:
        self.file = file
        self.config = config
        self.gguf = gguf
        self.infos: dict[str, GGUFTensorInfo] = {
            hf_name(name, gguf.block_names): info
            for name, info in file.tensors.items() if name not in skip
        }
        if len(self.infos) != len(file.tensors) - len(skip & set(file.tensors)):
            raise WeightError(f"{file.path.name}: two GGUF tensors map to the same HF name")
        self._pool = ThreadPoolExecutor(workers or default_workers(),
                                        thread_name_prefix="gguf-dequant")

    def names(self) -> Iterator[str]:
        return iter(self.infos)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.infos[name].shape

    def stored_name(self, name: str) -> str:
        """The GGUF name of HF tensor ``name``, for messages a user can match to the file."""
        return self.infos[name].name

    def copy_into(self, name: str, dest: torch.Tensor) -> None:
        """Dequantise tensor ``name`` into ``dest``, undoing llama.cpp's conventions."""
        info = self.infos[name]
        check_supported(info.type_id, info.name)
        heads = self.gguf.permuted_heads(self.config, name)
        offset_norm = bool(self.gguf.norm_offset) and name.endswith("norm.weight")
        if heads is None and not offset_norm and dest.is_contiguous() and dest.device.type == "cpu":
            dequantize_into(self._raw(info), info.type_id, dest, self._pool)
        else:
            values = torch.empty(info.shape, dtype=torch.float32)
            dequantize_into(self._raw(info), info.type_id, values, self._pool)
            if offset_norm:
                values -= self.gguf.norm_offset  # llama.cpp stores Gemma's (1 + w)
            if heads is not None:
                values = unpermute_rows(values, heads)
            dest.copy_(values)
        self.file.release(info.name)

    def _raw(self, info: GGUFTensorInfo) -> torch.Tensor:
        return torch.from_numpy(self.file.raw(info.name))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> GGUFTensorSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unpermute_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row order: within each head it interleaves the two RoPE
    halves (HF rows 0, d/2, 1, d/2+1, ...); HF keeps them as two contiguous halves.
    ``weight`` is [heads * head_dim, in] or a bias [heads * head_dim]."""
    half = weight.shape[0] // heads // 2
    return weight.reshape(heads, half, 2, -1).transpose(1, 2).reshape(weight.shape)
