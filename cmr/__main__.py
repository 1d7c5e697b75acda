"""``python -m cmr``: the same as the ``cmr`` command."""

from cmr.cli import app

app(prog_name="cmr")
