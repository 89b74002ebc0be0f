"""The benchmark model: SmolLM2-135M-Instruct, dequantised from the embedded GGUF.

torch-mi loads the GGUF itself; transformers gets the same dequantised weights through its
own GGUF loader, saved once as an fp32 safetensors folder (benchmarks/.cache/smollm2-hf-f32)
that the safetensors and TransformerLens scenarios load.
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import ROOT

CACHE = Path(ROOT) / ".cache"
HF_COPY = CACHE / "smollm2-hf-f32"


def gguf_path() -> Path:
    from torch_mi.loading.embedded import default_model_path

    return default_model_path()


def hf_copy() -> Path:
    """An fp32 safetensors copy of the GGUF made by transformers (built once)."""
    if (HF_COPY / "model.safetensors").exists():
        return HF_COPY
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=False)
    plain.tie_weights()
    os.makedirs(HF_COPY, exist_ok=True)
    plain.save_pretrained(HF_COPY)
    tok.save_pretrained(HF_COPY)
    return HF_COPY
