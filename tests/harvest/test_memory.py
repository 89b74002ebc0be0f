"""Peak RSS of a harvest does not grow with the dataset (streamed documents and shards)."""

from __future__ import annotations

from torch_mi.harvest import harvest
from torch_mi.memory.tracking import track_memory

from .conftest import make_docs, write_jsonl

MIB = 1 << 20


def test_peak_rss_flat_across_dataset_sizes(tiny, tmp_path):
    # warm up every code path once, so the first measurement holds no one-off allocation
    small = tmp_path / "warm.jsonl"
    write_jsonl(small, make_docs(20, seed=4))
    harvest(tiny, small, ["blocks.1.hook_resid_post"], tmp_path / "warm", seq_len=32,
            batch_size=4, shard_tokens=32 * 8, progress=False)
    growth = {}
    for n in (20, 80, 320):
        data = tmp_path / f"d{n}.jsonl"
        write_jsonl(data, make_docs(n, seed=n, lo=10, hi=30))
        with track_memory() as mem:
            res = harvest(tiny, data, ["blocks.1.hook_resid_post"], tmp_path / f"o{n}",
                          seq_len=32, batch_size=4, shard_tokens=32 * 8, progress=False)
        growth[n] = (mem.peak_ram_bytes - mem.report.before.ram_bytes) / MIB
        assert res.manifest["num_sequences"] > n  # the data really grew (16x documents)
    # 16x the data (and shards): the peak stays within a few MiB of the small run's
    print("peak RSS growth (MiB) by documents:", growth)
    assert abs(growth[320] - growth[20]) < 6, growth
    assert abs(growth[80] - growth[20]) < 6, growth
