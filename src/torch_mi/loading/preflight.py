"""Checks run between reading a checkpoint's index and allocating the model.

A config is only a claim: ``num_hidden_layers: 1000000`` would have the allocator (or a
Python loop over a million blocks) run for minutes before the checkpoint is even looked at.
So before anything is allocated, the parameter count the config implies is turned into
bytes and compared with the memory actually free (``psutil`` for RAM, the CUDA driver for
GPUs), and with the number of values the checkpoint really holds; both refusals state the
numbers. Both checks are arithmetic on the config and the tensor index: microseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psutil
import torch

from ..backends.registry import WeightMap
from ..errors import ConfigError, WeightError
from .weights import check_names

# Below both limits a model is allocated before its shapes are compared (the load names
# each mismatch); above either, the config must first be covered by the checkpoint.
DETAILED_LAYERS = 4096
CHEAP_BYTES = 256 * 1024 * 1024
# The config fields whose product decides the size; named in the messages.
SIZE_FIELDS = ("num_layers", "hidden_size", "intermediate_size", "vocab_size",
               "num_attention_heads", "num_kv_heads", "head_dim")


def format_bytes(count: float) -> str:
    """1536 -> '1.5 KiB' (binary units, as the memory tools print them)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def available_memory(device: torch.device) -> tuple[int, str]:
    """(bytes free for new tensors on ``device``, what was measured)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free memory on {device}"
    return int(psutil.virtual_memory().available), "available RAM"


def describe_sizes(config: Any) -> str:
    """'num_layers=2, hidden_size=64, ...' for the size fields the config has."""
    return ", ".join(f"{name}={getattr(config, name)}" for name in SIZE_FIELDS
                     if hasattr(config, name))


def parameter_count(config: Any, checkpoint_values: int) -> int:
    """What the config implies (``num_parameters()``), else what the checkpoint holds."""
    count = getattr(config, "num_parameters", None)
    return int(count()) if callable(count) else checkpoint_values


def check_memory(config: Any, checkpoint_values: int, device: torch.device, dtype: torch.dtype,
                 where: str) -> int:
    """ConfigError, with the estimate and the free memory, if the model cannot fit; returns
    the estimated bytes."""
    count = parameter_count(config, checkpoint_values)
    needed = count * dtype.itemsize
    free, what = available_memory(device)
    if needed > free:
        raise ConfigError(
            f"{where}: the config ({describe_sizes(config)}) implies {count:,} parameters, "
            f"an estimated {format_bytes(needed)} in {_dtype_name(dtype)}, but "
            f"only {format_bytes(free)} of {what} is left; refused before allocating anything. "
            f"Check these sizes against the checkpoint, load in bfloat16, or free memory")
    return needed


def check_coverage(config: Any, checkpoint_values: int, dtype: torch.dtype, where: str) -> None:
    """WeightError if the checkpoint holds fewer values than the config has parameters:
    such a config cannot belong to it (a 2-layer checkpoint under a 1000-layer config)."""
    count = getattr(config, "num_parameters", None)
    if not callable(count) or count() <= checkpoint_values:
        return
    raise WeightError(
        f"{where}: the config ({describe_sizes(config)}) implies {count():,} parameters (an "
        f"estimated {format_bytes(count() * dtype.itemsize)} in {_dtype_name(dtype)}) but the "
        f"checkpoint holds only {checkpoint_values:,} values; the config does not belong to "
        f"these weights (check num_hidden_layers and the other sizes). Refused before "
        f"allocating anything")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_before_allocating(config: Any, names: Sequence[str], numels: Iterable[int],
                            weight_map: Callable[[], WeightMap], *, device: torch.device,
                            dtype: torch.dtype, where: str,
                            skip_prefixes: tuple[str, ...] = ()) -> WeightMap:
    """Memory, coverage and name checks; returns the weight map for the load.

    A model that is small and of ordinary depth is cheap to allocate, and the load then
    lists every missing, unused and mis-shaped tensor in one error. For anything bigger the
    coverage check refuses a config the checkpoint cannot fill before even the weight map
    (ten entries per layer) is built, and the names are compared before allocating."""
    total = sum(numels)
    needed = check_memory(config, total, device, dtype, where)
    if needed <= CHEAP_BYTES and getattr(config, "num_layers", 0) <= DETAILED_LAYERS:
        return weight_map()
    check_coverage(config, total, dtype, where)
    weights = weight_map()
    _named_check(names, weights, skip_prefixes, where)
    return weights


def _named_check(names: Sequence[str], weights: WeightMap, skip_prefixes: tuple[str, ...],
                 where: str) -> None:
    try:
        check_names(names, weights, skip_prefixes=skip_prefixes)
    except WeightError as exc:
        raise WeightError(f"{where}: {exc}") from None
