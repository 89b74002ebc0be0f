"""GenericTransformer: one decoder-only transformer for every supported family.

The forward pass reads like the math; each named tensor passes through exactly one
``hooks.fire(point, tensor)`` at the line where it is created (order of the hook table in
``points.py``; the block itself is in ``block.py``):

    h = embed(ids) * scale                         [hook_embed]
    per layer: Block                               [resid_pre ... resid_post]
    ln_final [hook_final_norm] -> unembed -> final soft-cap -> logits

``forward(..., stop_at_layer=L)`` runs the embedding and blocks 0..L-1 only (TL's exclusive
convention) and returns the residual stream there: ``cache.output()`` is
``blocks.{L-1}.hook_resid_post`` [B,S,D] (``hook_embed`` for L = 0), not logits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ...hooks.cache import HookCache
from ...hooks.points import HookPoint
from ...hooks.runtime import HookRuntime, make_runtime
from ...hooks.spec import HookSpec
from ..allocation import allocate_uninitialised
from ..early_exit import blocks_to_run
from ..inputs import check_attention_mask, check_input_ids, check_residual
from .block import Block, ForwardContext
from .config.types import TransformerConfig
from .kv_cache import KVCache
from .layers import linear, make_softcap
from .masks import build_layer_mask
from .norms import make_norm
from .points import TRANSFORMER_POINTS
from .rope import RotaryEmbedding, check_context, context_limit
from .weights_view import TransformerWeights


class GenericTransformer(nn.Module):
    """The generic decoder driven by a :class:`TransformerConfig` (implements MIBackend)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.embed.weight.requires_grad_(False)
        self.blocks = nn.ModuleList(Block(c, i) for i in range(c.num_layers))
        self.ln_final = make_norm(c)
        self.unembed = linear(c.hidden_size, c.vocab_size, bias=False)
        self.final_softcap = make_softcap(c.final_logit_softcapping)
        self.embedding_scale = c.embedding_scale
        local = c.rope_local or c.rope
        self.rotary = {
            "full_attention": RotaryEmbedding(c.rope, c.rotary_dim, c.max_position_embeddings),
            "sliding_attention": RotaryEmbedding(local, c.rotary_dim, c.max_position_embeddings),
        }
        self.layer_type_set = tuple(sorted(set(c.layer_types)))
        self._points = TRANSFORMER_POINTS.shapes(c, c.num_layers)
        self.model_points = TRANSFORMER_POINTS.model_points()
        self.tie_weights()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def empty(cls, config: TransformerConfig, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> GenericTransformer:
        """A model with allocated but unfilled parameters (no random init work)."""
        model = allocate_uninitialised(lambda: cls(config), device, dtype)
        model.tie_weights()
        return model.eval()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.unembed.weight = self.embed.weight

    # ---- MIBackend metadata -------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def make_state(self) -> KVCache:
        """An empty KV cache for incremental decoding (``forward(..., state=cache)``)."""
        return KVCache(self.config.num_layers)

    def memory_plan(self, spec: HookSpec, batch: int, seq_len: int):
        """The analytic memory model of a forward with ``spec`` (see memory_plan.py)."""
        from .memory_plan import TransformerPlan

        return TransformerPlan(self, spec, batch, seq_len)

    def hook_points(self) -> dict[HookPoint, tuple]:
        """Every valid hook point of this model, in firing order, with its shape."""
        return dict(self._points)

    @property
    def weights(self) -> TransformerWeights:
        """TransformerLens-layout weights: per-layer views, stacked copies (weights_view)."""
        return TransformerWeights(self)

    # ---- forward --------------------------------------------------------------------------
    def forward(self, input_ids: Any, hooks: HookSpec | None = None, *,
                attention_mask: torch.Tensor | None = None, state: KVCache | None = None,
                last_logits_only: bool = False, allow_long_context: bool = False,
                stop_at_layer: int | None = None) -> HookCache:
        """Run the model; returns a HookCache whose ``output()`` is logits [B,S,V].

        ``attention_mask`` ([B, past+S], 1 = real token, 0 = padding) enables left-padded
        batches; positions are derived from it. With ``state`` (a KVCache from
        ``make_state``), only the new positions are computed and hooks see only those
        positions; if the call raises, the state is rolled back to what it was.
        ``last_logits_only`` unembeds the last position alone (logits [B,1,V];
        ``hook_final_norm`` still sees every position). Positions beyond the model's
        context (``max_position_embeddings``) raise InputError unless
        ``allow_long_context``.

        ``stop_at_layer=L`` (TL's convention: exclusive, negative counts from the end) runs
        blocks 0..L-1 only; ``output()`` is then the residual stream [B,S,D] after block L-1
        (no final norm, no unembedding). Points of later layers or of the head raise
        HookError before any work; a ``state`` (a partial pass would leave a KV cache with
        missing layers) or ``last_logits_only`` (there are no logits) raise InputError.
        """
        if state is not None and not isinstance(state, KVCache):
            raise InputError(f"state must be a KVCache from model.make_state(), got "
                             f"{type(state).__name__}")
        for name, flag in (("last_logits_only", last_logits_only),
                           ("allow_long_context", allow_long_context)):
            if not isinstance(flag, bool):
                raise InputError(f"{name} must be True or False, got {type(flag).__name__} "
                                 f"{flag!r}")
        end = self.check_stop(stop_at_layer, hooks, state, last_logits_only)
        snapshot = state.snapshot() if state is not None else None
        try:
            ctx, h = self.begin(input_ids, hooks, attention_mask=attention_mask, state=state,
                                allow_long_context=allow_long_context)
            h = self.run_blocks(ctx, h, 0, end)
            if stop_at_layer is not None:
                ctx.cache.set_output(h)  # the residual after block end-1 [B,S,D]
                return ctx.cache
            return self.finish(ctx, h, last_logits_only)
        except BaseException:
            if snapshot is not None:  # a failed step leaves the caller's cache untouched
                state.rollback(snapshot)
            raise

    def check_stop(self, stop_at_layer: Any, hooks: HookSpec | None, state: Any,
                   last_logits_only: bool) -> int:
        """The number of blocks to run; typed errors for what an early exit cannot do."""
        return blocks_to_run(stop_at_layer, self.config.num_layers, hooks, state,
                             last_logits_only, self._points, self.model_points.embed)

    # ---- the block loop (BlockLoop protocol; looped passes drive it) --------------------
    def begin(self, input_ids: Any, hooks: HookSpec | None, *,
              attention_mask: torch.Tensor | None = None,
              state: KVCache | None = None,
              allow_long_context: bool = False) -> tuple[ForwardContext, torch.Tensor]:
        """Validate inputs and hooks, build masks and RoPE tables, embed (fires hook_embed)."""
        ids = check_input_ids(input_ids, self.config.vocab_size, self.device)
        runtime, cache = make_runtime(hooks, self._points, self.config.num_layers)
        if state is not None:
            c = self.config
            state.check_compatible(n_layers=c.num_layers, batch=ids.shape[0],
                                   kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                                   dtype=self.dtype, device=self.device)
        ctx = self.make_context(ids, runtime, attention_mask, state, allow_long_context)
        ctx.cache = cache
        return ctx, self.embed_tokens(ids, runtime)

    def run_blocks(self, ctx: ForwardContext, h: torch.Tensor, start: int,
                   end: int) -> torch.Tensor:
        for block in self.blocks[start:end]:
            h = block(h, ctx)
        return h

    def finish(self, ctx: ForwardContext, h: torch.Tensor,
               last_logits_only: bool = False) -> HookCache:
        """Final norm (fires hook_final_norm), unembedding, soft-cap; returns the cache."""
        ctx.cache.set_output(self.head(h, ctx.hooks, last_logits_only))
        return ctx.cache

    def make_context(self, ids: torch.Tensor, hooks: HookRuntime,
                     attention_mask: torch.Tensor | None,
                     kv_cache: KVCache | None,
                     allow_long_context: bool = False) -> ForwardContext:
        batch, q_len = ids.shape
        past = kv_cache.seq_len() if kv_cache is not None else 0
        seen = kv_cache.seen_tokens if kv_cache is not None else 0
        if attention_mask is not None:
            mask = check_attention_mask(attention_mask, batch, past + q_len, ids.device)
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -q_len:]
            last = int(positions.max())
        else:
            mask = None
            positions = torch.arange(seen, seen + q_len, device=ids.device)[None]
            last = seen + q_len - 1
        if not allow_long_context:
            check_context(self.config, last + 1)
        rope = {t: self.rotary[t].cos_sin(positions, self.dtype) for t in self.layer_type_set}
        masks = {}
        for t in self.layer_type_set:
            window = self.config.sliding_window if t == "sliding_attention" else None
            masks[t] = build_layer_mask(q_len, past, window, mask, ids.device)
        return ForwardContext(hooks, rope, masks, kv_cache)

    def embed_tokens(self, ids: torch.Tensor, hooks: HookRuntime) -> torch.Tensor:
        h = self.embed(ids)  # [B,S,D]
        if self.embedding_scale is not None:
            # HF casts the scale to the weight dtype before multiplying.
            h = h * torch.tensor(self.embedding_scale, dtype=torch.float32).to(h.dtype).item()
        return hooks.fire(self.model_points.embed, h)

    def head(self, h: torch.Tensor, hooks: HookRuntime, last_only: bool = False) -> torch.Tensor:
        """Final norm [ln_final.*, hook_final_norm], unembedding [unembed.hook_out], soft-cap."""
        p = self.model_points
        h = self.ln_final.hooked(h, hooks, p.ln_final_scale, p.ln_final_normalized)
        h = hooks.fire(p.final_norm, h)
        if last_only:
            h = h[:, -1:]
        return self.final_softcap(hooks.fire(p.unembed_out, self.unembed(h)))

    # ---- analysis helpers -----------------------------------------------------------------
    def project_to_vocab(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + unembedding + final soft-cap of any residual [..., D] (logit lens);
        at the last layer's ``hook_resid_post`` this equals the model's logits."""
        check_residual(hidden, self.config.hidden_size, "project_to_vocab")
        hidden = hidden.to(device=self.device, dtype=self.dtype)
        return self.final_softcap(self.unembed(self.ln_final(hidden)))

    def embedding_vector(self, token_id: int) -> torch.Tensor:
        """The raw (unscaled) embedding row [D] of ``token_id``."""
        ids = check_input_ids([token_id], self.config.vocab_size, self.device)
        return self.embed.weight[int(ids[0, 0])].detach()

    def context_limit(self) -> int | None:
        """Positions this model was trained for (None: the RoPE type extends itself)."""
        return context_limit(self.config)
