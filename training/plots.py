"""Training curves as a picture: loss and validation metric per epoch, one line per stage.

Beside report.py, which renders evaluation results as tables; this draws what the
training stages recorded (``StageState.curve``) into a run's curves.png.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_curves(
    path: Path, curves: Mapping[str, Sequence[Mapping[str, float]]], metric: str
) -> Path:
    """Write ``curves`` (stage -> its epochs' points: ``epoch``, ``loss``, ``metric``) to
    ``path``, training loss on the left, the validation metric on the right."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    for name, curve in curves.items():
        epochs = [p["epoch"] for p in curve]
        ax_loss.plot(epochs, [p["loss"] for p in curve], marker=".", label=name)
        ax_metric.plot(epochs, [p[metric] for p in curve], marker=".", label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_metric.set(xlabel="epoch", ylabel=f"validation {metric}", title=f"validation {metric}")
    ax_metric.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
