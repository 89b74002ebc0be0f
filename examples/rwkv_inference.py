"""RWKV inference: next-token figures, state hook shapes, cached-state generation and a state
knockout, on a real RWKV-6/7 world model when one is in the HF cache, else on a tiny random
RWKV model built on the fly (no download, nothing to configure).

With ``RWKV/v6-Finch-1B6-HF`` or ``RWKV/RWKV7-Goose-World3-1.5B-HF`` cached (or ``--model``
pointing at an RWKV folder / BlinkDL ``.pth``), the top-k of ``"def fibonacci(n):\\n    "``
is printed next to the reference figures of candle-mi-inventory §5.12.

    python examples/rwkv_inference.py            # real model if cached, else tiny random
    python examples/rwkv_inference.py --tiny     # always the tiny random model
"""

from __future__ import annotations

import argparse

import torch

import torch_mi as mi
from torch_mi.backends.rwkv import GenericRwkv, translate_rwkv6, translate_rwkv7
from torch_mi.hooks.state import StateKnockoutSpec
from torch_mi.interp.rwkv_state import run_state_knockout
from torch_mi.world_tokenizer import WorldTokenizer

PROMPT = "def fibonacci(n):\n    "
# candle-mi-inventory §5.12: (top ids, top logits or None, top-1 logit, p(top-1))
REFERENCE = {
    "RWKV/v6-Finch-1B6-HF": ([1942, 98, 5170, 42178, 36], None, 4.7979, 0.5975),
    "RWKV/RWKV7-Goose-World3-1.5B-HF": (
        [1942, 98, 5170, 36, 42178, 103, 42175, 7560, 121, 7334],
        [7.5585, 5.9269, 5.8649, 4.7785, 4.2776, 4.1880, 3.7979, 3.7510, 3.5133, 3.4919],
        7.5585, 0.5466),
}


def cached_real_model() -> tuple[str, str] | None:
    """(repo id, local folder) of the first reference model in the HF cache, or None."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    for repo in REFERENCE:
        try:
            return repo, snapshot_download(repo, local_files_only=True)
        except Exception:  # not cached (or the cache is unreadable): try the next one
            continue
    return None


def tiny_random_model(version: str = "v7", seed: int = 0) -> mi.MIModel:
    """A 3-layer random RWKV (D=128) with a byte-level world vocabulary (ids 1..256 = bytes)."""
    hf = {"hidden_size": 128, "num_hidden_layers": 3, "vocab_size": 320}
    if version == "v6":
        config = translate_rwkv6({**hf, "model_type": "rwkv6", "head_size": 32,
                                  "num_attention_heads": 32, "attention_hidden_size": 128,
                                  "layer_norm_epsilon": 1e-5})
    else:
        config = translate_rwkv7({**hf, "model_type": "rwkv7", "head_dim": 32})
    backend = GenericRwkv.empty(config, "cpu", torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in backend.named_parameters():
            noise = torch.randn(param.shape, generator=gen) * 0.3
            is_norm_weight = name.endswith("weight") and param.dim() == 1
            param.copy_(noise + (1.0 if is_norm_weight else 0.0))
    table = [None] + [bytes([b]) for b in range(256)]
    return mi.MIModel(backend, WorldTokenizer(table, vocab_size=config.vocab_size),
                      source=f"tiny random RWKV-{version[1]}")


def show_top(model: mi.MIModel, reference: tuple | None, k: int = 10) -> None:
    ids = model.encode(PROMPT)  # [1,S]; the world tokenizer adds no BOS
    logits = model.forward(ids, last_logits_only=True).output()[0, -1].float()  # [V]
    probs = torch.softmax(logits, -1)
    top = logits.topk(k)
    print(f"prompt ids: {ids[0].tolist()}")
    print(f"top-{k} next tokens after {PROMPT!r}:")
    for rank, (logit, i) in enumerate(zip(top.values.tolist(), top.indices.tolist(),
                                          strict=True)):
        print(f"  {rank + 1:>2}. id {i:>5} {model.tokenizer.decode_token(i)!r:<12} "
              f"logit {logit:8.4f}  p {float(probs[i]):.4f}")
    if reference is not None:
        ref_ids, ref_logits, ref_top1, ref_p = reference
        n = len(ref_ids)
        same = top.indices[:n].tolist() == ref_ids
        print(f"reference top-{n} ids {ref_ids}: {'match' if same else 'DIFFER'}")
        print(f"reference top-1 logit {ref_top1} (ours {top.values[0]:.4f}), p {ref_p} "
              f"(ours {float(probs[top.indices[0]]):.4f})")
        if ref_logits is not None:
            gap = (top.values[:n] - torch.tensor(ref_logits)).abs().max()
            print(f"largest top-{n} logit difference from the reference: {gap:.5f}")


def show_hooks(model: mi.MIModel) -> None:
    ids = model.encode(PROMPT)
    last = model.num_layers - 1
    spec = mi.HookSpec().capture(f"blocks.{last}.rwkv.hook_state",
                                 f"blocks.{last}.rwkv.hook_decay",
                                 f"blocks.{last}.hook_resid_post")
    cache = model.forward(ids, spec)
    for point in spec.captures():
        print(f"  {point}: {list(cache[point].shape)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="an RWKV folder, repo id or .pth")
    parser.add_argument("--tiny", action="store_true", help="use the tiny random model")
    parser.add_argument("--version", choices=("v6", "v7"), default="v7",
                        help="tiny model version (default v7)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    reference = None
    if args.model:
        model = mi.MIModel.from_pretrained(args.model)
    elif not args.tiny and (found := cached_real_model()) is not None:
        repo, folder = found
        model, reference = mi.MIModel.from_pretrained(folder), REFERENCE[repo]
    else:
        model = tiny_random_model(args.version)
    print(model)
    print(f"layers {model.num_layers}, hidden {model.hidden_size}, vocab {model.vocab_size}, "
          f"heads {model.num_heads}")
    show_top(model, reference)
    print("state hook shapes (last layer):")
    show_hooks(model)
    cached = model.generate(PROMPT, args.max_new_tokens, ignore_eos=True)
    again = model.generate(PROMPT, args.max_new_tokens, ignore_eos=True, recompute=True)
    print(f"greedy continuation: {cached.generated_text!r}")
    print(f"cached state == recompute: {cached.token_ids == again.token_ids}")
    result = run_state_knockout(model, PROMPT, StateKnockoutSpec().position(0))
    print(f"state knockout of token 0 at every layer: KL {result.kl_divergence():.6g}")


if __name__ == "__main__":
    main()
