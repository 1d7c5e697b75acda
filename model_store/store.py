"""The model store on disk: versions, the ``current`` pointer, publish, promote, rollback.

    <store>/versions/<version>/manifest.json, *.onnx, markets/<code>.onnx, items ...
    <store>/current        the served version's name
    <store>/history        versions that were current before, oldest first
    <store>/.staging/      versions being written

A version is written into ``.staging`` and renamed into ``versions`` in one step,
so a reader never sees half a version; ``current`` and ``history`` are replaced
the same way. Nothing is served, promoted or rolled back to without verifying the
manifest's schema and every file's hash first.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from model_store.manifest import MANIFEST, Manifest, StoreError, sha256_file

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Version:
    """A verified version: its folder and manifest."""

    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.version

    def file(self, name: str) -> Path:
        return self.path / name


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_version_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise StoreError(
            f"bad version name {name!r}: use letters, digits, '.', '_' and '-' (at most 128)"
        )
    return name


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions_dir = root / "versions"

    def versions(self) -> list[str]:
        """Published version names, oldest first (by creation time, then name)."""
        if not self.versions_dir.is_dir():
            return []
        found = [p for p in self.versions_dir.iterdir() if (p / MANIFEST).is_file()]
        return [p.name for p in sorted(found, key=lambda p: (p.stat().st_mtime, p.name))]

    def current(self) -> str | None:
        path = self.root / "current"
        if not path.is_file():
            return None
        return path.read_text().strip() or None

    def history(self) -> list[str]:
        path = self.root / "history"
        return path.read_text().split() if path.is_file() else []

    def open(self, version: str | None = None, verify: bool = True) -> Version:
        """A version (``current`` when not named) with its manifest; with ``verify``,
        every file's hash checked. Raises StoreError saying what is wrong."""
        if version is None:
            version = self.current()
            if version is None:
                raise StoreError(f"{self.root}: no current version; publish or promote one")
        folder = self.versions_dir / check_version_name(version)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise StoreError(f"{self.root}: no version {version!r}")
        manifest = Manifest.from_json(manifest_path.read_text(), str(manifest_path))
        if manifest.version != version:
            raise StoreError(f"{manifest_path}: names version {manifest.version!r}")
        if verify:
            manifest.verify_files(folder)
        return Version(folder, manifest)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """An empty folder on the store's file system to write a version into;
        removed afterwards unless published."""
        parent = self.root / ".staging"
        parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=parent))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, folder: Path, manifest: Manifest, promote: bool) -> Version:
        """Hash every file of ``folder``, write the manifest, verify, and rename the
        folder into ``versions/<version>`` in one step."""
        name = check_version_name(manifest.version)
        files = {
            str(p.relative_to(folder)): sha256_file(p)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        manifest = replace(manifest, files=files)
        (folder / MANIFEST).write_text(manifest.to_json())
        Manifest.from_json((folder / MANIFEST).read_text(), str(folder)).verify_files(folder)
        target = self.versions_dir / name
        if target.exists():
            raise StoreError(f"{self.root}: version {name!r} exists already")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)  # mkdtemp makes it private
        os.rename(folder, target)
        if promote:
            self.promote(name)
        return Version(target, manifest)

    def promote(self, version: str) -> Version:
        """Make a verified version current; the previous one goes on the history."""
        opened = self.open(version)
        previous = self.current()
        if previous == version:
            return opened
        if previous is not None:
            _write_atomic(self.root / "history", "\n".join([*self.history(), previous]) + "\n")
        _write_atomic(self.root / "current", version + "\n")
        return opened

    def rollback(self) -> Version:
        """Make the version that was current before the current one current again."""
        history = self.history()
        if not history:
            raise StoreError(f"{self.root}: nothing to roll back to")
        opened = self.open(history[-1])
        _write_atomic(self.root / "history", "".join(f"{v}\n" for v in history[:-1]))
        _write_atomic(self.root / "current", opened.name + "\n")
        return opened
