"""Plots shared by the notebooks (seaborn on matplotlib); each takes result frames, not models."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from hvp_utils.analysis.benchmark import pareto_frontier
from hvp_utils.analysis.circuits import circuit_recovery
from hvp_utils.core.components import head_of
from hvp_utils.core.results import Attribution


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
    """``head_out`` values as a (layer, head) array (positions: see :func:`head_of`)."""
    grid = np.full((n_layers, n_heads), np.nan)
    for name, value in zip(result.names, result.values.tolist(), strict=True):
        grid[head_of(name)] = value
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


def error_share_bars(shares: pd.DataFrame, col: str = "perturbation") -> sns.FacetGrid:
    """Stacked bars per component kind: share of the total |AP - AtP| carried by the
    downstream term E_down and by the local term E_local (``shares`` from
    :func:`hvp_utils.analysis.diagnosis.error_shares`, with ``kind`` and ``col`` columns)."""
    frame = shares.reset_index()
    grid = sns.FacetGrid(frame, col=col, height=2.8, aspect=1.3, sharey=True)

    def stacked(data, color=None, **kwargs):
        ax = plt.gca()
        ax.bar(data.kind, data.down_share, color="C3", label="E_down (downstream)")
        ax.bar(
            data.kind,
            data.local_share,
            bottom=data.down_share,
            color="C0",
            label="E_local (local map)",
        )
        ax.tick_params(axis="x", rotation=35)

    grid.map_dataframe(stacked)
    grid.set_axis_labels("", "share of sum |AP - AtP|")
    grid.add_legend()
    return grid


def error_terms_scatter(frame: pd.DataFrame, col: str = "perturbation") -> sns.FacetGrid:
    """|E_local| against |E_down| per component (log-log), coloured by kind; points above
    the diagonal are components whose AtP error is mostly local."""
    data = frame.assign(
        abs_E_down=frame.E_down.abs().clip(lower=1e-12),
        abs_E_local=frame.E_local.abs().clip(lower=1e-12),
    )
    grid = sns.FacetGrid(data, col=col, hue="kind", height=3.0, sharex=True, sharey=True)
    grid.map_dataframe(
        sns.scatterplot, x="abs_E_down", y="abs_E_local", s=14, alpha=0.7, linewidth=0
    )
    for ax in grid.axes.flat:
        ax.set(xscale="log", yscale="log")
        low = min(ax.get_xlim()[0], ax.get_ylim()[0])
        high = max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([low, high], [low, high], color="0.4", lw=0.8, ls="--", zorder=0)
    grid.set_axis_labels("|E_down|", "|E_local|  (1e-12: exactly 0)")
    grid.add_legend()
    return grid


def score_vs_error(
    frame: pd.DataFrame, tau: float, max_rel_error: float = 0.5, col: str = "perturbation"
) -> sns.FacetGrid:
    """Reliability score against the AtP relative error |AtP - AP| / |AP| (log scale), with
    the flag threshold tau and the error level the detector should catch."""
    data = frame.assign(rel_error=frame.rel_error.clip(lower=1e-6, upper=1e3))
    grid = sns.FacetGrid(data, col=col, hue="kind", height=3.0, sharey=True)
    grid.map_dataframe(sns.scatterplot, x="score", y="rel_error", s=14, alpha=0.7, linewidth=0)
    for ax in grid.axes.flat:
        ax.set_yscale("log")
        ax.axvline(tau, color="0.3", lw=0.8, ls="--")
        ax.axhline(max_rel_error, color="C3", lw=0.8, ls=":")
    grid.set_axis_labels("reliability score r", "|AtP - AP| / |AP|")
    grid.add_legend()
    return grid


def interval_plot(frame: pd.DataFrame, ax: plt.Axes | None = None, title: str = "") -> plt.Axes:
    """Error intervals [lower, upper] per component (sorted by AP) with the AP effect; red
    marks AP outside its interval. ``frame`` has component, AP, lower, upper."""
    data = frame.sort_values("AP").reset_index(drop=True)
    ax = ax or plt.subplots(figsize=(7, 2.8))[1]
    x = np.arange(len(data))
    ax.vlines(x, data.lower, data.upper, color="C1", lw=2.5, alpha=0.6, label="interval")
    outside = (data.AP < data.lower) | (data.AP > data.upper)
    ax.scatter(x[~outside], data.AP[~outside], s=8, color="k", zorder=3, label="AP inside")
    ax.scatter(x[outside], data.AP[outside], s=14, color="C3", zorder=3, label="AP outside")
    ax.set(xlabel="components sorted by AP", ylabel="effect", title=title)
    ax.legend(fontsize=7)
    return ax


#: An NMAE at or below this is rounding: the estimate is exact.
EXACT_NMAE = 1e-9


def pareto_plot(frame: pd.DataFrame, row: str, col: str):
    """NMAE against wall time (log-log), one point per estimator, one panel per (row, col),
    with the Pareto frontier (estimators nothing beats on both axes) drawn and labelled.

    AP is on the plot: exact (NMAE 0) at wall time 1, drawn as a star on the panel's floor
    (half the smallest NMAE above rounding, 1e-9), and part of the frontier, so every
    estimator slower than AP reads as dominated. Other exact rows (another implementation of
    AP) sit on the floor too.
    """
    rows, cols = frame[row].unique(), frame[col].unique()
    families = list(dict.fromkeys(frame.family))
    palette = dict(zip(families, sns.color_palette("tab20", n_colors=len(families)), strict=True))
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(4.2 * len(cols), 3.4 * len(rows)), squeeze=False
    )
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax, sub = axes[i][j], frame[(frame[row] == r) & (frame[col] == c)]
            floor = 0.5 * sub.nmae[sub.nmae > EXACT_NMAE].min()
            shown = sub.assign(nmae=sub.nmae.where(sub.nmae > EXACT_NMAE, floor))
            exact = shown.estimator.eq("ap")
            sns.scatterplot(
                shown[~exact],
                x="x_AP_time",
                y="nmae",
                hue="family",
                palette=palette,
                s=30,
                ax=ax,
                legend=False,
            )
            ax.scatter(shown[exact].x_AP_time, shown[exact].nmae, marker="*", s=120, color="k")
            front = pareto_frontier(shown)
            ax.plot(front.x_AP_time, front.nmae, color="0.3", lw=0.8, ls="--", zorder=0)
            for k, (_, point) in enumerate(front.iterrows()):
                ax.annotate(
                    "AP (exact)" if point.estimator == "ap" else point.method,
                    (point.x_AP_time, point.nmae),
                    fontsize=7,
                    xytext=(4, 3 + 7 * (k % 2)),
                    textcoords="offset points",
                )
            ax.axvline(1.0, color="0.6", lw=0.6)
            ax.axvspan(1.0, max(1.5, shown.x_AP_time.max() * 1.5), color="0.93", zorder=-1)
            ax.set(
                xscale="log",
                yscale="log",
                title=f"{r} | {c}",
                xlabel="wall time / AP (shaded: slower than AP)" if i == len(rows) - 1 else "",
                ylabel="NMAE vs AP" if j == 0 else "",
            )
    handles = [plt.Line2D([], [], marker="o", ls="", color=palette[f]) for f in families]
    fig.legend(handles, families, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)
    fig.tight_layout()
    return fig


def convergence_plot(frame: pd.DataFrame):
    """Error against K on log-log axes; the slope is the rule's error order."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    sns.lineplot(frame, x="K", y="max_abs_error", hue="rule", marker="o", ax=ax)
    ks = np.array(sorted(frame.K.unique()), dtype=float)
    top = frame.max_abs_error.max()
    for order, style in ((2, ":"), (4, "--")):
        ax.plot(
            ks, top * (ks / ks[0]) ** -order, color="0.5", ls=style, lw=0.8, label=f"slope -{order}"
        )
    ax.set(xscale="log", yscale="log", xlabel="steps K", ylabel="max |estimate - AP|")
    ax.set_xticks(ks, [str(int(k)) for k in ks])
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def roc_plot(estimates: list[Attribution], reference: list[str], ax=None):
    """ROC curves of every estimator's ranking against the reference circuit."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.6))
    for estimate in estimates:
        found = circuit_recovery(estimate, reference)
        sns.lineplot(
            found["roc"],
            x="fpr",
            y="tpr",
            ax=ax,
            drawstyle="steps-post",
            label=f"{estimate.method} ({found['auroc']:.3f})",
            errorbar=None,
        )
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.6, ls=":")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="circuit ROC (AUROC)")
    ax.legend(fontsize=6)
    return ax
