"""The federation's own failure: one class, raised where a failure enters."""

from __future__ import annotations


class FederationError(RuntimeError):
    """A federation that cannot go on: a client that replied with an error, a process of
    the deployment that failed or would not start (a port in use, a missing command)."""
