"""``torch-mi generate``: sample or greedy-decode a continuation."""

from __future__ import annotations

import argparse
import time

from ...errors import InputError
from ..checks import at_least, finite, non_empty
from ..common import add_model_args, console, emit_json, err_console, load_model


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate a continuation (KV cache / RWKV state)")
    p.add_argument("prompt")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--recompute", action="store_true",
                   help="re-run the full sequence each step instead of using the KV cache or RWKV state")
    add_model_args(p)
    p.set_defaults(run=run)


def check(args: argparse.Namespace) -> None:
    """Option values, before the model loads."""
    at_least("--max-new-tokens", args.max_new_tokens, 0)
    finite("--temperature", args.temperature, minimum=0.0)
    at_least("--top-k", args.top_k, 1)
    finite("--top-p", args.top_p, minimum=0.0, maximum=1.0, exclusive_min=True)
    if args.seed is not None and not 0 <= args.seed < 2 ** 64:
        raise InputError(f"--seed must be in [0, 2**64 - 1], got {args.seed}")
    non_empty("--stop", args.stop)


def run(args: argparse.Namespace) -> int:
    check(args)
    model = load_model(args)
    start = time.perf_counter()
    with err_console.status("Generating ..."):
        result = model.generate(args.prompt, args.max_new_tokens, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                                stop=args.stop, ignore_eos=args.ignore_eos,
                                recompute=args.recompute)
    seconds = time.perf_counter() - start
    if args.json:
        data = dict(vars(result))
        data["seconds"] = seconds
        emit_json(data)
        return 0
    console.print(result.prompt, end="", style="bold", markup=False)
    console.print(result.generated_text, markup=False)
    rate = result.generated_tokens / seconds if seconds > 0 else 0.0
    err_console.print(f"[dim]{result.generated_tokens} tokens in {seconds:.2f} s "
                      f"({rate:.1f} tok/s), stop: {result.stop_reason}[/dim]")
    return 0
