"""MIModel: a loaded model (any MIBackend) plus its tokenizer, and the LanguageModel
protocol that analyses, generation and memory tools are typed against.

A backend is anything that satisfies :class:`~torch_mi.backends.MIBackend`; ``MIModel``
is a thin facade over it (metadata, ``forward``, ``generate``, text helpers).
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import torch

from .backends.inputs import check_residual
from .backends.protocol import WEIGHT_NAMES, MIBackend, SupportsWeights
from .errors import ConfigError, HookError, InputError, TokenizerError
from .hooks.cache import HookCache
from .hooks.grad import grad_mode
from .hooks.points import HookPoint
from .hooks.spec import HookSpec
from .positions import TextForwardResult
from .tokenizer import MITokenizer

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "f32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "f16": torch.float16, "half": torch.float16,
}


@runtime_checkable
class LanguageModel(MIBackend, Protocol):
    """What analyses may use: the backend contract plus text (an MIModel, or anything
    offering the same surface)."""

    @property
    def tokenizer(self) -> MITokenizer | None: ...

    def require_tokenizer(self) -> MITokenizer: ...

    def encode(self, text: str) -> torch.Tensor: ...


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (CUDA if available, else CPU), 'cpu', 'cuda[:n]', 'mps' or a torch.device."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):  # torch.device(3) would mean cuda:3
        raise ConfigError(f"device must be a string or torch.device, got {device!r}; use "
                          f"'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' "
                          f"or 'mps'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} "
                          f"CUDA device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} requested but MPS is not available; use 'cpu'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """None -> float32 (research grade); strings like 'bf16', 'float16' or torch dtypes."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ConfigError(f"unsupported dtype {dtype!r}: use float32, bfloat16 or float16")


class MIModel:
    """A model ready for interpretability work: ``forward(ids, hooks) -> HookCache``."""

    def __init__(self, backend: MIBackend, tokenizer: MITokenizer | None = None,
                 *, source: str | None = None) -> None:
        self.backend = backend
        self._tokenizer = tokenizer
        self.source = source

    # ---- loading --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | None = None, *,
                        revision: str | None = None, device: str | torch.device = "auto",
                        dtype: str | torch.dtype | None = None,
                        allow_nonfinite: bool = False) -> MIModel:
        """Load a Hub repo id, a local HF-layout folder, a ``.gguf`` file, or a BlinkDL RWKV
        ``.pth`` (RWKV-6/7, read with ``torch.load(weights_only=True)`` only; the world
        tokenizer is attached when ``rwkv_vocab_*.txt`` lies next to it, as it is for RWKV
        HF folders).

        With no ``model``, loads the embedded default (SmolLM2-135M-Instruct). Every file is
        checked before use (ConfigError / WeightError naming the key or tensor): the config
        against the checkpoint and the free memory before allocating, each weight for NaN and
        infinity after loading. ``allow_nonfinite=True`` skips only the last check, to
        inspect a broken checkpoint.
        """
        from .loading.resolve import load_parts

        if not isinstance(allow_nonfinite, bool):
            raise ConfigError(f"allow_nonfinite must be True or False, got {allow_nonfinite!r}")
        target = resolve_device(device)
        if target.type == "cpu":  # freed activations kept for reuse (see memory.allocator)
            from .memory.allocator import apply_default_policy

            apply_default_policy()
        backend, tokenizer, source = load_parts(model, revision=revision,
                                                device=target,
                                                dtype=resolve_dtype(dtype),
                                                allow_nonfinite=allow_nonfinite)
        return cls(backend, tokenizer, source=source)

    # ---- metadata -------------------------------------------------------------------------
    @property
    def tokenizer(self) -> MITokenizer | None:
        return self._tokenizer

    def require_tokenizer(self) -> MITokenizer:
        if self._tokenizer is None:
            raise TokenizerError("this model has no tokenizer; pass token ids instead of text, "
                                 "or load a folder that contains tokenizer.json")
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backend.dtype

    @property
    def num_layers(self) -> int:
        return self.backend.num_layers

    @property
    def hidden_size(self) -> int:
        return self.backend.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.backend.vocab_size

    @property
    def num_heads(self) -> int:
        return self.backend.num_heads

    @property
    def config(self) -> Any:
        return self.backend.config

    def hook_points(self) -> dict[HookPoint, tuple]:
        """Every valid hook point of this model with its shape ('batch'/'seq' symbolic)."""
        return self.backend.hook_points()

    @property
    def weights(self) -> Any:
        """TransformerLens-layout weights: ``weights.layer(i).W_Q`` [H,D,d] is a view of
        the parameters; ``model.W_Q`` (any name in ``WEIGHT_NAMES``) is stacked over layers
        [L,H,D,d], a copy as in TL. GQA keys/values are per KV head unless
        ``get(name, broadcast=True)``."""
        if not isinstance(self.backend, SupportsWeights):
            raise ConfigError(f"this backend ({type(self.backend).__name__}) exposes no "
                              f"TransformerLens-layout weights")
        return self.backend.weights

    def __getattr__(self, name: str) -> Any:
        if name in WEIGHT_NAMES:  # model.W_Q etc. (TL's HookedTransformer properties)
            backend = self.__dict__.get("backend")
            if not isinstance(backend, SupportsWeights):  # hasattr() must see False
                raise AttributeError(f"{name}: this backend ({type(backend).__name__}) "
                                     f"exposes no TransformerLens-layout weights")
            return getattr(backend.weights, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ---- running --------------------------------------------------------------------------
    def forward(self, input_ids: Any, hooks: HookSpec | None = None, *,
                attention_mask: torch.Tensor | None = None, state: Any = None,
                last_logits_only: bool = False, allow_long_context: bool = False,
                stop_at_layer: int | None = None) -> HookCache:
        """Run the backend: logits in ``cache.output()``, captures in the cache.

        ``attention_mask`` [B, past+S] (1 real, 0 padding) for left-padded batches;
        ``state`` from :meth:`make_state` for incremental decoding (advanced in place; a
        call that raises leaves it as it was). Inputs past the model's context raise
        InputError unless ``allow_long_context=True``. ``stop_at_layer=L`` runs layers
        0..L-1 only (TransformerLens's exclusive convention) and ``cache.output()`` is the
        residual stream [B,S,D] after layer L-1, not logits (see MIBackend.forward)."""
        if hooks is not None and not isinstance(hooks, HookSpec):
            raise HookError(f"hooks must be a HookSpec (or None), got {type(hooks).__name__}; "
                            f"build one with mi.HookSpec().capture(...).intervene(...)")
        if not isinstance(allow_long_context, bool):
            raise InputError(f"allow_long_context must be True or False, got "
                             f"{allow_long_context!r}")
        # Passed on only when set, so a backend without a context limit needs no such option.
        extra = {"allow_long_context": True} if allow_long_context else {}
        if stop_at_layer is not None:  # likewise: only backends with early exit take it
            extra["stop_at_layer"] = stop_at_layer
        # A spec that keeps gradients records a graph even under torch.no_grad().
        with grad_mode(hooks is not None and hooks.needs_grad):
            return self.backend.forward(input_ids, hooks, attention_mask=attention_mask,
                                        state=state, last_logits_only=last_logits_only,
                                        **extra)

    def make_state(self) -> Any:
        """A fresh decoding state for ``forward(..., state=)`` (a KVCache for transformers)."""
        return self.backend.make_state()

    __call__ = forward

    def forward_text(self, text: str, hooks: HookSpec | None = None) -> TextForwardResult:
        """Encode ``text`` with character offsets (special tokens added) and run one forward
        on it, so captured positions can be matched to spans of the text."""
        encoding = self.require_tokenizer().encode_with_offsets(text)
        if encoding.is_empty():
            raise InputError(f"{text[:40]!r} encodes to no tokens; give a non-empty text")
        ids = torch.tensor([encoding.ids], dtype=torch.long, device=self.device)  # [1, S]
        return TextForwardResult(self.forward(ids, hooks), encoding, text)

    def project_to_vocab(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of residual vectors [..., D] (logit lens); InputError for a tensor of
        another width or a non-float dtype."""
        check_residual(hidden, self.hidden_size, "project_to_vocab")
        return self.backend.project_to_vocab(hidden)

    def embedding_vector(self, token_id: int) -> torch.Tensor:
        return self.backend.embedding_vector(token_id)

    def generate(self, prompt, max_new_tokens: int = 32, **options):
        """Generate text (see :func:`torch_mi.generation.generate` for the options:
        temperature, top_k, top_p, seed, stop, hooks, recompute, allow_long_context).
        Every option is type- and range-checked before any work (InputError naming it)."""
        from .generation import generate

        return generate(self, prompt, max_new_tokens, **options)

    def encode(self, text: str) -> torch.Tensor:
        """Token ids [1,S] of ``text`` (special tokens added) on the model's device."""
        ids = self.require_tokenizer().encode(text)
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    # TransformerLens-style token helpers (see MITokenizer for the details).
    def to_single_token(self, text: str) -> int:
        """Id of ``text`` if it is exactly one token; TokenizerError naming its tokens."""
        return self.require_tokenizer().to_single_token(text)

    def to_str_tokens(self, tokens: Any, prepend_bos: bool | None = None) -> list:
        """Each token as a string; ``prepend_bos=None`` matches :meth:`encode`."""
        return self.require_tokenizer().to_str_tokens(tokens, prepend_bos)

    def get_token_position(self, single_token: str | int, tokens: Any, *, mode: str = "first",
                           prepend_bos: bool | None = None) -> int:
        """First (or last) position of a single token in text or ids; InputError if absent."""
        return self.require_tokenizer().get_token_position(single_token, tokens, mode=mode,
                                                           prepend_bos=prepend_bos)

    def __repr__(self) -> str:
        cfg = getattr(self.backend, "config", None)
        kind = getattr(cfg, "model_type", type(self.backend).__name__)
        return (f"MIModel({kind}, layers={self.num_layers}, hidden={self.hidden_size}, "
                f"vocab={self.vocab_size}, device={self.device}, dtype={self.dtype}, "
                f"source={self.source!r})")
