"""RoPE scaling: our frequencies and cos/sin equal HF's for every supported type."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from torch_mi.backends.transformer.config.hf_keys import HFKeys, read_rope
from torch_mi.backends.transformer.rope import RotaryEmbedding

CASES = {
    "default": {"rope_type": "default"},
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64,
             "beta_fast": 16.0, "beta_slow": 2.0},
    "yarn_mscale": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                    "mscale": 0.707, "mscale_all_dim": 1.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    "longrope": {"rope_type": "longrope", "short_factor": [1.0 + i / 10 for i in range(16)],
                 "long_factor": [1.0 + i for i in range(16)],
                 "original_max_position_embeddings": 64},
}


def hf_rotary(params: dict, max_pos: int):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig(hidden_size=256, num_attention_heads=8, max_position_embeddings=max_pos,
                      rope_parameters={"rope_theta": 10000.0, **params})
    return LlamaRotaryEmbedding(cfg)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seq_len", [40, 300])
def test_cos_sin_match_hf(name, seq_len):
    max_pos = 256
    params = {"rope_theta": 10000.0, **CASES[name]}
    hf = hf_rotary(dict(params), max_pos)
    rope, _ = read_rope(HFKeys({"rope_parameters": dict(params)}, "t"), max_pos, 10000.0)
    ours = RotaryEmbedding(rope, 32, max_pos)
    positions = torch.arange(seq_len)[None]
    x = torch.zeros(1, seq_len, 32)
    hf_cos, hf_sin = hf(x, positions)
    cos, sin = ours.cos_sin(positions, torch.float32)
    torch.testing.assert_close(cos[:, 0], hf_cos, atol=0, rtol=0)
    torch.testing.assert_close(sin[:, 0], hf_sin, atol=0, rtol=0)


def test_scaling_is_not_silently_ignored():
    rope, _ = read_rope(HFKeys({"rope_parameters": {"rope_type": "linear", "factor": 4.0}}, "t"),
                        128, 10000.0)
    plain, _ = read_rope(HFKeys({}, "t"), 128, 10000.0)
    pos = torch.arange(50)[None]
    scaled = RotaryEmbedding(rope, 32, 128).cos_sin(pos, torch.float32)[0]
    unscaled = RotaryEmbedding(plain, 32, 128).cos_sin(pos, torch.float32)[0]
    assert (scaled - unscaled).abs().max() > 0.1


def test_unknown_type_and_missing_factor():
    with pytest.raises(mi.ConfigError, match="'mrope' is not supported"):
        read_rope(HFKeys({"rope_scaling": {"type": "mrope"}}, "t"), 128, 1e4)
    with pytest.raises(mi.ConfigError, match="needs a 'factor'"):
        read_rope(HFKeys({"rope_scaling": {"type": "linear"}}, "t"), 128, 1e4)
    with pytest.raises(mi.ConfigError, match="unknown RoPE parameters"):
        read_rope(HFKeys({"rope_scaling": {"type": "linear", "factor": 2, "alpha": 1}}, "t"),
                  128, 1e4)
