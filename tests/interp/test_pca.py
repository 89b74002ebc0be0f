"""PCA on the kernel matrix, checked against numpy's SVD of the centred data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torch_mi as mi
from torch_mi.interp.pca import PcaResult, pca_top_k


def low_rank_data(n: int = 40, dim: int = 300, seed: int = 0) -> np.ndarray:
    """Rank-4 signal with well separated strengths plus small isotropic noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, 4)))[0].T  # [4, D] orthonormal
    scores = rng.normal(size=(n, 4)) * np.array([12.0, 7.0, 4.0, 2.0])
    return scores @ basis + 0.01 * rng.normal(size=(n, dim)) + 3.0  # off-centre on purpose


def svd_reference(data: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k right singular vectors [k, D] and explained variance ratios, by numpy."""
    centred = data - data.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:k], (s**2 / (s**2).sum())[:k]


@pytest.mark.parametrize("method", ["power", "eigh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_numpy_svd(method, dtype):
    data = low_rank_data()
    k = 4
    result = pca_top_k(torch.tensor(data, dtype=dtype), k, n_iter=50, seed=0, method=method)
    ref_vt, ref_ratio = svd_reference(data, k)
    assert isinstance(result, PcaResult)
    assert result.components.shape == (k, data.shape[1]) and result.components.dtype == dtype
    comps = result.components.double().numpy()
    # Each component matches its SVD counterpart up to sign; the subspaces agree.
    np.testing.assert_allclose(np.abs((comps * ref_vt).sum(axis=1)), np.ones(k), atol=1e-4)
    np.testing.assert_allclose(comps.T @ comps, ref_vt.T @ ref_vt, atol=1e-4)
    np.testing.assert_allclose(result.explained_variance_ratio, ref_ratio, atol=1e-4)
    sums_of_squares = np.linalg.svd(data - data.mean(axis=0), compute_uv=False)[:k] ** 2
    np.testing.assert_allclose(result.eigenvalues, sums_of_squares, rtol=1e-4)


def test_power_and_eigh_agree_and_signs_are_deterministic():
    data = torch.tensor(low_rank_data(seed=3))
    power = pca_top_k(data, 3, seed=11)
    exact = pca_top_k(data, 3, method="eigh")
    torch.testing.assert_close(power.components, exact.components, atol=1e-6, rtol=0)
    pivots = power.components.abs().argmax(dim=1)
    assert bool((power.components[torch.arange(3), pivots] > 0).all())


def test_dominant_direction_along_x():
    """The inventory's unit test: 5 points along x with tiny y noise."""
    points = torch.tensor([[-2.0, 0.01], [-1.0, -0.02], [0.0, 0.015], [1.0, -0.01], [2.0, 0.005]])
    result = pca_top_k(points, 2, n_iter=50, seed=0)
    assert result.explained_variance_ratio[0] > 0.99
    assert abs(float(result.components[0, 0])) > 0.99
    assert sum(result.explained_variance_ratio) == pytest.approx(1.0, abs=1e-6)


def test_seeded_runs_are_reproducible():
    data = torch.tensor(low_rank_data(n=12, dim=30, seed=5), dtype=torch.float32)
    first = pca_top_k(data, 5, n_iter=3, seed=42)  # few iterations: the start vector matters
    again = pca_top_k(data, 5, n_iter=3, seed=42)
    torch.testing.assert_close(first.components, again.components, rtol=0, atol=0)
    assert first.eigenvalues == again.eigenvalues


def test_transform_projects_centred_rows():
    data = torch.tensor(low_rank_data(n=10, dim=20, seed=2))
    result = pca_top_k(data, 2, method="eigh")
    expected = (data - data.mean(dim=0)) @ result.components.T
    torch.testing.assert_close(result.transform(data), expected)


def test_rank_deficient_data_gives_zero_components():
    # Two distinct points: one direction of variance, the rest is nothing.
    data = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [3.0, 2.0, 3.0]])
    result = pca_top_k(data, 3, seed=0)
    torch.testing.assert_close(result.components[0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(result.components[1:], torch.zeros(2, 3))
    assert result.explained_variance_ratio[0] == pytest.approx(1.0)
    assert result.explained_variance_ratio[1:] == pytest.approx([0.0, 0.0], abs=1e-9)


@pytest.mark.parametrize("matrix, k, match", [
    (torch.zeros(4, 3), 5, "k must be an integer in 1..4"),
    (torch.zeros(4, 3), 0, "k must be"),
    (torch.zeros(4), 1, "2-D"),
    (torch.zeros(2, 3, 4), 1, "2-D"),
    (torch.full((3, 2), float("nan")), 1, "NaN"),
])
def test_bad_input_is_rejected(matrix, k, match):
    with pytest.raises(mi.InputError, match=match):
        pca_top_k(matrix, k)


def test_bad_options_are_rejected():
    with pytest.raises(mi.InputError, match="method"):
        pca_top_k(torch.zeros(3, 3), 1, method="svd")
    with pytest.raises(mi.InputError, match="n_iter"):
        pca_top_k(torch.zeros(3, 3), 1, n_iter=0)
    with pytest.raises(mi.InputError, match="torch.Tensor"):
        pca_top_k([[1.0, 2.0]], 1)
