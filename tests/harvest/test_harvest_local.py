"""Local engine: stored activations equal a direct forward capture, bit for bit (fp32)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import torch_mi as mi
from torch_mi.harvest import ActivationStore, harvest

POINTS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_q", "hook_embed"]


def shards(out) -> list[dict]:
    return [load_file(str(p)) for p in sorted(out.glob("shard-*.safetensors"))]


def direct(model, ids, mask, points, batch_size) -> dict[str, torch.Tensor]:
    """Captures [N, S, ...] of a plain forward over the same batch chunks (the oracle)."""
    out = {p: [] for p in points}
    for start in range(0, len(ids), batch_size):
        m = None if mask is None else mask[start:start + batch_size]
        cache = model.forward(ids[start:start + batch_size], mi.HookSpec().capture(*points),
                              attention_mask=m)
        for p in points:
            out[p].append(cache[p])
    return {p: torch.cat(v) for p, v in out.items()}


@pytest.mark.parametrize("mode", ["pack", "pad"])
@pytest.mark.parametrize("positions", ["all", "last", slice(2, 12, 3)])
def test_activations_equal_direct_forward(tiny, corpus, tmp_path, mode, positions):
    out = tmp_path / "h"
    res = harvest(tiny, corpus / "docs.jsonl", POINTS, out, seq_len=16, batch_size=3,
                  positions=positions, mode=mode, shard_tokens=16 * 7, progress=False)
    parts = shards(out)
    assert len(parts) == len(res.manifest["shards"]) >= 2
    assert [p["tokens"].shape[0] for p in parts[:-1]] == [7] * (len(parts) - 1)
    ids = torch.cat([p["tokens"] for p in parts]).long()
    assert torch.equal(torch.cat([p["seq_index"] for p in parts]), torch.arange(len(ids)))
    for part in parts:
        pm = part.get("attention_mask")
        want = direct(tiny, part["tokens"].long(), None if pm is None else pm.long(), POINTS, 3)
        for p in POINTS:
            expected = want[p]
            if positions == "last":
                expected = expected[:, -1]
            elif isinstance(positions, slice):
                expected = expected[:, positions]
            assert torch.equal(part[f"act.{p}"], expected), p
    assert res.manifest["num_sequences"] == len(ids)
    assert res.manifest["status"] == "complete"


def test_packing_rule_is_saelens_bos_separated(tiny, corpus, tmp_path):
    out = tmp_path / "h"
    harvest(tiny, corpus / "docs.jsonl", ["hook_embed"], out, seq_len=16, batch_size=4,
            progress=False)
    tok = tiny.tokenizer
    import json

    docs = [json.loads(line)["text"] for line in (corpus / "docs.jsonl").read_text().splitlines()]
    stream = []
    for i, d in enumerate(docs):
        stream += ([] if i == 0 else [tok.bos_token_id]) + tok.encode_raw(d)
    rows = [[tok.bos_token_id, *stream[k:k + 15]] for k in range(0, len(stream) - 14, 15)]
    store = ActivationStore(out)
    assert store.tokens().tolist() == rows
    assert store.manifest["plan"]["packing"]["sequence_separator_token"] == tok.bos_token_id


def test_padding_matches_tokenizer_left_padding(tiny, corpus, tmp_path):
    import json

    docs = [json.loads(line)["text"] for line in (corpus / "docs.jsonl").read_text().splitlines()]
    ids, mask = tiny.tokenizer.encode_batch(docs)  # left-padded to the longest (padding tests)
    seq_len = ids.shape[1] + 5
    harvest(tiny, corpus / "docs.jsonl", ["hook_embed"], tmp_path / "h", seq_len=seq_len,
            batch_size=8, mode="pad", progress=False)
    store = ActivationStore(tmp_path / "h")
    pad = tiny.tokenizer.padding_id
    assert torch.equal(store.tokens(), torch.nn.functional.pad(ids, (5, 0), value=pad))
    assert torch.equal(store.attention_mask().long(), torch.nn.functional.pad(mask, (5, 0)))
    # truncation keeps each document's first seq_len tokens
    harvest(tiny, corpus / "docs.jsonl", ["hook_embed"], tmp_path / "t", seq_len=10,
            batch_size=8, mode="pad", progress=False)
    short = ActivationStore(tmp_path / "t").tokens()
    assert short[0].tolist() == tiny.tokenizer.encode(docs[0])[:10]


def test_text_folder_files_in_sorted_order_and_max_tokens(tiny, corpus, tmp_path):
    res = harvest(tiny, corpus / "texts", ["hook_embed"], tmp_path / "h", seq_len=8,
                  batch_size=2, max_tokens=8 * 5 + 3, progress=False)
    assert res.manifest["num_sequences"] == 5
    assert [f["path"] for f in res.manifest["dataset"]["files"]] == ["doc0.txt", "doc1.txt",
                                                                      "doc2.txt"]
    first = (corpus / "texts" / "doc0.txt").read_text()
    assert ActivationStore(tmp_path / "h").tokens()[0, 1:].tolist() == \
        tiny.tokenizer.encode_raw(first)[:7]


def test_parquet_and_hf_datasets_sources(tiny, corpus, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    datasets = pytest.importorskip("datasets")
    import json

    docs = [json.loads(line)["text"] for line in (corpus / "docs.jsonl").read_text().splitlines()]
    pq.write_table(pa.table({"body": docs}), tmp_path / "d.parquet", row_group_size=7)
    datasets.Dataset.from_dict({"body": docs}).save_to_disk(str(tmp_path / "hf"))
    outs = []
    for name, src in (("pq", tmp_path / "d.parquet"), ("hf", tmp_path / "hf")):
        res = harvest(tiny, src, ["hook_embed"], tmp_path / name, seq_len=16, batch_size=4,
                      text_field="body", progress=False)
        outs.append(ActivationStore(res.out_dir).tokens())
    ref = harvest(tiny, corpus / "docs.jsonl", ["hook_embed"], tmp_path / "j", seq_len=16,
                  batch_size=4, progress=False)
    assert torch.equal(outs[0], ActivationStore(ref.out_dir).tokens())
    assert torch.equal(outs[1], outs[0])


def test_bf16_storage_is_the_cast_capture(tiny, corpus, tmp_path):
    harvest(tiny, corpus / "docs.jsonl", ["blocks.0.hook_resid_post"], tmp_path / "h",
            seq_len=16, batch_size=4, dtype="bf16", progress=False)
    part = shards(tmp_path / "h")[0]
    want = direct(tiny, part["tokens"].long(), None, ["blocks.0.hook_resid_post"], 4)
    assert part["act.blocks.0.hook_resid_post"].dtype == torch.bfloat16
    assert torch.equal(part["act.blocks.0.hook_resid_post"],
                       want["blocks.0.hook_resid_post"].to(torch.bfloat16))
