"""GenericRwkv's hook table: every point it fires, in firing order, with shapes.

The residual-stream points are the core kinds every backend shares (``hook_embed``,
``hook_resid_pre|mid|post``, ``hook_attn_out`` = time-mix output, ``hook_mlp_out`` =
channel-mix output, ``hook_final_norm``), and the norm points are TransformerLens's
(``ln1/ln2/ln_final.hook_scale|hook_normalized``, the latter BEFORE the gain). Time-mix
internals live under ``blocks.{i}.rwkv.*``, per head as TL lays out q/k/v: [B,S,H,d].

Decisions (HOOKS.md):

* ``hook_embed`` is the raw embedding; ``blocks.0.hook_resid_pre`` is the residual AFTER
  the embedding LayerNorm (``ln0`` / ``pre_ln``), so ``resid_post(i) = resid_pre(i) +
  attn_out(i) + mlp_out(i)`` holds at every layer.
* ``rwkv.hook_w`` is the per-step log-decay (<= 0) and ``rwkv.hook_decay`` the
  multiplicative decay ``exp(w)`` in (0,1), for BOTH versions (upstream's ``RwkvDecay`` was
  the factor for V6 but the log-decay for V7). V6: ``w = -exp(time_decay + lora)``; V7:
  ``w = -e^-0.5 * sigmoid(w_lora)``.
* ``rwkv.hook_state`` [B,H,d,d] is the WKV state after the call's last token, laid out
  ``[b, h, key index, value index]`` (rows = key dim, columns = value dim: the BlinkDL
  V6 layout and the transpose of BlinkDL's V7 ``S[v, k]``). An intervention there changes
  the state carried to the next call (``forward(..., state=)``), not this call's outputs.
* V7: ``rwkv.hook_k`` is the key projection; the state is written with the modulated key
  ``k*(1+(a-1)*k_a)`` and read/erased along ``rwkv.hook_kk`` (the L2-normalised removal
  key). ``rwkv.hook_v`` is the value after the value-residual mix (layer 0: ``v_first``).
* ``rwkv.hook_effective_attn`` [B,H,S,S] (effective_attn.py) is computed only when
  captured, from the r, k and decays of the forward (after their interventions, with any
  state knockout/steering folded in); it is read-only (an intervention there is refused).
* ``mlp.hook_pre`` / ``mlp.hook_post`` are the channel-mix key pre-activation and its
  ``relu(.)^2`` neurons [B,S,I] (TL's MLP names).

Shapes use B batch, S positions, D hidden, H heads, d head size, I channel-mix width.
"""

from __future__ import annotations

from ...hooks.points import (
    ATTN_OUT,
    EMBED,
    FINAL_NORM,
    MLP_OUT,
    RESID_MID,
    RESID_POST,
    RESID_PRE,
    PointKind,
    declare_point_kind,
)
from ...hooks.table import PointRow, PointTable
from ..transformer.points import (
    LN1_NORMALIZED,
    LN1_SCALE,
    LN2_NORMALIZED,
    LN2_SCALE,
    LN_FINAL_NORMALIZED,
    LN_FINAL_SCALE,
    MLP_HIDDEN,
    MLP_PRE_ACT,
)
from .config import RwkvConfig, RwkvVersion


def _kind(variant: str, suffix: str, doc: str) -> PointKind:
    return declare_point_kind(PointKind(variant, "blocks.{layer}.rwkv." + suffix, doc=doc))


RWKV_R = _kind("RwkvR", "hook_r", "receptance [B,S,H,d]")
RWKV_K = _kind("RwkvK", "hook_k", "key projection [B,S,H,d]")
RWKV_V = _kind("RwkvV", "hook_v", "value [B,S,H,d] (V7: after the value-residual mix)")
RWKV_W = _kind("RwkvW", "hook_w", "per-step log-decay (<= 0) [B,S,H,d]")
RWKV_DECAY = _kind("RwkvDecay", "hook_decay",
                   "multiplicative per-step decay exp(w) in (0,1) [B,S,H,d] (both versions)")
RWKV_A = _kind("RwkvA", "hook_a", "RWKV-7 in-context learning rate sigmoid(a_lora) [B,S,H,d]")
RWKV_KK = _kind("RwkvKk", "hook_kk", "RWKV-7 L2-normalised removal key [B,S,H,d]")
RWKV_G = _kind("RwkvG", "hook_g", "output gate [B,S,H,d] (V6 silu(gate), V7 g_lora)")
RWKV_STATE = _kind("RwkvState", "hook_state",
                   "WKV state after the call's last token [B,H,d(key),d(value)]")
RWKV_EFFECTIVE_ATTN = _kind(
    "RwkvEffectiveAttn", "hook_effective_attn",
    "effective attention over keys [B,H,S(query),S(source)], computed only when captured "
    "(ReLU + L1 rows; read-only)")


def _resid(c: RwkvConfig) -> tuple:
    return ("batch", "seq", c.hidden_size)


def _scale(c: RwkvConfig) -> tuple:
    return ("batch", "seq", 1)


def _heads(c: RwkvConfig) -> tuple:
    return ("batch", "seq", c.num_heads, c.head_dim)


def _state(c: RwkvConfig) -> tuple:
    return ("batch", c.num_heads, c.head_dim, c.head_dim)


def _square(c: RwkvConfig) -> tuple:
    return ("batch", c.num_heads, "seq", "seq")


def _neurons(c: RwkvConfig) -> tuple:
    return ("batch", "seq", c.intermediate_size)


def _v7(c: RwkvConfig) -> bool:
    return c.version is RwkvVersion.V7


RWKV_POINTS = PointTable("rwkv", [
    PointRow("embed", EMBED, _resid),
    PointRow("resid_pre", RESID_PRE, _resid),
    PointRow("ln1_scale", LN1_SCALE, _scale),
    PointRow("ln1_normalized", LN1_NORMALIZED, _resid),
    PointRow("r", RWKV_R, _heads),
    PointRow("k", RWKV_K, _heads),
    PointRow("v", RWKV_V, _heads),
    PointRow("w", RWKV_W, _heads),
    PointRow("decay", RWKV_DECAY, _heads),
    PointRow("a", RWKV_A, _heads, when=_v7),
    PointRow("kk", RWKV_KK, _heads, when=_v7),
    PointRow("g", RWKV_G, _heads),
    PointRow("state", RWKV_STATE, _state),
    PointRow("effective_attn", RWKV_EFFECTIVE_ATTN, _square),
    PointRow("attn_out", ATTN_OUT, _resid),
    PointRow("resid_mid", RESID_MID, _resid),
    PointRow("ln2_scale", LN2_SCALE, _scale),
    PointRow("ln2_normalized", LN2_NORMALIZED, _resid),
    PointRow("mlp_pre_act", MLP_PRE_ACT, _neurons),
    PointRow("mlp_hidden", MLP_HIDDEN, _neurons),
    PointRow("mlp_out", MLP_OUT, _resid),
    PointRow("resid_post", RESID_POST, _resid),
    PointRow("ln_final_scale", LN_FINAL_SCALE, _scale),
    PointRow("ln_final_normalized", LN_FINAL_NORMALIZED, _resid),
    PointRow("final_norm", FINAL_NORM, _resid),
])
