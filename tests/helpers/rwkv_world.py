"""Tiny random RWKV-6/7 models that carry a world-tokenizer vocabulary file, for the
text-level surface (generation with stop strings, the CLI, the example).

The tiny vocabulary has every single byte (ids 1..256, as the world vocabulary requires)
plus a few multi-byte tokens, among them multi-byte UTF-8 characters, so random models do
emit ids that end inside a character. The models' vocabulary is 320 (> 256, as
``load_world_tokenizer_dir`` requires); ids past the file's last one decode to nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from tests.helpers.rwkv import TINY_V6, TINY_V7, make_v6, make_v7, write_hf_folder, write_pth

VOCAB_SIZE = 320
VOCAB_NAME = "rwkv_vocab_v20230424.txt"
WORDS = ("the", " the", "ab", "def", " fib", "onacci", "你", "好", "\n    ", "):", "Hello",
         " world", "é", " is", " Paris", "\n")


def vocab_lines() -> list[str]:
    """``<id> <literal> <length>`` lines: bytes 0..255 at ids 1..256, then ``WORDS``."""
    lines = [f"{b + 1} {bytes([b])!r} 1" for b in range(256)]
    for offset, word in enumerate(w for w in WORDS if len(w.encode()) > 1):
        lines.append(f"{257 + offset} {word!r} {len(word.encode())}")
    return lines


def write_vocab(folder: Path) -> Path:
    path = Path(folder) / VOCAB_NAME
    path.write_text("\n".join(vocab_lines()) + "\n", encoding="utf-8")
    return path


def tiny_state_dict(version: str, seed: int = 5) -> dict[str, torch.Tensor]:
    if version == "v6":
        return make_v6(seed, dataclasses.replace(TINY_V6, vocab=VOCAB_SIZE))
    return make_v7(seed, dataclasses.replace(TINY_V7, vocab=VOCAB_SIZE))


def write_world_model(version: str, folder: Path, *, pth: bool = False, seed: int = 5) -> Path:
    """An HF folder (or, with ``pth``, ``folder/model.pth``) plus the tiny vocabulary file;
    the path to give ``--model`` / ``from_pretrained``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = tiny_state_dict(version, seed)
    write_vocab(folder)
    if pth:
        return write_pth(sd, folder / f"tiny-{version}.pth")
    return write_hf_folder(sd, folder)
