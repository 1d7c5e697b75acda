"""EASE^R's dense solve: right at every size memory allows, refused with an estimate
beyond it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from training import linalg
from training.linalg import TooLargeError, ensure_fits, solve_ease


def _gram(n_items: int, *, users: int, per_user: int, seed: int) -> np.ndarray:
    """X^T X of random 0/1 purchases: a Gram matrix of the kind EASE^R solves."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(users), per_user)
    cols = rng.integers(0, n_items, users * per_user)
    x = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(users, n_items))
    x.data[:] = 1.0
    return np.asarray((x.T @ x).toarray())


def _check_columns(gram: np.ndarray, b: np.ndarray, lam: float, columns: np.ndarray) -> None:
    """B = I - P diag(1/diag P), so (G + lam I) B[:, j] = (G + lam I)[:, j] - e_j / P_jj:
    off the diagonal, A B[:, j] equals A[:, j] (float64 arithmetic on B's columns)."""
    a_cols = gram[:, columns] + lam * np.eye(len(gram))[:, columns]
    product = gram @ b[:, columns].astype(np.float64) + lam * b[:, columns]
    off = np.ones_like(product, dtype=bool)
    off[columns, np.arange(len(columns))] = False
    scale = np.abs(a_cols).max()
    assert np.abs(product - a_cols)[off].max() <= 1e-3 * scale
    assert np.all(b[columns, columns] == 0.0)


def test_solve_matches_float64_inverse_on_a_small_gram() -> None:
    gram, lam = _gram(300, users=2000, per_user=6, seed=1), 7.0
    p = np.linalg.inv(gram + lam * np.eye(300))
    expected = np.eye(300) - p / np.diag(p)
    b = solve_ease(gram, lam)
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, expected, atol=1e-5)


def test_solve_at_16000_items() -> None:
    """The size at which OpenBLAS's two-thread Cholesky was seen to crash `cmr train`."""
    n, lam = 16_000, 10.0
    gram = _gram(n, users=60_000, per_user=8, seed=0)
    b = solve_ease(gram, lam)
    assert b.shape == (n, n) and np.isfinite(b).all()
    _check_columns(gram, b, lam, np.random.default_rng(0).choice(n, 8, replace=False))


def test_rejects_a_non_positive_lambda() -> None:
    with pytest.raises(ValueError, match="positive"):
        solve_ease(np.eye(3), 0.0)


def test_refuses_what_would_not_fit_with_an_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linalg, "available_memory", lambda: 2 << 30)  # 2 GiB left
    with pytest.raises(TooLargeError, match=r"100,000 items needs about 111\.8 GiB.*2\.0 GiB"):
        ensure_fits(100_000, bytes_per_cell=12, what="EASE^R's closed form")
    ensure_fits(10_000, bytes_per_cell=12, what="EASE^R's closed form")  # 1.1 GiB: fits


def test_available_memory_reads_the_kernel() -> None:
    free = linalg.available_memory()
    assert free is not None and free > 0
