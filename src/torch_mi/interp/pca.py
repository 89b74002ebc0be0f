"""PCA of a few points in a wide space, via the kernel matrix ``K = Xc Xc^T``.

Interpretability data is usually few points (n prompts, positions or features) in a wide
residual space (D in the thousands), so the [n, n] kernel is far cheaper than the [D, D]
covariance. Each principal direction is ``Xc^T v / ||Xc^T v||`` for an eigenvector ``v``
of ``K``. Two methods:

- ``"power"`` (default): power iteration with deflation, seedable (docs/porting.md: PCA);
- ``"eigh"``: ``torch.linalg.eigh`` on ``K``, exact.

Everything is tensor ops on the input's device. The work is done in float64 (float32 on
MPS, which has no float64) so that deflation does not accumulate rounding error.
``eigenvalues`` are those of ``K`` (sums of squares, NOT divided by n - 1); their ratio
to ``trace(K)`` is the explained variance ratio. Signs are made deterministic: the
largest-magnitude coordinate of each component is positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError

METHODS = ("power", "eigh")


@dataclass
class PcaResult:
    """Top-k principal directions of a point cloud."""

    components: torch.Tensor  # [k, D], unit rows (a zero row where the data has no variance left)
    eigenvalues: list[float]  # kernel eigenvalues, descending for "eigh"
    explained_variance_ratio: list[float]  # eigenvalue / total sum of squares
    mean: torch.Tensor | None = None  # [D] column mean removed before the decomposition

    def transform(self, matrix: torch.Tensor) -> torch.Tensor:
        """Coordinates [m, k] of the rows of ``matrix`` [m, D] on the components."""
        centred = matrix.to(self.components) - (0 if self.mean is None else self.mean)
        return centred @ self.components.T


def pca_top_k(matrix: torch.Tensor, k: int, n_iter: int = 50, seed: int | None = None,
              *, method: str = "power") -> PcaResult:
    """Top ``k`` principal components of the rows of ``matrix`` [n, D].

    ``seed`` makes the power-iteration start vectors reproducible (None: random).
    """
    work_dtype, out_dtype = _dtypes(matrix)
    _check_args(matrix, k, n_iter, method)
    x = matrix.to(work_dtype)
    mean = x.mean(dim=0)  # [D]
    x = x - mean  # [n, D]
    kernel = x @ x.T  # [n, n]
    total = float(torch.diagonal(kernel).sum())
    if method == "eigh":
        values, vectors = _top_eigh(kernel, k)
    else:
        values, vectors = _top_power(kernel, k, n_iter, seed)
    components = _feature_directions(x, vectors, values, total)  # [k, D]
    ratios = [v / total if total > 0 else 0.0 for v in values]
    return PcaResult(components.to(out_dtype), values, ratios, mean.to(out_dtype))


def _dtypes(matrix: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
    if not isinstance(matrix, torch.Tensor):
        raise InputError(f"pca_top_k needs a torch.Tensor [n, D], got {type(matrix).__name__}")
    work = torch.float32 if matrix.device.type == "mps" else torch.float64
    out = torch.float64 if matrix.dtype == torch.float64 else torch.float32
    return work, out


def _check_args(matrix: torch.Tensor, k: int, n_iter: int, method: str) -> None:
    if matrix.dim() != 2:
        raise InputError(f"pca_top_k needs a 2-D matrix [n_points, dim], got shape "
                         f"{list(matrix.shape)}; reshape with matrix.reshape(-1, dim)")
    if matrix.is_complex() or matrix.dtype == torch.bool:
        raise InputError(f"pca_top_k needs real numbers, got dtype {matrix.dtype}")
    n = matrix.shape[0]
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
        raise InputError(f"k must be an integer in 1..{n} (the number of points), got {k!r}")
    if not isinstance(n_iter, int) or n_iter < 1:
        raise InputError(f"n_iter must be a positive integer, got {n_iter!r}")
    if method not in METHODS:
        raise InputError(f"unknown PCA method {method!r}; choose one of {list(METHODS)}")
    if not bool(torch.isfinite(matrix).all()):
        raise InputError("pca_top_k input contains NaN or infinite values")


def _top_eigh(kernel: torch.Tensor, k: int) -> tuple[list[float], torch.Tensor]:
    """Exact top-k eigenpairs of the symmetric kernel: values (clamped >= 0), vectors [n, k]."""
    values, vectors = torch.linalg.eigh(kernel)  # ascending
    values, vectors = values.flip(0)[:k], vectors.flip(1)[:, :k]
    return [max(float(v), 0.0) for v in values], vectors


def _top_power(kernel: torch.Tensor, k: int, n_iter: int,
               seed: int | None) -> tuple[list[float], torch.Tensor]:
    """Top-k eigenpairs by power iteration with deflation ``K <- K - lambda v v^T``."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    n = kernel.shape[0]
    residual = kernel.clone()
    values, vectors = [], []
    for _ in range(k):
        # Start vectors drawn on the CPU so a seed gives the same run on every device.
        v = torch.randn(n, generator=generator, dtype=torch.float64).to(kernel)  # [n]
        v = v / v.norm()
        for _ in range(n_iter):
            kv = residual @ v  # [n]
            # No host sync per step; a zero residual (nothing left to explain) gives v = 0.
            v = kv / kv.norm().clamp_min(torch.finfo(kv.dtype).tiny)
        value = max(float(v @ residual @ v), 0.0)
        residual = residual - value * torch.outer(v, v)
        values.append(value)
        vectors.append(v)
    return values, torch.stack(vectors, dim=1)  # [n, k]


def _feature_directions(x: torch.Tensor, vectors: torch.Tensor, values: list[float],
                        total: float) -> torch.Tensor:
    """Unit feature-space directions ``Xc^T v`` [k, D] with a deterministic sign; a
    direction of (numerically) zero variance becomes a zero row instead of noise."""
    directions = (x.T @ vectors).T  # [k, D]
    norms = directions.norm(dim=1, keepdim=True)  # [k, 1]
    tiny = torch.tensor([v <= 1e-12 * max(total, 0.0) for v in values], device=x.device)
    directions = torch.where(tiny[:, None], torch.zeros_like(directions),
                             directions / norms.clamp_min(torch.finfo(x.dtype).tiny))
    pivot = directions.abs().argmax(dim=1, keepdim=True)  # [k, 1]
    signs = torch.sign(directions.gather(1, pivot))  # [k, 1]
    return directions * torch.where(signs == 0, torch.ones_like(signs), signs)
