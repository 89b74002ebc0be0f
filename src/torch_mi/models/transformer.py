"""GenericTransformer: one decoder-only transformer for every supported family.

The forward pass reads like the math; each named tensor passes through exactly one
``hooks.fire(point, tensor)`` at the line where it is created (order of inventory §3.2):

    h = embed(ids) * scale                         [hook_embed]
    per layer:  [resid_pre] -> ln1 [ln1.hook_normalized] -> attention [attn_out]
                -> h + a [resid_mid] -> ln2 [mlp.hook_pre] -> act(gate)*up [mlp.hook_hidden]
                -> down [mlp.hook_post] -> post-FF norm [hook_mlp_out] -> h + m [resid_post]
    ln_final [hook_final_norm] -> unembed -> final soft-cap -> logits
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..cache.kv import KVCache
from ..config.types import TransformerConfig
from ..hooks.cache import HookCache
from ..hooks.points import HookPoint
from ..hooks.runtime import HookRuntime, make_runtime
from ..hooks.spec import HookSpec
from .allocation import allocate_uninitialised
from .attention import Attention
from .inputs import check_attention_mask, check_input_ids
from .layers import linear, make_mlp, make_norm, make_softcap
from .masks import LayerMask, build_layer_mask
from .rope import RotaryEmbedding


@dataclass
class ForwardContext:
    """Per-call side inputs shared by every layer."""

    hooks: HookRuntime
    rope: dict[str, tuple[torch.Tensor, torch.Tensor]]  # layer type -> cos, sin [B,1,S,r]
    masks: dict[str, LayerMask]  # layer type -> mask
    kv_cache: KVCache | None = None


@dataclass(frozen=True)
class BlockPoints:
    resid_pre: HookPoint
    ln1: HookPoint
    attn_out: HookPoint
    resid_mid: HookPoint
    mlp_pre: HookPoint
    mlp_hidden: HookPoint
    mlp_post: HookPoint
    mlp_out: HookPoint
    resid_post: HookPoint

    @classmethod
    def for_layer(cls, i: int) -> BlockPoints:
        hp = HookPoint
        return cls(hp.ResidPre(i), hp.Ln1Normalized(i), hp.AttnOut(i), hp.ResidMid(i),
                   hp.MlpPre(i), hp.MlpHidden(i), hp.MlpPost(i), hp.MlpOut(i), hp.ResidPost(i))


class Block(nn.Module):
    def __init__(self, config: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.ln1 = make_norm(config)
        self.attn = Attention(config, layer)
        self.ln1_post = make_norm(config) if config.use_post_norms else nn.Identity()
        self.ln2 = make_norm(config)
        self.mlp = make_mlp(config)
        self.ln2_post = make_norm(config) if config.use_post_norms else nn.Identity()
        self.points = BlockPoints.for_layer(layer)

    def forward(self, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        hooks, p = ctx.hooks, self.points
        h = hooks.fire(p.resid_pre, h)  # [B,S,D]
        x = hooks.fire(p.ln1, self.ln1(h))
        a = hooks.fire(p.attn_out, self.ln1_post(self.attn(x, ctx)))
        h = hooks.fire(p.resid_mid, h + a)
        x = hooks.fire(p.mlp_pre, self.ln2(h))
        m = hooks.fire(p.mlp_hidden, self.mlp.hidden(x))  # [B,S,I]
        m = hooks.fire(p.mlp_post, self.mlp.output(m))
        m = hooks.fire(p.mlp_out, self.ln2_post(m))
        return hooks.fire(p.resid_post, h + m)


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
        self._points = self._declare_points()
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

    def _declare_points(self) -> dict[HookPoint, tuple]:
        c = self.config
        d, h, kv, hd, inter = (c.hidden_size, c.num_attention_heads, c.num_kv_heads,
                               c.head_dim, c.intermediate_size)
        hp, resid = HookPoint, ("batch", "seq", d)
        points: dict[HookPoint, tuple] = {hp.Embed: resid}
        for i in range(c.num_layers):
            points.update({
                hp.ResidPre(i): resid, hp.Ln1Normalized(i): resid,
                hp.AttnQ(i): ("batch", h, "seq", hd), hp.AttnK(i): ("batch", kv, "seq", hd),
                hp.AttnV(i): ("batch", kv, "seq", hd), hp.AttnRotQ(i): ("batch", h, "seq", hd),
                hp.AttnRotK(i): ("batch", kv, "seq", hd),
                hp.AttnScores(i): ("batch", h, "seq", "seq"),
                hp.AttnPattern(i): ("batch", h, "seq", "seq"),
                hp.AttnZ(i): ("batch", "seq", h, hd), hp.AttnOut(i): resid,
                hp.ResidMid(i): resid, hp.MlpPre(i): resid,
                hp.MlpHidden(i): ("batch", "seq", inter), hp.MlpPost(i): resid,
                hp.MlpOut(i): resid, hp.ResidPost(i): resid,
            })
        points[hp.FinalNorm] = resid
        return points

    def hook_points(self) -> dict[HookPoint, tuple]:
        """Every valid hook point of this model, in firing order, with its shape."""
        return dict(self._points)

    # ---- forward --------------------------------------------------------------------------
    def forward(self, input_ids, hooks: HookSpec | None = None, *,
                attention_mask: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, last_logits_only: bool = False) -> HookCache:
        """Run the model; returns a HookCache whose ``output()`` is logits [B,S,V].

        ``attention_mask`` ([B, past+S], 1 = real token, 0 = padding) enables left-padded
        batches; positions are derived from it. With ``kv_cache``, only the new positions
        are computed and hooks see only those positions. ``last_logits_only`` unembeds the
        last position alone (logits [B,1,V]; ``hook_final_norm`` still sees every position).
        """
        ids = check_input_ids(input_ids, self.config.vocab_size, self.device)
        runtime, cache = make_runtime(hooks, self._points, self.config.num_layers)
        ctx = self.make_context(ids, runtime, attention_mask, kv_cache)
        h = self.embed_tokens(ids, runtime)
        h = self.run_blocks(h, ctx, 0, self.config.num_layers)
        cache.set_output(self.head(h, runtime, last_logits_only))
        return cache

    def make_context(self, ids: torch.Tensor, hooks: HookRuntime,
                     attention_mask: torch.Tensor | None,
                     kv_cache: KVCache | None) -> ForwardContext:
        batch, q_len = ids.shape
        past = kv_cache.seq_len() if kv_cache is not None else 0
        seen = kv_cache.seen_tokens if kv_cache is not None else 0
        if attention_mask is not None:
            mask = check_attention_mask(attention_mask, batch, past + q_len, ids.device)
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -q_len:]
        else:
            mask = None
            positions = torch.arange(seen, seen + q_len, device=ids.device)[None]
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
        return hooks.fire(HookPoint.Embed, h)

    def run_blocks(self, h: torch.Tensor, ctx: ForwardContext, start: int, end: int):
        for block in self.blocks[start:end]:
            h = block(h, ctx)
        return h

    def head(self, h: torch.Tensor, hooks: HookRuntime, last_only: bool = False) -> torch.Tensor:
        h = hooks.fire(HookPoint.FinalNorm, self.ln_final(h))
        if last_only:
            h = h[:, -1:]
        return self.final_softcap(self.unembed(h))

    def forward_recurrent(self, input_ids, hooks: HookSpec | None, spec, *,
                          attention_mask: torch.Tensor | None = None) -> HookCache:
        """Forward with layers spec.loop_start..=loop_end repeated (see models.recurrent)."""
        from .recurrent import forward_recurrent

        return forward_recurrent(self, input_ids, hooks, spec, attention_mask=attention_mask)

    def generate_recurrent(self, prompt_tokens: list[int], max_tokens: int, spec, **options):
        from .recurrent import generate_recurrent

        return generate_recurrent(self, prompt_tokens, max_tokens, spec, **options)

    # ---- analysis helpers -----------------------------------------------------------------
    def project_to_vocab(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + unembedding + final soft-cap of any residual [..., D] (logit lens);
        at the last layer's ``hook_resid_post`` this equals the model's logits."""
        hidden = hidden.to(device=self.device, dtype=self.dtype)
        return self.final_softcap(self.unembed(self.ln_final(hidden)))

    def embedding_vector(self, token_id: int) -> torch.Tensor:
        """The raw (unscaled) embedding row [D] of ``token_id``."""
        check_input_ids([int(token_id)], self.config.vocab_size, self.device)
        return self.embed.weight[int(token_id)].detach()
