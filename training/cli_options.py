"""What the training package's commands share: the data option and the error wrapper."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated

import typer

from model_store.cli import user_errors

DataDir = Annotated[
    Path, typer.Option("--data", help="Folder of per-market interaction files.", show_default=False)
]


def training_errors(*kinds: type[Exception]) -> AbstractContextManager[None]:
    """``user_errors`` for the training commands' own kinds of bad input, and ``kinds``."""
    from training.download import DownloadError
    from training.market_files import DataFormatError

    return user_errors(DataFormatError, DownloadError, ValueError, KeyError, *kinds)
