"""The training package's commands (``cmr data``, ``evaluate``, ``train``, ``compare``,
``export``, ``onboard``, ``report``), composed into ``cmr`` by cmr/cli.py.

Heavy imports (numpy, scipy, torch) sit inside the commands, so ``cmr --help`` and the
other packages' commands never load torch.
"""

from __future__ import annotations

import json
import shlex
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import typer

from model_store.cli import StoreDir
from training.cli_evaluate import evaluate_command
from training.cli_federate import federate_command
from training.cli_onboard import onboard_command
from training.cli_options import DataDir, training_errors
from training.cli_report import report_app

app = typer.Typer(
    help="Data, baselines, training, evaluation and export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect, fetch or generate interaction data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(report_app, name="report")
app.command("evaluate")(evaluate_command)
app.command("onboard")(onboard_command)
app.command("federate")(federate_command)


class Variant(StrEnum):
    paper = "paper"
    history_once = "history-once"


@data_app.command("stats")
def data_stats(
    data: DataDir,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the stats here.")
    ] = None,
) -> None:
    """Rows, users, items and mean history per market, counted on the raw files."""
    from training.market_files import read_logs
    from training.report import grid_table
    from training.stats import log_stats

    with training_errors():
        stats = log_stats(read_logs(data))
    header = ["market", "rows", "users", "items", "unique pairs", "mean history"]
    rows = [[s.market, *(f"{n:,}" for n in s.counts), f"{s.mean_history:.2f}"] for s in stats]
    print(grid_table(header, rows))
    if json_path:
        json_path.write_text(json.dumps([s.as_dict() for s in stats], indent=2) + "\n")


@data_app.command("download")
def data_download(
    dest: Annotated[Path, typer.Option(help="Folder to fill.")] = Path("data/xmarket-electronics"),
    base_url: Annotated[
        str | None,
        typer.Option(
            help="Where the files live: an http(s):// or file:// folder. [default: FOREC]"
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait per file.")] = 60.0,
) -> None:
    """Fetch the seven XMarket Electronics files, SHA-256 verified; good files are kept."""
    from training.download import XMARKET_URL, download_xmarket

    def report(name: str, status: str) -> None:
        print(f"{name}: {status}")

    with training_errors():
        download_xmarket(dest, base_url or XMARKET_URL, timeout=timeout, report=report)


@data_app.command("synth")
def data_synth(
    *,
    dest: Annotated[Path, typer.Option(help="Folder to write <market>_5core.txt files into.")],
    markets: Annotated[str, typer.Option(help="Comma-separated market codes.")] = "aa,bb,cc",
    users: Annotated[str, typer.Option(help="Comma-separated users per market.")] = "400,200,80",
    items: Annotated[int, typer.Option(min=2, help="Catalogue size.")] = 300,
    topics: Annotated[int, typer.Option(min=1, help="Shared item topics.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Synthetic multi-market data with planted market tastes and shared item topics."""
    from training.synth import SynthConfig, write_synth

    with training_errors():
        cfg = SynthConfig(
            markets=tuple(m.strip() for m in markets.split(",")),
            users=tuple(int(u) for u in users.split(",")),
            items=items,
            topics=topics,
            seed=seed,
        )
        for path in write_synth(dest, cfg):
            print(path)


@data_app.command("subset")
def data_subset(
    *,
    data: DataDir,
    dest: Annotated[Path, typer.Option(help="Folder to write <market>.tsv files into.")],
    markets: Annotated[
        str | None, typer.Option(help="Comma-separated markets to keep. [default: all]")
    ] = None,
    exclude: Annotated[str, typer.Option(help="Comma-separated markets to leave out.")] = "",
    drop_newest: Annotated[
        float, typer.Option(min=0.0, max=0.999, help="Share of each market's newest rows to drop.")
    ] = 0.0,
    drop_user_newest: Annotated[
        bool,
        typer.Option(
            help="Drop each user's newest row (users with 3 rows or more): the items "
            "`cmr evaluate --split-scheme temporal` on the whole data tests."
        ),
    ] = False,
) -> None:
    """Part of a data folder as a new one: some markets, each without its newest rows
    (the data as it was before them)."""
    from training.data_subset import write_subset

    def codes(text: str | None) -> list[str]:
        return [c.strip() for c in (text or "").split(",") if c.strip()]

    with training_errors():
        paths = write_subset(
            data, dest, markets=codes(markets) or None, exclude=codes(exclude),
            drop_newest=drop_newest, drop_user_newest=drop_user_newest,
        )  # fmt: skip
    for path in paths:
        print(path)


@app.command("train")
def train_command(
    *,
    data: DataDir,
    out: Annotated[Path, typer.Option(help="Run folder; an interrupted run there resumes.")],
    config: Annotated[
        Path | None,
        typer.Option(
            help='Recipe file: {"family": "hybrid" | "bert4cmr", "model": {...}, "train": '
            "{...}}. [default: the hybrid's defaults, the served recipe]"
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override one setting, e.g. --set d_model=64 --set train.lr=5e-4. Repeatable.",
        ),
    ] = None,
    init_from: Annotated[
        str | None,
        typer.Option(
            metavar="STORE[:VERSION]",
            help="Warm start (hybrid): begin from a published version's weights (default "
            "version: the current one). Its items and markets keep their rows, new ones "
            "are added, the model's settings are the version's.",
        ),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="Training processes (hybrid): data-parallel with torch DDP, each takes its "
            "share of every batch and gradients are averaged, so results match one process "
            "(dropout aside). gloo on CPU, NCCL when each process has a GPU of its own. "
            "Threads per process: cores / N unless train.threads is set.",
        ),
    ] = 1,
) -> None:
    """Train on every market, adapt to each market, evaluate on validation and test.

    The default recipe is the hybrid (EASE^R's closed form plus a learned market-aware
    correction); `--config configs/bert4cmr.json` trains the paper's Bert4CMR. Writes
    checkpoints, metrics per protocol, curves.png and train.log into OUT.
    """
    from training.config import parse_recipe
    from training.distributed import DistributedError
    from training.report import report
    from training.train import train_run

    with training_errors():
        recipe = parse_recipe(config, set_ or [])
        args = ["cmr", "train", "--data", str(data), "--out", str(out)]
        args += ["--config", str(config)] if config else []
        args += [a for setting in set_ or [] for a in ("--set", setting)]
        args += ["--init-from", init_from] if init_from else []
        args += ["--nproc", str(nproc)] if nproc > 1 else []
        try:
            results = train_run(
                data, out, recipe, command=shlex.join(args), init_from=init_from, nproc=nproc
            )
        except DistributedError as exc:  # one line; the rank's traceback is in train.log
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from exc
    print(report([r for r in results if r.split == "test"]))


@app.command("compare")
def compare_command(
    files: Annotated[list[Path], typer.Argument(help="Result JSON files (cmr evaluate/train).")],
    split: Annotated[
        Literal["test", "valid"], typer.Option(help="Which split's results.")
    ] = "test",
    markdown: Annotated[Path | None, typer.Option(help="Also write the tables here.")] = None,
) -> None:
    """Tables of mean ± std over seeds, model beside model, per protocol and metric."""
    from training.report import compare, load_results

    with training_errors():
        tables = compare(load_results(files), split=split)
    print(tables)
    if markdown:
        markdown.write_text(tables)


@app.command("export")
def export_command(
    *,
    run: Annotated[Path, typer.Option(help="A finished `cmr train` run folder.")],
    store: StoreDir,
    version: Annotated[
        str | None, typer.Option(help="Version name (default: UTC time and the run's model name).")
    ] = None,
    variant: Annotated[
        Variant | None,
        typer.Option(help="Attention pattern of the graphs (default: the one trained)."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="The run's data, for catalogues (default: as recorded).")
    ] = None,
    promote: Annotated[
        bool, typer.Option(help="Make the new version current once published.")
    ] = True,
    refitted: Annotated[
        bool,
        typer.Option(
            help="A hybrid run's closed form refitted on every row, when the run has one "
            "(--no-refitted: the one its metrics were measured with)."
        ),
    ] = True,
) -> None:
    """Export a run's pre-trained and fine-tuned models as ONNX scoring graphs and
    publish them, with vocabulary, catalogues and metrics, as one store version."""
    from model_store.store import ModelStore
    from training.export import export_run

    with training_errors():
        chosen = variant.value if variant else None
        published = export_run(
            run, ModelStore(store), version=version, variant=chosen, data_dir=data,
            promote=promote, refitted=refitted,
        )  # fmt: skip
    state = "current" if promote else "not current; `cmr store promote` serves it"
    print(f"published {published.name} ({published.manifest.variant}) in {store}, {state}")
