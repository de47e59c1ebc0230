"""The run report's plots: each function returns one PNG as bytes (matplotlib, Agg backend).

    png = heatmap({("happy", "english"): [3, 4]}, ["happy"], ["english"], "emotion", "dialect")
"""
from __future__ import annotations

import io

import numpy as np

from manifests.errors import UserError


def _figure(width: float, height: float):
    try:
        import matplotlib
    except ImportError:
        raise UserError("stepforge report needs matplotlib: pip install matplotlib") from None

    matplotlib.use("Agg")  # no display; the report only writes files
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=90)


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def heatmap(cells: dict, rows: list, cols: list, row_dim: str, col_dim: str) -> bytes:
    """Yield per (row, col) cell: colour = accepted / attempted, text ``accepted/attempted``.

    Args:
        cells: {(row value, col value): [accepted, attempted]}.
    """
    plt, fig = _figure(1.8 + 1.4 * len(cols), 1.2 + 0.6 * len(rows))
    grid = np.full((len(rows), len(cols)), np.nan)
    ax = fig.add_subplot()
    for (r, c), (acc, n) in cells.items():
        i, j = rows.index(r), cols.index(c)
        grid[i, j] = acc / n if n else np.nan
        ax.text(j, i, f"{acc}/{n}", ha="center", va="center", fontsize=11)
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(col_dim)
    ax.set_ylabel(row_dim)
    ax.set_title("yield (accepted/attempted)")
    fig.colorbar(image, ax=ax, fraction=0.05)
    return _png(plt, fig)


def histograms(groups: dict, label: str, kind: str) -> bytes:
    """One histogram per group with its thresholds as dashed vertical lines.

    Args:
        groups: {name: (values, thresholds)}.
        kind: "max" (reject above) or "min" (reject below), for the legend.
    """
    names = sorted(groups)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    plt, fig = _figure(3.2 * cols + 0.6, 2.5 * rows)
    for k, name in enumerate(names):
        values, limits = groups[name]
        ax = fig.add_subplot(rows, cols, k + 1)
        if values:
            ax.hist(values, bins=min(20, max(5, len(values))), color="#4a7fb5")
        for limit in limits:
            ax.axvline(limit, color="#c33", linestyle="--", label=f"{kind} {limit:g}")
        if limits:
            ax.legend(fontsize=8)
        ax.set_title(f"{name} (n={len(values)})", fontsize=10)
        ax.set_xlabel(label, fontsize=9)
    return _png(plt, fig)


def bar_chart(counts: dict, xlabel: str) -> bytes:
    """Horizontal bars, one per key."""
    labels = [str(k)[:50] for k in counts]
    plt, fig = _figure(7, 0.8 + 0.4 * len(labels))
    ax = fig.add_subplot()
    ax.barh(range(len(labels)), list(counts.values()), color="#b5744a")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    return _png(plt, fig)


def duration_plot(groups: dict) -> bytes:
    """Stacked histogram of utterance durations per group ({name: [seconds]}); empty groups are left out."""
    groups = {k: v for k, v in groups.items() if v}
    plt, fig = _figure(7, 2.8)
    ax = fig.add_subplot()
    colours = {"accepted": "#3a9a5b", "rejected": "#c33", "not filtered": "#888"}
    ax.hist(list(groups.values()), bins=20, stacked=True, label=list(groups),
            color=[colours.get(k, "#4a7fb5") for k in groups])
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("utterances")
    ax.legend(fontsize=8)
    return _png(plt, fig)


def training_curve(train: list[tuple], heldout: list[tuple]) -> bytes:
    """Train loss and held-out loss against the step ([(step, loss)] each)."""
    plt, fig = _figure(7, 3.2)
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train), label="train loss", color="#4a7fb5")
    if heldout:
        ax.plot(*zip(*heldout), "o-", label="held-out loss", color="#c33")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    return _png(plt, fig)


def heldout_curves(series: dict[str, list[tuple]]) -> bytes:
    """Held-out loss against the step from scratch, one line per student ({label: [(step, loss)]})."""
    plt, fig = _figure(7, 3.4)
    ax = fig.add_subplot()
    for label, points in series.items():
        ax.plot(*zip(*points), "o-", markersize=3, label=label)
    ax.set_xlabel("step (from scratch)")
    ax.set_ylabel("held-out loss")
    ax.legend(fontsize=8)
    return _png(plt, fig)
