"""Feature ids and SparseActivations: ordering, top-k, iteration, dense round trip."""

from __future__ import annotations

import math

import pytest
import torch

from torch_mi.dictionaries import CltFeatureId, SaeFeatureId, SparseActivations
from torch_mi.errors import InterventionError


def test_feature_ids_display_order_and_hash():
    assert str(SaeFeatureId(3)) == "SAE:3" and str(CltFeatureId(2, 17)) == "L2:17"
    assert sorted([CltFeatureId(1, 5), CltFeatureId(0, 9), CltFeatureId(1, 2)]) == [
        CltFeatureId(0, 9), CltFeatureId(1, 2), CltFeatureId(1, 5)]
    assert len({SaeFeatureId(1), SaeFeatureId(1)}) == 1
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(InterventionError):
            SaeFeatureId(bad)
    with pytest.raises(InterventionError, match="layer"):
        CltFeatureId(-2, 0)


def test_sorted_descending_with_total_order():
    acts = SparseActivations([(SaeFeatureId(4), 1.0), (SaeFeatureId(1), 3.0),
                              (SaeFeatureId(2), math.nan), (SaeFeatureId(0), 1.0)])
    ids = [f.index for f, _ in acts]
    assert ids == [1, 0, 4, 2]        # ties by id, NaN last
    assert len(acts) == 4 and acts[0] == (SaeFeatureId(1), 3.0)


def test_from_dense_top_k_truncate_and_to_dense():
    dense = torch.tensor([0.0, 2.0, -1.0, 0.5, 3.0, 0.0])
    acts = SparseActivations.from_dense(dense)
    assert acts.ids() == [SaeFeatureId(4), SaeFeatureId(1), SaeFeatureId(3)]
    torch.testing.assert_close(acts.to_dense(6), torch.relu(dense), rtol=0, atol=0)
    assert acts.top_k(2).ids() == acts.ids()[:2] and len(acts.top_k(10)) == 3
    assert len(acts.top_k(0)) == 0 and len(acts) == 3            # top_k leaves it unchanged
    acts.truncate(1)
    assert acts.features == [(SaeFeatureId(4), 3.0)]
    clt = SparseActivations.from_dense(dense, layer=7)
    assert clt[0][0] == CltFeatureId(7, 4) and clt.get(CltFeatureId(7, 1)) == 2.0
    assert clt.to_dict() == {"L7:4": 3.0, "L7:1": 2.0, "L7:3": 0.5}


def test_bad_arguments_are_typed():
    acts = SparseActivations.from_dense(torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(InterventionError):
        acts.top_k(-1)
    with pytest.raises(InterventionError, match="out of range"):
        acts.to_dense(2)
    with pytest.raises(InterventionError, match="1-D"):
        SparseActivations.from_dense(torch.zeros(2, 3))


def test_mi_dictionaries_resolves_without_an_explicit_import():
    """``import torch_mi as mi; mi.dictionaries.SparseAutoencoder`` works in a fresh process."""
    import subprocess
    import sys

    code = ("import torch_mi as mi, sys; assert 'torch_mi.dictionaries' not in sys.modules; "
            "print(mi.dictionaries.SparseAutoencoder.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SparseAutoencoder"
