"""Fuzzing the loaders with hypothesis: mutated config.json dicts, byte- and field-level
mutations of a valid safetensors file, byte mutations of a valid GGUF file.

The property is the same everywhere: the outcome is a valid load (or parse) or an MIError
subclass, never another exception, and never slower than a per-case time limit (enforced
with SIGALRM, so a hang fails the case instead of the suite). Seeds are fixed
(``derandomize=True``) and example counts bounded so each test takes a few seconds.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torch_mi as mi
from tests.reliability.loading_micro import (
    gguf_file,
    gguf_int_fields,
    gguf_micro_kvs,
    gguf_micro_tensors,
    gguf_offsets,
    micro_tensors,
    write_folder,
)
from torch_mi.backends.registry import resolve_hf
from torch_mi.loading.preflight import check_before_allocating

CASE_LIMIT_S = 5.0
FUZZ = dict(derandomize=True, deadline=None, database=None, print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                   HealthCheck.data_too_large])


class CaseTimeout(Exception):
    """A fuzz case ran past CASE_LIMIT_S (a hang or a runaway allocation)."""


@contextlib.contextmanager
def time_limit(seconds: float = CASE_LIMIT_S) -> Iterator[None]:
    """Raise CaseTimeout in the main thread if the block runs longer than ``seconds``."""
    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"fuzz case ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(call: Callable[[], Any]) -> str:
    """'ok' or the MIError class name; any other exception (or a timeout) propagates."""
    start = time.perf_counter()
    with time_limit():
        try:
            call()
            result = "ok"
        except mi.MIError as exc:
            assert str(exc), "an MIError must say what was wrong"
            result = type(exc).__name__
    assert time.perf_counter() - start < CASE_LIMIT_S
    return result


# ---- config dicts ----------------------------------------------------------------------------
@functools.cache
def base_configs() -> dict[str, dict[str, Any]]:
    """The config.json dict of every tiny-model variant (what save_pretrained writes)."""
    from tests.helpers.tiny_models import _configs

    return {name: json.loads(config.to_json_string()) for name, config in _configs().items()}


# Keys any translator reads, so mutations also add them (not only change present ones).
READ_KEYS = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
             "vocab_size", "num_key_value_heads", "head_dim", "rms_norm_eps", "norm_epsilon",
             "rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor",
             "original_max_position_embeddings", "max_position_embeddings", "sliding_window",
             "use_sliding_window", "max_window_layers", "layer_types", "hidden_act",
             "hidden_activation", "tie_word_embeddings", "attention_bias", "mlp_bias",
             "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
             "sliding_window_pattern", "rope_local_base_freq", "model_type", "text_config",
             "use_bias", "eos_token_id", "bos_token_id")
ROPE_KEYS = ("rope_type", "type", "rope_theta", "factor", "original_max_position_embeddings",
             "low_freq_factor", "high_freq_factor", "attention_factor", "beta_fast",
             "beta_slow", "mscale", "mscale_all_dim", "truncate", "short_factor",
             "long_factor", "partial_rotary_factor", "full_attention", "sliding_attention")

plausible = st.one_of(
    st.integers(0, 70), st.sampled_from([1e-6, 1e-5, 0.5, 1.0, 2.0, 8.0, 1e4, 1e6]),
    st.booleans(), st.none(),
    st.sampled_from(["default", "linear", "yarn", "longrope", "llama3", "dynamic", "silu",
                     "gelu_pytorch_tanh", "full_attention", "sliding_attention"]),
)
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-3, 70), st.sampled_from([0, 1, 2, 3, 2**31, 2**40, 10**6, 10**9, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 1e-300, 1e308, math.nan, math.inf, -math.inf, 0.5, 2.0]),
    st.sampled_from(["", "llama", "default", "linear", "yarn", "longrope", "llama3", "dynamic",
                     "silu", "gelu", "full_attention", "sliding_attention", "nan", "1e-5"]),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(st.sampled_from(ROPE_KEYS), children, max_size=4)),
    max_leaves=12,
)


@st.composite
def mutated_configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A base tiny config with 1-4 mutations: set a key, delete a key, or set a key inside
    a nested RoPE dict."""
    name = draw(st.sampled_from(sorted(base_configs())))
    config = json.loads(json.dumps(base_configs()[name]))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "set", "delete", "nested"]))
        if kind == "delete" and config:
            config.pop(draw(st.sampled_from(sorted(config))))
        elif kind == "nested":
            holder = config.setdefault(draw(st.sampled_from(["rope_parameters", "rope_scaling"])),
                                       {})
            if isinstance(holder, dict):
                holder[draw(st.sampled_from(ROPE_KEYS))] = draw(json_values)
        else:
            keys = tuple(config) if config and draw(st.integers(0, 3)) else READ_KEYS
            config[draw(st.sampled_from(keys))] = draw(
                plausible if draw(st.booleans()) else json_values)
    return name, config


def _translate_and_plan(base: str, config: dict[str, Any]) -> None:
    """What the folder loader does up to allocation: translate, then the preflight checks
    against a checkpoint that holds exactly what the base config implies."""
    reference_row, reference = resolve_hf(base_configs()[base])
    names = list(reference_row.weight_map(reference).targets)
    row, translated = resolve_hf(config, names)
    check_before_allocating(translated, names, [reference.num_parameters()],
                            lambda: row.weight_map(translated), device=torch.device("cpu"),
                            dtype=torch.float32, where="fuzzed config.json")


@settings(max_examples=1000, **FUZZ)
@given(case=mutated_configs())
def test_mutated_config_dicts_translate_or_refuse(case):
    base, config = case
    assert outcome(lambda: _translate_and_plan(base, config)) in (
        "ok", "ConfigError", "WeightError")


def test_every_base_config_is_valid():
    """The fuzz starts from valid configs: each one plans cleanly."""
    for base, config in base_configs().items():
        assert outcome(lambda b=base, c=config: _translate_and_plan(b, c)) == "ok", base


@st.composite
def micro_config_mutations(draw: st.DrawFn) -> dict[str, Any]:
    from tests.reliability.loading_micro import MICRO

    config = dict(MICRO)
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 3)) == 0 and config:
            config.pop(draw(st.sampled_from(sorted(config))))
        else:
            keys = tuple(config) if draw(st.integers(0, 3)) else READ_KEYS
            config[draw(st.sampled_from(keys))] = draw(
                plausible if draw(st.booleans()) else json_values)
    return config


@settings(max_examples=200, **FUZZ)
@given(config=micro_config_mutations())
def test_mutated_micro_config_loads_or_refuses(tmp_path_factory, config):
    """End to end through from_pretrained with real weights (2-layer micro LLaMA)."""
    folder = _micro_folder(tmp_path_factory)
    (folder / "config.json").write_text(json.dumps(config))
    assert outcome(lambda: mi.MIModel.from_pretrained(folder, device="cpu")) in (
        "ok", "ConfigError", "WeightError")


def _micro_folder(factory: pytest.TempPathFactory):
    folder = factory.getbasetemp() / "fuzz-micro"
    if not (folder / "model.safetensors").exists():
        write_folder(folder)
    return folder


# ---- safetensors files -----------------------------------------------------------------------
@functools.cache
def safetensors_base() -> tuple[bytes, int]:
    """(bytes of the micro model.safetensors, header length)."""
    from safetensors.torch import save

    raw = save(micro_tensors())
    return raw, struct.unpack("<Q", raw[:8])[0]


def _header_field(draw: st.DrawFn, field: str, current: Any) -> Any:
    """A plausible or hostile value for one field of a safetensors header entry."""
    if draw(st.integers(0, 3)) == 0:
        return draw(json_values)
    if field == "dtype":
        return draw(st.sampled_from(["F32", "F16", "BF16", "F64", "I8", "U8", "BOOL", "I64",
                                     "F8_E4M3", "F4", "f32", ""]))
    if field == "shape":
        return draw(st.lists(st.integers(-2, 64), max_size=3))
    begin, end = current if isinstance(current, list) and len(current) == 2 else (0, 0)
    delta = st.sampled_from([0, 0, 1, -1, 4, -4, 64, -64, 2**40])
    return [begin + draw(delta), end + draw(delta)]


@st.composite
def mutated_safetensors(draw: st.DrawFn) -> bytes:
    """Either a field-level edit of one or two header entries (re-serialised as JSON) or
    1-4 byte edits at uniformly drawn positions of the prefix and header, optionally with
    a cut or an insertion."""
    raw, length = safetensors_base()
    rnd = draw(st.randoms(use_true_random=False))
    if draw(st.booleans()):
        header = json.loads(raw[8:8 + length])
        for _ in range(draw(st.integers(1, 2))):
            name = draw(st.sampled_from(sorted(header)))
            entry = header[name]
            if not isinstance(entry, dict) or draw(st.integers(0, 9)) == 0:
                header[name] = draw(json_values)
                continue
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra", "drop"]))
            if field == "drop":
                entry.pop(draw(st.sampled_from(sorted(entry))), None)
            else:
                entry[field] = _header_field(draw, field, entry.get(field))
        text = json.dumps(header).encode()
        return struct.pack("<Q", len(text)) + text + raw[8 + length:]
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        at = rnd.randrange(8 + length + 64)
        data[at] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, ord("{"), ord("]"), ord('"'),
                                         ord("9"), ord("-"), ord("0"), ord(",")]))
    edit = draw(st.sampled_from(["none", "none", "cut", "insert"]))
    if edit == "cut":
        data = data[:rnd.randrange(len(data))]
    elif edit == "insert":
        at = rnd.randrange(8 + length)
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@settings(max_examples=400, **FUZZ)
@given(blob=mutated_safetensors())
def test_mutated_safetensors_load_or_refuse(tmp_path_factory, blob):
    folder = tmp_path_factory.getbasetemp() / "fuzz-safetensors"
    if not folder.exists():
        write_folder(folder)
    (folder / "model.safetensors").write_bytes(blob)
    assert outcome(lambda: mi.MIModel.from_pretrained(folder, device="cpu")) in (
        "ok", "WeightError")


# ---- GGUF files ------------------------------------------------------------------------------
@functools.cache
def gguf_base(arch: str) -> tuple[bytes, int, list[tuple[int, int]]]:
    """(bytes of the micro GGUF of ``arch``, where its tensor data starts, its integer
    fields)."""
    kvs, tensors = gguf_micro_kvs(arch), gguf_micro_tensors(arch=arch)
    raw = gguf_file(kvs, tensors)
    data_size = gguf_offsets(tensors)[-1] + len(tensors[-1][3])
    return raw, len(raw) - data_size, gguf_int_fields(kvs, tensors)


INTERESTING = (0, 1, 2, 3, 7, 8, 9, 12, 31, 32, 99, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1,
               2**40, 2**63, 2**64 - 1)


@st.composite
def mutated_gguf(draw: st.DrawFn) -> bytes:
    """1-4 edits: an integer field of the header (a count, length, value type, array
    header, scalar, dim, type id or data offset) set to an interesting value, or a byte at a
    uniformly drawn header position; sometimes a cut at a uniform position."""
    raw, data_start, fields = gguf_base(draw(st.sampled_from(["llama", "gemma3"])))
    rnd = draw(st.randoms(use_true_random=False))
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.integers(0, 2)):
            at, width = draw(st.sampled_from(fields))
            value = draw(st.sampled_from(INTERESTING)) % (1 << (8 * width))
            data[at:at + width] = value.to_bytes(width, "little")
        else:
            data[rnd.randrange(data_start)] = rnd.randrange(256)
    if draw(st.integers(0, 5)) == 0:
        data = data[:rnd.randrange(len(data))]
    return bytes(data)


@settings(max_examples=400, **FUZZ)
@given(blob=mutated_gguf())
def test_mutated_gguf_loads_or_refuses(tmp_path_factory, blob):
    path = tmp_path_factory.getbasetemp() / "fuzz.gguf"
    path.write_bytes(blob)
    assert outcome(lambda: mi.MIModel.from_pretrained(path, device="cpu")) in (
        "ok", "WeightError", "ConfigError", "TokenizerError")


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_every_gguf_base_is_valid(tmp_path, arch):
    path = tmp_path / f"{arch}.gguf"
    path.write_bytes(gguf_base(arch)[0])
    assert outcome(lambda: mi.MIModel.from_pretrained(path, device="cpu")) == "ok"


def test_the_time_limit_turns_a_hang_into_a_failure():
    """The per-case limit is real: a sleeping call is interrupted."""
    with pytest.raises(CaseTimeout), time_limit(0.2):
        time.sleep(5)
