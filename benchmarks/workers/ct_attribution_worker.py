"""circuit-tracer's ``attribute()`` on a local llama-architecture HF folder with per-layer
transcoders, in a fresh process (circuit-tracer's own venv); prints seconds and peak RSS as
JSON and saves the graph tensors for the cross-check.

Usage: python -m benchmarks.workers.ct_attribution_worker MODEL_DIR TRANSCODER_DIR IDS_FILE
       OUT_FILE PARAMS_JSON

MODEL_DIR: an HF folder (transformers 4.57.3 reads it; its path must not contain "llama", or
TransformerLens 3.2.1 skips config.json). TRANSCODER_DIR: ``layer_{l}.safetensors`` in
circuit-tracer's per-layer format. IDS_FILE: safetensors with ``ids`` [S] int64, starting
with the model's BOS. PARAMS_JSON: ``{"max_n_logits", "desired_logit_prob", "batch_size",
"max_feature_nodes"}``.

The model is built as in circuit-tracer's TransformerLens recipe for a local folder (config
from ``convert_hf_model_config``, weights from ``convert_llama_weights``), with two fixes
TL 3.2.1 needs for SmolLM2-like folders: its llama branch ignores ``rope_theta`` (set here,
read from config.json, where transformers 5 nests it under ``rope_parameters`` and 4.57's
LlamaConfig would silently use 10000; the HF model gets the same fix), and ``n_ctx`` is
capped so TL does not allocate 8192x8192 masks per layer.
"""

import json
import os
import sys
import time

import torch

from benchmarks.workers.clt_worker import _status, reset_peak  # /proc readings, one copy

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))




def rope_theta(model_dir: str) -> float:
    """From config.json itself: transformers 5 writes it under ``rope_parameters``, which
    4.57 does not read (its LlamaConfig would silently fall back to 10000)."""
    with open(os.path.join(model_dir, "config.json")) as handle:
        raw = json.load(handle)
    theta = raw.get("rope_theta") or (raw.get("rope_parameters") or {}).get("rope_theta")
    return float(theta or 10000.0)


def hf_model(model_dir: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    config.rope_theta = rope_theta(model_dir)
    return AutoModelForCausalLM.from_pretrained(model_dir, config=config,
                                                dtype=torch.float32).eval()


def tl_config(model_dir: str, n_ctx: int):
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    cfg = convert_hf_model_config(model_dir)
    cfg.update(rotary_base=rope_theta(model_dir), n_ctx=min(cfg["n_ctx"], n_ctx),
               tokenizer_name=model_dir)
    return HookedTransformerConfig(**cfg, dtype=torch.float32, device="cpu")


def tokenizer(model_dir: str, scratch: str):
    """A tokenizer.json read directly (a folder saved by transformers 5 has a
    tokenizer_config.json that 4.57 cannot load), with the config's BOS declared special so
    circuit-tracer keeps ids that already start with it instead of prepending another; saved
    and re-read under 4.57 because TransformerLens needs its ``name_or_path``."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    with open(os.path.join(model_dir, "config.json")) as handle:
        bos = json.load(handle).get("bos_token_id")
    if bos is not None:
        tok.bos_token = tok.convert_ids_to_tokens(bos)
    tok.save_pretrained(scratch)
    return AutoTokenizer.from_pretrained(scratch)


def build(model_dir: str, tc_dir: str, n_ctx: int, scratch: str):
    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel,
    )
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set
    from transformer_lens.pretrained import weight_conversions as wc

    hf = hf_model(model_dir)
    cfg = tl_config(model_dir, n_ctx)
    model = TransformerLensReplacementModel(cfg, tokenizer=tokenizer(model_dir, scratch))
    model.load_and_process_state_dict(wc.convert_llama_weights(hf, cfg), fold_ln=False,
                                      center_writing_weights=False, center_unembed=False,
                                      fold_value_biases=False)
    paths = {layer: os.path.join(tc_dir, f"layer_{layer}.safetensors")
             for layer in range(cfg.n_layers)}
    transcoders = load_transcoder_set(paths, scan="bench-random-plt",
                                      feature_input_hook="ln2.hook_normalized",
                                      feature_output_hook="hook_mlp_out",
                                      device=torch.device("cpu"), dtype=torch.float32,
                                      lazy_encoder=False, lazy_decoder=False)
    model._configure_replacement_model(transcoders)
    return hf, model


def read_args() -> tuple[str, str, torch.Tensor, str, dict]:
    """(model dir, transcoder dir, ids [S], output file, attribute() params) from argv."""
    from safetensors.torch import load_file

    model_dir, tc_dir, ids_file, out_file, params_json = sys.argv[1:6]
    return model_dir, tc_dir, load_file(ids_file)["ids"], out_file, json.loads(params_json)


class Marks:
    """Wall-clock and /proc RSS readings around loading and attribution (one per worker)."""

    def __init__(self) -> None:
        reset_peak()
        self.baseline, self.start = _status("VmRSS"), time.perf_counter()

    def loaded(self) -> None:
        self.load_end, self.load_peak = time.perf_counter(), _status("VmHWM")
        reset_peak()
        self.before_attr = _status("VmRSS")

    def attributed(self) -> None:
        self.end, self.attr_peak = time.perf_counter(), _status("VmHWM")


def report(graph, out_file: str, marks: Marks, **extra) -> None:
    """Save the graph tensors for the cross-check and print the figures as one JSON line."""
    from safetensors.torch import save_file

    adjacency = graph.adjacency_matrix  # the same name in both libraries
    save_file({"adjacency_matrix": adjacency.contiguous(),
               "active_features": graph.active_features.contiguous(),
               "selected_features": graph.selected_features.contiguous(),
               "logit_targets": graph.logit_token_ids.contiguous(),
               "logit_probabilities": graph.logit_probabilities.contiguous()}, out_file)
    m = marks
    peak = max(m.load_peak, m.attr_peak)
    print(json.dumps({
        "load_s": m.load_end - m.start, "attribute_s": m.end - m.load_end,
        "seconds": m.end - m.start, "baseline_rss": m.baseline, "peak_rss": peak,
        "peak_growth": peak - m.baseline, "attribute_peak_growth": m.attr_peak - m.before_attr,
        "n_active": int(graph.active_features.shape[0]),
        "n_selected": int(graph.selected_features.shape[0]),
        "n_nodes": int(adjacency.shape[0]), **extra}))


def main() -> None:
    from circuit_tracer import attribute

    model_dir, tc_dir, ids, out_file, params = read_args()
    marks = Marks()
    scratch = os.path.join(os.path.dirname(os.path.abspath(out_file)), "ct_tokenizer")
    hf, model = build(model_dir, tc_dir, max(256, 2 * len(ids)), scratch)
    marks.loaded()
    graph = attribute(ids, model, verbose=False, **params)
    marks.attributed()
    with torch.no_grad():  # exactness of the replacement model, outside the timing
        diff = (model(ids[None]) - hf(ids[None]).logits).abs().max().item()
    report(graph, out_file, marks, replacement_vs_hf_max_abs=diff)


if __name__ == "__main__":
    main()
