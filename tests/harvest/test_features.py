"""Dictionary features: sparse storage equals a dense encode of the direct capture; merged
statistics equal a single-pass computation; features.json, cards and CLI display."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import torch_mi as mi
from torch_mi.harvest import ActivationStore, harvest, read_feature_stats, write_feature_card
from torch_mi.harvest.stats import HIST_EDGES

HOOK = "blocks.1.hook_resid_post"


def dense_oracle(model, sae, store, mode_pad: bool, batch_size: int):
    """[N, S, F] features of a plain forward + sae.encode, per shard with the same chunks."""
    per = store.plan.seqs_per_shard
    ids, mask = store.tokens(), store.attention_mask()
    out = []
    for s0 in range(0, len(ids), per):
        for b0 in range(s0, min(s0 + per, len(ids)), batch_size):
            b1 = min(b0 + batch_size, s0 + per, len(ids))
            m = None if mask is None else mask[b0:b1].long()
            cache = model.forward(ids[b0:b1], mi.HookSpec().capture(HOOK), attention_mask=m)
            acts = sae.encode(cache[HOOK])
            if m is not None:
                acts = acts * m.unsqueeze(-1)
            out.append(acts)
    return torch.cat(out)


@pytest.mark.parametrize("mode", ["pack", "pad"])
def test_sparse_features_and_single_pass_stats(tiny, sae, corpus, tmp_path, mode):
    out = tmp_path / "h"
    harvest(tiny, corpus / "docs.jsonl", [HOOK], out, seq_len=24, batch_size=3, mode=mode,
            shard_tokens=24 * 5, dictionaries=[sae], top_k=4, progress=False)
    store = ActivationStore(out)
    assert len(store.shards) >= 3  # statistics really are merged across shards
    name = f"sae.{HOOK}"
    dense = dense_oracle(tiny, sae, store, mode == "pad", 3)  # [N, S, F]
    got = torch.cat([store.features(name, k).to_dense() for k in range(len(store.shards))])
    assert torch.equal(got, dense.reshape(-1, sae.d_sae))

    # single pass over the valid positions, numpy for the histogram
    mask = store.attention_mask()
    valid = torch.ones(dense.shape[:2], dtype=torch.bool) if mask is None else mask.bool()
    seq = torch.arange(dense.shape[0]).unsqueeze(1).expand(dense.shape[:2])[valid]
    pos = torch.arange(dense.shape[1]).expand(dense.shape[:2])[valid]
    a = dense[valid]  # [R, F]
    report = read_feature_stats(out)["dictionaries"][0]
    feats = report["features"]
    assert report["positions"] == len(a)
    assert [f["count"] for f in feats] == (a > 0).sum(0).tolist()
    assert_close(torch.tensor([f["mean"] for f in feats], dtype=torch.float64),
                 a.double().sum(0) / len(a), rtol=1e-9, atol=1e-9)
    assert_close(torch.tensor([f["max"] for f in feats]), a.max(0).values.clamp_min(0),
                 rtol=0, atol=0)
    for j in range(sae.d_sae):
        col = a[:, j].numpy()
        fired = col[col > 0]
        bins = np.bincount(np.searchsorted(HIST_EDGES.numpy(), fired.astype(np.float64)),
                           minlength=len(HIST_EDGES) + 1)
        assert feats[j]["hist"] == bins.tolist()
        ranked = sorted(((float(v), int(s), int(p)) for v, s, p in
                         zip(col, seq.tolist(), pos.tolist(), strict=True) if v > 0),
                        key=lambda t: (-t[0], t[1], t[2]))[:4]
        assert [(t["value"], t["seq"], t["pos"]) for t in feats[j]["top"]] == ranked
    assert report["dead"] == [j for j in range(sae.d_sae) if feats[j]["count"] == 0]


def test_contexts_cards_and_cli_display(tiny, sae, corpus, tmp_path, capsys):
    out = tmp_path / "h"
    harvest(tiny, corpus / "docs.jsonl", [HOOK], out, seq_len=24, batch_size=4,
            dictionaries=[sae], top_k=3, progress=False)
    report = read_feature_stats(out)["dictionaries"][0]
    live = next(f for f in report["features"] if f["top"])
    ctx = live["top"][0]
    tokens = ActivationStore(out).tokens()[ctx["seq"]].tolist()
    assert tokens[ctx["pos"]] == ctx["tokens"][ctx["highlight"]]
    assert ctx["tokens"] == tokens[ctx["pos"] - ctx["highlight"]:][:len(ctx["tokens"])]
    card = write_feature_card(out, live["index"])
    page = card.read_text()
    assert card.parent.name == "cards" and "background: rgba(255,120,0,1.000)" in page
    with pytest.raises(mi.MIError, match="feature index"):
        write_feature_card(out, 10_000)

    from torch_mi.cli.main import main

    assert main(["features", "--stats", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dictionaries"][0]["num_dead"] == len(report["dead"])
    assert main(["features", "--stats", str(tmp_path / "nowhere")]) == 1
    # --cards N: HTML cards of the N most frequent live features, paths in the JSON
    assert main(["features", "--stats", str(out), "--json", "--top-k", "1", "--cards", "2"]) == 0
    shown = json.loads(capsys.readouterr().out)["dictionaries"][0]
    frequent = sorted((f for f in report["features"] if f["count"]),
                      key=lambda f: (-f["count"], f["index"]))[:2]
    assert len(shown["most_frequent"]) == 1
    assert [Path(c).name for c in shown["cards"]] == [f"{report['name']}-{f['index']}.html"
                                                      for f in frequent]
    assert all(Path(c).is_file() for c in shown["cards"])
    assert main(["features", "--stats", str(out), "--cards", "-1"]) == 1
    assert "--cards must be >= 0" in capsys.readouterr().err
    assert main(["features", "--dict", str(tmp_path), "--cards", "2", "--prompt", "x"]) == 1
    assert "use it with --stats DIR" in capsys.readouterr().err


def test_transcoder_features_from_its_folder(tiny, corpus, tmp_path):
    from tests.dictionaries.clt_files import write_clt
    from torch_mi.dictionaries import CrossLayerTranscoder

    write_clt(tmp_path / "clt", L=2, F=16, D=tiny.hidden_size, jump=True)
    out = tmp_path / "h"
    res = harvest(tiny, corpus / "docs.jsonl", ["hook_embed"], out, seq_len=16, batch_size=4,
                  positions="last", dictionaries=[tmp_path / "clt"], progress=False)
    clt = CrossLayerTranscoder.from_local(tmp_path / "clt")
    names = [d["name"] for d in res.manifest["plan"]["dictionaries"]]
    assert names == ["clt.0", "clt.1"]
    store = ActivationStore(out)
    ids = store.tokens()
    for layer in (0, 1):
        point = clt.config.input_point(layer)
        want = torch.cat([clt.encode_dense(tiny.forward(ids[b:b + 4], mi.HookSpec().capture(
            point))[point][:, -1], layer) for b in range(0, len(ids), 4)])  # [N, F]
        got = torch.cat([store.features(f"clt.{layer}", k).to_dense()
                         for k in range(len(store.shards))])
        assert torch.equal(got, want)
