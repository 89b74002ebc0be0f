"""The malloc policy: freed memory kept for reuse on CPU loads, the user's choice respected.

The policy is process-wide, so each case runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import torch_mi as mi
from torch_mi.errors import ConfigError
from torch_mi.memory import allocator

glibc = pytest.mark.skipif(allocator._libc() is None, reason="glibc malloc only")


def run_fresh(code: str, **env: str) -> dict:
    """Run ``code`` in a new interpreter (without this process's allocator settings); it
    prints one JSON line."""
    clean = {k: v for k, v in os.environ.items()
             if k != allocator.ENV and k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**clean, **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


POLICY = """
    import json
    from torch_mi.memory import allocator
    {before}
    print(json.dumps({{"policy": allocator.apply_default_policy()}}))
"""


@glibc
@pytest.mark.parametrize(("env", "before", "expected"), [
    ({}, "", "keep up to 1024 MiB"),
    ({allocator.ENV: "256"}, "", "keep up to 256 MiB"),
    ({allocator.ENV: "0"}, "", "glibc defaults (TORCH_MI_KEEP_FREED_MEMORY=0)"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, "", "left to the user (GLIBC_TUNABLES)"),
    ({"MALLOC_TRIM_THRESHOLD_": "100"}, "", "left to the user (MALLOC_*_"),
    ({"LD_PRELOAD": "/nonexistent/libjemalloc.so"}, "", "left to the user (a preloaded"),
    ({}, "allocator.fix_malloc_mmap_threshold()", "left to the user (fix_malloc_mmap"),
])
def test_default_policy_respects_the_users_choice(env, before, expected):
    # 1 GiB is the default on machines with >= 16 GiB (this one has more).
    if not env and not before and allocator.default_limit() < (1 << 30):
        pytest.skip("small machine: the default limit is a sixteenth of RAM")
    assert run_fresh(POLICY.format(before=before), **env)["policy"].startswith(expected)


FAULTS = """
    import json, resource, torch
    from torch_mi.memory import allocator
    {setup}
    def faults_of_one_cycle():
        kept = [torch.ones(1 << 20) for _ in range(64)]  # 64 blocks of 4 MiB: 256 MiB
        del kept
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        kept = [torch.ones(1 << 20) for _ in range(64)]
        del kept
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    faults_of_one_cycle()
    print(json.dumps({{"faults": faults_of_one_cycle()}}))
"""


@glibc
def test_kept_memory_is_reused_without_page_faults():
    """The mechanism itself: 256 MiB allocated, freed and allocated again faults every page
    in anew when freed memory goes back to the kernel (forced here with the measuring mode;
    glibc's defaults usually do the same, depending on where the heap landed), and almost
    none once freed memory is kept."""
    pages = (256 << 20) // os.sysconf("SC_PAGE_SIZE")
    returned = run_fresh(FAULTS.format(setup="allocator.fix_malloc_mmap_threshold()"))["faults"]
    kept = run_fresh(FAULTS.format(setup="allocator.keep_freed_memory(512 << 20)"))["faults"]
    assert returned > 0.9 * pages, (returned, pages)
    assert kept < 0.05 * pages, (kept, pages)


@pytest.mark.parametrize("text", ["lots", "-1", "1.5"])
def test_malformed_setting_is_refused_before_loading(monkeypatch, tiny_models, text):
    monkeypatch.setenv(allocator.ENV, text)
    with pytest.raises(ConfigError, match=f"{allocator.ENV}=.*whole number of MiB"):
        mi.MIModel.from_pretrained(tiny_models["llama"].path, device="cpu")


@pytest.mark.parametrize("limit", [-1, 1.5, True, "1"])
def test_keep_freed_memory_needs_a_byte_count(limit):
    with pytest.raises(ConfigError, match="byte count"):
        allocator.keep_freed_memory(limit)


def test_cpu_loads_apply_the_policy(monkeypatch, tiny_models):
    calls = []
    monkeypatch.setattr(allocator, "apply_default_policy", lambda: calls.append(1) or "x")
    mi.MIModel.from_pretrained(tiny_models["llama"].path, device="cpu")
    assert calls == [1]
