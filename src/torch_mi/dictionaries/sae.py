"""Sparse autoencoders: load every common format, encode / decode exactly as sae-lens does.

All arithmetic is fp32 on the SAE's device whatever the input dtype; the formulas are
sae-lens 6's (``SAE.process_sae_in`` -> architecture ``encode`` -> ``decode``), including
run-time normalisation and ``hook_z`` reshaping.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import torch

from torch_mi.dictionaries.formats import Tensors, detect_format, read_npz, read_saelens, read_sparsify
from torch_mi.dictionaries.sae_config import (
    NormalizeActivations,
    SaeArchitecture,
    SaeConfig,
    TopKStrategy,
)
from torch_mi.dictionaries.types import SaeFeatureId, SparseActivations
from torch_mi.download import download_model_blocking
from torch_mi.errors import ConfigError, DownloadError, InterventionError, WeightError
from torch_mi.hooks.points import HookPoint

_Stats = tuple[torch.Tensor, torch.Tensor] | None  # run-time normalisation state of one input


def _expected_shapes(cfg: SaeConfig) -> dict[str, tuple[int, ...]]:
    d, f = cfg.d_in, cfg.d_sae
    shapes = {"W_enc": (d, f), "W_dec": (f, d), "b_dec": (d,)}
    if cfg.architecture is SaeArchitecture.GATED:
        shapes |= {"b_gate": (f,), "b_mag": (f,), "r_mag": (f,)}
    else:
        shapes["b_enc"] = (f,)
    if cfg.architecture is SaeArchitecture.JUMPRELU:
        shapes["threshold"] = (f,)
    return shapes


class SparseAutoencoder:
    """One SAE reading one hook point; tensors in sae-lens layout (``W_enc [d_in, d_sae]``)."""

    def __init__(self, config: SaeConfig, tensors: Tensors, device: str | torch.device = "cpu"):
        shapes = _expected_shapes(config)
        for name, shape in shapes.items():
            if name not in tensors:
                hint = (" A JumpReLU SAE needs its per-feature threshold."
                        if name == "threshold" else "")
                raise WeightError(f"SAE ({config.format}) is missing tensor {name!r}.{hint}")
            if tuple(tensors[name].shape) != shape:
                raise WeightError(
                    f"SAE tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape} "
                    f"from d_in={config.d_in}, d_sae={config.d_sae}; the config and weights disagree."
                )
        skip = tensors.get("W_skip")
        if skip is not None and tuple(skip.shape) != (config.d_in, config.d_in):
            raise WeightError(f"W_skip has shape {tuple(skip.shape)}, expected "
                              f"{(config.d_in, config.d_in)}.")
        self.config = config
        keep = [*shapes, *(["W_skip"] if skip is not None else [])]
        self._t = {n: tensors[n].to(device=device, dtype=torch.float32).contiguous() for n in keep}

    # ----- loading -------------------------------------------------------------------------
    @classmethod
    def from_local(cls, path: str | Path, device: str | torch.device = "cpu", *,
                   hook_name: str | None = None, hook_layer: int | None = None) -> SparseAutoencoder:
        """Load a SAELens folder, a sparsify folder or a Gemma Scope ``params.npz``.

        ``hook_layer`` is needed for NPZ files (they carry no config); ``hook_name``
        overrides the hook for NPZ and sparsify formats.
        """
        path = Path(path)
        fmt = detect_format(path)
        if fmt == "saelens":
            return cls(*read_saelens(path), device=device)
        if fmt == "sparsify":
            return cls(*read_sparsify(path, hook_name), device=device)
        if hook_layer is None:
            raise ConfigError(f"{path} is a Gemma Scope NPZ, which has no config: pass hook_layer "
                              f"(and hook_name if it is not hook_resid_post).")
        return cls(*read_npz(path, hook_layer, hook_name), device=device)

    @classmethod
    def from_npz(cls, path: str | Path, hook_layer: int, device: str | torch.device = "cpu",
                 hook_name: str | None = None) -> SparseAutoencoder:
        """Load a Gemma Scope ``params.npz`` (``np.load(allow_pickle=False)``)."""
        return cls(*read_npz(Path(path), hook_layer, hook_name), device=device)

    @classmethod
    def from_pretrained(cls, repo_id: str, sae_id: str, device: str | torch.device = "cpu", *,
                        revision: str | None = None, hook_layer: int | None = None,
                        hook_name: str | None = None) -> SparseAutoencoder:
        """Download (or find in the HF cache) ``{sae_id}/`` of a Hub repo and load it.

        ``sae_id`` is a folder (SAELens or sparsify) or a ``.../params.npz`` path (Gemma Scope;
        the layer is read from a ``layer_N`` component unless ``hook_layer`` is given).
        Offline mode (``HF_HUB_OFFLINE=1``) uses the cache only; failures are DownloadError.
        """
        sub = _safe_subpath(sae_id)
        if sub.suffix == ".npz":
            root = download_model_blocking(repo_id, revision, [str(sub)])
            layer = hook_layer if hook_layer is not None else _layer_from_path(sub)
            return cls.from_npz(root / sub, layer, device, hook_name)
        patterns = [f"{sub}/cfg.json", f"{sub}/*.safetensors"]
        root = download_model_blocking(repo_id, revision, patterns)
        folder = root / sub
        if not (folder / "cfg.json").is_file():
            raise DownloadError(f"{repo_id!r} has no {sub}/cfg.json; check the sae_id (the folder "
                                f"holding cfg.json in the repo).")
        return cls.from_local(folder, device, hook_name=hook_name, hook_layer=hook_layer)

    # ----- properties ----------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return self.config.d_in

    @property
    def d_sae(self) -> int:
        return self.config.d_sae

    @property
    def hook_point(self) -> HookPoint:
        """The model hook this SAE reads (from the config's TransformerLens name)."""
        return self.config.hook_point

    @property
    def device(self) -> torch.device:
        return self._t["W_enc"].device

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The fp32 weights by sae-lens name (read-only view; do not modify in place)."""
        return dict(self._t)

    def to(self, device: str | torch.device) -> SparseAutoencoder:
        """Move the weights to ``device`` (returns self)."""
        self._t = {n: t.to(device) for n, t in self._t.items()}
        return self

    def __repr__(self) -> str:
        c = self.config
        k = f", k={c.k}" if c.architecture is SaeArchitecture.TOPK else ""
        return (f"SparseAutoencoder({c.architecture.value}{k}, d_in={c.d_in}, d_sae={c.d_sae}, "
                f"hook={c.hook_name!r}, format={c.format})")

    # ----- input processing ----------------------------------------------------------------
    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        """Check the last dim and flatten ``hook_z`` captures ``[..., H, d_head]`` -> ``[..., H*d_head]``."""
        if not isinstance(x, torch.Tensor):
            raise InterventionError(f"SAE input must be a tensor, got {type(x).__name__}.")
        if (self.config.reshape_hook_z and x.dim() >= 2 and x.shape[-1] != self.d_in
                and x.shape[-2] * x.shape[-1] == self.d_in):
            x = x.flatten(-2)
        if x.dim() == 0 or x.shape[-1] != self.d_in:
            raise InterventionError(
                f"SAE input has shape {tuple(x.shape)} but this SAE reads d_in={self.d_in} "
                f"({self.config.hook_name}); capture the SAE's own hook point "
                f"({self.config.hook_name}) on the model it was trained on."
            )
        return x.to(device=self.device, dtype=torch.float32)

    def _normalise(self, x: torch.Tensor) -> tuple[torch.Tensor, _Stats]:
        mode = self.config.normalize_activations
        if mode is NormalizeActivations.CONSTANT_NORM_RESCALE:
            coeff = (self.d_in ** 0.5) / x.norm(dim=-1, keepdim=True)
            return x * coeff, (coeff, torch.zeros((), device=x.device))
        if mode is NormalizeActivations.LAYER_NORM:
            mu = x.mean(dim=-1, keepdim=True)
            centred = x - mu
            std = centred.std(dim=-1, keepdim=True)
            return centred / (std + 1e-5), (std, mu)
        return x, None

    @staticmethod
    def _denormalise(y: torch.Tensor, stats: _Stats, mode: NormalizeActivations) -> torch.Tensor:
        if stats is None:
            return y
        if mode is NormalizeActivations.CONSTANT_NORM_RESCALE:
            return y / stats[0]
        return y * stats[0] + stats[1]

    def _sae_in(self, x: torch.Tensor) -> tuple[torch.Tensor, _Stats]:
        """sae-lens ``process_sae_in``: flatten, normalise, subtract ``b_dec`` if configured."""
        x, stats = self._normalise(self._flatten(x))
        if self.config.apply_b_dec_to_input:
            x = x - self._t["b_dec"]
        return x, stats

    # ----- encode --------------------------------------------------------------------------
    def encode_pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``[..., d_sae]`` (sae-lens ``hook_sae_acts_pre``; for gated SAEs
        the magnitude path)."""
        return self._pre(self._sae_in(x)[0])

    def _pre(self, sae_in: torch.Tensor) -> torch.Tensor:
        t = self._t
        if self.config.architecture is SaeArchitecture.GATED:
            return sae_in @ (t["W_enc"] * t["r_mag"].exp()) + t["b_mag"]
        return sae_in @ t["W_enc"] + t["b_enc"]

    def encode(self, x: torch.Tensor, strategy: TopKStrategy = TopKStrategy.AUTO) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` (fp32) of input ``[..., d_in]``."""
        return self._encode(self._sae_in(x)[0], TopKStrategy(strategy))

    def encode_with_strategy(self, x: torch.Tensor, strategy: TopKStrategy) -> torch.Tensor:
        """Seed name for ``encode(x, strategy)``."""
        return self.encode(x, strategy)

    def _encode(self, sae_in: torch.Tensor, strategy: TopKStrategy,
                pre: torch.Tensor | None = None) -> torch.Tensor:
        """Activations from ``sae_in``; ``pre`` (if given) replaces ``_pre(sae_in)`` (a
        splice whose ``hook_sae_acts_pre`` was intervened on)."""
        arch, t = self.config.architecture, self._t
        pre = self._pre(sae_in) if pre is None else pre
        if arch is SaeArchitecture.RELU:
            return torch.relu(pre)
        if arch is SaeArchitecture.JUMPRELU:
            return torch.relu(pre) * (pre > t["threshold"]).to(pre.dtype)
        if arch is SaeArchitecture.GATED:
            gate = (sae_in @ t["W_enc"] + t["b_gate"] > 0).to(pre.dtype)
            return gate * torch.relu(pre)
        if self.config.rescale_acts_by_decoder_norm:
            pre = pre * t["W_dec"].norm(dim=-1)
        return _topk(pre, int(self.config.k or 0), strategy)

    # ----- decode --------------------------------------------------------------------------
    def decode(self, feats: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """``feats @ W_dec + b_dec`` ``[..., d_in]``, mapped back through the normalisation.

        ``x`` is the input the features were encoded from: needed when the SAE normalises at
        run time (``constant_norm_rescale`` / ``layer_norm``) and, for ``hook_z`` SAEs, to
        return the ``[..., H, d_head]`` shape of the capture.
        """
        if not isinstance(feats, torch.Tensor) or feats.dim() == 0 or feats.shape[-1] != self.d_sae:
            shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
            raise InterventionError(f"decode expects features [..., {self.d_sae}], got {shape}.")
        mode = self.config.normalize_activations
        if mode.stateful and x is None:
            raise InterventionError(
                f"this SAE normalises its input at run time ({mode.value}); pass the encoded "
                f"input as decode(feats, x) or call reconstruct(x)."
            )
        stats = self._normalise(self._flatten(x))[1] if x is not None else None
        return self._decode(feats.to(self.device, torch.float32), stats, x)

    def _decode(self, feats: torch.Tensor, stats: _Stats, x: torch.Tensor | None) -> torch.Tensor:
        t = self._t
        if self.config.rescale_acts_by_decoder_norm:
            feats = feats / t["W_dec"].norm(dim=-1)
        out = self._denormalise(feats @ t["W_dec"] + t["b_dec"], stats,
                                self.config.normalize_activations)
        if x is not None and out.shape != x.shape and out.numel() == x.numel():
            out = out.reshape(x.shape)  # hook_z: back to [..., H, d_head]
        return out

    def reconstruct(self, x: torch.Tensor, strategy: TopKStrategy = TopKStrategy.AUTO) -> torch.Tensor:
        """``decode(encode(x))`` in the input's shape (plus ``x @ W_skip.T`` when present)."""
        sae_in, stats = self._sae_in(x)
        out = self._decode(self._encode(sae_in, TopKStrategy(strategy)), stats, x)
        if "W_skip" in self._t:
            flat = self._flatten(x)
            out = out + (flat @ self._t["W_skip"].T).reshape(out.shape)
        return out

    def reconstruction_error(self, x: torch.Tensor) -> float:
        """Mean squared error over every element (all positions, BOS included), as a float."""
        recon = self.reconstruct(x).double()
        diff = recon - x.to(self.device, torch.float64).reshape(recon.shape)
        return float(diff.pow(2).mean())

    def encode_sparse(self, x: torch.Tensor) -> SparseActivations[SaeFeatureId]:
        """Active features of one position (input ``[d_in]``, or ``[H, d_head]`` for hook_z)."""
        feats = self.encode(x)
        if feats.dim() != 1:
            raise InterventionError(f"encode_sparse takes one position [d_in], got input shape "
                                    f"{tuple(x.shape)}; index a position first (x[b, s]).")
        return SparseActivations.from_dense(feats)

    # ----- decoder directions --------------------------------------------------------------
    def decoder_vector(self, feature: int | SaeFeatureId) -> torch.Tensor:
        """Decoder row ``[d_in]`` of a feature (fp32, a copy)."""
        index = feature.index if isinstance(feature, SaeFeatureId) else feature
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self.d_sae:
            raise InterventionError(f"feature index {index!r} out of range for d_sae={self.d_sae}.")
        return self._t["W_dec"][index].clone()

    def decoder_vectors(self, features: list[int | SaeFeatureId]) -> torch.Tensor:
        """Decoder rows ``[n, d_in]`` of several features."""
        return torch.stack([self.decoder_vector(f) for f in features]) if features else (
            torch.empty(0, self.d_in, device=self.device))


def _topk(pre: torch.Tensor, k: int, strategy: TopKStrategy) -> torch.Tensor:
    """sae-lens TopK: keep the k largest pre-activations per row, relu them, zero the rest."""
    if k <= 0:
        return torch.zeros_like(pre)
    if k >= pre.shape[-1]:
        return torch.relu(pre)
    gpu = strategy is TopKStrategy.GPU or (strategy is TopKStrategy.AUTO and pre.device.type != "cpu")
    values, indices = torch.topk(pre, k, dim=-1)
    if gpu:  # threshold at the k-th value: ties may keep more than k
        return torch.where(pre >= values[..., -1:], torch.relu(pre), torch.zeros_like(pre))
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def _safe_subpath(sae_id: str) -> PurePosixPath:
    if not isinstance(sae_id, str) or not sae_id.strip():
        raise DownloadError(f"sae_id must be a non-empty path inside the repo, got {sae_id!r}.")
    sub = PurePosixPath(sae_id.strip("/"))
    if sub.is_absolute() or ".." in sub.parts:
        raise DownloadError(f"sae_id {sae_id!r} must be a relative path inside the repo.")
    return sub


def _layer_from_path(sub: PurePosixPath) -> int:
    for part in sub.parts:
        if part.startswith("layer_") and part[6:].isdigit():
            return int(part[6:])
    raise ConfigError(f"cannot read the layer from {str(sub)!r} (no 'layer_N' component); pass "
                      f"hook_layer.")
