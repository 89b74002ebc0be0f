"""Cross-layer and per-layer transcoders with lazy, stream-and-free per-layer loading.

Why lazy: a real CLT is tens of GB (Gemma-2-2B CLT-426K: 26 encoders of ~75 MB and decoders
up to 1.6 GB each). Only one layer's encoder is resident at a time (loading another frees it
first), decoder rows are read from disk one seek each, and decoder slices are streamed in
chunks, so encoding every layer costs one encoder of memory.

Semantics (inventory §6.4-6.6, circuit-tracer): ``pre = W_enc x + b_enc`` in fp32; ReLU, or
JumpReLU ``pre * (pre > threshold)`` when the files carry thresholds. A CLT feature of layer
``s`` writes ``W_dec_s[f, l - s]`` into the MLP output of every layer ``l >= s``;
reconstruction at layer ``l`` is ``sum_{s<=l} f_s W_dec_s[:, l-s] + b_dec_l`` (+ ``W_skip x``
for per-layer bundles that have a skip matrix).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from torch_mi.dictionaries.clt_config import CltConfig, TranscoderSchema
from torch_mi.dictionaries.clt_formats import NpzFile, SafetensorsFile, open_weights
from torch_mi.dictionaries.clt_source import (
    Resolver,
    build_config,
    check_layer,
    hub_layout,
    layer_keys,
    local_layout,
)
from torch_mi.dictionaries.types import CltFeatureId, SparseActivations
from torch_mi.errors import ConfigError, InterventionError

Reader = SafetensorsFile | NpzFile


@dataclass
class _Encoder:
    """The one resident encoder: ``weight`` [F, D], ``bias`` [F], ``threshold`` [F] (fp32)."""

    layer: int
    weight: torch.Tensor
    bias: torch.Tensor
    threshold: torch.Tensor | None

    @property
    def nbytes(self) -> int:
        parts = [self.weight, self.bias] + ([self.threshold] if self.threshold is not None else [])
        return sum(t.numel() * t.element_size() for t in parts)


class CrossLayerTranscoder:
    """A transcoder (CLT, per-layer bundle or Gemma Scope set) read lazily from its files."""

    def __init__(self, config: CltConfig, resolve: Resolver,
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self._resolve = resolve
        self._readers: dict[str, Reader] = {}
        self._checked: set[int] = set()
        self._encoder: _Encoder | None = None
        self._steering: dict[tuple[CltFeatureId, int], torch.Tensor] = {}

    # ---- opening ------------------------------------------------------------------------
    @classmethod
    def from_local(cls, path: str | Path, *, device: str | torch.device = "cpu"
                   ) -> CrossLayerTranscoder:
        """Open a folder (any of the three layouts) or a circuit-tracer ``config.yaml``.

        Every layer file's header is checked now (missing files, shape mismatches, pickled
        NPZs are typed errors here); no weights are read.
        """
        layout, resolve = local_layout(Path(path))
        clt = cls(build_config(layout, resolve), resolve, device)
        for layer, names in enumerate(clt.config.layer_files):
            if not names.encoder.startswith("hf://"):  # Hub files are checked when fetched
                clt._files(layer)
        return clt

    @classmethod
    def from_pretrained(cls, repo_id: str, *, revision: str | None = None,
                        device: str | torch.device = "cpu") -> CrossLayerTranscoder:
        """Open a Hub repo from its listing; layer files are downloaded when first used."""
        layout, resolve = hub_layout(repo_id, revision)
        return cls(build_config(layout, resolve), resolve, device)

    def __repr__(self) -> str:
        c = self.config
        return (f"CrossLayerTranscoder({c.schema.value}, layers={c.n_layers}, d_model={c.d_model}, "
                f"features/layer={c.n_features_per_layer}, {c.activation}, "
                f"in={c.feature_input_hook!r}, out={c.feature_output_hook!r})")

    def _reader(self, name: str) -> Reader:
        if name not in self._readers:
            self._readers[name] = open_weights(self._resolve(name))
        return self._readers[name]

    def _files(self, layer: int) -> tuple[Reader, Reader]:
        """(encoder file, decoder file) of ``layer``, headers checked on first use."""
        self._check_layer(layer)
        names = self.config.layer_files[layer]
        enc, dec = self._reader(names.encoder), self._reader(names.decoder)
        if layer not in self._checked:
            check_layer(self.config, layer, enc, dec)
            self._checked.add(layer)
        return enc, dec

    def _check_layer(self, layer: object, what: str = "layer") -> int:
        n = self.config.n_layers
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n:
            raise InterventionError(f"{what} {layer!r} is out of range: this transcoder has "
                                    f"layers 0..{n - 1}")
        return layer

    # ---- encoder: stream and free -------------------------------------------------------
    def load_encoder(self, layer: int) -> None:
        """Make ``layer``'s encoder the resident one (frees the previous one FIRST)."""
        if self._encoder is not None and self._encoder.layer == layer:
            return
        enc, _ = self._files(layer)
        self.unload_encoder()
        keys = layer_keys(self.config.schema, layer)
        weight = enc.read(keys.W_enc)  # [F, D] ([D, F] for Gemma Scope NPZ)
        if self.config.schema is TranscoderSchema.GEMMA_SCOPE_NPZ:
            weight = weight.t().contiguous()
        threshold = enc.read(keys.threshold) if self.config.is_jump_relu else None
        self._encoder = _Encoder(layer, weight.to(self.device), enc.read(keys.b_enc).to(self.device),
                                 None if threshold is None else threshold.to(self.device))

    def unload_encoder(self) -> None:
        """Drop the resident encoder (its memory goes back once nothing else holds it: plain
        tensors in no reference cycle, so no gc.collect, which cost ~110 ms per switch)."""
        self._encoder = None

    def encoder_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``layer``'s encoder (made resident): W_enc [F, D], b_enc [F], threshold [F] or
        None (fp32); attribution reads encoder rows of active features from it."""
        self.load_encoder(self._check_layer(layer))
        enc = self._encoder
        return enc.weight, enc.bias, enc.threshold

    def loaded_encoder_layer(self) -> int | None:
        return None if self._encoder is None else self._encoder.layer

    @property
    def encoder_nbytes(self) -> int:
        """Bytes of one layer's resident encoder (W_enc, b_enc, threshold; fp32)."""
        c = self.config
        per = c.n_features_per_layer * (c.d_model + 1 + (1 if c.is_jump_relu else 0))
        return per * 4

    def _as_input(self, residual: torch.Tensor) -> torch.Tensor:
        if not isinstance(residual, torch.Tensor):
            raise InterventionError(f"residual must be a tensor [..., {self.config.d_model}], "
                                    f"got {type(residual).__name__}")
        if residual.dim() == 0 or residual.shape[-1] != self.config.d_model:
            raise InterventionError(f"residual has shape {tuple(residual.shape)} but this "
                                    f"transcoder reads d_model={self.config.d_model} vectors "
                                    f"[..., {self.config.d_model}] at "
                                    f"{self.config.feature_input_hook!r}")
        return residual.detach().to(self.device, torch.float32)

    def encode_pre_activation(self, residual: torch.Tensor, layer: int) -> torch.Tensor:
        """``W_enc x + b_enc`` in fp32: [..., D] -> [..., F] (loads ``layer``'s encoder)."""
        x = self._as_input(residual)
        self.load_encoder(self._check_layer(layer))
        enc = self._encoder
        return torch.nn.functional.linear(x, enc.weight, enc.bias)

    def activate(self, pre: torch.Tensor, layer: int) -> torch.Tensor:
        """ReLU, or JumpReLU ``pre * (pre > threshold)`` (0 where pre is NaN): [..., F]."""
        if not self.config.is_jump_relu:
            return torch.relu(pre)
        self.load_encoder(self._check_layer(layer))
        return torch.where(pre > self._encoder.threshold, pre, torch.zeros_like(pre))

    def encode_dense(self, residual: torch.Tensor, layer: int) -> torch.Tensor:
        """Feature activations [..., D] -> [..., F] (fp32, on the transcoder's device)."""
        return self.activate(self.encode_pre_activation(residual, layer), layer)

    def _one_position(self, residual: torch.Tensor) -> torch.Tensor:
        x = self._as_input(residual)
        if x.numel() != self.config.d_model:
            raise InterventionError(f"encode takes ONE position ({self.config.d_model} values), "
                                    f"got shape {tuple(residual.shape)}; select a position "
                                    f"(residual[0, pos]) or use encode_dense")
        return x.reshape(self.config.d_model)

    def encode(self, residual: torch.Tensor, layer: int) -> SparseActivations[CltFeatureId]:
        """Non-zero activations of one position, largest first (NaN last, ties by index)."""
        acts = self.encode_dense(self._one_position(residual), layer).cpu()  # [F]
        idx = torch.nonzero(acts != 0).flatten()
        return SparseActivations([(CltFeatureId(layer, int(i)), float(v))
                                  for i, v in zip(idx.tolist(), acts[idx].tolist(), strict=True)])

    def top_k(self, residual: torch.Tensor, layer: int, k: int) -> SparseActivations[CltFeatureId]:
        """The ``k`` largest activations; equal to the first ``k`` of :meth:`encode`."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InterventionError(f"top_k needs an integer k >= 0, got {k!r}")
        acts = self.encode_dense(self._one_position(residual), layer).cpu()  # [F]
        active = acts != 0
        if k == 0:
            return SparseActivations()
        if k < int(active.sum()):
            ranked = torch.where(active & ~acts.isnan(), acts, torch.full_like(acts, -torch.inf))
            kth = torch.topk(ranked, k).values[-1]
            keep = active & (ranked >= kth) if kth > -torch.inf else active
        else:
            keep = active
        idx = torch.nonzero(keep).flatten()
        pairs = [(CltFeatureId(layer, int(i)), float(v))
                 for i, v in zip(idx.tolist(), acts[idx].tolist(), strict=True)]
        return SparseActivations(pairs).top_k(k)

    # ---- decoder ------------------------------------------------------------------------
    def _check_pair(self, feature: CltFeatureId, target_layer: int) -> int:
        if not isinstance(feature, CltFeatureId):
            raise InterventionError(f"expected a CltFeatureId, got {type(feature).__name__} "
                                    f"{feature!r}")
        self._check_layer(feature.layer, "feature layer")
        self._check_layer(target_layer, "target layer")
        if feature.index >= self.config.n_features_per_layer:
            raise InterventionError(f"feature {feature} is out of range: layers have "
                                    f"{self.config.n_features_per_layer} features")
        offset = target_layer - feature.layer
        if offset < 0 or (offset > 0 and not self.config.is_cross_layer):
            allowed = (f"{feature.layer}..{self.config.n_layers - 1}" if self.config.is_cross_layer
                       else f"{feature.layer} only (a per-layer transcoder)")
            raise InterventionError(f"feature {feature} cannot write to layer {target_layer}: "
                                    f"target layers are {allowed}")
        return offset

    def _decoder_rows(self, source: int, rows: Sequence[int], offset: int,
                      dtype: torch.dtype | None) -> torch.Tensor:
        """Rows of ``W_dec_source`` at ``offset`` -> [n, D], in ``dtype`` (None: on-disk)."""
        _, dec = self._files(source)
        key = layer_keys(self.config.schema, source).W_dec
        out_dtype = dtype or dec.info(key).dtype
        inner = offset if self.config.is_cross_layer else None
        return dec.read_rows(key, list(rows), out_dtype, inner=inner)

    def decoder_vector(self, feature: CltFeatureId, target_layer: int | None = None,
                       device: str | torch.device | None = None) -> torch.Tensor:
        """``W_dec[feature, target - source]`` [D] in the on-disk dtype (cached copy if any)."""
        target = feature.layer if target_layer is None else target_layer
        offset = self._check_pair(feature, target)
        device = torch.device(device) if device is not None else self.device
        cached = self._steering.get((feature, target))
        if cached is not None:
            return cached.to(device)
        return self._decoder_rows(feature.layer, [feature.index], offset, None)[0].to(device)

    def extract_decoder_vectors(self, features: Iterable[CltFeatureId], target_layer: int
                                ) -> dict[CltFeatureId, torch.Tensor]:
        """``{feature: [D] fp32 CPU}`` at ``target_layer``; one file visit per source layer."""
        wanted = list(dict.fromkeys(features))
        for feature in wanted:
            self._check_pair(feature, target_layer)
        out: dict[CltFeatureId, torch.Tensor] = {}
        for source in sorted({f.layer for f in wanted}):
            group = [f for f in wanted if f.layer == source]
            rows = self._decoder_rows(source, [f.index for f in group], target_layer - source,
                                      torch.float32)
            out.update({f: rows[i].clone() for i, f in enumerate(group)})
        return out

    def decoder_slice(self, source_layer: int, target_layer: int) -> torch.Tensor:
        """Every feature of ``source_layer`` at ``target_layer``: [F, D] fp32 CPU (streamed)."""
        self._check_pair(CltFeatureId(self._check_layer(source_layer, "source layer"), 0),
                         target_layer)
        _, dec = self._files(source_layer)
        key = layer_keys(self.config.schema, source_layer).W_dec
        if self.config.is_cross_layer:
            return dec.read_inner(key, target_layer - source_layer, torch.float32)
        return dec.read(key, torch.float32)

    def decoder_bias(self, layer: int) -> torch.Tensor:
        """``b_dec`` of ``layer``'s output: [D] fp32 CPU."""
        enc, _ = self._files(self._check_layer(layer))
        return enc.read(layer_keys(self.config.schema, layer).b_dec, torch.float32)

    def load_skip_matrix(self, layer: int, device: str | torch.device | None = None
                         ) -> torch.Tensor:
        """``W_skip`` [D, D] fp32 of a per-layer bundle (reconstruction adds ``W_skip x``)."""
        _, dec = self._files(self._check_layer(layer))
        key = layer_keys(self.config.schema, layer).W_skip
        if key is None or key not in dec.tensors:
            raise ConfigError(f"layer {layer} of this {self.config.schema.value} transcoder has "
                              f"no skip matrix; only per-layer bundles saved with W_skip have one")
        return dec.read(key, torch.float32).to(device if device is not None else self.device)

    # ---- steering micro-cache -----------------------------------------------------------
    def cache_steering_vectors(self, pairs: Iterable[tuple[CltFeatureId, int]],
                               device: str | torch.device | None = None) -> None:
        """Pin fp32 decoder vectors for ``(feature, target_layer)`` pairs on ``device``."""
        pairs = list(dict.fromkeys(pairs))
        for feature, target in pairs:
            self._check_pair(feature, target)
        device = torch.device(device) if device is not None else self.device
        todo = [p for p in pairs if p not in self._steering]
        for target in sorted({t for _, t in todo}):
            vectors = self.extract_decoder_vectors([f for f, t in todo if t == target], target)
            for feature, vec in vectors.items():
                self._steering[(feature, target)] = vec.to(device)

    def cache_steering_vectors_all_downstream(self, features: Iterable[CltFeatureId],
                                              device: str | torch.device | None = None) -> None:
        """Every target a feature writes to: ``l..L-1`` for a CLT, its own layer otherwise."""
        last = self.config.n_layers if self.config.is_cross_layer else None
        self.cache_steering_vectors(
            [(f, t) for f in features for t in range(f.layer, last or f.layer + 1)], device)

    def steering_vector(self, feature: CltFeatureId, target_layer: int) -> torch.Tensor:
        """A cached vector [D]; HookError-like InterventionError if it was never cached."""
        try:
            return self._steering[(feature, target_layer)]
        except KeyError:
            raise InterventionError(f"no cached steering vector for {feature} -> layer "
                                    f"{target_layer}; call cache_steering_vectors first") from None

    def clear_steering_cache(self) -> None:
        self._steering.clear()

    def steering_cache_len(self) -> int:
        return len(self._steering)

    # ---- reconstruction -----------------------------------------------------------------
    def reconstruct(self, acts: Mapping[int, torch.Tensor], target_layer: int,
                    inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Output at ``target_layer`` from activations ``{source: [..., F]}``: [..., D] fp32.

        CLT: ``sum_{s<=l} acts[s] @ W_dec_s[:, l-s] + b_dec_l`` (every ``s <= l`` needed).
        Per-layer: ``acts[l] @ W_dec_l + b_dec_l (+ inputs @ W_skip_l.T if it has W_skip)``.
        """
        target = self._check_layer(target_layer, "target layer")
        sources = range(target + 1) if self.config.is_cross_layer else [target]
        missing = [s for s in sources if s not in acts]
        if missing:
            raise InterventionError(f"reconstruct at layer {target} needs activations of source "
                                    f"layers {list(sources)}; missing {missing}")
        out = self.decoder_bias(target)
        for s in sources:
            f = self._as_acts(acts[s])
            out = out + f @ self.decoder_slice(s, target)
        return out + self._skip_term(target, inputs)

    def _as_acts(self, acts: torch.Tensor) -> torch.Tensor:
        if not isinstance(acts, torch.Tensor) or acts.shape[-1:] != (self.config.n_features_per_layer,):
            shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
            raise InterventionError(f"activations must be [..., {self.config.n_features_per_layer}]"
                                    f", got {shape}")
        return acts.detach().to("cpu", torch.float32)

    def _skip_term(self, layer: int, inputs: torch.Tensor | None) -> torch.Tensor | float:
        _, dec = self._files(layer)
        key = layer_keys(self.config.schema, layer).W_skip
        if key is None or key not in dec.tensors:
            return 0.0
        if inputs is None:
            raise InterventionError(f"layer {layer} has a skip connection: pass the encoder "
                                    f"inputs [..., {self.config.d_model}] to reconstruct")
        x = self._as_input(inputs).cpu()
        return x @ dec.read(key, torch.float32).T

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Reconstruct every layer from its input: [L, ..., D] -> [L, ..., D] fp32 CPU.

        Encoders are streamed one at a time; each decoder slice is read once per target.
        """
        L = self.config.n_layers
        if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2 or inputs.shape[0] != L:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else inputs
            raise InterventionError(f"forward takes the inputs of all {L} layers [L, ..., D], "
                                    f"got {shape}")
        acts = {layer: self.encode_dense(inputs[layer], layer).cpu() for layer in range(L)}
        self.unload_encoder()
        return torch.stack([self.reconstruct(acts, layer, inputs[layer]) for layer in range(L)])


__all__ = ["CrossLayerTranscoder"]
