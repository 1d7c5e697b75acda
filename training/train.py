"""What ``cmr train`` runs: a recipe (training/config.py) into a run folder, whatever its
family: Bert4CMR (training/bert4cmr_train.py) or the hybrid (training/hybrid_train.py).

Both write the folder training/runs.py describes, and both resume an interrupted run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from training.bert4cmr_train import train_bert4cmr
from training.config import Recipe, TrainConfig
from training.evaluate import Result
from training.hybrid_train import train_hybrid
from training.runs import LOG_FILE
from training.store_model import WarmStart, load_stored_hybrid, parse_store_ref


def train_run(
    data_dir: Path,
    run_dir: Path,
    recipe: Recipe,
    *,
    command: str = "",
    init_from: str | None = None,
    nproc: int = 1,
) -> list[Result]:
    """Train ``recipe`` into ``run_dir`` and evaluate it; resumable. ``command`` (what
    started it) is appended to ``commands.txt``, for the model store. ``init_from``
    (``STORE[:VERSION]``, hybrid only): start from that published version's weights.
    ``nproc`` (hybrid only): training processes, data-parallel (training/distributed.py)."""
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    if nproc > 1 and isinstance(recipe.train, TrainConfig):
        raise ValueError("--nproc: only the hybrid family trains across processes")
    warm = None
    if init_from is not None:
        if isinstance(recipe.train, TrainConfig):
            raise ValueError("--init-from: only the hybrid family can be warm-started")
        warm = WarmStart(init_from, load_stored_hybrid(*parse_store_ref(init_from)))
    run_dir.mkdir(parents=True, exist_ok=True)
    if command:
        with (run_dir / "commands.txt").open("a") as f:
            f.write(command + "\n")
    handler = logging.FileHandler(run_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("training").addHandler(handler)
    try:
        if isinstance(recipe.train, TrainConfig):
            return train_bert4cmr(data_dir, run_dir, model_settings=recipe.model, cfg=recipe.train)
        return train_hybrid(
            data_dir,
            run_dir,
            model_settings=recipe.model,
            cfg=recipe.train,
            warm=warm,
            nproc=nproc,
        )
    finally:
        logging.getLogger("training").removeHandler(handler)
        handler.close()
