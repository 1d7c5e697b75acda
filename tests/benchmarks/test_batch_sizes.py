"""`python -m benchmarks.batch_sizes` on the tiny store, CPU provider: the table's rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.batch_sizes import main
from model_store.catalogue import load_catalogues
from model_store.store import Version

REPO = Path(__file__).resolve().parents[2]
PROJECT = {"benchmarks", "cmr", "model_store", "service", "training"}


def table_rows(out: str) -> list[list[str]]:
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


def test_the_table_has_every_batch_at_every_candidate_count(
    tiny_store: Version, capsys: pytest.CaptureFixture[str]
) -> None:
    catalogues = load_catalogues(tiny_store.file(tiny_store.manifest.catalogues))
    whole = max(len(c) for c in catalogues.values())
    store = tiny_store.path.parents[1]
    main(["--store", str(store), "--provider", "cpu", "--threads", "1", "--min-seconds", "0.01"])
    out = capsys.readouterr().out
    assert out.startswith("onnxruntime ")
    rows = table_rows(out)
    counts = list(dict.fromkeys([min(200, whole), whole]))  # 200 is capped at the catalogue
    assert [(r[1], r[2]) for r in rows] == [(str(b), f"{c:,}") for c in counts for b in (1, 16, 64)]
    assert {r[0] for r in rows} == {"CPUExecutionProvider"}
    assert {r[3] for r in rows} == {"50"}
    assert all(int(r[4]) >= 2 and float(r[5]) > 0 for r in rows)  # calls, ms/call
    assert [r[7] for r in rows if r[1] == "1"] == ["1.0x"] * len(counts)
    assert all(r[7].endswith("x") and float(r[7][:-1]) > 0 for r in rows)


def test_a_ratio_needs_b1_and_a_catalogue_count_of_0_is_the_whole_catalogue(
    tiny_store: Version, capsys: pytest.CaptureFixture[str]
) -> None:
    catalogues = load_catalogues(tiny_store.file(tiny_store.manifest.catalogues))
    whole = max(len(c) for c in catalogues.values())
    args = ["--store", str(tiny_store.path.parents[1]), "--provider", "cpu", "--threads", "1"]
    main([*args, "--min-seconds", "0", "--batch", "2", "--candidates", "0", "--history", "3"])
    rows = table_rows(capsys.readouterr().out)
    assert [r[1:4] + r[7:] for r in rows] == [["2", f"{whole:,}", "3", ""]]


def test_the_graph_benchmarks_import_only_numpy_and_onnxruntime() -> None:
    """A bare GPU machine has numpy and onnxruntime (the carried bundle), not the
    service's or training's packages: the graph-level benchmarks must not need them."""
    code = (
        "import sys, benchmarks.batch_sizes, benchmarks.scoring;"
        "print(' '.join({m.split('.')[0] for m in sys.modules}))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = {m for m in found if m not in sys.stdlib_module_names and not m.startswith("_")}
    assert outside - PROJECT == {"numpy", "onnxruntime"}


def test_the_binding_probe_checks_and_times_every_way_on_cpu(
    tiny_store: Version, capsys: pytest.CaptureFixture[str]
) -> None:
    """On CPU there is no CUDA graph to try: the plain call and IOBinding, both scored
    like the plain call (a mismatch would leave the row without a speed)."""
    from benchmarks.gpu.binding import main as binding_main

    store = tiny_store.path.parents[1]
    binding_main(["--store", str(store), "--provider", "cpu", "--min-seconds", "0.01"])
    rows = table_rows(capsys.readouterr().out)
    assert [r[0] for r in rows] == ["run", "iobinding"] * 4  # B 1, 64 x C 200, whole
    assert all(float(r[3]) > 0 and r[5].endswith("x") and r[6] == "" for r in rows)
