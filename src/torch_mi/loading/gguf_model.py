"""Load a ``.gguf`` file into a GenericTransformer plus its tokenizer.

One pass: parse the header (gguf_reader), translate metadata (gguf_config), build the
tokenizer from the same metadata (gguf_tokenizer), allocate the model uninitialised in the
target dtype and dequantise each tensor straight into its parameter (gguf_tensors, strict
accounting by ``load_weights``). The data is memory-mapped and released tensor by tensor,
so peak RAM stays near the size of the weights in the target dtype.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config.types import TransformerConfig
from ..errors import WeightError
from ..models.transformer import GenericTransformer
from ..tokenizer import MITokenizer
from .gguf_config import config_from_gguf, consumed_by_config
from .gguf_reader import GGUFFile
from .gguf_tensors import GGUFTensorSource
from .gguf_tokenizer import build_tokenizer, has_tokenizer
from .weights import hf_weight_map, load_weights


def read_gguf_config(path: str | Path) -> TransformerConfig:
    """The TransformerConfig of a GGUF file (header only, no tensor data read)."""
    with GGUFFile(path) as file:
        return config_from_gguf(file)


def load_gguf_model(path: Path, device: torch.device, dtype: torch.dtype
                    ) -> tuple[GenericTransformer, MITokenizer | None]:
    """Model and tokenizer of the GGUF at ``path``, weights dequantised to ``dtype``.
    The tokenizer is None only for a file without any tokenizer metadata."""
    with GGUFFile(path) as file:
        config = config_from_gguf(file)
        # Tokenizer first: its transient build memory is then not stacked on the weights.
        tokenizer = None
        if has_tokenizer(file.metadata):
            tokenizer = build_tokenizer(file.metadata, file.metadata["general.architecture"],
                                        Path(path).name)
        model = GenericTransformer.empty(config, device, dtype)
        with GGUFTensorSource(file, config, skip=consumed_by_config(file)) as source:
            try:
                load_weights(model, source, hf_weight_map(config),
                             tied=config.tie_word_embeddings)
            except WeightError as exc:
                raise WeightError(f"GGUF {Path(path).name} (architecture "
                                  f"{file.metadata['general.architecture']}): {exc}") from exc
    return model, tokenizer
