"""A rank target that fails, for tests/training/test_distributed.py: its own module, so
the spawned ranks import only this and training.distributed (not the test module's
imports, seconds on a small machine)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch.distributed as dist

from training.distributed import Ranks


def fail_on_rank_one(ranks: Ranks, pid_file: Path) -> None:
    """Rank 0 waits in a collective that rank 1 never joins: rank 1 raises instead,
    once rank 0 has written its process id to ``pid_file``."""
    if ranks.rank == 1:
        while not pid_file.exists():
            time.sleep(0.01)
        raise ValueError("rank one breaks")
    pid_file.write_text(str(os.getpid()))
    dist.barrier()
