"""Training across processes: starting the ranks, their process group, and what one rank
asks of the others (its share of a batch, sums, rank 0's decisions and weights).

``launch`` spawns ``nproc`` processes itself (no torchrun): each joins a process group
over 127.0.0.1 and a free port, with NCCL when every rank has a GPU of its own and gloo
otherwise, and runs ``target(ranks, payload)``. The payload travels pickled, and its
tensors through shared memory (torch.multiprocessing), so what the parent computed
once (the hybrid's closed form) is neither recomputed nor copied per rank. A rank that
fails ends the command: the others are stopped and ``DistributedError`` names it.

``Ranks`` is what the training loop sees; ``ONE`` (one process) makes every
collective a no-op, so the one-process path runs the same code:

    def target(ranks: Ranks, work: Work) -> None:
        step = ranks.wrap(module, find_unused=False)   # DDP when world > 1
        rows = batch[ranks.share(len(batch))]          # this rank's slice
        loss = ranks.total(local_loss)                 # summed over ranks
        state = ranks.from_main(state)                 # rank 0's decision, everywhere
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
import pickle
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.multiprocessing.spawn import ProcessException, start_processes
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)

P = TypeVar("P")
T = TypeVar("T")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class DistributedError(RuntimeError):
    """A training process failed; the others have been stopped."""


# The hybrid has no buffers that train; torch 2.13 renamed the switch (older: broadcast_buffers).
_NO_BUFFER_SYNC: dict[str, Any] = (  # Any: a ** of bools mypy checks against every parameter
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


@dataclass(frozen=True, kw_only=True)
class Ranks:
    """This process's place among ``world`` training processes, and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str = ""  # "" when there is no process group (one process)

    @property
    def main(self) -> bool:
        """Rank 0: validates, decides, writes the run's files and logs."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` rows; sizes differ by at most one, and
        a rank's part is empty when ``n < world`` (it still joins the gradient sum)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def wrap(self, module: nn.Module, *, find_unused: bool) -> nn.Module:
        """``module`` in DistributedDataParallel (gradients averaged in backward), or
        itself in one process. ``find_unused``: some trainable parameters get no grad.
        Weights must already be equal on every rank (``copy_from_main``): buffers are
        never synced, the closed form is large and read-only."""
        if self.world == 1:
            return module
        return DistributedDataParallel(
            module,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            init_sync=False,
            find_unused_parameters=find_unused,
            **_NO_BUFFER_SYNC,
        )

    def total(self, value: float) -> float:
        """``value`` summed over every rank."""
        if self.world == 1:
            return value
        summed = torch.tensor([value], dtype=torch.float64, device=self._wire)
        dist.all_reduce(summed)
        return float(summed.item())

    def from_main(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if self.world == 1:
            return value
        box: list[Any] = [value]
        dist.broadcast_object_list(box, src=0, device=self._wire)
        return cast(T, box[0])

    def copy_from_main(self, module: nn.Module) -> None:
        """Rank 0's parameters into ``module`` on every rank."""
        if self.world == 1:
            return
        with torch.no_grad():
            for p in module.parameters():
                dist.broadcast(p.data, src=0)

    @property
    def _wire(self) -> torch.device:
        """Where collective inputs live: NCCL moves CUDA tensors only."""
        return self.device if self.backend == "nccl" else torch.device("cpu")


ONE = Ranks()


@dataclass(frozen=True, kw_only=True)
class _Setup:
    """What every rank is told besides its payload."""

    world: int
    port: int
    backend: str
    device_type: str
    gpus: int
    threads: int
    seed: int
    log_file: Path | None
    log_level: int
    first_failure: Path  # the first rank to fail writes its number here


def choose_backend(device_type: str, nproc: int) -> str:
    """NCCL when every rank has a CUDA device of its own, else gloo (ranks then share
    the GPUs, or run on the CPU)."""
    if device_type == "cuda" and torch.cuda.device_count() >= nproc and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def rank_threads(threads: int, nproc: int) -> int:
    """Intra-op threads per rank: ``threads`` when set, else this machine's cores
    divided among the ranks (more would only contend for the same cores)."""
    return threads or max(1, len(os.sched_getaffinity(0)) // nproc)


def free_port() -> int:
    """A loopback port nobody listens on now (rank 0's store binds it moments later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    target: Callable[[Ranks, P], None],
    payload: P,
    *,
    nproc: int,
    device_type: str,
    threads: int,
    seed: int,
    log_file: Path | None = None,
) -> None:
    """Run ``target(ranks, payload)`` in ``nproc`` spawned processes and wait for all.
    ``target`` must be a module-level function (it is pickled). ``threads``: per rank,
    0 = cores / nproc. Rank 0 logs at this process's level, to stderr and ``log_file``;
    the others log warnings only. Raises ``DistributedError`` when a rank fails."""
    if nproc < 2:
        raise ValueError(f"launch needs at least 2 processes, got {nproc}")
    backend = choose_backend(device_type, nproc)
    gpus = torch.cuda.device_count() if device_type == "cuda" else 0
    where = f"{gpus} GPU(s), shared" if backend == "gloo" and gpus else device_type
    with tempfile.TemporaryDirectory(prefix="cmr-ranks-") as scratch:
        setup = _Setup(
            world=nproc, port=free_port(), backend=backend, device_type=device_type,
            gpus=gpus, threads=rank_threads(threads, nproc), seed=seed, log_file=log_file,
            log_level=logging.getLogger("training").getEffectiveLevel(),
            first_failure=Path(scratch) / "first-failure",
        )  # fmt: skip
        log.info(
            "training across %d processes: %s on %s, %d threads each",
            nproc, backend, where, setup.threads,
        )  # fmt: skip
        context = start_processes(
            _rank_main, args=(target, payload, setup), nprocs=nproc, join=False,
            start_method="spawn",
        )  # fmt: skip
        try:
            while not context.join():
                pass
        except ProcessException as exc:
            raise _failure(exc, context.error_files, setup.first_failure) from None
        finally:  # an interrupt in this process leaves no rank behind either
            _stop(context.processes)
            for path in context.error_files:
                Path(path).unlink(missing_ok=True)


def _failure(exc: ProcessException, error_files: list[str], first: Path) -> DistributedError:
    """The error of the rank that failed first, logged whole and summed up in one line.
    The others fail after it, in their next collective ("connection closed by peer"),
    and may be the first to be noticed: a rank claims ``first`` before it leaves."""
    index, trace = exc.error_index, str(exc)
    if first.exists() and (claimed := int(first.read_text())) != index:
        path = Path(error_files[claimed])
        if path.exists():  # a Python error's traceback, as torch saved it
            index, trace = claimed, str(pickle.loads(path.read_bytes()))
    log.error("training process %d failed:\n%s", index, trace)  # the whole traceback
    return DistributedError(f"training process {index} failed: {trace.strip().splitlines()[-1]}")


def _stop(processes: list[Any]) -> None:
    """Terminate, then kill, whatever of ``processes`` still runs."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()


def _rank_main(rank: int, target: Callable[[Ranks, P], None], payload: P, setup: _Setup) -> None:
    """A spawned rank: logging, threads, seed, device, process group, then ``target``."""
    _rank_logging(rank, setup)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(setup.port)
    torch.set_num_threads(setup.threads)
    torch.manual_seed(setup.seed + rank)  # dropout masks of each share drawn independently
    device = torch.device("cpu")
    if setup.device_type == "cuda":
        device = torch.device("cuda", rank % setup.gpus)
        torch.cuda.set_device(device)
    dist.init_process_group(setup.backend, rank=rank, world_size=setup.world)
    try:
        target(Ranks(rank=rank, world=setup.world, device=device, backend=setup.backend), payload)
    except Exception:
        _claim_first_failure(setup.first_failure, rank)
        raise
    finally:  # leaving the group is what makes the others fail: after the claim
        dist.destroy_process_group()
    # Done: once multiprocessing's own exit handlers have run (they release its locks),
    # skip the interpreter's teardown of torch's modules, seconds of a rank's life.
    atexit.register(_exit_now)


def _exit_now() -> None:
    """End a rank that succeeded at once: the last exit handler registered runs first."""
    logging.shutdown()  # the log and the standard streams are all that may hold lines
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _rank_logging(rank: int, setup: _Setup) -> None:
    """Rank 0 logs as the parent did (stderr and the run's log file); the others only
    warnings, marked with their rank, so every line of the run is written once."""
    if rank != 0:
        logging.basicConfig(level=logging.WARNING, format=f"rank {rank}: {LOG_FORMAT}")
        return
    logging.basicConfig(level=setup.log_level, format=LOG_FORMAT)
    if setup.log_file is not None:
        handler = logging.FileHandler(setup.log_file)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger("training").addHandler(handler)


def _claim_first_failure(path: Path, rank: int) -> None:
    """Record ``rank`` as the first to fail, unless one did before (an atomic create)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(str(rank))
