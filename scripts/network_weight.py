"""A finished hybrid run scored with its network at other shares of its weight in the mix
(0: the closed form alone), under `market` and `full`, on the validation and test splits.

    usage: .venv/bin/python scripts/network_weight.py RUN DATA SCALE[,SCALE ...]

RUN is a `cmr train` run folder (its weights kept), DATA the data it was trained on.
Training chooses among half and the whole weight on validation (training/network_choice.py);
this shows the whole line, test included, to see what any weight could reach.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training.data import load_interactions
from training.evaluate import evaluate_sets
from training.hybrid import scaled_network
from training.hybrid_stage import learned
from training.hybrid_train import load_hybrid
from training.network_choice import with_networks
from training.predict import HybridScorer
from training.protocols import build_eval_set
from training.split import make_split

PROTOCOLS = ("market", "full")


def main(run: Path, data_dir: Path, scales: list[float]) -> None:
    config = json.loads((run / "config.json").read_text())
    seed = int(config["train"]["seed"])
    split = make_split(load_interactions(data_dir), config["train"]["split_scheme"], seed)
    model = load_hybrid(run, config)
    weights = learned(model)
    sets = {
        s: [build_eval_set(split, p, s, seed=seed) for p in PROTOCOLS] for s in ("valid", "test")
    }
    for scale in scales:
        scaled = with_networks(model, model.config.networks, scaled_network(weights, scale))
        cells = []
        for split_name, eval_sets in sets.items():
            results = evaluate_sets(HybridScorer("scaled", scaled.eval()), eval_sets)
            ndcg = " / ".join(f"{r.mean['ndcg@10']:.4f}" for r in results)
            cells.append(f"{split_name} {ndcg}")
        print(f"network at {scale:g} of its weight: NDCG@10 (market / full) " + "; ".join(cells))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), [float(s) for s in sys.argv[3].split(",")])
