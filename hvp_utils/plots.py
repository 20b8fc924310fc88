"""Plots shared by the notebooks (seaborn on matplotlib); each takes result frames, not models."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from hvp_utils.results import Attribution


def set_style() -> None:
    """One look for every notebook."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.9)
    plt.rcParams["figure.dpi"] = 80


def estimate_vs_truth_frame(estimate: Attribution, truth: Attribution, **labels) -> pd.DataFrame:
    """Long frame with the estimate beside activation patching, plus label columns."""
    frame = pd.DataFrame(
        {
            "component": truth.names,
            "kind": truth.kinds,
            "AP": truth.values.double().numpy(),
            "estimate": estimate.values.double().numpy(),
            "method": estimate.method,
        }
    )
    frame["error"] = frame.estimate - frame.AP
    for key, value in labels.items():
        frame[key] = value
    return frame


def scatter_vs_truth(
    frame: pd.DataFrame, row: str, col: str, hue: str | None = None, height: float = 2.6
) -> sns.FacetGrid:
    """Estimate against AP per facet, with the line y = x (where a perfect estimate lies)."""
    grid = sns.FacetGrid(
        frame,
        row=row,
        col=col,
        hue=hue,
        height=height,
        sharex=False,
        sharey=False,
        margin_titles=True,
    )
    grid.map_dataframe(sns.scatterplot, x="AP", y="estimate", s=14, alpha=0.7, linewidth=0)
    for ax in grid.axes.flat:
        low = min(ax.get_xlim()[0], ax.get_ylim()[0])
        high = max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([low, high], [low, high], color="0.4", lw=0.8, ls="--", zorder=0)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
    grid.set_axis_labels("activation patching (AP)", "estimate")
    if hue:
        grid.add_legend()
    return grid


def head_grid(result: Attribution, n_layers: int, n_heads: int) -> np.ndarray:
    """``head_out`` values as a (layer, head) array, read off the component names."""
    grid = np.full((n_layers, n_heads), np.nan)
    for name, value in zip(result.names, result.values.tolist(), strict=True):
        layer, head = name.removeprefix("L").split(".")[0].split("H")
        grid[int(layer), int(head)] = value
    return grid


def head_heatmaps(results: list[Attribution], n_layers: int, n_heads: int, title: str = ""):
    """Side-by-side (layer x head) heatmaps on one shared, zero-centred colour scale."""
    grids = [head_grid(r, n_layers, n_heads) for r in results]
    scale = max(np.nanmax(np.abs(g)) for g in grids)
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 2.6), squeeze=False)
    for ax, grid, result in zip(axes[0], grids, results, strict=True):
        sns.heatmap(
            grid,
            ax=ax,
            cmap="RdBu_r",
            vmin=-scale,
            vmax=scale,
            annot=n_heads <= 8,
            fmt=".1f",
            annot_kws={"size": 7},
            cbar=ax is axes[0][-1],
        )
        ax.set(title=result.method, xlabel="head", ylabel="layer")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
