"""Which markets are alike: a hybrid version's markets compared by what each learned on
its own and by what they sell. ``cmr report markets`` draws and tabulates it.

Learned, from each market's own parameter rows (training/hybrid.py), symmetric:

- own item scores: what market m's own vector and item-bias delta add to candidate c's
  logit, ``w_m,n * (v_m . e_c + b_m,c)``, correlated over the items both markets sell;
- market vectors: cosine of the vectors added to every user vector of the market;
- item-bias deltas: their correlation over the items both sell.

Item overlap, from the version's catalogues:

- Jaccard of the two markets' item sets (symmetric);
- interaction share, row A and column B: the share of A's interactions that are on
  items B also sells (asymmetric).

Per market: its mix (the weight on the shared EASE^R block, its own block and the
network: the shared value plus its delta), how far its vector points the way of the
mean market vector, and how far its own item scores follow its items' popularity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.stats import spearmanr

from training.report import grid_table
from training.store_model import StoredHybrid

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Matrix = NDArray[np.float64]
MIX_PARTS = ("shared EASE^R", "own EASE^R", "network")

# (name, MarketReport field, what a cell is); the first three are learned
MATRICES = (
    ("own item scores", "own_score_correlation",
     "correlation, over the items both sell, of what each market's own vector and "
     "item-bias delta add to an item's logit"),
    ("market vectors", "vector_cosine", "cosine of the two markets' vectors"),
    ("item-bias deltas", "bias_correlation",
     "correlation of the two markets' item-bias deltas over the items both sell"),
    ("Jaccard", "jaccard", "items both sell / items either sells"),
    ("interaction share", "interaction_share",
     "share of the row market's interactions on items the column market sells"),
    ("items in common", "common_items", "items both sell (the diagonal: the catalogue)"),
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class MarketReport:
    """Market x market matrices, rows and columns in ``markets`` order; NaN where a
    similarity is undefined (a zero vector, fewer than two items in common)."""

    version: str
    markets: list[str]
    own_score_correlation: Matrix
    vector_cosine: Matrix
    bias_correlation: Matrix
    jaccard: Matrix
    interaction_share: Matrix  # row A, column B: share of A's interactions B sells
    common_items: NDArray[np.int64]
    shared_mix: NDArray[np.float64]  # (3,): global block, own block, network
    market_mix: NDArray[np.float64]  # (M, 3): each market's delta on it
    mix_used: tuple[bool, bool, bool]  # which parts the model's settings switch on
    vector_to_mean: NDArray[np.float64]  # (M,) cosine with the mean market vector
    popularity_correlation: NDArray[np.float64]  # (M,) own item scores vs log counts

    def agreement(self, field: str) -> float:
        """Spearman correlation, over the pairs of markets, of a learned matrix with
        the Jaccard: whether the pairs that sell alike also learned alike."""
        upper = np.triu_indices(len(self.markets), 1)
        x, y = getattr(self, field)[upper], self.jaccard[upper]
        keep = ~(np.isnan(x) | np.isnan(y))
        if keep.sum() < 3:
            return float("nan")
        return float(spearmanr(x[keep], y[keep]).statistic)


def cosine_matrix(vectors: Matrix) -> Matrix:
    """(M, d) -> (M, M) cosine similarities; NaN for a zero vector."""
    norms = np.linalg.norm(vectors, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = vectors / norms[:, None]
    out: Matrix = unit @ unit.T
    return out


def correlation_on_common(values: Matrix, sold: NDArray[np.bool_]) -> Matrix:
    """(M, V) per-item values and (M, V) who sells what -> (M, M): for each pair, the
    correlation of their values over the items both sell.

    Only common items: a market's softmax runs over its own catalogue, so its value for
    an item it does not sell never trained and is noise (or its initial zero) that would
    only shrink the similarity. Centred (a correlation, not a plain cosine): adding a
    constant to all of one market's logits changes neither its softmax nor its ranking,
    so each market's level is arbitrary and only the shape is compared.
    """
    m = len(values)
    out = np.full((m, m), np.nan)
    for a in range(m):
        for b in range(a, m):
            both = sold[a] & sold[b]
            if both.sum() < 2:
                continue
            x = values[a, both] - values[a, both].mean()
            y = values[b, both] - values[b, both].mean()
            denominator = float(np.linalg.norm(x) * np.linalg.norm(y))
            if denominator > 0:
                out[a, b] = out[b, a] = float(x @ y) / denominator
    return out


def jaccard_matrix(sold: NDArray[np.bool_]) -> Matrix:
    """(M, V) who sells what -> (M, M) |A and B| / |A or B|."""
    s = sold.astype(np.float64)
    both = s @ s.T
    either = s.sum(1)[:, None] + s.sum(1)[None, :] - both
    with np.errstate(invalid="ignore", divide="ignore"):
        out: Matrix = both / either
    return out


def interaction_share(counts: Matrix) -> Matrix:
    """(M, V) interaction counts -> (M, M): row A, column B, the share of A's
    interactions that are on items B sells."""
    sold = (counts > 0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: Matrix = (counts @ sold.T) / counts.sum(1)[:, None]
    return out


def popularity_correlation(scores: Matrix, counts: Matrix) -> NDArray[np.float64]:
    """(M, V) per-item scores and interaction counts -> (M,): each market's correlation
    of its scores with the log of its counts, over the items it sells."""
    out = np.full(len(scores), np.nan)
    for m, (score, count) in enumerate(zip(scores, counts, strict=True)):
        x, y = score[count > 0], np.log(count[count > 0])
        if len(x) > 1 and x.std() > 0 and y.std() > 0:
            out[m] = np.corrcoef(x, y)[0, 1]
    return out


@torch.no_grad()
def market_report(stored: StoredHybrid) -> MarketReport:
    """Every figure of the report for one loaded hybrid version."""
    model, markets = stored.model, stored.markets
    rows = [stored.manifest.markets[code] for code in markets]
    counts = np.zeros((len(markets), model.config.n_items))  # (M, V)
    for i, code in enumerate(markets):
        catalogue = stored.catalogues[code]
        counts[i, catalogue.items] = catalogue.counts
    sold = counts > 0
    vectors = model.market_vectors[rows].double().numpy()  # (M, d)
    bias = model.market_bias[rows].double().numpy()  # (M, V)
    network_weight = (model.shared_mix[2] + model.market_mix[rows, 2]).double().numpy()  # (M,)
    items = model.items.weight.double().numpy()  # (V, d)
    own_scores = network_weight[:, None] * (vectors @ items.T + bias)  # (M, V)
    # The model has no shared market vector, so what every market needs from its vector
    # sits in each one's: this common direction lifts every pair's cosine.
    to_mean = cosine_matrix(np.vstack([vectors.mean(0), vectors]))[0, 1:]
    cfg = model.config
    return MarketReport(
        version=stored.manifest.version,
        markets=markets,
        own_score_correlation=correlation_on_common(own_scores, sold),
        vector_cosine=cosine_matrix(vectors),
        bias_correlation=correlation_on_common(bias, sold),
        jaccard=jaccard_matrix(sold),
        interaction_share=interaction_share(counts),
        common_items=sold.astype(np.int64) @ sold.T.astype(np.int64),
        shared_mix=model.shared_mix.double().numpy(),
        market_mix=model.market_mix[rows].double().numpy(),
        mix_used=(cfg.global_ease, cfg.market_ease, cfg.neural),
        vector_to_mean=to_mean,
        popularity_correlation=popularity_correlation(own_scores, counts),
    )


def _cell(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.2f}"


def matrix_table(report: MarketReport, field: str, *, markdown: bool) -> str:
    """One matrix as a table, a row per market; counts as whole numbers."""
    matrix = getattr(report, field)
    cell = _cell if matrix.dtype.kind == "f" else (lambda v: f"{v:,.0f}")
    rows = [
        [code, *(cell(float(v)) for v in row)]
        for code, row in zip(report.markets, matrix, strict=True)
    ]
    return grid_table(["", *report.markets], rows, markdown)


def per_market_table(report: MarketReport, *, markdown: bool) -> str:
    """A row per market: its mix weights (shared value plus its delta in brackets), its
    vector against the mean one, its own item scores against popularity."""

    def weight(value: float, delta: float | None, used: bool) -> str:
        if not used:
            return "off"
        return f"{value:.2f}" if delta is None else f"{value:.2f} ({delta:+.3f})"

    used = report.mix_used
    shared = [weight(w, None, u) for w, u in zip(report.shared_mix, used, strict=True)]
    rows = [["shared", *shared, "", ""]]
    for i, code in enumerate(report.markets):
        delta = report.market_mix[i]
        mix = [weight(w + d, d, u) for w, d, u in zip(report.shared_mix, delta, used, strict=True)]
        extra = [_cell(report.vector_to_mean[i]), _cell(report.popularity_correlation[i])]
        rows.append([code, *mix, *extra])
    header = ["market", *MIX_PARTS, "vector vs mean vector", "own scores vs log popularity"]
    return grid_table(header, rows, markdown)


def agreement_table(report: MarketReport, *, markdown: bool) -> str:
    rows = [[name, _cell(report.agreement(field))] for name, field, _ in MATRICES[:3]]
    return grid_table(["learned similarity", "Spearman with Jaccard"], rows, markdown)


def report_markdown(report: MarketReport, *, image: str | None = None) -> str:
    """The whole report as markdown: every matrix, the agreement, the per-market table."""
    parts = [f"# Which markets are alike: {report.version}", ""]
    if image:
        parts += [f"![market similarity]({image})", ""]
    sections = (("Learned per-market parameters", MATRICES[:3]), ("Item overlap", MATRICES[3:]))
    for heading, matrices in sections:
        parts += [f"## {heading}", ""]
        for name, field, what in matrices:
            parts += [f"### {name}: {what}", "", matrix_table(report, field, markdown=True), ""]
    parts += [
        "## Do they agree",
        "",
        "Rank correlation, over the pairs of markets, of each learned similarity with the Jaccard.",
        "",
        agreement_table(report, markdown=True),
        "",
        "## Per market",
        "",
        "Mix: the market's weight on each score, the shared weight plus its own delta (in "
        "brackets); compare markets within a column, not the columns (the scores have "
        "different scales). Then the cosine of its vector with the mean of all markets' "
        "vectors, and the correlation of its own item scores with the log of its items' "
        "interaction counts.",
        "",
        per_market_table(report, markdown=True),
        "",
    ]
    return "\n".join(parts)


def plot_report(report: MarketReport, path: Path) -> Path:
    """Heatmaps into ``path``: learned similarities on the left, item overlap on the
    right, every cell annotated."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    panels = ((MATRICES[0], MATRICES[3]), (MATRICES[1], MATRICES[4]))
    side = 2.2 + 0.55 * len(report.markets)
    fig, axes = plt.subplots(2, 2, figsize=(2 * side + 1.5, 2 * side), squeeze=False)
    for row, pair in enumerate(panels):
        for col, (name, field, _) in enumerate(pair):
            learned = col == 0
            title = f"learned: {name}" if learned else f"overlap: {name}"
            _heatmap(axes[row][col], getattr(report, field), report, title=title, diverging=learned)
    axes[1][1].set(xlabel="column: sells the items", ylabel="row: whose interactions")
    fig.suptitle(f"Which markets are alike: {report.version}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _heatmap(
    ax: Axes, matrix: Matrix, report: MarketReport, *, title: str, diverging: bool
) -> None:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("RdBu_r" if diverging else "Blues").with_extremes(bad="lightgrey")
    image = ax.imshow(
        np.ma.masked_invalid(matrix), cmap=cmap, vmin=-1.0 if diverging else 0.0, vmax=1.0
    )
    ticks = range(len(report.markets))
    ax.set_xticks(ticks, report.markets)
    ax.set_yticks(ticks, report.markets)
    ax.set_title(title, fontsize="medium")
    for (i, j), value in np.ndenumerate(matrix):
        dark = not np.isnan(value) and abs(value) > 0.6  # white text on dark cells
        ax.text(
            j,
            i,
            _cell(float(value)),
            ha="center",
            va="center",
            fontsize="small",
            color="white" if dark else "black",
        )
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
