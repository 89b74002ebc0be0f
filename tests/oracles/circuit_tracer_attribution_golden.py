"""Write circuit-tracer attribution-graph golden files under
tests/golden/circuit_tracer_attribution/ (circuit-tracer's own venv; see the README there).

circuit-tracer 0.5.0 pins transformers<=4.57.3, so it cannot live in the dev environment;
the suite compares torch-mi's attribution graphs against these committed outputs instead.
Recreate them with (about a minute to build the venv, the script runs in seconds on CPU):

    python3 -m venv /tmp/venvD && /tmp/venvD/bin/pip install torch==2.13.0 \
        && /tmp/venvD/bin/pip install circuit-tracer
    /tmp/venvD/bin/python tests/oracles/circuit_tracer_attribution_golden.py

What it does:

* builds a tiny random Llama (every parameter random, norms included) with transformers
  4.57.3 and saves it with ``save_pretrained`` plus a byte-level tokenizer, so torch-mi
  loads the identical weights from ``model/``;
* builds a cross-layer transcoder (JumpReLU) and a per-layer transcoder set (JumpReLU and
  ``W_skip``) with circuit-tracer's classes and writes them through circuit-tracer's own
  cache writer (``config.yaml`` + ``W_enc_{l}``/``W_dec_{l}`` or ``layer_{l}``);
* wraps the model as circuit-tracer's TransformerLens replacement model and runs
  ``attribute()`` on fixed token ids, a full run and one whose ``max_feature_nodes`` is
  below the number of active features (influence-ordered selection), then ``prune_graph``,
  ``compute_graph_scores`` and ``create_graph_files`` (the Neuronpedia JSON);
* builds a tiny random Gemma-3 (sliding and global layers with different RoPE bases) and
  stores HF logits, plain TransformerLens logits and circuit-tracer's TL-backend
  replacement-model logits, which differ (it shares one RoPE table across layers).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import circuit_tracer.utils.caching as ct_cache
import torch
import yaml
from circuit_tracer import attribute
from circuit_tracer.graph import compute_graph_scores, prune_graph
from circuit_tracer.replacement_model.replacement_model_transformerlens import (
    TransformerLensReplacementModel,
)
from circuit_tracer.transcoder.activation_functions import JumpReLU
from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder
from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder
from circuit_tracer.utils.create_graph_files import create_graph_files
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.loading_from_pretrained import convert_hf_model_config
from transformer_lens.pretrained import weight_conversions as wc
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3TextConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

OUT = Path(__file__).resolve().parents[1] / "golden" / "circuit_tracer_attribution"
L, D, F, V = 3, 64, 24, 256
CPU, F32 = torch.device("cpu"), torch.float32
TOKENS = [1, *b"The cat"]  # <s> + 7 bytes = 8 positions
PRUNE = {"node_threshold": 0.8, "edge_threshold": 0.98}
# run name -> (transcoder case, attribute() keyword arguments)
RUNS = {
    "clt_full": ("clt", dict(max_n_logits=5, desired_logit_prob=0.8, batch_size=16,
                             max_feature_nodes=None)),
    "clt_capped": ("clt", dict(max_n_logits=3, desired_logit_prob=0.95, batch_size=8,
                               max_feature_nodes=40)),
    "plt_full": ("plt", dict(max_n_logits=5, desired_logit_prob=0.8, batch_size=16,
                             max_feature_nodes=None)),
    "plt_capped": ("plt", dict(max_n_logits=3, desired_logit_prob=0.95, batch_size=8,
                               max_feature_nodes=40)),
}


# ---- model and tokenizer ---------------------------------------------------------------------
def byte_tokenizer() -> PreTrainedTokenizerFast:
    """256 ids: 0 <pad>, 1 <s>, 2 </s>, 3..255 the bytes (GPT-2 byte-to-unicode map)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2} | {chars[b]: b for b in range(3, 256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def randomise(model: torch.nn.Module, g: torch.Generator) -> None:
    """Every parameter random: norm weights around 1, the rest small, the unembedding large
    enough that a few logits dominate (so ``desired_logit_prob`` can stop the target list
    before ``max_n_logits``)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            scale = 1.2 if "lm_head" in name else 0.15
            p.copy_(1.0 + 0.2 * noise if "norm" in name else scale * noise)


def save_model(cfg, folder: Path, g: torch.Generator):
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    randomise(model, g)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=F32,
                                                 attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(folder)


def llama_config() -> LlamaConfig:
    return LlamaConfig(hidden_size=D, intermediate_size=96, num_hidden_layers=L,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=V,
                       max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                       pad_token_id=0)


def gemma3_config() -> Gemma3TextConfig:
    return Gemma3TextConfig(hidden_size=D, intermediate_size=96, num_hidden_layers=L,
                            num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                            query_pre_attn_scalar=16, vocab_size=V, max_position_embeddings=64,
                            sliding_window=4, layer_types=["sliding_attention",
                                                           "sliding_attention",
                                                           "full_attention"],
                            rope_theta=1e6, rope_local_base_freq=1e4, rms_norm_eps=1e-6,
                            final_logit_softcapping=None, attn_logit_softcapping=None,
                            hidden_activation="gelu_pytorch_tanh", bos_token_id=1,
                            eos_token_id=2, pad_token_id=0)


def gemma3_tl_config(folder: Path) -> HookedTransformerConfig:
    """TL 3.2.1 has no Gemma-3 branch for local folders: the 270m recipe, sized down."""
    return HookedTransformerConfig(
        d_model=D, d_head=16, n_heads=4, d_mlp=96, n_layers=L, n_ctx=64, eps=1e-6, d_vocab=V,
        act_fn="gelu_pytorch_tanh", normalization_type="RMS", rotary_base=1e6,
        rotary_base_local=1e4, rotary_dim=16, positional_embedding_type="rotary",
        use_attn_scale=True, attn_scale=16 ** 0.5, n_key_value_heads=1, gated_mlp=True,
        final_rms=True, use_normalization_before_and_after=True, use_qk_norm=True,
        window_size=4, use_local_attn=True, attn_types=["local", "local", "global"],
        original_architecture="Gemma3ForCausalLM", model_name="tiny-gemma3",
        tokenizer_name=str(folder), dtype=F32, device="cpu")


def replacement_model(cfg, hf, tok, convert, transcoders) -> TransformerLensReplacementModel:
    m = TransformerLensReplacementModel(cfg, tokenizer=tok)
    m.load_and_process_state_dict(convert(hf, cfg), fold_ln=False, center_writing_weights=False,
                                  center_unembed=False, fold_value_biases=False)
    m._configure_replacement_model(transcoders)
    return m


# ---- transcoders in circuit-tracer's on-disk format -----------------------------------------
def thresholds(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Mostly positive, a few negative (circuit-tracer's JumpReLU has no ReLU inside)."""
    return torch.rand(shape, generator=g) * 1.4 - 0.2


def build_clt(g: torch.Generator) -> CrossLayerTranscoder:
    clt = CrossLayerTranscoder(L, F, D, activation_function="jump_relu", lazy_decoder=False,
                               device=CPU, dtype=F32)
    with torch.no_grad():
        clt.W_enc.copy_(torch.randn(clt.W_enc.shape, generator=g) * 0.15)
        clt.b_enc.copy_(torch.randn(clt.b_enc.shape, generator=g) * 0.3 - 0.2)
        clt.b_dec.copy_(torch.randn(clt.b_dec.shape, generator=g) * 0.1)
        clt.activation_function.threshold.copy_(
            thresholds(clt.activation_function.threshold.shape, g))
        for w in clt.W_dec:
            w.copy_(torch.randn(w.shape, generator=g) * 0.1)
    return clt


def build_plt(layer: int, g: torch.Generator) -> SingleLayerTranscoder:
    tc = SingleLayerTranscoder(D, F, JumpReLU(thresholds((F,), g), 0.1), layer,
                               skip_connection=True, device=CPU, dtype=F32)
    with torch.no_grad():
        tc.W_enc.copy_(torch.randn(F, D, generator=g) * 0.15)
        tc.W_dec.copy_(torch.randn(F, D, generator=g) * 0.1)
        tc.b_enc.copy_(torch.randn(F, generator=g) * 0.3 - 0.2)
        tc.b_dec.copy_(torch.randn(D, generator=g) * 0.1)
        tc.W_skip.copy_(torch.randn(D, D, generator=g) * 0.05)
    return tc


def write_transcoders(name: str, model_name: str, g: torch.Generator, tmp: Path):
    """Save with to_safetensors, then through circuit-tracer's cache writer (Hub calls
    answered from the staging folder); return what its cache reader loads back."""
    repo = tmp / name
    repo.mkdir()
    config = {"model_name": model_name, "scan": name, "feature_output_hook": "hook_mlp_out"}
    if name == "clt":
        build_clt(g).to_safetensors(str(repo))
        config |= {"model_kind": "cross_layer_transcoder", "feature_input_hook": "hook_resid_mid"}
    else:
        files = [repo / f"layer_{i}.safetensors" for i in range(L)]
        for i, path in enumerate(files):
            build_plt(i, g).to_safetensors(str(path))
        config |= {"model_kind": "transcoder_set", "feature_input_hook": "ln2.hook_normalized",
                   "transcoders": [str(p) for p in files]}
    (repo / "config.yaml").write_text(yaml.safe_dump(config))
    ct_cache.hf_hub_download = lambda **kw: str(repo / kw["filename"])
    ct_cache.snapshot_download = lambda *a, **kw: str(repo)
    shutil.rmtree(OUT / name, ignore_errors=True)
    ct_cache.save_transcoders_to_cache(name, cache_dir=OUT, device=CPU, dtype=F32)
    transcoders, _ = ct_cache.load_transcoders_from_cache(name, cache_dir=OUT, device=CPU,
                                                          dtype=F32, lazy_decoder=False)
    return transcoders


# ---- attribution runs --------------------------------------------------------------------------
def run_attribution(run: str, model, params: dict, ids: torch.Tensor) -> dict:
    graph = attribute(ids[0], model, verbose=False, **params)
    pruned = prune_graph(graph, **PRUNE)
    replacement, completeness = compute_graph_scores(graph)
    tensors = {
        "input_tokens": graph.input_tokens, "active_features": graph.active_features,
        "activation_values": graph.activation_values,
        "selected_features": graph.selected_features,
        "logit_targets": graph.logit_token_ids, "logit_probabilities": graph.logit_probabilities,
        "adjacency_matrix": graph.adjacency_matrix, "node_mask": pruned.node_mask,
        "edge_mask": pruned.edge_mask, "cumulative_scores": pruned.cumulative_scores,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT / f"{run}.safetensors"))
    folder = OUT / "neuronpedia"
    create_graph_files(graph, slug=run, output_path=str(folder), scan=graph.scan, **PRUNE)
    n = len(graph.selected_features)
    meta = {"run": run, "transcoders": RUNS[run][0], "attribute_kwargs": params, "prune": PRUNE,
            "input_string": graph.input_string,
            "logit_token_strings": [t.token_str for t in graph.logit_targets],
            "n_active_features": int(graph.active_features.shape[0]), "n_selected_features": n,
            "n_nodes": int(graph.adjacency_matrix.shape[0]), "scan": graph.scan,
            "graph_scores": {"replacement": replacement, "completeness": completeness},
            "n_kept_nodes": int(pruned.node_mask.sum()), "n_kept_edges": int(pruned.edge_mask.sum())}
    print(f"{run:11s} active {meta['n_active_features']:4d} selected {n:4d} nodes "
          f"{meta['n_nodes']:4d} logits {graph.logit_token_ids.tolist()} kept "
          f"{meta['n_kept_nodes']}/{meta['n_kept_edges']} scores "
          f"({replacement:.4f}, {completeness:.4f})")
    assert params["max_feature_nodes"] is None or n < meta["n_active_features"]
    return meta


def llama_cases(g: torch.Generator, tmp: Path, ids: torch.Tensor) -> dict:
    folder = OUT / "model"  # no "llama" in the path: TL would skip reading config.json
    hf, tok = save_model(llama_config(), folder, g)
    with torch.no_grad():
        hf_logits = hf(ids).logits  # [1,S,V]
    cfg = HookedTransformerConfig(**convert_hf_model_config(str(folder)), dtype=F32,
                                  device="cpu")
    cfg.tokenizer_name = str(folder)  # create_graph_files reloads the tokenizer by this name
    meta, logits = {}, {"hf_logits": hf_logits[0]}
    for case in ("clt", "plt"):
        model = replacement_model(cfg, hf, tok, wc.convert_llama_weights,
                                  write_transcoders(case, "tiny-llama", g, tmp))
        with torch.no_grad():
            logits[f"{case}_replacement_logits"] = model(ids)[0]
        err = (logits[f"{case}_replacement_logits"] - hf_logits[0]).abs().max().item()
        print(f"{case}: replacement-model logits vs HF max|d| = {err:.2e}")
        assert err < 1e-4, err
        for run, (c, params) in RUNS.items():
            if c == case:
                meta[run] = run_attribution(run, model, params, ids)
    save_file(logits, str(OUT / "llama_logits.safetensors"))
    return meta


def gemma3_case(g: torch.Generator, tmp: Path, ids: torch.Tensor) -> dict:
    """HF vs TL vs circuit-tracer's replacement model on a model whose RoPE base differs by
    layer (oracles.md 3.3: the replacement model shares the last layer's RoPE tables)."""
    folder = OUT / "gemma3"
    hf, tok = save_model(gemma3_config(), folder, g)
    cfg = gemma3_tl_config(folder)
    plain = HookedTransformer(cfg, tokenizer=tok)
    plain.load_and_process_state_dict(wc.convert_gemma_weights(hf, cfg), fold_ln=False,
                                      center_writing_weights=False, center_unembed=False,
                                      fold_value_biases=False)
    transcoders = write_transcoders("gemma3_plt", "tiny-gemma3", g, tmp)
    model = replacement_model(cfg, hf, tok, wc.convert_gemma_weights, transcoders)
    with torch.no_grad():
        out = {"hf_logits": hf(ids).logits[0], "tl_logits": plain(ids)[0],
               "ct_replacement_logits": model(ids)[0]}
    save_file(out, str(OUT / "gemma3_logits.safetensors"))
    tl_err = (out["tl_logits"] - out["hf_logits"]).abs().max().item()
    ct_err = (out["ct_replacement_logits"] - out["hf_logits"]).abs().max().item()
    print(f"gemma3: TL vs HF max|d| = {tl_err:.2e}; circuit-tracer replacement vs HF "
          f"max|d| = {ct_err:.2e}")
    assert tl_err < 1e-4 and ct_err > 1e-2, (tl_err, ct_err)
    return {"tl_vs_hf_max_abs": tl_err, "ct_replacement_vs_hf_max_abs": ct_err}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(OUT / "neuronpedia", ignore_errors=True)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ids = torch.tensor([TOKENS])  # [1,S]
    with tempfile.TemporaryDirectory() as tmp:
        meta = {"tokens": TOKENS, "runs": llama_cases(g, Path(tmp), ids),
                "gemma3": gemma3_case(g, Path(tmp), ids)}
    (OUT / "neuronpedia" / "graph-metadata.json").unlink(missing_ok=True)
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    packages = ("circuit-tracer", "transformer-lens", "transformers", "torch", "tokenizers",
                "safetensors", "pydantic")
    versions = {p: md.version(p) for p in packages} | {"python": sys.version.split()[0]}
    (OUT / "VERSION").write_text("".join(f"{k} {v}\n" for k, v in versions.items()))
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
