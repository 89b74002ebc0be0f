"""Tiny random RWKV-6 and RWKV-7 models in HF layout (tests/helpers/rwkv.py builds the
BlinkDL state dicts and converts them), loaded once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import torch_mi as mi
from tests.helpers.rwkv import make_v6, make_v7, write_hf_folder

VOCAB = 256  # the helper's tiny vocabulary (checked against the embedding below)


@dataclass
class TinyRwkv:
    version: str
    folder: Path
    tensors: dict[str, torch.Tensor]
    model: mi.MIModel
    head_size: int


@pytest.fixture(scope="session")
def rwkv_models(tmp_path_factory) -> dict[str, TinyRwkv]:
    root = tmp_path_factory.mktemp("rwkv")
    out = {}
    for version, make in (("v6", make_v6), ("v7", make_v7)):
        sd = make(seed=3)
        head_size = (sd["blocks.0.att.time_faaaa"] if version == "v6" else sd["blocks.0.att.r_k"]
                     ).shape[1]
        assert sd["emb.weight"].shape[0] == VOCAB
        folder = write_hf_folder(sd, root / version)
        out[version] = TinyRwkv(version, folder, load_file(folder / "model.safetensors"),
                                mi.MIModel.from_pretrained(folder, device="cpu"), head_size)
    return out


@pytest.fixture(params=["v6", "v7"])
def rwkv(request, rwkv_models) -> TinyRwkv:
    return rwkv_models[request.param]


def sample_ids(batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))
