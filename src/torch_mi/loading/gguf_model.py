"""Load a ``.gguf`` file into its backend plus its tokenizer.

One pass: parse the header (gguf_reader), find the family by ``general.architecture`` in
the architecture registry and translate the metadata with its GGUF translator, build the
tokenizer from the same metadata (gguf_tokenizer), allocate the backend uninitialised in the
target dtype and dequantise each tensor straight into its parameter (gguf_tensors, strict
accounting by ``load_weights``). The data is memory-mapped and released tensor by tensor,
so peak RAM stays near the size of the weights in the target dtype.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..backends.protocol import MIBackend
from ..backends.registry import Architecture, gguf_architecture
from ..errors import WeightError
from ..tokenizer import MITokenizer
from .gguf_reader import GGUFFile
from .gguf_tensors import GGUFTensorSource
from .gguf_tokenizer import build_tokenizer, has_tokenizer
from .preflight import check_before_allocating
from .weights import load_weights


def _architecture(file: GGUFFile) -> Architecture:
    return gguf_architecture(file.metadata.get("general.architecture"), f"GGUF {file.path.name}")


def read_gguf_config(path: str | Path) -> Any:
    """The config of a GGUF file (header only, no tensor data read)."""
    with GGUFFile(path) as file:
        return _architecture(file).gguf.translate(file)


def load_gguf_model(path: Path, device: torch.device, dtype: torch.dtype, *,
                    allow_nonfinite: bool = False) -> tuple[MIBackend, MITokenizer | None]:
    """Backend and tokenizer of the GGUF at ``path``, weights dequantised to ``dtype``.
    The tokenizer is None only for a file without any tokenizer metadata. The config is
    checked against the tensor directory and the free memory before anything is built."""
    with GGUFFile(path) as file:
        row = _architecture(file)
        gguf = row.gguf
        config = gguf.translate(file)
        where = f"GGUF {Path(path).name}"
        with GGUFTensorSource(file, gguf, config, skip=gguf.consumed(file)) as source:
            numels = (info.num_elements for info in source.infos.values())
            weights = check_before_allocating(config, list(source.names()), numels,
                                              lambda: row.weight_map(config), device=device,
                                              dtype=dtype, where=f"{where} ({gguf.arch})")
            # Tokenizer first: its transient build memory is then not stacked on the weights.
            tokenizer = None
            if has_tokenizer(file.metadata):
                tokenizer = build_tokenizer(file.metadata, gguf.arch, Path(path).name)
            model = row.backend.empty(config, device, dtype)
            try:
                load_weights(model, source, weights, check_finite=not allow_nonfinite)
            except WeightError as exc:
                raise WeightError(f"{where} (architecture {gguf.arch}): {exc}") from exc
    return model, tokenizer
