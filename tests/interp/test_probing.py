"""Linear probing: activations from one padded forward, probes equal to direct scikit-learn fits."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest
import torch

import torch_mi as mi
from torch_mi.interp.probing import ProbeResult, collect_activations, probe_layers, train_probe

sklearn_linear = pytest.importorskip("sklearn.linear_model")
sklearn_split = pytest.importorskip("sklearn.model_selection")


def planted_texts(n: int = 200, seed: int = 0) -> tuple[list[str], list[int]]:
    """Random texts of varied length whose label is the last character ('x' or 'q')."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        body = "".join(rng.choice("abcdefghij klmnop") for _ in range(rng.randint(3, 15)))
        texts.append(body + ("x" if i % 2 else "q"))
        labels.append(i % 2)
    return texts, labels


def random_problem(n: int = 80, dim: int = 12, seed: int = 0):
    gen = np.random.default_rng(seed)
    x = gen.normal(size=(n, dim)).astype(np.float32)
    w = gen.normal(size=dim)
    return x, (x @ w + 0.5 * gen.normal(size=n) > 0).astype(int), x @ w + 0.3 * gen.normal(size=n)


# ---- activations ----------------------------------------------------------------------------
def test_padded_batch_equals_one_forward_per_text(loaded):
    model = loaded["llama"]
    texts = ["hi", "a longer text with more tokens", "mid length"]
    last = collect_activations(model, texts, "resid_post", "last")
    mean = collect_activations(model, texts, "mlp_out", "mean", layers=[1])
    second = collect_activations(model, texts, "resid_pre", 1, layers=[0, 1])
    assert sorted(last) == [0, 1] and sorted(mean) == [1]
    for row, text in enumerate(texts):
        spec = mi.HookSpec().capture("blocks.1.hook_resid_post", "blocks.1.hook_mlp_out",
                                     "blocks.0.hook_resid_pre")
        alone = model.forward(model.encode(text), spec)
        torch.testing.assert_close(last[1][row], alone["blocks.1.hook_resid_post"][0, -1],
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(mean[1][row], alone["blocks.1.hook_mlp_out"][0].mean(dim=0),
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(second[0][row], alone["blocks.0.hook_resid_pre"][0, 1],
                                   atol=1e-5, rtol=1e-4)
    assert last[0].shape == (3, model.hidden_size) and last[0].dtype == torch.float32


def test_token_id_inputs_equal_text_inputs(loaded):
    model = loaded["llama"]
    texts = ["abc", "de"]
    from_text = collect_activations(model, texts, position=-2)
    from_ids = collect_activations(model, [model.tokenizer.encode(t) for t in texts], position=-2)
    torch.testing.assert_close(from_ids[1], from_text[1], rtol=0, atol=0)


def test_bad_activation_requests(loaded):
    model = loaded["llama"]
    with pytest.raises(mi.InputError, match="hook_kind"):
        collect_activations(model, ["a"], hook_kind="resid")
    with pytest.raises(mi.HookError, match=r"0\.\.1"):
        collect_activations(model, ["a"], layers=[2])
    with pytest.raises(mi.InputError, match="shortest input"):
        collect_activations(model, ["abcdef", "ab"], position=3)  # "ab" is <s> a b
    with pytest.raises(mi.InputError, match="'last', 'mean' or an int"):
        collect_activations(model, ["ab"], position="first")
    with pytest.raises(mi.InputError, match="non-empty list"):
        collect_activations(model, [])


# ---- probes ---------------------------------------------------------------------------------
def test_logistic_probe_equals_direct_sklearn_fit():
    x, y, _ = random_problem()
    result = train_probe(torch.tensor(x), y, "logistic", test_size=0.25, seed=3, C=0.5)
    x_tr, x_te, y_tr, y_te = sklearn_split.train_test_split(x, y, test_size=0.25, random_state=3,
                                                            stratify=y)
    direct = sklearn_linear.LogisticRegression(C=0.5, max_iter=1000).fit(x_tr, y_tr)
    assert (result.n_train, result.n_test) == (60, 20)
    assert result.train_score == pytest.approx(direct.score(x_tr, y_tr))
    assert result.test_score == pytest.approx(direct.score(x_te, y_te))
    torch.testing.assert_close(result.coef, torch.as_tensor(direct.coef_), atol=1e-6, rtol=1e-4)
    # The test score is the accuracy of the returned linear rule on the held-out rows.
    pred = (x_te @ result.coef.numpy()[0] + result.intercept.numpy()[0] > 0).astype(int)
    assert result.test_score == pytest.approx(float((pred == y_te).mean()))


def test_ridge_probe_scores_are_r_squared():
    x, _, target = random_problem(seed=1)
    result = train_probe(x, target, "ridge", test_size=0.3, seed=0, alpha=2.0)
    x_tr, x_te, y_tr, y_te = sklearn_split.train_test_split(x, target, test_size=0.3, random_state=0)
    direct = sklearn_linear.Ridge(alpha=2.0).fit(x_tr, y_tr)
    assert result.test_score == pytest.approx(direct.score(x_te, y_te))
    pred = x_te @ result.coef.numpy() + result.intercept.numpy()[0]
    r2 = 1 - ((y_te - pred) ** 2).sum() / ((y_te - y_te.mean()) ** 2).sum()
    assert result.test_score == pytest.approx(float(r2), rel=1e-5)
    assert result.classes is None and result.kind == "ridge"
    full = train_probe(x, target, "ridge", test_size=0.0)
    assert full.test_score is None and (full.n_train, full.n_test) == (80, 0)


def test_planted_signal_is_found_and_shuffled_labels_are_chance(loaded):
    model = loaded["llama"]
    texts, labels = planted_texts()
    results = probe_layers(model, texts, labels)
    assert [r.layer for r in results] == list(range(model.num_layers))
    assert all(isinstance(r, ProbeResult) and r.test_score >= 0.95 for r in results)
    shuffled = labels[:]
    random.Random(1).shuffle(shuffled)
    chance = probe_layers(model, texts, shuffled, progress=True)
    assert all(0.3 <= r.test_score <= 0.7 for r in chance)
    record = json.loads(json.dumps(results[0].to_dict()))
    assert record["layer"] == 0 and record["kind"] == "logistic" and record["classes"] == [0, 1]
    assert len(record["coef"][0]) == model.hidden_size


def test_bad_probe_inputs(loaded):
    x, y, _ = random_problem(n=20)
    with pytest.raises(mi.InputError, match="one label per example"):
        train_probe(x, y[:-1])
    with pytest.raises(mi.InputError, match="unknown probe kind"):
        train_probe(x, y, kind="svm")
    with pytest.raises(mi.InputError, match="two distinct labels"):
        train_probe(x, np.zeros(20))
    with pytest.raises(mi.InputError, match=r"\[n, D\]"):
        train_probe(x[0], y[:1])
    with pytest.raises(mi.InputError, match="test_size"):
        train_probe(x, y, test_size=1.5)
    with pytest.raises(mi.InputError, match="cannot split"):
        train_probe(x[:3], [0, 1, 1], test_size=0.25)  # one example of label 0
    with pytest.raises(mi.InputError, match="one label per example"):
        probe_layers(loaded["llama"], ["a", "b", "c"], [0, 1])


def test_missing_scikit_learn_names_the_extra(monkeypatch):
    x, y, _ = random_problem(n=20)
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)
    with pytest.raises(mi.ConfigError, match=r"pip install torch-mi\[probing\]"):
        train_probe(x, y)
