"""Training and scoring speed of the two Bert4CMR variants on the real data.

Both run in this one process at the paper's size (d=32, 4 layers, 8 heads) on the
same batches; the paper variant is reported as a ratio to the history-once one,
since this machine is shared and absolute times are noisy.

    .venv/bin/python -m benchmarks.variants [DATA_DIR] [--seconds 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from model_store.vocab import IntArray
from training.bert4cmr_train import bce_loss
from training.data import load_interactions
from training.evaluate import evaluate
from training.examples import Examples, NegativeSampler, batches, build_examples
from training.model import Bert4CMR, Bert4CMRConfig
from training.predict import TorchScorer
from training.protocols import build_eval_set
from training.split import make_split


def train_rate(model: Bert4CMR, examples: Examples, negatives: IntArray, seconds: float) -> float:
    """Training samples per second over about ``seconds`` of batches of 1024."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    seen, start = 0, time.perf_counter()
    for batch in batches(rng, examples, negatives, batch_size=1024):
        candidates = torch.from_numpy(batch.candidates)
        logits = model(
            torch.from_numpy(batch.histories), candidates, torch.from_numpy(batch.markets)
        )
        loss = bce_loss(logits, candidates)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(candidates)
        if time.perf_counter() - start > seconds:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", nargs="?", default="../shared/data/xmarket-electronics")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    data = load_interactions(Path(args.data))
    split = make_split(data, "random", 0)
    examples = build_examples(split)
    negatives = NegativeSampler(split).sample(np.random.default_rng(0), examples, 4)
    valid = build_eval_set(split, "market", "valid", seed=0)
    jp = data.markets.index("jp")  # a small market keeps the paper variant's scoring short
    rates, scoring = {}, {}
    for paper in (False, True):
        torch.manual_seed(0)
        cfg = Bert4CMRConfig(
            n_items=data.items.size,
            n_markets=len(data.markets),
            variant="paper" if paper else "history-once",
        )
        model = Bert4CMR(cfg)
        rates[paper] = train_rate(model, examples, negatives, args.seconds)
        start = time.perf_counter()
        evaluate(TorchScorer("bench", model), valid, markets=[jp])
        scoring[paper] = time.perf_counter() - start
    print(f"torch threads: {torch.get_num_threads()}")
    print(
        f"training samples/s: history-once {rates[False]:.0f}, paper {rates[True]:.0f}; "
        f"paper / history-once = {rates[True] / rates[False]:.2f}"
    )
    print(
        f"scoring jp validation (100 candidates per user): history-once {scoring[False]:.1f} s, "
        f"paper {scoring[True]:.1f} s; paper / history-once = {scoring[True] / scoring[False]:.1f}"
    )


if __name__ == "__main__":
    main()
