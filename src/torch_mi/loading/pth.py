"""BlinkDL native RWKV checkpoints (``.pth``): RWKV-6 (x060) and RWKV-7 (x070).

Most RWKV weights circulate as BlinkDL's ``torch.save`` of a flat ``{name: tensor}`` dict.
A ``.pth`` is a pickle, so it is read only with ``torch.load(weights_only=True, mmap=True)``:
the restricted unpickler builds tensors and containers and refuses every other object
without calling it, and the tensor data stays memory-mapped until copied into the model.
Anything that is not a flat ``str -> dense floating tensor`` dict is a WeightError.

The version comes from the keys (``att.time_maa_*``: x060; ``att.r_k``/``k_k``/``w0``:
x070), the config from the shapes, and the names are mapped onto the HF layout the RWKV
backend reads (candle-mi-inventory §5.3): v6 ``RWKV/v6-Finch-*-HF`` (BlinkDL names under
``rwkv.``, shapes unchanged); v7 fla-hub (LoRA matrices transposed to nn.Linear [out, in],
``w0/a0/v0`` as the up-projection biases, ``k_k``/``k_a``/``ffn.x_k`` flattened). Layer 0's
``v0/v1/v2`` are dropped: RWKV-7 has no value residual there and BlinkDL's own loader
ignores them too. From there the load is the registry row's, with strict accounting.

Known difference: the ``rwkv`` package's v7 GroupNorm eps is 64e-5 for every head size; the
HF/fla semantics used here is ``head_dim * norm_eps`` (the same 64e-5 at head size 64, the
only size BlinkDL ships).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..backends.protocol import MIBackend
from ..backends.registry import resolve_hf
from ..errors import ConfigError, WeightError
from ..tokenizer import MITokenizer
from .preflight import check_before_allocating
from .pretrained import load_world_tokenizer_dir
from .weights import load_weights

_LAYER = re.compile(r"^blocks\.(\d+)\.(.+)$")
Transform = Callable[[torch.Tensor], torch.Tensor]


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _transpose(t: torch.Tensor) -> torch.Tensor:
    return t.t()


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


# ---- reading ------------------------------------------------------------------------------
def read_pth(path: Path) -> dict[str, torch.Tensor]:
    """The flat tensor dict of a BlinkDL ``.pth`` (WeightError for anything else)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch.load raises many unrelated types for a bad file
        raise WeightError(
            f"{path}: cannot be read as a plain tensor checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). torch-mi reads .pth files only "
            f"with torch.load(weights_only=True), which refuses arbitrary pickled objects and "
            f"the legacy (non-zip) format; re-save the weights with torch.save(state_dict) or "
            f"convert them to safetensors") from None
    if not isinstance(obj, dict):
        raise WeightError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors; a "
                          f"BlinkDL checkpoint is a flat {{name: tensor}} dict")
    bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightError(f"{path}: not a flat dict of tensors; these entries are not "
                          f"str -> tensor: {', '.join(bad[:10])}. (Files converted by rwkv's "
                          f"convert_model carry a '_strategy' entry: use the original "
                          f"checkpoint)")
    odd = [f"{k} ({v.dtype}, {v.layout})" for k, v in obj.items()
           if not v.is_floating_point() or v.layout != torch.strided]
    if odd:
        raise WeightError(f"{path}: tensors {', '.join(odd[:10])} are not dense floating "
                          f"point; an RWKV checkpoint holds float weights only (int8-quantised "
                          f"or sparse files are not supported)")
    return obj


def rwkv_version(sd: dict[str, torch.Tensor], where: str) -> str:
    """'v6' (x060, ``time_maa``) or 'v7' (x070, ``r_k``/``k_k``/``w0``); ConfigError else."""
    v6 = any(".att.time_maa_" in k for k in sd)
    v7 = any(re.search(r"\.att\.(r_k|k_k|w0)$", k) for k in sd)
    if v6 and not v7:
        return "v6"
    if v7 and not v6:
        return "v7"
    what = "both RWKV-6 and RWKV-7 tensors" if v6 else "neither RWKV-6 (att.time_maa_*) nor " \
        "RWKV-7 (att.r_k, att.k_k, att.w0) tensors"
    raise ConfigError(f"{where}: holds {what}; only BlinkDL RWKV-6 (x060) and RWKV-7 (x070) "
                      f"checkpoints load from .pth (RWKV-4/5 are not supported)")


def _need(sd: dict[str, torch.Tensor], name: str, ndim: int, where: str) -> torch.Tensor:
    """A tensor the config is inferred from, with its rank checked."""
    tensor = sd.get(name)
    if tensor is None:
        raise WeightError(f"{where}: missing tensor '{name}', needed to infer the model's "
                          f"sizes; the checkpoint is incomplete")
    if tensor.dim() != ndim:
        raise WeightError(f"{where}: '{name}' has shape {list(tensor.shape)}, expected "
                          f"{ndim} dimensions")
    return tensor


def _num_layers(sd: dict[str, torch.Tensor]) -> int:
    found = [int(m.group(1)) for k in sd if (m := _LAYER.match(k))]
    return 1 + max(found) if found else 0


def _v6_config(sd: dict[str, torch.Tensor], where: str) -> dict:
    vocab, hidden = _need(sd, "emb.weight", 2, where).shape
    _, head = _need(sd, "blocks.0.att.time_faaaa", 2, where).shape
    return {"model_type": "rwkv6", "vocab_size": vocab, "hidden_size": hidden,
            "num_hidden_layers": _num_layers(sd), "head_size": head,
            "intermediate_size": _need(sd, "blocks.0.ffn.key.weight", 2, where).shape[0],
            "layer_norm_epsilon": 1e-5, "head_size_divisor": 8, "tie_word_embeddings": False}


def _v7_config(sd: dict[str, torch.Tensor], where: str) -> dict:
    vocab, hidden = _need(sd, "emb.weight", 2, where).shape
    heads, head = _need(sd, "blocks.0.att.r_k", 2, where).shape
    layers = _num_layers(sd)
    v_layer = 1 if layers > 1 else 0  # layer 0's v LoRA is unused (and may be absent)

    def rank(name: str, layer: int = 0) -> int:
        return _need(sd, f"blocks.{layer}.att.{name}", 2, where).shape[1]

    config = {"model_type": "rwkv7", "vocab_size": vocab, "hidden_size": hidden,
              "num_hidden_layers": layers, "head_dim": head, "num_heads": heads,
              "decay_low_rank_dim": rank("w1"), "a_low_rank_dim": rank("a1"),
              "gate_low_rank_dim": rank("g1"),
              "intermediate_size": _need(sd, "blocks.0.ffn.key.weight", 2, where).shape[0],
              "norm_eps": 1e-5, "tie_word_embeddings": False}
    if f"blocks.{v_layer}.att.v1" in sd:
        config["v_low_rank_dim"] = rank("v1", v_layer)
    return config


# ---- names --------------------------------------------------------------------------------
_V6_FIXED = {"emb.weight": "rwkv.embeddings.weight", "head.weight": "head.weight",
             "ln_out.weight": "rwkv.ln_out.weight", "ln_out.bias": "rwkv.ln_out.bias"}
_V6_PARTS = {"ln0": "pre_ln", "att": "attention", "ffn": "feed_forward"}


def _v6_name(name: str) -> tuple[str, Transform]:
    """BlinkDL x060 -> ``RWKV/v6-Finch-*-HF`` (shapes unchanged)."""
    if name in _V6_FIXED:
        return _V6_FIXED[name], _same
    m = _LAYER.match(name)
    if m is None:
        return name, _same  # unknown: reported as unused by the strict accounting
    i, rest = m.groups()
    part, _, tail = rest.partition(".")
    return f"rwkv.blocks.{i}.{_V6_PARTS.get(part, part)}.{tail}", _same


_V7_FIXED = {"emb.weight": "model.embeddings.weight", "head.weight": "lm_head.weight",
             "ln_out.weight": "model.norm.weight", "ln_out.bias": "model.norm.bias"}
_V7_NORMS = {"ln0": "pre_norm", "ln1": "attn_norm", "ln2": "ffn_norm"}
_V7_ATT = {"receptance.weight": ("r_proj.weight", _same), "key.weight": ("k_proj.weight", _same),
           "value.weight": ("v_proj.weight", _same), "output.weight": ("o_proj.weight", _same),
           "ln_x.weight": ("g_norm.weight", _same), "ln_x.bias": ("g_norm.bias", _same),
           "r_k": ("r_k", _same), "k_k": ("k_k", _flat), "k_a": ("k_a", _flat),
           **{f"x_{c}": (f"x_{c}", _same) for c in "rwkvag"}}
for _c, _lora in (("w", "w_lora"), ("a", "a_lora"), ("v", "v_lora"), ("g", "g_lora")):
    _V7_ATT[f"{_c}1"] = (f"{_lora}.lora.0.weight", _transpose)
    _V7_ATT[f"{_c}2"] = (f"{_lora}.lora.2.weight", _transpose)
    if _c != "g":
        _V7_ATT[f"{_c}0"] = (f"{_lora}.lora.2.bias", _flat)


def _v7_name(name: str) -> tuple[str, Transform] | None:
    """BlinkDL x070 -> fla-hub names (None: layer 0's unused v LoRA)."""
    if name in _V7_FIXED:
        return _V7_FIXED[name], _same
    m = _LAYER.match(name)
    if m is None:
        return name, _same
    i, rest = m.groups()
    part, _, tail = rest.partition(".")
    if part in _V7_NORMS:
        return f"model.layers.{i}.{_V7_NORMS[part]}.{tail}", _same
    if part == "ffn":
        return f"model.layers.{i}.ffn.{tail}", _flat if tail == "x_k" else _same
    if part == "att" and tail in _V7_ATT:
        if i == "0" and tail in ("v0", "v1", "v2"):
            return None
        new, transform = _V7_ATT[tail]
        return f"model.layers.{i}.attn.{new}", transform
    return name, _same  # unknown: reported as unused by the strict accounting


class PthTensorSource:
    """A BlinkDL dict seen under HF names (the TensorSource of ``load_weights``)."""

    def __init__(self, sd: dict[str, torch.Tensor], version: str) -> None:
        self.sd = sd
        self.entries: dict[str, tuple[str, Transform]] = {}
        rename = _v6_name if version == "v6" else _v7_name
        for name in sd:
            mapped = rename(name)
            if mapped is not None:
                self.entries[mapped[0]] = (name, mapped[1])

    def names(self) -> Iterator[str]:
        return iter(self.entries)

    def tensor(self, name: str) -> torch.Tensor:
        original, transform = self.entries[name]
        return transform(self.sd[original])

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensor(name).shape)

    def copy_into(self, name: str, dest: torch.Tensor) -> None:
        dest.copy_(self.tensor(name))

    def stored_name(self, name: str) -> str:
        return self.entries[name][0]


def pth_hf_config(sd: dict[str, torch.Tensor], where: str) -> dict:
    """The HF ``config.json`` dict equivalent to a BlinkDL checkpoint's shapes."""
    version = rwkv_version(sd, where)
    return _v6_config(sd, where) if version == "v6" else _v7_config(sd, where)


def load_pth_model(path: Path, device: torch.device, dtype: torch.dtype, *,
                   allow_nonfinite: bool = False) -> tuple[MIBackend, MITokenizer | None]:
    """The RWKV backend of a BlinkDL ``.pth`` (weights copied into ``dtype`` on ``device``)
    and the world tokenizer when ``rwkv_vocab_*.txt`` lies next to it (BlinkDL's checkpoints
    ship without one), else None. The tokenizer is built first: a bad vocabulary file is
    refused before the weights are allocated."""
    path = Path(path)
    where = f"RWKV checkpoint {path.name}"
    sd = read_pth(path)
    hf = pth_hf_config(sd, where)
    tokenizer = load_world_tokenizer_dir(path.parent, {"vocab_size": hf["vocab_size"]})
    source = PthTensorSource(sd, rwkv_version(sd, where))
    row, config = resolve_hf(hf, list(source.names()))
    numels = (source.sd[original].numel() for original, _ in source.entries.values())
    weights = check_before_allocating(config, list(source.names()), numels,
                                      lambda: row.weight_map(config), device=device,
                                      dtype=dtype, where=where)
    model = row.backend.empty(config, device, dtype)
    try:
        load_weights(model, source, weights, check_finite=not allow_nonfinite)
    except WeightError as exc:
        raise WeightError(f"{where} (BlinkDL {hf['model_type']}): {exc}") from None
    return model, tokenizer
