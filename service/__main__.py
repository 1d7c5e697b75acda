"""``python -m service``: run the recommendation service (see service/cli.py)."""

from service.cli import app

app(prog_name="python -m service")
