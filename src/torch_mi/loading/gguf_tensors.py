"""GGUF tensors as a TensorSource: llama.cpp names -> HF names, dequantised on copy.

The generic ``load_weights`` then does the strict accounting (every tensor consumed, every
parameter filled, every shape checked) exactly as for safetensors. Two llama.cpp storage
conventions are undone here: LLaMA's Q/K rows are permuted for its RoPE kernel, and Gemma
norms are stored as ``1 + w``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from ..config.types import NormType, TransformerConfig
from ..errors import WeightError
from .gguf_dequant import check_supported, default_workers, dequantize_into
from .gguf_reader import GGUFFile, GGUFTensorInfo

GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                "output": "lm_head"}
_BLOCK = re.compile(r"^blk\.(\d+)\.([a-z_0-9]+)\.(weight|bias)$")
_TOP = re.compile(r"^([a-z_]+)\.(weight|bias)$")

# Block tensors common to llama and gemma3. ``ffn_norm`` is the pre-MLP norm in both, which
# HF calls post_attention_layernorm in LLaMA but pre_feedforward_layernorm in Gemma 3.
BLOCK_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
GEMMA3_BLOCK_NAMES = {
    **BLOCK_NAMES, "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
}
LLAMA_BLOCK_NAMES = {**BLOCK_NAMES, "ffn_norm": "post_attention_layernorm"}


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

    def __init__(self, file: GGUFFile, config: TransformerConfig,
                 skip: frozenset[str] = frozenset(), workers: int | None = None) -> None:
        self.file = file
        self.config = config
        self.unpermute = config.model_type == "llama"
        self.subtract_one = config.norm_type is NormType.GemmaRmsNorm
        block_names = LLAMA_BLOCK_NAMES if self.unpermute else GEMMA3_BLOCK_NAMES
        self.infos: dict[str, GGUFTensorInfo] = {
            hf_name(name, block_names): info
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

    def copy_into(self, name: str, dest: torch.Tensor) -> None:
        """Dequantise tensor ``name`` into ``dest``, undoing llama.cpp's conventions."""
        info = self.infos[name]
        check_supported(info.type_id, info.name)
        heads = self._permuted_heads(name)
        gemma_norm = self.subtract_one and name.endswith("norm.weight")
        if heads is None and not gemma_norm and dest.is_contiguous() and dest.device.type == "cpu":
            dequantize_into(self._raw(info), info.type_id, dest, self._pool)
        else:
            values = torch.empty(info.shape, dtype=torch.float32)
            dequantize_into(self._raw(info), info.type_id, values, self._pool)
            if gemma_norm:
                values -= 1.0  # llama.cpp stores Gemma's (1 + w)
            if heads is not None:
                values = unpermute_rows(values, heads)
            dest.copy_(values)
        self.file.release(info.name)

    def _raw(self, info: GGUFTensorInfo) -> torch.Tensor:
        return torch.from_numpy(self.file.raw(info.name))

    def _permuted_heads(self, name: str) -> int | None:
        """Head count for LLaMA's permuted Q (all heads) and K (KV heads), else None."""
        if not self.unpermute:
            return None
        if name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            return self.config.num_attention_heads
        if name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            return self.config.num_kv_heads
        return None

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
