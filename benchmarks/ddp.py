"""Pre-training speed of the hybrid in one process and across several (torch DDP).

Fits the out-of-fold closed forms once (what pre-training scores from), then, for each
configuration of processes x threads each, times the same pre-training steps: the
first full batches of one epoch's order (users per step: the recipe's batch size),
after a short untimed warm-up. Several processes split each batch as `cmr train
--nproc` does (training/distributed.py, training/hybrid_epoch.py). The defaults, 1 x 1,
1 x 2 and 2 x 1, compare two processes with one process on the same two cores.
Rounds interleave the configurations. Prints the machine, then a markdown table:
processes, threads each, backend, device, steps, users/s (mean over rounds, and its
range), each configuration's users/s over the first one's, and the seconds from the
configuration's start to its timed steps (spawning the processes, the warm-up); then
the load average before and after (a shared machine's other work slows every case).

    python -m benchmarks.ddp --data ../shared/data/xmarket-electronics [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from model_store.vocab import IntArray
from training.closed_form import Blocks, fold_fits
from training.config import HybridTrainConfig
from training.data import load_interactions
from training.distributed import Ranks, choose_backend, launch
from training.hybrid import HybridConfig, HybridRecommender
from training.hybrid_epoch import EpochData, HybridStep, train_epoch
from training.hybrid_examples import UserSets, user_batches
from training.market_files import DataFormatError
from training.split import make_split

CONFIGS = ("1x1", "1x2", "2x1")  # processes x threads each


@dataclass(frozen=True, kw_only=True)
class Work:
    """What one configuration's processes are sent."""

    model: HybridConfig
    cfg: HybridTrainConfig
    warm_up: EpochData
    timed: EpochData
    device: str
    started: float  # time.time() when the configuration started, for its start-up
    out: Path  # rank 0 writes its timing here


@dataclass(frozen=True, kw_only=True)
class Timing:
    nproc: int
    threads: int
    backend: str
    device: str
    steps: int
    users: int
    seconds: float  # the timed steps, rank 0's clock
    startup: float  # from the configuration's start to its timed steps

    @property
    def users_per_s(self) -> float:
        return self.users / self.seconds


def time_steps(ranks: Ranks, work: Work) -> None:
    """One rank of a configuration: the model, the warm-up, then the timed steps."""
    model = HybridRecommender(work.model, work.timed.folds.fits[0]).to(ranks.device)
    ranks.copy_from_main(model)  # the same start on every rank
    step = ranks.wrap(HybridStep(model), find_unused=False)
    opt = torch.optim.Adam(model.parameters(), lr=work.cfg.lr)
    rng = np.random.default_rng(work.cfg.seed)
    torch_rng = torch.Generator().manual_seed(work.cfg.seed)
    model.train()
    for data in (work.warm_up, work.timed):  # the timings kept are the timed steps'
        ranks.total(0.0)  # every rank starts the clock together
        _sync(ranks.device)
        start, startup = time.perf_counter(), time.time() - work.started
        # An epoch ends in an all-reduce: every rank's steps are done when it returns.
        train_epoch(
            step, opt, data=data, cfg=work.cfg, rng=rng, torch_rng=torch_rng, ranks=ranks,
            desc="steps",
        )  # fmt: skip
        _sync(ranks.device)
        seconds = time.perf_counter() - start
    if ranks.main:
        work.out.write_text(json.dumps({"seconds": seconds, "startup": startup}))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_rows(
    sets: UserSets, *, batch_size: int, warm_up: int, steps: int, seed: int
) -> tuple[IntArray, IntArray]:
    """The users of the first ``warm_up`` and the next ``steps`` full batches of one
    epoch's order. Each fold and market then holds whole batches, so an epoch over
    either set is exactly that many full batches."""
    every = np.arange(len(sets.users))
    batches = user_batches(np.random.default_rng(seed), sets, every, batch_size=batch_size)
    full = [b for b in batches if len(b) == batch_size]
    if len(full) < warm_up + steps:
        raise ValueError(f"the data has {len(full)} full batches; asked for {warm_up + steps}")
    return np.concatenate(full[:warm_up]), np.concatenate(full[warm_up : warm_up + steps])


def bench_ddp(
    data_dir: Path,
    *,
    configs: Sequence[tuple[int, int]],
    device: str = "cpu",
    steps: int = 20,
    warm_up: int = 2,
    rounds: int = 2,
    folds: int = 2,
    batch_size: int = 256,
) -> list[Timing]:
    """Time ``steps`` pre-training steps of the default recipe in each configuration
    (processes, threads each), ``rounds`` times, the configurations interleaved."""
    data = load_interactions(data_dir)
    split = make_split(data, "random", 0)
    model = HybridConfig(n_items=data.items.size, n_markets=len(data.markets))
    cfg = HybridTrainConfig(batch_size=batch_size, folds=folds)
    blocks = Blocks.of(model)
    fits = fold_fits(split, blocks, folds=folds, seed=cfg.seed)
    sets = UserSets.build(split, fold=fits.fold, max_history=model.max_history)
    every = list(range(len(data.markets)))
    epoch = EpochData.build(sets, fits, markets=every, split=split)
    warm_rows, timed_rows = step_rows(
        sets, batch_size=batch_size, warm_up=warm_up, steps=steps, seed=cfg.seed
    )
    timings = []
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(rounds):
            for nproc, threads in configs:
                work = Work(
                    model=model, cfg=cfg, warm_up=replace(epoch, rows=warm_rows),
                    timed=replace(epoch, rows=timed_rows), device=device,
                    started=time.time(), out=Path(scratch) / "timing.json",
                )  # fmt: skip
                backend = "-"
                if nproc == 1:
                    before = torch.get_num_threads()
                    torch.set_num_threads(threads)
                    time_steps(Ranks(device=torch.device(device)), work)
                    torch.set_num_threads(before)
                else:
                    backend = choose_backend(device, nproc)
                    launch(
                        time_steps, work, nproc=nproc, device_type=device, threads=threads,
                        seed=cfg.seed,
                    )  # fmt: skip
                timed = json.loads(work.out.read_text())
                timing = Timing(
                    nproc=nproc, threads=threads, backend=backend, device=device, steps=steps,
                    users=len(timed_rows), seconds=timed["seconds"], startup=timed["startup"],
                )  # fmt: skip
                timings.append(timing)
    return timings


def ddp_table(timings: Sequence[Timing]) -> str:
    """Markdown: one row per configuration, its rounds' mean users/s and range, over the
    first configuration's mean; start-up: the mean seconds before the timed steps."""
    keys = list(dict.fromkeys((t.nproc, t.threads) for t in timings))
    groups = [[t for t in timings if (t.nproc, t.threads) == key] for key in keys]
    means = [float(np.mean([t.users_per_s for t in g])) for g in groups]
    lines = [
        "| processes | threads each | backend | device | steps | users/s | range | x first "
        "| start-up s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for group, mean in zip(groups, means, strict=True):
        t, rates = group[0], [g.users_per_s for g in group]
        startup = float(np.mean([g.startup for g in group]))
        lines.append(
            f"| {t.nproc} | {t.threads} | {t.backend} | {t.device} | {t.steps} | {mean:,.0f} "
            f"| {min(rates):,.0f}-{max(rates):,.0f} | {mean / means[0]:.2f}x | {startup:.1f} |"
        )
    return "\n".join(lines) + "\n"


def machine(device: str) -> str:
    """CPU model, cores this process may use, torch, and the GPUs when asked for."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    line = f"{cpu}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}"
    if device == "cuda":
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        line += f", GPUs {gpus}"
    return line + "\n"


def _config(text: str) -> tuple[int, int]:
    """The text "2x1" -> (2, 1): processes x threads each."""
    nproc, sep, threads = text.partition("x")
    if not sep or not nproc.isdigit() or not threads.isdigit() or min(int(nproc), int(threads)) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PROCESSESxTHREADS, e.g. 2x1")
    return int(nproc), int(threads)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ddp",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[2],
    )
    parser.add_argument("--data", type=Path, required=True, help="folder of market files")
    parser.add_argument(
        "--config",
        type=_config,
        action="append",
        metavar="NxT",
        help=f"N processes x T threads each; repeatable (default: {', '.join(CONFIGS)})",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where the ranks train; cuda with fewer GPUs than processes shares them "
        "over gloo, NCCL needs a GPU per process (default: %(default)s)",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default: 20)")
    parser.add_argument("--warm-up", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument("--rounds", type=int, default=2, help="repeats, interleaved (default: 2)")
    parser.add_argument(
        "--folds", type=int, default=2, help="out-of-fold closed forms to fit (default: 2)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=256, help="users per step (default: the recipe's 256)"
    )
    args = parser.parse_args(argv)
    if min(args.steps, args.rounds, args.batch_size) < 1 or args.warm_up < 0 or args.folds < 2:
        parser.error("--steps, --rounds, --batch-size must be >= 1, --warm-up >= 0, --folds >= 2")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "error: --device cuda, but torch sees no CUDA GPU\n")
    configs = args.config or [_config(c) for c in CONFIGS]
    load_before = os.getloadavg()[0]  # a shared machine's other work slows every case
    try:
        timings = bench_ddp(
            args.data, configs=configs, device=args.device, steps=args.steps,
            warm_up=args.warm_up, rounds=args.rounds, folds=args.folds,
            batch_size=args.batch_size,
        )  # fmt: skip
    except (FileNotFoundError, ValueError, DataFormatError) as error:  # bad input
        parser.exit(2, f"error: {error}\n")
    load_after = os.getloadavg()[0]
    load = f"load average (1 min): {load_before:.1f} at the start, {load_after:.1f} at the end"
    print(machine(args.device) + "\n" + ddp_table(timings) + "\n" + load)


if __name__ == "__main__":
    main()
