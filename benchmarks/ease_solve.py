"""EASE^R's dense solve, routine against routine: seconds for P = (G + lambda I)^-1 and
what float32 changes in the ranking.

Each size n gets the Gram matrix of random 0/1 purchases (4n users, 8 items each);
every routine solves it in a process of its own (a crash is reported, not fatal):
- ``scipy-f64``: SciPy's dpotrf + dpotri (OpenBLAS, its threads): the old routine;
- ``scipy-f32-1thread``: spotrf + spotri, OpenBLAS held to one thread
  (OPENBLAS_NUM_THREADS=1);
- ``torch-f32``: training/linalg.py's solve (torch's LAPACK, float32), the one in use.
Then, with ``--data``, EASE^R over every market of that data set (seed 0's split)
at each of ``--lambdas``, a float64 inverse (numpy's) against float32 (the one in use):
validation NDCG@10 and MRR under ``market`` and ``full``, and the largest weight
difference relative to the largest weight.

    python -m benchmarks.ease_solve [--sizes 6000,12000] [--data DIR] [--lambdas 2,10,200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from benchmarks.ddp import machine

ROUTINES = ("scipy-f64", "scipy-f32-1thread", "torch-f32")


def random_gram(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    users = 4 * n
    rows = np.repeat(np.arange(users), 8)
    x = sp.csr_matrix((np.ones(users * 8), (rows, rng.integers(0, n, users * 8))), (users, n))
    x.data[:] = 1.0
    return np.asarray((x.T @ x).toarray())


def scipy_solve(gram: np.ndarray, lam: float, *, single: bool) -> None:
    from scipy.linalg import lapack

    a = (gram + lam * np.eye(len(gram))).astype(np.float32 if single else np.float64)
    potrf, potri = (lapack.spotrf, lapack.spotri) if single else (lapack.dpotrf, lapack.dpotri)
    factor, info = potrf(a, lower=1, overwrite_a=1)
    assert info == 0
    potri(factor, lower=1, overwrite_c=1)


def time_one(routine: str, n: int) -> float:
    """Seconds of one solve of the size-n Gram (its building not counted)."""
    gram = random_gram(n)
    start = time.perf_counter()
    if routine == "torch-f32":
        from training.linalg import solve_ease

        solve_ease(gram, 10.0)
    else:
        scipy_solve(gram, 10.0, single=routine == "scipy-f32-1thread")
    return time.perf_counter() - start


def ranking_check(data: Path, lambdas: Sequence[float]) -> list[str]:
    from training.baselines import Ease, EaseBlock, gram_matrix
    from training.data import load_interactions
    from training.evaluate import evaluate
    from training.linalg import solve_ease
    from training.protocols import Protocol, build_eval_set
    from training.split import make_split

    split = make_split(load_interactions(data), "random", 0)
    every = tuple(range(len(split.data.markets)))
    items, gram = gram_matrix(split, every)
    protocols: tuple[Protocol, ...] = ("market", "full")
    valid = [build_eval_set(split, p, "valid", seed=0) for p in protocols]
    lines = [f"EASE^R over {len(items):,} items, validation split (float64 / float32):"]
    for lam in lambdas:
        p = np.linalg.inv(gram + lam * np.eye(len(gram)))
        old = np.eye(len(gram)) - p / np.diag(p)
        new = solve_ease(gram, lam)
        diff = np.abs(old - new).max() / np.abs(old).max()
        cells = [f"lambda {lam:g}: max |diff| / max |B| {diff:.1e}"]
        models = [
            Ease("ease", [EaseBlock(markets=every, items=items, weights=w, lam=lam)])
            for w in (old.astype(np.float32), new)
        ]
        for v in valid:
            scores = [evaluate(model, v).mean for model in models]
            cells += [
                f"{v.protocol} NDCG@10 {scores[0]['ndcg@10']:.6f} / {scores[1]['ndcg@10']:.6f}",
                f"MRR {scores[0]['mrr']:.6f} / {scores[1]['mrr']:.6f}",
            ]
        lines.append("  " + ", ".join(cells))
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="6000,12000", help="Matrix sizes, comma-separated.")
    parser.add_argument("--data", type=Path, help="A data folder for the ranking check.")
    parser.add_argument("--lambdas", default="2,10,200", help="Lambdas of the ranking check.")
    parser.add_argument("--one", nargs=2, metavar=("ROUTINE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # a child process: one routine, one size
        print(f"{time_one(args.one[0], int(args.one[1])):.2f}")
        return
    print(machine("cpu").strip())
    for n in (int(s) for s in args.sizes.split(",")):
        cells = []
        for routine in ROUTINES:
            child = [sys.executable, "-m", "benchmarks.ease_solve", "--one", routine, str(n)]
            env = os.environ | ({"OPENBLAS_NUM_THREADS": "1"} if "1thread" in routine else {})
            done = subprocess.run(child, capture_output=True, text=True, check=False, env=env)
            ok = done.returncode == 0
            cells.append(
                f"{routine} {done.stdout.strip()} s"
                if ok
                else f"{routine} FAILED ({done.returncode})"
            )
        print(f"n = {n:,}: " + ", ".join(cells))
    if args.data:
        print("\n".join(ranking_check(args.data, [float(x) for x in args.lambdas.split(",")])))


if __name__ == "__main__":
    main()
