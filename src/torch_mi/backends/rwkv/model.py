"""GenericRwkv: RWKV-6 (Finch) and RWKV-7 (Goose) behind the MIBackend protocol.

    e = embed(ids)                                   [hook_embed]
    h = ln0(e)                                       (the embedding LayerNorm, HF pre_ln)
    per layer:                                       [resid_pre]
        h = h + TimeMix(ln1(h))                      [ln1.*, rwkv.*, attn_out, resid_mid]
        h = h + ChannelMix(ln2(h))                   [ln2.*, mlp.*, mlp_out, resid_post]
    ln_out(h) [ln_final.*, hook_final_norm] -> head -> logits

The WKV recurrence runs token by token in fp32 (``wkv.py``). With ``state`` (from
``make_state()``) a call continues where the previous one stopped: the token-shift vectors
and WKV matrices of every layer are carried, so generation costs O(1) per token. The new
state is installed only when the whole call succeeded (a call that raises leaves it as it
was). Left-padded batches are refused for now (InputError): padding would have to leave
the state untouched token by token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ...hooks.cache import HookCache
from ...hooks.points import HookPoint
from ...hooks.runtime import NO_HOOKS, HookRuntime, make_runtime
from ...hooks.spec import HookSpec
from ..allocation import allocate_uninitialised
from ..early_exit import blocks_to_run
from ..inputs import check_attention_mask, check_input_ids, check_residual
from ..transformer.norms import LayerNorm
from .channel_mix import ChannelMix
from .config import RwkvConfig, RwkvVersion
from .effective_attn import refuse_interventions
from .ops import linear
from .points import RWKV_POINTS
from .state import LayerState, RwkvState
from .state_interventions import STATE_SPECS, write_scales
from .time_mix6 import TimeMix6
from .time_mix7 import TimeMix7, V7Context
from .wkv_chunked import chunk_allowed


@dataclass
class RwkvCall:
    """Per-call context shared by the blocks."""

    hooks: HookRuntime
    previous: list[LayerState] | None  # the incoming state (None: start from zeros)
    new: list[LayerState] = field(default_factory=list)  # the state after this call
    v7: V7Context = field(default_factory=V7Context)
    # {layer: [S] scale of each position's state write} (state knockout / steering)
    write_scales: dict[int, torch.Tensor] = field(default_factory=dict)
    chunked: bool = False  # run the block-parallel WKV (wkv_chunked.chunk_allowed)


class RwkvBlock(nn.Module):
    def __init__(self, config: RwkvConfig, layer: int) -> None:
        super().__init__()
        d = config.hidden_size
        self.layer = layer
        self.ln1, self.ln2 = LayerNorm(d, config.norm_eps), LayerNorm(d, config.norm_eps)
        self.v7 = config.version is RwkvVersion.V7
        self.attn = TimeMix7(config, layer) if self.v7 else TimeMix6(config)
        self.ffn = ChannelMix(config)
        self.shape = (config.num_heads, config.head_dim)
        self.points = RWKV_POINTS.layer_points(layer)

    def forward(self, h: torch.Tensor, call: RwkvCall) -> torch.Tensor:
        """h [B,S,D] -> [B,S,D]: time mix then channel mix, every hook point fired."""
        old = call.previous[self.layer] if call.previous is not None else None
        h, x, wkv = self._time_mix(h, call, old)
        return self._channel_mix(h, call, old, x, wkv)

    def forward_last(self, h: torch.Tensor, call: RwkvCall) -> torch.Tensor:
        """The same block for a caller that reads only the LAST position's output (the final
        block of a hook-free ``last_logits_only`` call) -> [B,min(S,2),D], whose last row
        equals ``forward``'s. The state still needs every position's time mix; the channel
        mix (the block's widest matmuls) runs on the last two positions only: the last one's
        token shift reads the one before. The other row is never read (its own shift
        would need a position not computed)."""
        old = call.previous[self.layer] if call.previous is not None else None
        h, x, wkv = self._time_mix(h, call, old)
        if h.shape[1] <= 2:
            return self._channel_mix(h, call, old, x, wkv)
        return self._channel_mix(h[:, -2:], call, None, x, wkv)

    def _time_mix(self, h: torch.Tensor, call: RwkvCall,
                  old: LayerState | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (resid_mid [B,S,D], ln1 output [B,S,D], new WKV state [B,H,d,d])."""
        hooks, p = call.hooks, self.points
        h = hooks.fire(p.resid_pre, h)  # [B,S,D]
        x = self.ln1.hooked(h, hooks, p.ln1_scale, p.ln1_normalized)
        wkv = old.wkv if old is not None else h.new_zeros(
            h.shape[0], *self.shape, self.shape[1], dtype=torch.promote_types(h.dtype, torch.float32))
        prev = old.att_x if old is not None else None
        scale = call.write_scales.get(self.layer)
        if self.v7:
            a, wkv = self.attn(x, prev, wkv, hooks, p, call.v7, scale, chunked=call.chunked)
        else:
            a, wkv = self.attn(x, prev, wkv, hooks, p, scale, chunked=call.chunked)
        a = hooks.fire(p.attn_out, a)
        return hooks.fire(p.resid_mid, h + a), x, wkv

    def _channel_mix(self, h: torch.Tensor, call: RwkvCall, old: LayerState | None,
                     x: torch.Tensor, wkv: torch.Tensor) -> torch.Tensor:
        """resid_mid [B,S',D] -> resid_post; records this layer's new state (x: the ln1
        output, wkv: the time mix's new WKV state)."""
        hooks, p = call.hooks, self.points
        xf = self.ln2.hooked(h, hooks, p.ln2_scale, p.ln2_normalized)
        m = hooks.fire(p.mlp_out, self.ffn(xf, old.ffn_x if old is not None else None, hooks, p))
        call.new.append(LayerState(x[:, -1].detach(), wkv.detach(), xf[:, -1].detach()))
        return hooks.fire(p.resid_post, h + m)


class GenericRwkv(nn.Module):
    """RWKV-6 / RWKV-7 driven by an :class:`RwkvConfig` (implements MIBackend)."""

    # Prompts run the chunked WKV (wkv_chunked.py: the recurrence's numbers, block-parallel);
    # set False on a model (or the class) to force the token-by-token recurrence.
    chunked_wkv: bool = True

    def __init__(self, config: RwkvConfig) -> None:
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.embed.weight.requires_grad_(False)
        self.ln0 = LayerNorm(c.hidden_size, c.norm_eps)
        self.blocks = nn.ModuleList(RwkvBlock(c, i) for i in range(c.num_layers))
        self.ln_out = LayerNorm(c.hidden_size, c.norm_eps)
        self.head = linear(c.hidden_size, c.vocab_size)
        self._points = RWKV_POINTS.shapes(c, c.num_layers)
        self.model_points = RWKV_POINTS.model_points()
        self._state_owner = object()  # identifies this model's states
        self.tie_weights()

    @classmethod
    def empty(cls, config: RwkvConfig, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> GenericRwkv:
        """A model with allocated but unfilled parameters (the loader fills them)."""
        model = allocate_uninitialised(lambda: cls(config), device, dtype)
        model.tie_weights()
        return model.eval()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.head.weight = self.embed.weight

    # ---- MIBackend metadata -------------------------------------------------------------
    num_layers = property(lambda self: self.config.num_layers)
    hidden_size = property(lambda self: self.config.hidden_size)
    vocab_size = property(lambda self: self.config.vocab_size)
    num_heads = property(lambda self: self.config.num_heads)
    device = property(lambda self: self.embed.weight.device)
    dtype = property(lambda self: self.embed.weight.dtype)

    def hook_points(self) -> dict[HookPoint, tuple]:
        """Every valid hook point of this model, in firing order, with its shape."""
        return dict(self._points)

    def make_state(self) -> RwkvState:
        """A fresh (zero) recurrent state for ``forward(..., state=s)``."""
        return RwkvState(self._state_owner, self.config.num_layers)

    def memory_plan(self, spec: HookSpec, batch: int, seq_len: int):
        """A simple memory estimate of a forward with ``spec`` (see memory_plan.py)."""
        from .memory_plan import RwkvPlan

        return RwkvPlan(self, spec, batch, seq_len)

    # ---- forward --------------------------------------------------------------------------
    def forward(self, input_ids: Any, hooks: HookSpec | None = None, *,
                attention_mask: torch.Tensor | None = None, state: RwkvState | None = None,
                last_logits_only: bool = False, allow_long_context: bool = False,
                stop_at_layer: int | None = None) -> HookCache:
        """Run the model; ``cache.output()`` is logits [B,S,V] ([B,1,V] with
        ``last_logits_only``). With ``state`` only the new positions are computed (hooks see
        those) and the state is advanced; if the call raises, the state is unchanged.

        ``stop_at_layer=L`` runs blocks 0..L-1 and ``output()`` is the residual [B,S,D]
        (backends/early_exit.py: the same rules as the transformer backend).
        ``allow_long_context`` is accepted and has no effect: RWKV has no context limit (no
        positions, a fixed-size state)."""
        if state is not None and not isinstance(state, RwkvState):
            raise InputError(f"state must be an RwkvState from model.make_state(), got "
                             f"{type(state).__name__}")
        for name, flag in (("last_logits_only", last_logits_only),
                           ("allow_long_context", allow_long_context)):
            if not isinstance(flag, bool):
                raise InputError(f"{name} must be True or False, got {type(flag).__name__} "
                                 f"{flag!r}")
        end = blocks_to_run(stop_at_layer, self.config.num_layers, hooks, state,
                            last_logits_only, self._points, self.model_points.embed)
        ids = check_input_ids(input_ids, self.config.vocab_size, self.device)
        runtime, cache = make_runtime(hooks, self._points, self.config.num_layers,
                                      honours=STATE_SPECS)
        if state is not None:
            state.check_for(self._state_owner, ids.shape[0])
        self._check_mask(attention_mask, ids, state)
        call = RwkvCall(runtime, state.layers if state is not None else None)
        if runtime is not NO_HOOKS:  # the empty spec (every generation step) skips these
            refuse_interventions(runtime, [b.points.effective_attn for b in self.blocks])
            call.write_scales = write_scales(runtime, self.config.num_layers, ids.shape[1],
                                             ids.device)
        call.chunked = chunk_allowed(ids.shape[1], enabled=self.chunked_wkv)
        h = runtime.fire(self.model_points.embed, self.embed(ids))  # [B,S,D]
        h = self.ln0(h)
        # Nothing reads the last block's other positions in a hook-free last-logits call.
        trim = runtime is NO_HOOKS and last_logits_only and stop_at_layer is None
        for i, block in enumerate(self.blocks[:end]):
            h = block.forward_last(h, call) if trim and i == end - 1 else block(h, call)
        if stop_at_layer is not None:
            cache.set_output(h)  # the residual after block end-1 [B,S,D]
            return cache
        cache.set_output(self._head(h, runtime, last_logits_only))
        if state is not None:
            state.commit(call.new, ids.shape[1])
        return cache

    def _check_mask(self, mask: Any, ids: torch.Tensor, state: RwkvState | None) -> None:
        """Accept no mask or an all-ones one ([B, S], or [B, seen + S] with a state); refuse
        padding with InputError."""
        if mask is None:
            return
        total = ids.shape[1]
        seen = state.seen_tokens if state is not None else 0
        if seen and _mask_width(mask) == seen + total:
            total += seen
        checked = check_attention_mask(mask, ids.shape[0], total, ids.device)
        if not bool(checked.bool().all()):
            raise InputError("RWKV does not support padded batches yet (attention_mask has "
                             "zeros): padding tokens would enter the recurrent state. Run "
                             "sequences of different lengths separately (batch 1), or pad "
                             "them to equal length with real tokens")

    def _head(self, h: torch.Tensor, hooks: HookRuntime, last_only: bool) -> torch.Tensor:
        p = self.model_points
        h = self.ln_out.hooked(h, hooks, p.ln_final_scale, p.ln_final_normalized)
        h = hooks.fire(p.final_norm, h)
        return self.head(h[:, -1:] if last_only else h)

    # ---- analysis helpers -----------------------------------------------------------------
    def project_to_vocab(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + head of any residual [..., D] (logit lens); at the last layer's
        ``hook_resid_post`` this equals the model's logits."""
        check_residual(hidden, self.config.hidden_size, "project_to_vocab")
        return self.head(self.ln_out(hidden.to(device=self.device, dtype=self.dtype)))

    def embedding_vector(self, token_id: int) -> torch.Tensor:
        """The raw embedding row [D] of ``token_id`` (before ``ln0``)."""
        ids = check_input_ids([token_id], self.config.vocab_size, self.device)
        return self.embed.weight[int(ids[0, 0])].detach()


def _mask_width(mask: Any) -> int | None:
    """The last dimension of a mask given as a tensor or nested lists (None if unknown)."""
    if isinstance(mask, torch.Tensor):
        return mask.shape[-1] if mask.dim() else None
    try:
        return len(mask[0])
    except (TypeError, IndexError, KeyError):
        return None
