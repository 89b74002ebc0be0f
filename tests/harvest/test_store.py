"""ActivationStore: rows, seeded shuffle buffer, batching, probes."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from torch_mi.harvest import ActivationStore, harvest

POINT = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def stores(tiny, corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    out = {}
    for mode in ("pack", "pad"):
        harvest(tiny, corpus / "docs.jsonl", [POINT, "hook_embed"], root / mode, seq_len=32,
                batch_size=4, mode=mode, shard_tokens=32 * 6, progress=False)
        out[mode] = ActivationStore(root / mode, verify=True)
    harvest(tiny, corpus / "docs.jsonl", [POINT], root / "last", seq_len=64, batch_size=4,
            mode="pad", positions="last", progress=False)
    out["last"] = ActivationStore(root / "last")
    return out


def test_rows_drop_padding_and_match_shards(stores):
    pad = stores["pad"]
    rows = pad.load(POINT)
    mask = pad.attention_mask().bool()
    assert rows.shape == (int(mask.sum()), 64)
    ids = pad.tokens()
    cache = pad  # rows follow (sequence, position) order: check against the raw shard tensors
    from safetensors.torch import load_file

    raw = torch.cat([load_file(str(pad.root / s))[f"act.{POINT}"] for s in cache.shards])
    assert torch.equal(rows, raw[mask])
    assert ids.shape == mask.shape
    packed = stores["pack"]
    assert packed.load(POINT).shape == (packed.num_sequences * 32, 64)
    assert stores["last"].load(POINT).shape == (stores["last"].num_sequences, 64)


def test_seeded_shuffle_covers_every_row_once(stores):
    store = stores["pack"]
    plain = store.load(POINT)
    batches = list(store.iter_batches(POINT, 50, shuffle_buffer=200, seed=1))
    again = list(store.iter_batches(POINT, 50, shuffle_buffer=200, seed=1))
    other = list(store.iter_batches(POINT, 50, shuffle_buffer=200, seed=2))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    assert not torch.equal(batches[0], other[0])
    assert [len(b) for b in batches[:-1]] == [50] * (len(batches) - 1)
    got = torch.cat(batches)
    assert not torch.equal(got, plain)  # shuffled ...
    key = lambda t: sorted(map(tuple, t[:, :4].tolist()))  # noqa: E731
    assert key(got) == key(plain)  # ... but the same rows, each once
    ordered = torch.cat(list(store.iter_batches(POINT, 64)))
    assert torch.equal(ordered, plain)
    dropped = list(store.iter_batches(POINT, 1000, drop_last=True))
    assert all(len(b) == 1000 for b in dropped)
    with pytest.raises(mi.InputError, match="batch_size"):
        next(store.iter_batches(POINT, 0))
    with pytest.raises(mi.InputError, match="not harvested"):
        store.load("blocks.0.hook_resid_post")


def test_probe_from_the_store(stores):
    pytest.importorskip("sklearn")
    from torch_mi.interp import train_probe

    store = stores["last"]
    feats = store.load(POINT)  # [n, D]
    labels = (feats[:, 0] > feats[:, 0].median()).long()  # linearly readable by design
    result = train_probe(store, labels, test_size=0.25, seed=0)
    assert result.n_train + result.n_test == store.num_sequences
    direct = train_probe(feats, labels, test_size=0.25, seed=0)  # the same rows, by hand
    assert torch.equal(result.coef, direct.coef) and result.test_score == direct.test_score
    via_view = train_probe(stores["pack"].view(POINT), torch.arange(len(stores["pack"].load(
        POINT))) % 2, test_size=0.0)
    assert via_view.n_train == stores["pack"].num_sequences * 32
    with pytest.raises(mi.InputError, match="choose one"):
        train_probe(stores["pack"], labels)


@pytest.mark.parametrize(("edit", "what"), [
    (lambda s: s[0].update(file="../../outside.safetensors"), "another file"),
    (lambda s: s[0].update(file="/etc/passwd"), "an absolute path"),
    (lambda s: s[0].update(num_seqs="3"), "a string count"),
    (lambda s: s[0].update(index=-1), "a negative index"),
    (lambda s: s[0].pop("sha256"), "a missing field"),
])
def test_a_hostile_manifest_is_refused_before_any_shard_is_opened(stores, tmp_path, edit, what):
    import json
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(stores["pack"].root, root)
    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest["shards"])
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(mi.MIError, match="malformed"):
        ActivationStore(root)
