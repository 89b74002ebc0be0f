"""``torch-mi memory``: what a forward with a capture spec will cost, estimated BEFORE the run,
then measured (peak RSS; peak allocated VRAM on CUDA) next to the estimate."""

from __future__ import annotations

import argparse

import torch
from rich.table import Table

from ...errors import InputError
from ...hooks.spec import HookSpec
from ...memory import estimate_memory, fix_malloc_mmap_threshold, measure_forward, require_fits
from ...memory.snapshot import MIB
from ..checks import at_least, non_empty
from ..common import add_model_args, checked_plot, console, emit_json, load_model

SMALL_FORWARD_BYTES = 16 * MIB
PRESETS = {
    "none": (),
    "all": None,  # every hook point of the model
    "resid": ("ResidPre", "ResidMid", "ResidPost"),  # every resid_pre/mid/post
    "attn": ("AttnPattern",),
}


def register(sub) -> None:
    p = sub.add_parser("memory", help="memory estimate of a forward, then the measured peak")
    p.add_argument("prompt", nargs="?", default=None,
                   help="text to run (default: --seq-len synthetic tokens)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="sequence length without a prompt (default 128)")
    p.add_argument("--batch", type=int, default=1, help="batch size (the prompt is repeated)")
    p.add_argument("--capture", choices=sorted(PRESETS), default="none",
                   help="points to capture: all, none, resid (resid_pre/mid/post of every "
                        "layer) or attn (every layer's attention pattern)")
    p.add_argument("--hook", action="append", default=[], metavar="POINT",
                   help="also capture this hook point (repeatable), e.g. blocks.3.attn.hook_pattern")
    p.add_argument("--no-run", action="store_true", help="only estimate; do not run the forward")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="bar chart of the breakdown")
    add_model_args(p)
    p.set_defaults(run=run)


def build_spec(model, preset: str, hooks: list[str]) -> HookSpec:
    """The capture spec of a preset plus explicit hook strings (validated by the estimate)."""
    variants = PRESETS[preset]
    points = [p for p in model.hook_points() if variants is None or p.variant in variants]
    return HookSpec().capture(*points, *hooks)


def check(args: argparse.Namespace) -> None:
    """Option values, before the model loads."""
    at_least("--batch", args.batch, 1)
    at_least("--seq-len", args.seq_len, 1)
    if args.prompt is not None and args.seq_len is not None:
        raise InputError("give a prompt or --seq-len, not both")
    non_empty("--hook", args.hook)


def check_context(model, seq_len: int, from_prompt: bool) -> None:
    """Refuse, naming the option, a length past the model's trained context (the forward
    would refuse it anyway, after the estimate, without saying which option asked)."""
    limit_of = getattr(model.backend, "context_limit", None)
    limit = limit_of() if callable(limit_of) else None
    if limit is not None and seq_len > limit:
        what = f"the prompt has {seq_len} tokens" if from_prompt else f"--seq-len {seq_len}"
        raise InputError(f"{what}, which needs {seq_len} positions, beyond this model's "
                         f"context of {limit} (max_position_embeddings); give --seq-len "
                         f"{limit} or less")


def input_ids(model, args: argparse.Namespace, seq_len: int) -> torch.Tensor:
    """[batch, seq] ids: the tokenised prompt, or a deterministic synthetic sequence."""
    if args.prompt is not None:
        ids = model.encode(args.prompt)  # [1,S]
    else:
        ids = (torch.arange(seq_len, device=model.device) % model.vocab_size)[None]
    return ids.expand(args.batch, -1).contiguous()


def measured_summary(report, device: torch.device, estimate_bytes: int) -> dict:
    """The measured peak growth on the estimate's device (VRAM on CUDA, else RAM)."""
    on_gpu = device.type == "cuda"
    growth = report.peak_gpu_growth_bytes() if on_gpu else report.peak_ram_growth_bytes()
    error = None if not growth else 100.0 * (estimate_bytes - growth) / growth
    return {
        "compared_with": "gpu_allocated" if on_gpu else "ram",
        "forward_peak_bytes": growth,
        "forward_peak_mb": None if growth is None else growth / MIB,
        "estimate_error_pct": error,
        "ram_peak_growth_bytes": report.peak_ram_growth_bytes(),
        "gpu_peak_growth_bytes": report.peak_gpu_growth_bytes(),
        "peak_method": report.peak_method,
        "report": report.to_dict(),
    }


def run(args: argparse.Namespace) -> int:
    check(args)
    plot_file = checked_plot(args)
    if not args.no_run:
        fix_malloc_mmap_threshold()  # freed tensors leave RSS, so the peak is honest
    model = load_model(args)
    prompt_ids = None if args.prompt is None else model.encode(args.prompt)
    seq_len = (args.seq_len or 128) if prompt_ids is None else prompt_ids.shape[1]
    check_context(model, seq_len, from_prompt=prompt_ids is not None)
    spec = build_spec(model, args.capture, args.hook)
    estimate = estimate_memory(model, spec, seq_len, args.batch)  # analytic: no allocation
    measured = None
    if not args.no_run:  # refused with the estimate when it cannot fit, before any tensor
        require_fits(estimate, model.device, hint="; --no-run prints the estimate alone")
        report = measure_forward(model, input_ids(model, args, seq_len), spec)
        measured = measured_summary(report, model.device, estimate.forward_bytes)
    plot = None
    if plot_file is not None:
        from ...memory.plot import plot_memory

        plot = plot_memory(estimate, plot_file,
                           measured_bytes=None if measured is None else measured["forward_peak_bytes"],
                           title=f"{model.source or 'model'}: batch {args.batch} x "
                                 f"{seq_len} tokens, capture {args.capture}")
    if args.json:
        emit_json({"model": model.source, "device": str(model.device),
                   "dtype": str(model.dtype).removeprefix("torch."), "batch": args.batch,
                   "seq_len": seq_len, "capture": args.capture, "hooks": args.hook,
                   "estimate": estimate.to_dict(), "measured": measured, "plot": plot})
        return 0
    print_tables(estimate, measured, args, model)
    if plot:
        console.print(f"chart written to {plot}")
    return 0


def print_tables(estimate, measured: dict | None, args, model) -> None:
    table = Table(title=f"Memory of one forward: batch {estimate.batch} x {estimate.seq_len} "
                        f"tokens, {estimate.dtype}, capture {args.capture}"
                        + (f" + {len(args.hook)} hooks" if args.hook else ""))
    table.add_column("category")
    table.add_column("estimate (MB)", justify="right")
    table.add_column(f"measured on {model.device.type} (MB)", justify="right")
    for name, nbytes in estimate.breakdown().items():
        table.add_row(name, f"{nbytes / MIB:,.1f}", "")
    shown = "not run" if measured is None or measured["forward_peak_mb"] is None else (
        f"{measured['forward_peak_mb']:,.1f} peak")
    table.add_row("forward", f"{estimate.forward_bytes / MIB:,.1f}", shown, style="bold")
    table.add_row("total", f"{estimate.total_bytes / MIB:,.1f}", "")
    console.print(table)
    explicit = len(estimate.explicit_layers)
    where = "the head" if estimate.peak_at == "head" else estimate.peak_at
    from ...backends.transformer import GenericTransformer

    if isinstance(model.backend, GenericTransformer):
        console.print(f"{explicit}/{len(estimate.layers)} layers take the explicit attention "
                      f"path; the forward peaks in {where}.")
    else:  # RWKV: fixed counts read off the forward code (backends/rwkv/memory_plan.py)
        console.print(f"the forward peaks in {where} (a simple estimate for "
                      f"{type(model.backend).__name__}: expect the right size, not the exact "
                      f"figure).")
    if measured is not None and measured["estimate_error_pct"] is not None:
        console.print(f"estimate vs measured: {measured['estimate_error_pct']:+.1f}% "
                      f"({measured['peak_method']})")
        if measured["forward_peak_bytes"] < SMALL_FORWARD_BYTES:
            console.print("note: below ~16 MB, allocator and Python object overhead dominate "
                          "the measurement; use a longer --seq-len to compare.")
