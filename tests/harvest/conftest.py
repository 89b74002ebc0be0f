"""Harvest fixtures: a tiny model, small corpora and a tiny SAE on it."""

from __future__ import annotations

import json

import pytest
import torch

from torch_mi.dictionaries import SaeConfig, SparseAutoencoder

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
         "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi",
         "chi", "psi", "omega")


def make_docs(n: int, seed: int = 0, lo: int = 3, hi: int = 40) -> list[str]:
    """n documents of lo..hi random words (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    docs = []
    for _ in range(n):
        k = int(torch.randint(lo, hi, (1,), generator=g))
        idx = torch.randint(0, len(WORDS), (k,), generator=g).tolist()
        docs.append(" ".join(WORDS[i] for i in idx) + ".")
    return docs


def write_jsonl(path, docs: list[str], field: str = "text") -> None:
    path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))


@pytest.fixture(scope="session")
def tiny(loaded):
    return loaded["llama"]


@pytest.fixture(scope="session")
def tiny_path(tiny_models):
    return tiny_models["llama"].path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A folder of 3 text files (read in sorted order) and a JSONL of 24 short documents."""
    root = tmp_path_factory.mktemp("corpus")
    folder = root / "texts"
    folder.mkdir()
    for i, doc in enumerate(make_docs(3, seed=1, lo=60, hi=90)):
        (folder / f"doc{i}.txt").write_text(doc)
    write_jsonl(root / "docs.jsonl", make_docs(24, seed=2, lo=3, hi=20))
    return root


def tiny_sae(d_in: int, d_sae: int = 32, hook: str = "blocks.1.hook_resid_post",
             seed: int = 3) -> SparseAutoencoder:
    g = torch.Generator().manual_seed(seed)
    cfg = SaeConfig(d_in=d_in, d_sae=d_sae, hook_name=hook)
    return SparseAutoencoder(cfg, {"W_enc": torch.randn(d_in, d_sae, generator=g),
                                   "W_dec": torch.randn(d_sae, d_in, generator=g),
                                   "b_enc": torch.randn(d_sae, generator=g) - 1.0,
                                   "b_dec": torch.zeros(d_in)})


@pytest.fixture(scope="session")
def sae(tiny):
    return tiny_sae(tiny.hidden_size)
