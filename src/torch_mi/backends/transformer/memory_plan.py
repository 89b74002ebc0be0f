"""What a GenericTransformer forward holds in memory, read off its forward code.

A capture keeps a tensor *storage* alive, not a shape: ``hook_q``/``hook_k``/``hook_v`` are
views of one fused QKV projection, ``blocks.{i}.hook_resid_pre`` is the very tensor that
``blocks.{i-1}.hook_resid_post`` (or ``hook_embed``) captured, and ``hook_mlp_out`` is
``mlp.hook_out`` when the family has no post-FF norm. So every tensor gets a *key*; captured
keys are counted once, and a layer's working set is the largest sum of *uncaptured* keys
alive at one moment ("stage") of that layer:

* attention: the QKV projection, both RoPE rotations (3 temporaries each), then the core -
  fused SDPA (output + log-sum-exp) or explicit (the stacked-query copy for GQA, scores
  scaled in place, the mask added in place unless the scores are hooked, the fp32 softmax
  and its cast, the zero-row fill only when the scores are intervened on) - then the
  head-merge copy and ``o_proj`` (or, with ``hook_result``, the per-head results and their
  sum);
* MLP: the fused gate|up output [B,S,2I] + act(gate) [B,S,I] + the hidden [B,S,I], then
  ``down`` while the gate/up views still hold gate|up (plain MLP: fc_in, then fc_out).

Linear outputs span ``layers.linear_rows`` rows: on CPU fp32 oneDNN computes the token rows
padded to a bucket (100 -> 104, 300 -> 320, 600 -> 640; 513 takes F.linear) and returns a
view of that buffer, so q/k/v, gate|up, the o_proj and down outputs and the logits keep the
padded rows alive; each padded call also holds its padded input copy [padded, in] while it
runs. Held meanwhile: the layer input (kept by the caller), the embedding (kept by
``forward``), the normalised input and the QKV storage (kept by the ``v`` view). The
forward's peak is the largest stage total = captures fired so far + the stage's uncaptured
tensors (+ RoPE tables and masks); in the head it includes the logits. Norm temporaries
are left out (smaller than the MLP stage on every supported family), and so are oneDNN's
scratch and small allocations: the estimate runs low by ~1 MB on SmolLM2, which dominates
short calls. Interventions are counted as making a new tensor of their point's size. The
call is modelled without a KV cache or padding mask.

Measured peak RSS growth (fresh process, fixed mmap threshold; tests/memory/test_memory.py)
on SmolLM2-135M, capturing everything, nothing or every attention pattern: fp32 at 300,
512, 513 and 600 tokens within -1.5%..+0.2%, at 100 and 128 tokens up to 4.2% low; bf16 at
300 and 512 tokens within 2.5% low, at 100 tokens up to 9.3% low. On small random Gemma 2,
StarCoder2 and Qwen3 models (4 layers, D=512, fp32, 100-300 tokens): Gemma 2 within 1.3%,
StarCoder2 and Qwen3 up to 6.4% low when capturing everything (bf16 at 100 tokens: up
to 16.5% low).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import MemoryReportError
from ...hooks.points import HookPoint
from ...hooks.spec import HookSpec
from ..protocol import LayerCost
from .config.types import MlpLayout
from .layers import linear_rows

# Norm statistics are computed in fp32 for bf16/fp16 models (as TransformerLens does).
NORM_STATISTICS = frozenset(f"{n}{s}" for n in ("Ln1", "Ln2", "Ln1Post", "Ln2Post", "LnFinal",
                                                  "QNorm", "KNorm")
                            for s in ("Scale", "Normalized"))
Key = tuple  # identifies one tensor storage: ("t"|"post"|"clone", point), ("qkv", i), ("tmp", name)


@dataclass(frozen=True)
class Item:
    key: Key
    nbytes: int


@dataclass(frozen=True)
class Stage:
    """One moment of the forward: the last hook point fired, and the tensors alive."""

    after: HookPoint
    items: list[Item]


Moment = tuple[HookPoint, list[Item]]


def _tmp(name: str, nbytes: int) -> Item:
    return Item(("tmp", name), nbytes)


def stage_bytes(items: list[Item], captured: set[Key]) -> int:
    """Bytes of the distinct uncaptured tensors in one stage."""
    seen: dict[Key, int] = {}
    for item in items:
        if item.key not in captured:
            seen[item.key] = item.nbytes
    return sum(seen.values())


class TransformerPlan:
    """Storage keys, captured bytes and per-stage working sets for one (model, spec, shape)."""

    def __init__(self, backend, spec: HookSpec, batch: int, seq: int) -> None:
        self.config = c = backend.config
        self.shapes = backend.hook_points()
        self.elem = backend.dtype.itemsize
        self.dtype, self.device = backend.dtype, backend.device
        self.batch, self.seq, self.tokens = batch, seq, batch * seq
        self.captured_points = spec.captures()
        self.intervened = {p for p, _ in spec.interventions()}
        applied = {p for p, iv in spec.interventions() if type(iv).mutates_input}
        self.cloned = applied & set(self.captured_points)
        self.active = active = set(self.captured_points) | self.intervened
        hp = HookPoint
        self.explicit = tuple(
            c.attn_logit_softcapping is not None or hp.AttnScores(i) in active
            or hp.AttnScoresMasked(i) in active or hp.AttnPattern(i) in active
            for i in range(c.num_layers))
        # TL's per-head attention inputs, intervened on: q/k/v come from einsums, not qkv.
        self.split_qkv = tuple(
            any(p(i) in self.intervened for p in (hp.AttnIn, hp.AttnQInput, hp.AttnKInput,
                                                   hp.AttnVInput))
            for i in range(c.num_layers))
        self.order = {p: k for k, p in enumerate(self.shapes)}  # hook_points() is in firing order
        self.captured_keys = {self.key(p) for p in self.captured_points}

    # ---- sizes ------------------------------------------------------------------------------
    def point_bytes(self, point: HookPoint) -> int:
        """Bytes of the tensor at ``point`` (its declared shape, batch/seq substituted; norm
        statistics are fp32 for lower precisions)."""
        sizes = {"batch": self.batch, "seq": self.seq}
        dims = []
        for dim in self.shapes[point]:
            factors = dim.split("*") if isinstance(dim, str) else [dim]
            try:
                dims.extend(sizes[f] if f in sizes else int(f) for f in factors)
            except ValueError:
                raise MemoryReportError(f"hook point '{point}' has a shape dimension {dim!r} "
                                        f"that is neither 'batch', 'seq' nor an integer") from None
        elem = max(self.elem, 4) if point.variant in NORM_STATISTICS else self.elem
        return math.prod(dims) * elem

    def linear_rows(self, out_features: int) -> int:
        """Rows of the buffer a ``Linear`` output over all tokens lives in (the oneDNN
        bucket on CPU fp32 where layers.py pads, else the token count)."""
        return linear_rows(self.tokens, out_features, self.dtype, self.device)

    def linear_bytes(self, out_features: int) -> int:
        """Bytes of a ``Linear`` output's storage (a view of the padded buffer)."""
        return self.linear_rows(out_features) * out_features * self.elem

    def linear_input(self, name: str, in_features: int, out_features: int) -> list[Item]:
        """The padded input copy [padded, in] ``onednn_linear`` makes, alive during the call."""
        rows = self.linear_rows(out_features)
        return [] if rows == self.tokens else [_tmp(name, rows * in_features * self.elem)]

    @property
    def qkv_features(self) -> int:
        c = self.config
        return (c.num_attention_heads + 2 * c.num_kv_heads) * c.head_dim

    def linear_output(self, point: HookPoint) -> int | None:
        """out_features when ``("t", point)`` is a Linear's output storage, else None."""
        hp, c, i, v = HookPoint, self.config, point.layer, point.variant
        if v == "MlpPost":  # down / fc_out
            return c.hidden_size
        if v == "MlpPreAct" and c.mlp_layout is MlpLayout.Plain:  # fc_in
            return c.intermediate_size
        if v == "AttnOut" and not c.use_post_norms and hp.AttnResult(i) not in self.active:
            return c.hidden_size  # o_proj (with hook_result: a sum of per-head results)
        if v == "UnembedOut":  # soft-capped families (otherwise it is the "logits" key)
            return c.vocab_size
        return None

    def key_bytes(self, key: Key) -> int:
        c, n, e = self.config, self.tokens, self.elem
        if key[0] == "qkv":
            return (n * self.qkv_features * e if self.split_qkv[key[1]]
                    else self.linear_bytes(self.qkv_features))
        if key[0] == "gate_up":
            return self.linear_bytes(2 * c.intermediate_size)
        if key[0] == "masked":
            return n * c.num_attention_heads * self.seq * e
        if key[0] == "logits":
            return self.logits_bytes
        if key[0] == "t" and (out := self.linear_output(key[1])) is not None:
            return self.linear_bytes(out)
        return self.point_bytes(key[1])

    # ---- tensor identity ----------------------------------------------------------------------
    def base_key(self, point: HookPoint) -> Key:
        """The storage of the tensor that reaches ``point`` (before its interventions)."""
        hp, i, v, c = HookPoint, point.layer, point.variant, self.config
        if v in ("AttnQ", "AttnK", "AttnV"):
            return ("qkv", i)
        if v == "ResidPre":
            return self.live_key(hp.Embed if i == 0 else hp.ResidPost(i - 1))
        if v in ("AttnIn", "AttnQInput", "AttnKInput", "AttnVInput"):  # views of resid_pre
            return self.live_key(hp.ResidPre(i))
        if v == "MlpIn":
            return self.live_key(hp.ResidMid(i))
        if v in ("MlpPreAct", "MlpPreLinear") and c.mlp_layout is not MlpLayout.Plain:
            return ("gate_up", i)  # split views of one [B,S,2I] matmul output
        if v == "AttnScoresMasked":  # the mask is added in place unless the scores are hooked
            return ("masked", i) if hp.AttnScores(i) in self.active else self.live_key(
                hp.AttnScores(i))
        if v == "UnembedOut" and not c.final_logit_softcapping:
            return ("logits",)
        if v == "MlpOut" and not c.use_post_norms:
            return self.live_key(hp.MlpPost(i))
        return ("t", point)

    def live_key(self, point: HookPoint) -> Key:
        """The storage that flows on after ``point`` (a new one if it is intervened on)."""
        return ("post", point) if point in self.intervened else self.base_key(point)

    def key(self, point: HookPoint) -> Key:
        """The storage a capture at ``point`` keeps (a clone when an Apply may mutate it)."""
        return ("clone", point) if point in self.cloned else self.base_key(point)

    def item(self, key: Key) -> Item:
        return Item(key, self.key_bytes(key))

    def base(self, point: HookPoint) -> Item:
        return self.item(self.base_key(point))

    def live(self, point: HookPoint) -> Item:
        return self.item(self.live_key(point))

    # ---- captured storage --------------------------------------------------------------------
    def created_at(self, key: Key) -> int:
        """Position in the firing order of the hook that first sees storage ``key``."""
        first = {"qkv": HookPoint.AttnQ, "gate_up": HookPoint.MlpPreAct,
                 "masked": HookPoint.AttnScoresMasked}
        if key[0] in first:
            return self.order[first[key[0]](key[1])]
        if key[0] == "logits":
            return self.order[HookPoint.UnembedOut]
        return self.order[key[1]]

    def captured_bytes(self) -> int:
        return sum(self.key_bytes(k) for k in self.captured_keys)

    def stage_total(self, stage: Stage) -> int:
        """Bytes alive at one moment: captures made so far + the stage's other tensors."""
        fired = self.order[stage.after]
        kept = {k for k in self.captured_keys if self.created_at(k) <= fired}
        extra = stage_bytes(stage.items, kept)
        return sum(self.key_bytes(k) for k in kept) + extra

    # ---- whole-forward context -----------------------------------------------------------------
    def context_bytes(self) -> int:
        """RoPE tables and masks, alive for the whole call (the causal mask stays cached)."""
        c, s, e = self.config, self.seq, self.elem
        total, causal_needed = 0, False
        for layer_type in sorted(set(c.layer_types)):
            total += 2 * s * c.rotary_dim * e  # cos, sin [1,1,S,r]
            explicit = any(x for x, t in zip(self.explicit, c.layer_types, strict=True)
                           if t == layer_type)
            window = c.sliding_window if layer_type == "sliding_attention" else None
            if window is not None and s > window:  # dense: bool mask (+ its additive form)
                total += s * s + (s * s * e if explicit else 0)
            elif explicit:
                causal_needed = True
        return total + (s * s * e if causal_needed else 0)

    # ---- one layer ---------------------------------------------------------------------------
    def layer_stages(self, i: int) -> list[Stage]:
        """Every moment of layer ``i`` worth counting, with the tensors alive then."""
        hp = HookPoint
        held = [self.base(hp.ResidPre(0)), self.base(hp.ResidPre(i)), self.live(hp.ResidPre(i))]
        attn = [*held, self.live(hp.Ln1Out(i)), self.item(("qkv", i))]
        qkv_in = [] if self.split_qkv[i] else self.linear_input(
            "qkv_in", self.config.hidden_size, self.qkv_features)
        projection = Stage(hp.Ln1Out(i), attn + qkv_in)  # the qkv call
        attn += [self.live(p) for p in (hp.AttnQ(i), hp.AttnK(i), hp.AttnV(i))
                 if p in self.intervened]
        mlp = [*held, self.live(hp.AttnOut(i)), self.live(hp.ResidMid(i)), self.live(hp.MlpPre(i))]
        return ([projection]
                + [Stage(after, attn + items) for after, items in self.attention_moments(i)]
                + [Stage(after, mlp + items) for after, items in self.mlp_moments(i)])

    def attention_moments(self, i: int) -> list[Moment]:
        hp, c, n, e = HookPoint, self.config, self.tokens, self.elem
        hd, kd = n * c.num_attention_heads * c.head_dim * e, n * c.num_kv_heads * c.head_dim * e
        q_norm = [_tmp("q_norm", hd)] if c.qk_norm else []
        k_norm = [_tmp("k_norm", kd)] if c.qk_norm else []
        rot_q, rot_k = self.live(hp.AttnRotQ(i)), self.live(hp.AttnRotK(i))
        moments = [(hp.AttnV(i), [*q_norm, _tmp("rope_q", 3 * hd)]),  # x*cos, rot_half, *sin
                   (hp.AttnRotQ(i), [rot_q, *k_norm, _tmp("rope_k", 3 * kd)])]
        core = self.explicit_moments(i) if self.explicit[i] else self.fused_moments(i)
        moments += [(after, [rot_q, rot_k, *items]) for after, items in core]
        return [*moments, (hp.AttnZ(i), [rot_q, rot_k, self.live(hp.AttnZ(i)), *self.output(i)])]

    def output(self, i: int) -> list[Item]:
        """What making the attention output [B,S,D] adds: with ``hook_result``, the per-head
        results [B,S,H,D] and their sum (+ bias); else the head-merge copy of the transposed
        z, the padded copy of it ``onednn_linear`` may make, and the o_proj output."""
        hp, c, n, e = HookPoint, self.config, self.tokens, self.elem
        result = hp.AttnResult(i) in self.active  # then no o_proj call: nothing padded
        out_bytes = n * c.hidden_size * e if result else self.linear_bytes(c.hidden_size)
        out = (self.base(hp.AttnOut(i)) if not c.use_post_norms  # the very hook_attn_out
               else _tmp("o_proj", out_bytes))
        if result:
            head_sum = [_tmp("head_sum", n * c.hidden_size * e)] if c.o_proj_bias else []
            return [self.base(hp.AttnResult(i)), self.live(hp.AttnResult(i)), *head_sum, out]
        q_features = c.num_attention_heads * c.head_dim
        return [_tmp("z_merged", n * q_features * e),
                *self.linear_input("o_proj_in", q_features, c.hidden_size), out]

    def fused_moments(self, i: int) -> list[Moment]:
        """SDPA: the output and its fp32 log-sum-exp [B,H,S]; GQA heads are read in place."""
        lse = _tmp("lse", self.tokens * self.config.num_attention_heads * 4)
        return [(HookPoint.AttnRotK(i), [self.base(HookPoint.AttnZ(i)), lse])]

    def explicit_moments(self, i: int) -> list[Moment]:
        """Scores (scaled in place) -> soft-cap -> mask -> fp32 softmax -> cast -> zero-row
        fill (only if the scores are intervened on) -> pattern @ v."""
        hp, c, n, e = HookPoint, self.config, self.tokens, self.elem
        sh = n * c.num_attention_heads * self.seq * e  # one [B,H,S,S] tensor
        sh32 = n * c.num_attention_heads * self.seq * 4
        hd = n * c.num_attention_heads * c.head_dim * e
        stacked = [_tmp("q_stacked", hd)] if c.num_kv_groups > 1 else []
        raw, scores = self.base(hp.AttnScores(i)), self.live(hp.AttnScores(i))
        if c.attn_logit_softcapping is None:
            before = [[*stacked, raw]]
        else:  # tanh(x / cap) * cap, with the scaled scores alive throughout
            qk, div, tanh = _tmp("qk", sh), _tmp("div", sh), _tmp("tanh", sh)
            before = [[*stacked, qk], [qk, div], [qk, div, tanh], [qk, tanh, raw]]
        # The mask is added in place unless someone holds the pre-mask scores.
        masked = self.live(hp.AttnScoresMasked(i))
        fill = hp.AttnScores(i) in self.intervened or hp.AttnScoresMasked(i) in self.intervened
        pattern, pattern_live = self.base(hp.AttnPattern(i)), self.live(hp.AttnPattern(i))
        if e == 4:
            soft = _tmp("softmax_fp32", sh32) if fill else pattern
            softmax = [[masked, soft]]
        else:  # softmax(dtype=fp32) copies its input to fp32, then .to() casts back
            soft = _tmp("softmax_cast", sh) if fill else pattern
            soft32 = _tmp("softmax_fp32", sh32)
            softmax = [[masked, _tmp("softmax_in", sh32), soft32], [masked, soft32, soft]]
        fill_step = [[masked, soft, pattern]] if fill else []
        after_scores = [[raw, scores], [scores, masked], *softmax, *fill_step]
        after_pattern = [[masked, pattern, pattern_live],
                         [masked, pattern_live, self.base(hp.AttnZ(i))]]
        return ([(hp.AttnRotK(i), m) for m in before]
                + [(hp.AttnScores(i), m) for m in after_scores]
                + [(hp.AttnPattern(i), m) for m in after_pattern])

    def mlp_moments(self, i: int) -> list[Moment]:
        """The first linear (its padded input copy), the activation, the hidden's
        intervention, then down/fc_out (its input copy) while the MLP's locals still hold
        the pre-activations, then the post-FF norm and the residual add."""
        hp, c = HookPoint, self.config
        d, inner = c.hidden_size, c.intermediate_size
        hidden, hidden_live = self.base(hp.MlpHidden(i)), self.live(hp.MlpHidden(i))
        if c.mlp_layout is MlpLayout.Plain:  # pre = fc_in(x) stays bound while fc_out runs
            pre = self.base(hp.MlpPreAct(i))
            held = [self.live(hp.MlpPreAct(i))]
            first = [(hp.MlpPre(i), [*self.linear_input("fc_in_in", d, inner), pre]),
                     (hp.MlpPre(i), [*held, hidden])]
        else:  # gate_up [B,S,2I] (its gate/up views stay bound while down runs), act(gate)
            gate_up = self.item(("gate_up", i))
            views = [self.live(hp.MlpPreAct(i)), self.live(hp.MlpPreLinear(i))]
            replaced = all(view.key[0] == "post" for view in views)  # both intervened on
            held = views if replaced else [gate_up, *views]
            act = _tmp("act", self.tokens * inner * self.elem)
            first = [(hp.MlpPre(i), [*self.linear_input("gate_up_in", d, 2 * inner), gate_up]),
                     (hp.MlpPre(i), [gate_up, *views, act, hidden])]
        return [*first,
                (hp.MlpHidden(i), [*held, hidden, hidden_live]),
                (hp.MlpHidden(i), [*held, hidden_live, *self.linear_input("down_in", inner, d),
                                   self.base(hp.MlpPost(i))]),
                (hp.MlpPost(i), [self.live(hp.MlpPost(i)), self.base(hp.MlpOut(i))]),
                (hp.MlpOut(i), [self.live(hp.MlpOut(i)), self.base(hp.ResidPost(i))])]

    # ---- the head and the whole call ------------------------------------------------------------
    @property
    def logits_bytes(self) -> int:
        """The returned logits' storage: the unembedding's (padded) buffer, or the soft-cap's
        new [B,S,V] tensor."""
        c = self.config
        if c.final_logit_softcapping:
            return self.tokens * c.vocab_size * self.elem
        return self.linear_bytes(c.vocab_size)

    def head_stages(self) -> list[Stage]:
        """Final norm, then the unembedding (with its padded input copy), then any
        intervention on its output and the final soft-cap (tanh(x / cap) * cap: two [B,S,V]
        temporaries alive at once). The last residual stays alive (``forward`` holds it)."""
        hp, c = HookPoint, self.config
        last = self.live(hp.ResidPost(c.num_layers - 1))
        normed = [last, self.live(hp.FinalNorm)]
        unembed, unembed_live = self.base(hp.UnembedOut), self.live(hp.UnembedOut)
        unembed_in = self.linear_input("unembed_in", c.hidden_size, c.vocab_size)
        stages = [Stage(hp.ResidPost(c.num_layers - 1), [last, self.base(hp.FinalNorm)]),
                  Stage(hp.FinalNorm, [*normed, *unembed_in, unembed]),
                  Stage(hp.UnembedOut, [*normed, unembed, unembed_live])]
        if c.final_logit_softcapping:
            tanh = _tmp("tanh", self.tokens * c.vocab_size * self.elem)
            stages.append(Stage(hp.UnembedOut, [*normed, unembed_live, tanh,
                                                 self.item(("logits",))]))
        return stages

    def layer_costs(self) -> list[LayerCost]:
        return [LayerCost(i, self.explicit[i],
                          max(stage_bytes(s.items, self.captured_keys) for s in self.layer_stages(i)))
                for i in range(self.config.num_layers)]

    def forward_peak(self) -> tuple[int, str]:
        """Largest bytes alive at once during the call, and where ("layer N" or "head")."""
        peak, where = 0, "head"
        for i in range(self.config.num_layers):
            for stage in self.layer_stages(i):
                total = self.stage_total(stage)
                if total > peak:
                    peak, where = total, f"layer {i}"
        for stage in self.head_stages():
            total = self.stage_total(stage)
            if total > peak:
                peak, where = total, "head"
        return self.context_bytes() + peak, where
