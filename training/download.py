"""Fetching the seven XMarket Electronics files, each verified by SHA-256.

The files come from the public FOREC repository, where the XMarket authors
published this processed slice. ``base_url`` may also be a ``file://`` folder, so
a machine without internet can fill a data folder from a local copy.
"""

from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from model_store.manifest import sha256_file

log = logging.getLogger(__name__)

XMARKET_URL = "https://raw.githubusercontent.com/hamedrab/FOREC/main/DATA/proc_data"
# SHA-256 of each file, as in the data README's SHA256SUMS.
XMARKET_FILES: dict[str, str] = {
    "ca_5core.txt": "a8b2f9c2e4f0934bad03ebb6127817263cfd79c7e416ca79d8ab9696c3918bcb",
    "de_5core.txt": "d4058d929a880c387efd2f330d8010ec25904f53ef40b3d722487dfd182d2632",
    "fr_5core.txt": "48dc17f037eb13fce65ad72428cedf691d3aade016229699045d2f05806775fb",
    "in_5core.txt": "56701302e04b9a1e2e690ab8687e4be0d42d154c6d99bb87fd2d9b882d517deb",
    "jp_5core.txt": "bbf2e3a713385bdc25abfcdc6a99e48902ed9870f1f2943ff3c6152ff3b64e1c",
    "mx_5core.txt": "3178c95adf0b57980b89d1b3f38bea1a2741083a589a6ae7e3807511749d179f",
    "uk_5core.txt": "757011193b2878c08d3589c4ec0aecff015f898e56b22c412b95529707adf0d8",
}


class DownloadError(RuntimeError):
    """A file that could not be fetched or did not match its checksum."""


def _fetch(url: str, target: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        target.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url}: {reason}. Without internet access, copy the XMarket "
            "files into the destination folder, or pass --base-url file:///path/to/copy"
        ) from exc


def download_xmarket(
    dest: Path,
    base_url: str = XMARKET_URL,
    *,
    files: dict[str, str] = XMARKET_FILES,
    timeout: float = 60.0,
    report: Callable[[str, str], None] = lambda name, status: None,
) -> dict[str, str]:
    """Make ``dest`` hold every file with the right checksum; name -> what was done.

    A present file with the right checksum is kept ("present"); a missing or
    corrupt one is fetched to a temporary name, verified, then renamed into place
    ("downloaded" or "replaced"), so an interrupted run never leaves a bad file.
    """
    dest.mkdir(parents=True, exist_ok=True)
    done: dict[str, str] = {}
    for name, expected in files.items():
        target = dest / name
        status = "downloaded"
        if target.exists():
            if sha256_file(target) == expected:
                done[name] = "present"
                report(name, "present")
                continue
            status = "replaced"
        partial = dest / f".{name}.part"
        _fetch(f"{base_url.rstrip('/')}/{name}", partial, timeout)
        actual = sha256_file(partial)
        if actual != expected:
            partial.unlink()
            raise DownloadError(f"{name}: checksum mismatch (expected {expected}, got {actual})")
        partial.replace(target)
        done[name] = status
        report(name, status)
    return done
