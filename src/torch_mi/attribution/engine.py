"""``attribute``: the attribution graph of a prompt through the local replacement model.

Phases (as circuit-tracer's ``attribute``):
0. one plain forward: active features, encoder/decoder rows, error and token vectors,
   last-position logits -> logit targets; the memory estimate picks the batch size;
1. one replacement forward of the prompt (batch 1) whose graph is kept;
2. logit rows: the demeaned unembedding column injected as the gradient of the final
   norm's output at the last position;
3. feature rows: each feature's encoder row injected at its layer's ``feature_input_hook``
   and position, in batches (in order of influence on the logits when
   ``max_feature_nodes`` caps the graph, re-ranked every ``update_interval`` batches).
A batch of rows is ONE backward pass over the batch-1 graph with batched gradient seeds
(``autograd.grad(..., is_grads_batched=True)``, i.e. vmap): the replacement model is
linear with frozen patterns and norm denominators, so its backward does not depend on
which copy of the prompt it runs on. circuit-tracer instead runs the forward on
``batch_size`` copies of the prompt and keeps that graph: the same gradients (bit for
bit in our tests), at ``batch_size`` times the forward's compute and saved activations.
A row is read off by contracting the gradients at every layer's (linearised) MLP output
with the active features' scaled decoder rows and the error vectors, and at
``hook_embed`` with the token embeddings: the direct effects of every source node.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from torch_mi.attribution.budget import choose_batch, estimate_attribution
from torch_mi.attribution.components import Components, compute_components
from torch_mi.attribution.graph import Graph
from torch_mi.attribution.prune import partial_influence
from torch_mi.attribution.replacement import (
    Tape,
    check_transcoders,
    replacement_forward,
    skip_matrices,
)
from torch_mi.attribution.targets import LogitTargets, select_targets
from torch_mi.dictionaries.clt import CrossLayerTranscoder
from torch_mi.errors import InputError, MIError


def open_transcoders(transcoders: CrossLayerTranscoder | str | Path,
                     device: torch.device) -> CrossLayerTranscoder:
    """A transcoder object, or one opened from a folder / config.yaml path."""
    if isinstance(transcoders, (str, Path)):
        return CrossLayerTranscoder.from_local(transcoders, device=device)
    return transcoders


def prompt_ids(model, prompt: str | Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Token ids [1, S] of a text (special tokens added) or of given ids."""
    if isinstance(prompt, str):
        ids = model.encode(prompt)
    elif isinstance(prompt, torch.Tensor):
        ids = prompt.reshape(1, -1) if prompt.dim() <= 2 and (prompt.dim() < 2
                                                            or prompt.shape[0] == 1) else None
        if ids is None:
            raise InputError(f"attribute takes one prompt; got ids of shape "
                             f"{list(prompt.shape)}")
    else:
        try:
            ids = torch.tensor([list(prompt)], dtype=torch.long)
        except (TypeError, ValueError):
            raise InputError(f"prompt must be text, a list of token ids or a tensor, got "
                             f"{type(prompt).__name__}") from None
    if ids.numel() < 2:
        raise InputError(f"the prompt has {ids.numel()} token(s); attribution needs at least 2 "
                         f"(the first position carries no features)")
    return ids.to(model.device)


def _check_int(name: str, value: object, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InputError(f"{name} must be an int >= {low}, got {value!r}")


class _RowReader:
    """Turns gradients of one backward into rows [b, n_features + (L+1)*S]."""

    def __init__(self, tape: Tape, comp: Components, n_layers: int, n_pos: int) -> None:
        self.tape, self.comp, self.n_layers, self.n_pos = tape, comp, n_layers, n_pos
        self.row_size = comp.n_features + (n_layers + 1) * n_pos
        self.by_pos = []  # per layer: [(position, rows [m_p], vecs [m_p, D])]
        for group in comp.decoders:
            self.by_pos.append([(int(p), group.rows[group.pos == p], group.vecs[group.pos == p])
                                for p in torch.unique(group.pos).tolist()])

    def rows(self, layers: torch.Tensor, positions: torch.Tensor,
             vectors: torch.Tensor) -> torch.Tensor:
        """Direct effects on the targets whose gradients ``vectors`` [b, D] are injected
        at (``layers`` [b] (n_layers = the final norm), ``positions`` [b]): one backward
        of the batch-1 graph with b gradient seeds [b, 1, S, D] per root."""
        b, tape, n_layers = len(layers), self.tape, self.n_layers
        roots, seeds = [], []
        for layer in torch.unique(layers).tolist():
            node = tape.final if layer == n_layers else tape.inputs[layer]  # [1,S,D]
            pick = torch.nonzero(layers == layer).flatten().to(node.device)
            seed = node.new_zeros(b, *node.shape)  # [b,1,S,D]
            seed[pick, 0, positions.to(node.device)[pick]] = vectors[pick].to(node.device,
                                                                            node.dtype)
            roots.append(node)
            seeds.append(seed)
        sources = [tape.outputs[layer] for layer in range(n_layers)] + [tape.embed]
        grads = torch.autograd.grad(roots, sources, seeds, retain_graph=True, allow_unused=True,
                                    is_grads_batched=True)
        return self._contract([None if g is None else g[:, 0] for g in grads], b)

    def _contract(self, grads, b: int) -> torch.Tensor:
        comp, n, s = self.comp, self.comp.n_features, self.n_pos
        out = torch.zeros(b, self.row_size, dtype=torch.float32, device=comp.errors.device)
        for layer, grad in enumerate(grads[:-1]):
            if grad is None:
                continue
            g = grad.float()  # [b, S, D]
            for pos, rows, vecs in self.by_pos[layer]:
                out[:, rows] += g[:, pos] @ vecs.T
            start = n + layer * s
            out[:, start:start + s] = torch.einsum("bsd,sd->bs", g, comp.errors[layer])
        if grads[-1] is not None:
            start = n + self.n_layers * s
            out[:, start:] = torch.einsum("bsd,sd->bs", grads[-1].float(), comp.tokens)
        return out.cpu()


def _visit_features(reader: _RowReader, comp: Components, targets: LogitTargets, edges,
                    row_nodes, n_select: int, batch: int, update_interval: int,
                    progress: bool) -> torch.Tensor:
    """Fill feature rows of ``edges`` after the logit rows; returns the visited mask."""
    n, k = comp.n_features, len(targets)
    visited = torch.zeros(n, dtype=torch.bool)
    start, done = k, 0
    bar = tqdm(total=n_select, desc="attribution: feature rows", disable=not progress)
    while done < n_select:
        if n_select == n:
            pending = torch.arange(n)
        else:
            infl = partial_influence(edges[:start], targets.probabilities.cpu(),
                                     row_nodes[:start])
            rank = torch.argsort(infl[:n], descending=True)
            pending = rank[~visited[rank]][:min(update_interval * batch, n_select - done)]
        for chunk in pending.split(batch):
            rows = reader.rows(comp.active[chunk, 0], comp.active[chunk, 1],
                               comp.encoders[chunk])
            edges[start:start + len(chunk), :rows.shape[1]] = rows
            row_nodes[start:start + len(chunk)] = chunk
            visited[chunk] = True
            start += len(chunk)
            done += len(chunk)
            bar.update(len(chunk))
    bar.close()
    return visited


def _assemble(edges: torch.Tensor, row_nodes: torch.Tensor, visited: torch.Tensor,
              n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The square adjacency over [selected features, errors, tokens, logits]."""
    selected = torch.nonzero(visited).flatten()
    m = len(selected)
    if m < n:
        edges = edges[:, torch.cat([selected, torch.arange(n, edges.shape[1])])]
    edges = edges[row_nodes.argsort()]  # features in order, then logits
    size = edges.shape[1]
    adjacency = torch.zeros(size, size)
    adjacency[:m] = edges[:m]
    adjacency[-k:] = edges[m:]
    return adjacency, selected


def attribute(model, prompt: str | Sequence[int] | torch.Tensor,
              transcoders: CrossLayerTranscoder | str | Path, *, max_n_logits: int = 10,
              desired_logit_prob: float = 0.95, batch_size: int = 256,
              max_feature_nodes: int | None = None,
              target_tokens: Sequence[int | str] | torch.Tensor | None = None,
              memory_budget: int | None = None, zero_positions: int = 1,
              update_interval: int = 4, verbose: bool = False) -> Graph:
    """The attribution graph of ``prompt`` (see the module docstring).

    ``batch_size`` rows per backward pass (lowered to what ``memory_budget`` bytes, default
    the free memory, allows; MemoryReportError naming the estimate if one row does not
    fit). ``max_feature_nodes`` keeps the most influential features only. ``target_tokens``
    (ids or single-token strings) replaces the automatic top logits. ``zero_positions``
    leading positions carry no features and no errors (1: the BOS, as circuit-tracer).
    """
    for name, value, low in (("batch_size", batch_size, 1), ("zero_positions", zero_positions, 0),
                             ("update_interval", update_interval, 1)):
        _check_int(name, value, low)
    _check_int("max_feature_nodes", max_feature_nodes, 1, allow_none=True)
    clt = open_transcoders(transcoders, model.device)
    check_transcoders(model, clt)
    ids = prompt_ids(model, prompt)
    n_layers, n_pos = model.num_layers, ids.shape[1]
    skips = skip_matrices(clt)
    comp = compute_components(model, ids, clt, skips, zero_positions)
    targets = select_targets(model, comp.logits, target_tokens, max_n_logits, desired_logit_prob)
    n, k = comp.n_features, len(targets)
    n_select = min(max_feature_nodes or n, n)
    estimate = estimate_attribution(
        model, n_pos, n, n_select, k, sum(len(group.rows) for group in comp.decoders),
        sum(skip.numel() * skip.element_size() for skip in skips if skip is not None))
    batch = choose_batch(estimate, batch_size, memory_budget, model.device)
    if verbose:
        print(f"attribution: {n} active features, {k} logit targets; {estimate.describe(batch)}")
    _, tape = replacement_forward(model, ids, clt, last_logits_only=True, skips=skips)
    reader = _RowReader(tape, comp, n_layers, n_pos)
    logit_offset = reader.row_size
    edges = torch.zeros(n_select + k, logit_offset + k)
    row_nodes = torch.zeros(n_select + k, dtype=torch.long)
    for i in range(0, k, batch):
        j = min(i + batch, k)
        edges[i:j, :logit_offset] = reader.rows(torch.full((j - i,), n_layers),
                                                torch.full((j - i,), n_pos - 1),
                                                targets.vectors[i:j])
        row_nodes[i:j] = torch.arange(i, j) + logit_offset
    visited = _visit_features(reader, comp, targets, edges, row_nodes, n_select, batch,
                              update_interval, verbose)
    del tape, reader
    adjacency, selected = _assemble(edges, row_nodes, visited, n, k)
    return Graph(input_tokens=ids[0].cpu(), active_features=comp.active.cpu(),
                 activation_values=comp.values.cpu(), selected_features=selected,
                 adjacency_matrix=adjacency, logit_token_ids=targets.token_ids.cpu(),
                 logit_probabilities=targets.probabilities.cpu(), logit_tokens=targets.tokens,
                 n_layers=n_layers, vocab_size=model.vocab_size,
                 input_string=_decode(model, ids[0]),
                 config=_config(model, clt, batch, max_n_logits, desired_logit_prob,
                                max_feature_nodes, zero_positions))


def _decode(model, ids: torch.Tensor) -> str:
    tok = model.tokenizer
    try:
        return "" if tok is None else tok.decode(ids.cpu(), errors="replace")
    except MIError:
        return ""


def _config(model, clt: CrossLayerTranscoder, batch: int, max_n_logits: int,
            desired_logit_prob: float, max_feature_nodes: int | None,
            zero_positions: int) -> dict:
    c = clt.config
    return {"model": str(getattr(model, "source", "") or ""), "scan": c.model_name or None,
            "d_model": model.hidden_size, "n_layers": model.num_layers,
            "transcoders": {"schema": c.schema.value, "features_per_layer": c.n_features_per_layer,
                            "cross_layer": c.is_cross_layer, "skip": c.has_skip,
                            "feature_input_hook": c.feature_input_hook,
                            "feature_output_hook": c.feature_output_hook},
            "options": {"max_n_logits": max_n_logits, "desired_logit_prob": desired_logit_prob,
                        "batch_size": batch, "max_feature_nodes": max_feature_nodes,
                        "zero_positions": zero_positions}}


__all__ = ["attribute", "open_transcoders", "prompt_ids"]
