"""EASE^R's dense solve, at any size the machine's memory holds.

P = (G + lambda I)^-1 by Cholesky, B = I - P diag(1/diag(P)): B_ij = -P_ij / P_jj with
a zero diagonal. The factorisation runs in float32 through torch's LAPACK (MKL),
not SciPy's OpenBLAS: OpenBLAS's threaded Cholesky (dpotrf with 2 threads, this
project's machines) corrupts memory on large matrices on some processors
(OpenMathLib/OpenBLAS#2562, #2821); a user saw `cmr train` die with a segmentation
fault at 16,000 items. float32 halves the memory and the time and ranks as float64
does (docs/results.md, "The closed form's solve"). A matrix that would not fit in
the memory left is refused with an estimate before anything is allocated.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
# Bytes per cell of an n x n solve beyond the Gram itself: its float32 copy, the
# factor, the inverse (the factor is freed before the weights are made in place).
SOLVE_BYTES_PER_CELL = 12
GIB = 1 << 30


class TooLargeError(ValueError):
    """A dense matrix that would not fit in the memory this machine has left."""


def available_memory() -> int | None:
    """Bytes the kernel says a new allocation can take (MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def ensure_fits(n: int, *, bytes_per_cell: int, what: str) -> None:
    """Refuse ``what``, an n x n dense step of ``bytes_per_cell`` bytes a cell, when
    it needs more memory than is available, saying how much it needs."""
    need = n * n * bytes_per_cell
    free = available_memory()
    if free is not None and need > free:
        raise TooLargeError(
            f"{what} over {n:,} items needs about {need / GIB:.1f} GiB of memory and "
            f"{free / GIB:.1f} GiB is available; fewer items (cmr data subset, --k-core) "
            "or a machine with more memory"
        )


def solve_ease(gram: NDArray[np.floating], lam: float) -> FloatArray:
    """EASE^R's weights B (float32, zero diagonal) from the Gram matrix G and L2 ``lam``."""
    if lam <= 0:
        raise ValueError(f"EASE^R's lambda must be positive, got {lam}")
    n = gram.shape[0]
    ensure_fits(n, bytes_per_cell=SOLVE_BYTES_PER_CELL, what="EASE^R's closed form")
    a = torch.from_numpy(np.asarray(gram)).to(torch.float32)  # a copy: G is not touched
    a.diagonal().add_(lam)
    factor, info = torch.linalg.cholesky_ex(a)
    del a
    if int(info):
        raise np.linalg.LinAlgError(f"EASE^R: X^T X + {lam} I is not positive definite")
    p = torch.cholesky_inverse(factor)
    del factor
    # LAPACK writes P column-major; P is symmetric, so its transpose is the same matrix
    # in row-major order, which the sparse products that score users read fast.
    p = p if p.is_contiguous() else p.mT
    assert p.is_contiguous()
    p.div_(-p.diagonal().clone())  # column j divided by -P_jj
    p.fill_diagonal_(0.0)
    weights: FloatArray = p.numpy()
    return weights
