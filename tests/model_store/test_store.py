"""The model store: atomic publish, verification, current, promote and rollback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_store.catalogue import Catalogue, load_catalogues, save_catalogues
from model_store.manifest import MANIFEST, Manifest, StoreError
from model_store.store import ModelStore, Version


def _manifest(version: str) -> Manifest:
    return Manifest(
        version=version,
        variant="history-once",
        model={"d_model": 8},
        train={"seed": 0},
        markets={"de": 0, "fr": 1},
        pretrained="pretrained.onnx",
        graphs={"de": "markets/de.onnx"},
        items="items.json",
        catalogues="catalogues.json",
        metrics={},
        files={},
        command="cmr train ...",
        source_run="/runs/x",
        created_at="2026-11-22T00:00:00+00:00",
    )


def _publish(store: ModelStore, version: str, promote: bool = True) -> Version:
    with store.staging() as folder:
        (folder / "markets").mkdir()
        (folder / "pretrained.onnx").write_bytes(b"graph bytes " + version.encode())
        (folder / "markets/de.onnx").write_bytes(b"de graph")
        (folder / "items.json").write_text(json.dumps({"items": ["a", "b"]}))
        (folder / "catalogues.json").write_text("{}")
        return store.publish(folder, _manifest(version), promote)


def test_publish_hashes_every_file_and_leaves_no_staging(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    published = _publish(store, "v1")
    assert set(published.manifest.files) == {
        "pretrained.onnx",
        "markets/de.onnx",
        "items.json",
        "catalogues.json",
    }
    assert store.current() == "v1"
    assert store.versions() == ["v1"]
    assert list((tmp_path / ".staging").iterdir()) == []
    assert store.open().manifest == published.manifest


def test_a_version_with_one_altered_byte_is_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    version = _publish(store, "v1")
    graph = version.file("markets/de.onnx")
    data = bytearray(graph.read_bytes())
    data[0] ^= 1
    graph.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"markets/de\.onnx has SHA-256 .* changed or damaged"):
        store.open("v1")
    with pytest.raises(StoreError, match="changed or damaged"):
        store.promote("v1")


def test_missing_files_unknown_schema_and_names_are_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    version = _publish(store, "v1")
    version.file("items.json").unlink()
    with pytest.raises(StoreError, match=r"items\.json is missing"):
        store.open("v1")
    manifest = version.file(MANIFEST)
    payload = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(payload | {"schema_version": 99}))
    with pytest.raises(StoreError, match="schema version 99"):
        store.open("v1")
    manifest.write_text("{not json")
    with pytest.raises(StoreError, match="not JSON"):
        store.open("v1")
    with pytest.raises(StoreError, match="no version 'v9'"):
        store.open("v9")
    with pytest.raises(StoreError, match="bad version name"):
        store.open("../v1")
    with pytest.raises(StoreError, match="no current version"):
        ModelStore(tmp_path / "empty").open()


def test_a_manifest_must_name_a_graph_for_every_market(tmp_path: Path) -> None:
    bad = _manifest("v1").to_json().replace('"pretrained": "pretrained.onnx"', '"pretrained": null')
    with pytest.raises(StoreError, match="not every market has one"):
        Manifest.from_json(bad, "test")
    manifest = _manifest("v1")
    assert manifest.graph_for("de") == ("markets/de.onnx", True)
    assert manifest.graph_for("fr") == ("pretrained.onnx", False)


def test_publishing_an_existing_version_fails_and_keeps_it(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _publish(store, "v1")
    with pytest.raises(StoreError, match="exists already"):
        _publish(store, "v1")
    store.open("v1")
    assert list((tmp_path / ".staging").iterdir()) == []


def test_promote_and_rollback(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _publish(store, "v1")
    _publish(store, "v2", promote=False)
    assert store.current() == "v1"
    store.promote("v2")
    assert store.current() == "v2"
    _publish(store, "v3")
    assert (store.current(), store.history()) == ("v3", ["v1", "v2"])
    assert store.rollback().name == "v2"
    assert store.rollback().name == "v1"
    assert store.current() == "v1"
    with pytest.raises(StoreError, match="nothing to roll back to"):
        store.rollback()
    assert store.current() == "v1"


def test_rollback_refuses_a_damaged_previous_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    old = _publish(store, "v1")
    _publish(store, "v2")
    old.file("pretrained.onnx").write_bytes(b"tampered")
    with pytest.raises(StoreError, match=r"v1: pretrained\.onnx"):
        store.rollback()
    assert store.current() == "v2"


def test_catalogue_orders_by_popularity_and_round_trips(tmp_path: Path) -> None:
    catalogue = Catalogue.from_interactions(np.array([5, 3, 5, 9, 3, 5, 7], dtype=np.int64))
    assert catalogue.items.tolist() == [5, 3, 7, 9]
    assert catalogue.counts.tolist() == [3, 2, 1, 1]
    save_catalogues({"de": catalogue}, tmp_path / "c.json")
    loaded = load_catalogues(tmp_path / "c.json")["de"]
    assert loaded.items.tolist() == [5, 3, 7, 9] and loaded.counts.tolist() == [3, 2, 1, 1]
    with pytest.raises(ValueError, match="real item indices"):
        Catalogue(np.array([0, 1]), np.array([1, 1]))


def test_pooled_catalogue_sums_counts_over_markets() -> None:
    a = Catalogue(np.array([1, 2, 3], dtype=np.int64), np.array([6, 3, 2], dtype=np.int64))
    b = Catalogue(np.array([3, 4, 2], dtype=np.int64), np.array([4, 4, 1], dtype=np.int64))
    pooled = Catalogue.pooled([a, b])
    assert pooled.items.tolist() == [1, 3, 2, 4]  # 6, 6, 4, 4: ties lower index first
    assert pooled.counts.tolist() == [6, 6, 4, 4]
    assert len(Catalogue.pooled([])) == 0
