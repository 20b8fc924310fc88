"""Plots shared by the notebooks (seaborn on matplotlib); each takes result frames, not models."""

from __future__ import annotations

import base64
import io

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd
import seaborn as sns

from hvp_utils.analysis.benchmark import pareto_frontier
from hvp_utils.analysis.circuits import circuit_recovery
from hvp_utils.core.components import Component
from hvp_utils.core.results import Attribution
from hvp_utils.core.types import Family

#: Colours kept in a figure stored in a notebook: a seaborn palette and a 256-step colour map
#: fit, and the PNG is about a third of matplotlib's full-colour one.
PNG_COLOURS = 256


def set_style() -> None:
    """One look for every notebook; in a Jupyter kernel, figures are stored as palette PNGs."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.9)
    plt.rcParams["figure.dpi"] = 80
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        from matplotlib.figure import Figure

        # The inline backend sets its own PNG formatter when it loads, at the first figure;
        # load it now, so that the formatter set next is the one that stays.
        plt.switch_backend(plt.get_backend())
        shell.display_formatter.formatters["image/png"].for_type(Figure, palette_png)


def palette_png(figure, *, colours: int = PNG_COLOURS) -> str | None:
    """``figure`` as a base64 PNG of at most ``colours`` colours (median cut, no dithering),
    cropped as Jupyter's inline backend crops it; None for an empty figure, as there."""
    from IPython.core.pylabtools import print_figure
    from PIL import Image

    full_colour = print_figure(figure, fmt="png", bbox_inches="tight")
    if full_colour is None:
        return None
    full = Image.open(io.BytesIO(full_colour))
    palette = full.convert("RGB").quantize(
        colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode("ascii")


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
    frame: pd.DataFrame,
    *,
    row: str,
    col: str,
    hue: str | None = None,
    height: float = 2.6,
    x_label: str = "activation patching (AP)",
    y_label: str = "estimate",
) -> sns.FacetGrid:
    """Estimate against AP per facet, with the line y = x (where a perfect estimate lies).

    Facet titles are the bare row and column values (``name_swap``, ``head_out``); pass axis
    labels that say what is plotted and in which unit."""
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
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
        ax.yaxis.set_major_locator(plt.MaxNLocator(5))
    grid.set_titles(row_template="{row_name}", col_template="{col_name}")
    grid.set_axis_labels(x_label, y_label)
    if hue:
        grid.add_legend()
    grid.figure.tight_layout()
    return grid


def head_grid(
    result: Attribution, comps: list[Component], *, n_layers: int, n_heads: int
) -> np.ndarray:
    """Per-head values as a (layer, head) array, each at its component's ``layer``, ``head``."""
    if result.names != [c.name for c in comps]:
        raise ValueError("the result must cover comps in the same order")
    grid = np.full((n_layers, n_heads), np.nan)
    for comp, value in zip(comps, result.values.tolist(), strict=True):
        grid[comp.layer, comp.head] = value
    return grid


def head_heatmaps(
    results: list[Attribution],
    comps: list[Component],
    *,
    n_layers: int,
    n_heads: int,
    title: str = "",
    cbar_label: str = "effect on the metric",
):
    """Side-by-side (layer x head) heatmaps on one shared, zero-centred colour scale, with
    one labelled colorbar for all panels (``cbar_label``: what the colour means, with units)."""
    grids = [head_grid(r, comps, n_layers=n_layers, n_heads=n_heads) for r in results]
    scale = max(np.nanmax(np.abs(g)) for g in grids)
    fig, axes = plt.subplots(
        1,
        len(grids) + 1,
        figsize=(3.3 * len(grids) + 1.0, 0.35 * n_layers + 1.7),
        gridspec_kw={"width_ratios": [1] * len(grids) + [0.05]},
        squeeze=False,
    )
    panels, cbar_ax = axes[0][:-1], axes[0][-1]
    for i, (ax, grid, result) in enumerate(zip(panels, grids, results, strict=True)):
        # one decimal, and no "-0.0" for tiny negative values
        labels = np.vectorize(lambda v: f"{v:.1f}".replace("-0.0", "0.0"))(grid)
        sns.heatmap(
            grid,
            ax=ax,
            cmap="RdBu_r",
            vmin=-scale,
            vmax=scale,
            annot=labels if n_heads <= 8 else False,
            fmt="",
            annot_kws={"size": 7},
            cbar=i == 0,
            cbar_ax=cbar_ax if i == 0 else None,
            cbar_kws={"label": cbar_label},
        )
        ax.set(title=result.method, xlabel="head")
        ax.set_ylabel("layer" if i == 0 else "")
        ax.tick_params(axis="y", rotation=0)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


#: Two clearly distinct colours (Okabe-Ito orange and blue) for the two AtP error terms.
ERROR_TERM_COLOURS = {"E_down": "#E69F00", "E_local": "#0072B2"}

#: A colour-blind-safe categorical palette (Okabe-Ito without yellow) and one marker per
#: component kind, so that no two kinds look alike.
KIND_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#000000"]
KIND_MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


def error_share_bars(shares: pd.DataFrame, *, col: str = "perturbation") -> sns.FacetGrid:
    """Stacked bars per component kind: share of the total |AP - AtP| carried by the
    downstream term E_down and by the local term E_local (``shares`` from
    :func:`hvp_utils.analysis.diagnosis.error_shares`, with ``kind`` and ``col`` columns)."""
    frame = shares.reset_index()
    grid = sns.FacetGrid(frame, col=col, height=2.8, aspect=1.3, sharey=True)

    def stacked(data, color=None, **kwargs):
        ax = plt.gca()
        ax.bar(
            data.kind,
            data.down_share,
            color=ERROR_TERM_COLOURS["E_down"],
            edgecolor="white",
            label="E_down (downstream)",
        )
        ax.bar(
            data.kind,
            data.local_share,
            bottom=data.down_share,
            color=ERROR_TERM_COLOURS["E_local"],
            edgecolor="white",
            hatch="//",
            label="E_local (local map)",
        )
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", rotation=35)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")

    grid.map_dataframe(stacked)
    grid.set_titles(col_template="{col_name}")
    grid.set_axis_labels("component kind", "share of sum |AP - AtP|")
    grid.add_legend(title="error term")
    return grid


def error_terms_scatter(frame: pd.DataFrame, *, col: str = "perturbation") -> sns.FacetGrid:
    """|E_local| against |E_down| per component (log-log), one colour and marker per kind;
    points above the diagonal are components whose AtP error is mostly local."""
    data = frame.assign(
        abs_E_down=frame.E_down.abs().clip(lower=1e-12),
        abs_E_local=frame.E_local.abs().clip(lower=1e-12),
    )
    kinds = list(dict.fromkeys(data.kind))
    if len(kinds) > len(KIND_COLOURS):
        raise ValueError(f"{len(kinds)} kinds; error_terms_scatter tells at most 7 apart")
    grid = sns.FacetGrid(
        data,
        col=col,
        hue="kind",
        hue_order=kinds,
        palette=KIND_COLOURS[: len(kinds)],
        hue_kws={"marker": KIND_MARKERS[: len(kinds)]},
        height=3.0,
        sharex=True,
        sharey=True,
    )
    grid.map(plt.scatter, "abs_E_down", "abs_E_local", s=16, alpha=0.75, linewidths=0)
    for ax in grid.axes.flat:
        ax.set(xscale="log", yscale="log")
        low = min(ax.get_xlim()[0], ax.get_ylim()[0])
        high = max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([low, high], [low, high], color="0.4", lw=0.8, ls="--", zorder=0)
        ax.text(
            0.03,
            4e-12,
            "E_local = 0 exactly (drawn at 1e-12)",
            transform=ax.get_yaxis_transform(),
            fontsize=8,
            color="0.3",
            va="bottom",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1},
        )
    grid.set_titles(col_template="{col_name}")
    grid.set_axis_labels("|E_down| (logits)", "|E_local| (logits)")
    grid.add_legend(title="kind", markerscale=1.5)
    return grid


def score_vs_error(
    frame: pd.DataFrame,
    *,
    tau: float,
    negligible_share: float = 0.02,
    threshold_share: float | None = 0.1,
    col: str = "perturbation",
    bad: str = "bad",
) -> plt.Figure:
    """Reliability score against the AtP error as a share of its kind's largest |AP| (log
    scale), one panel per ``col``: colour and marker per kind, filled where ``frame[bad]``
    (the detector's target) holds, hollow elsewhere; the flag threshold tau (dashed) and the
    absolute levels of the target (dotted: negligible below ``negligible_share``, always bad
    above ``threshold_share``). ``frame`` has kind, score, AP, AtP, the ``bad`` label and
    ``col``."""
    data = frame.copy()
    scale = data.groupby([col, "kind"], sort=False).AP.transform(lambda a: a.abs().max())
    data["error_share"] = ((data.AtP - data.AP).abs() / scale).clip(lower=1e-6)
    panels = list(dict.fromkeys(data[col]))
    kinds = list(dict.fromkeys(data.kind))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.8, 3.3), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, panel in zip(axes, panels, strict=True):
        sub = data[data[col] == panel]
        for k, kind in enumerate(kinds):
            part = sub[sub.kind == kind]
            colour, marker = (
                KIND_COLOURS[k % len(KIND_COLOURS)],
                KIND_MARKERS[k % len(KIND_MARKERS)],
            )
            for is_bad, face in ((False, "none"), (True, colour)):
                pts = part[part[bad] == is_bad]
                ax.scatter(
                    pts.score,
                    pts.error_share,
                    s=26,
                    marker=marker,
                    facecolors=face,
                    edgecolors=colour,
                    linewidths=1.0,
                    alpha=0.85,
                )
        ax.axvline(tau, color="0.3", lw=0.9, ls="--")
        ax.axhline(negligible_share, color="0.5", lw=0.8, ls=":")
        if threshold_share is not None:
            ax.axhline(threshold_share, color="C3", lw=0.9, ls=":")
        ax.set(yscale="log", xlabel="reliability score r", title=str(panel), xlim=(-0.03, 1.03))
    axes[0].set_ylabel("|AtP - AP| / largest |AP| of the kind")
    handles = [
        plt.Line2D(
            [],
            [],
            ls="",
            marker=KIND_MARKERS[k % len(KIND_MARKERS)],
            mfc="none",
            mec=KIND_COLOURS[k % len(KIND_COLOURS)],
            label=kind,
        )
        for k, kind in enumerate(kinds)
    ]
    handles += [
        plt.Line2D([], [], ls="", marker="o", mfc="0.3", mec="0.3", label="filled: bad (target)"),
        plt.Line2D([], [], ls="", marker="o", mfc="none", mec="0.3", label="hollow: good"),
        plt.Line2D([], [], color="0.3", ls="--", label=f"τ = {tau:g}"),
        plt.Line2D([], [], color="0.5", ls=":", label=f"negligible: {negligible_share:g}"),
    ]
    if threshold_share is not None:
        handles.append(
            plt.Line2D([], [], color="C3", ls=":", label=f"always bad: {threshold_share:g}")
        )
    fig.tight_layout()
    fig.legend(
        handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False
    )
    return fig


def threshold_lines(ax: plt.Axes, theta: float) -> None:
    """Dotted horizontal lines at +theta and -theta, the circuit selection threshold."""
    for sign in (1, -1):
        ax.axhline(
            sign * theta,
            color="C3",
            lw=0.9,
            ls=":",
            label="circuit threshold ±θ" if sign == 1 else None,
        )


def interval_plot(
    frame: pd.DataFrame,
    *,
    ax: plt.Axes | None = None,
    title: str = "",
    threshold: float | None = None,
    legend: bool = True,
) -> plt.Axes:
    """Lagrange intervals [lower, upper] per component (sorted by AP) with the AP effect; red
    marks AP outside its interval; dotted lines at ``±threshold`` (the circuit threshold
    theta) when given. ``frame`` has component, AP, lower, upper."""
    data = frame.sort_values("AP").reset_index(drop=True)
    ax = ax or plt.subplots(figsize=(7, 2.8))[1]
    x = np.arange(len(data))
    ax.vlines(
        x, data.lower, data.upper, color="#0072B2", lw=2.5, alpha=0.55, label="Lagrange interval"
    )
    outside = ((data.AP < data.lower) | (data.AP > data.upper)).to_numpy()
    ax.scatter(x[~outside], data.AP[~outside], s=10, color="k", zorder=3, label="AP inside")
    ax.scatter(
        x[outside],
        data.AP[outside],
        s=18,
        color="#D55E00",
        marker="X",
        zorder=3,
        label="AP outside",
    )
    if threshold is not None:
        threshold_lines(ax, threshold)
    ax.set(xlabel="components, sorted by AP", ylabel="effect (logit difference)", title=title)
    if legend:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


#: An NMAE at or below this is rounding: the estimate is exact.
EXACT_NMAE = 1e-9


def _log_ticks_plain(axis) -> None:
    """Log-axis ticks at 1, 2, 5 x 10^n labelled as plain numbers, minor labels off."""
    axis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(mticker.NullFormatter())


def _place_labels(ax, xs, ys, texts, avoid_x, avoid_y, fontsize: float = 8) -> None:
    """Annotate (xs, ys) with ``texts`` so that no label overlaps another label, a point of
    (avoid_x, avoid_y) or the axes' edge: the first free offset of a few candidates, then
    farther ones with a leader line."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame_box = ax.get_window_extent(renderer)
    to_px = ax.transData.transform
    obstacles = [
        mtransforms.Bbox.from_extents(px - 4, py - 4, px + 4, py + 4)
        for px, py in to_px(np.column_stack([avoid_x, avoid_y]))
    ]
    near = [
        (5, 4, "left", "bottom"),
        (5, -4, "left", "top"),
        (-5, 4, "right", "bottom"),
        (-5, -4, "right", "top"),
        (0, 7, "center", "bottom"),
        (0, -7, "center", "top"),
    ]
    far = [
        (d * sx, d * sy, "left" if sx > 0 else "right", "bottom" if sy > 0 else "top")
        for d in (14, 24, 36)
        for sx, sy in ((1, 1), (1, -1), (-1, -1), (-1, 1))
    ]

    def annotate(text, x, y, dx, dy, ha, va, arrow=None):
        return ax.annotate(
            text,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            va=va,
            fontsize=fontsize,
            arrowprops=arrow,
        )

    placed: list = []
    for x, y, text in zip(xs, ys, texts, strict=True):
        for dx, dy, ha, va in near + far:
            arrow = {"arrowstyle": "-", "color": "0.5", "lw": 0.5} if abs(dx) > 10 else None
            label = annotate(text, x, y, dx, dy, ha, va, arrow)
            box = label.get_window_extent(renderer).expanded(1.04, 1.15)
            inside = frame_box.contains(box.x0, box.y0) and frame_box.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(o) for o in placed + obstacles):
                placed.append(box)
                break
            label.remove()
        else:  # nowhere free: the first candidate, overlapping, rather than no label
            annotate(text, x, y, *near[0])


def pareto_plot(frame: pd.DataFrame, *, row: str, col: str):
    """NMAE against wall time (log-log), one point per estimator, one panel per (row, col),
    with the Pareto frontier (estimators nothing beats on both axes) drawn and labelled.

    AP is on the plot: exact (NMAE 0) at wall time 1, drawn as a star on the panel's floor
    (half the smallest NMAE above rounding, 1e-9), and part of the frontier, so every
    estimator slower than AP (the shaded side) reads as dominated. Other exact rows (another
    implementation of AP) sit on the floor too. Families have their own colour and marker;
    only frontier points are labelled, each where its label collides with nothing.
    """
    rows, cols = frame[row].unique(), frame[col].unique()
    families = [f for f in dict.fromkeys(frame.family) if f != Family.AP]
    palette = dict(zip(families, sns.color_palette("tab10", n_colors=len(families)), strict=True))
    markers = dict(zip(families, "osD^vPXh<>p*"[: len(families)], strict=True))
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(4.4 * len(cols), 3.6 * len(rows)), squeeze=False
    )
    fronts = {}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax, sub = axes[i][j], frame[(frame[row] == r) & (frame[col] == c)]
            floor = 0.5 * sub.nmae[sub.nmae > EXACT_NMAE].min()
            shown = sub.assign(nmae=sub.nmae.where(sub.nmae > EXACT_NMAE, floor))
            exact = shown.estimator.eq("ap")
            for family in families:
                points = shown[shown.family.eq(family) & ~exact]
                ax.scatter(
                    points.x_AP_time,
                    points.nmae,
                    s=28,
                    color=palette[family],
                    marker=markers[family],
                    edgecolor="white",
                    linewidth=0.4,
                    zorder=3,
                )
            ax.scatter(
                shown[exact].x_AP_time, shown[exact].nmae, marker="*", s=140, color="k", zorder=4
            )
            front = pareto_frontier(shown)
            ax.plot(front.x_AP_time, front.nmae, color="0.3", lw=0.8, ls="--", zorder=2)
            fronts[i, j] = (front, shown)
            ax.axvline(1.0, color="0.6", lw=0.6)
            low, high = shown.x_AP_time.min(), shown.x_AP_time.max()
            ax.set_xlim(min(low, 1.0) / 1.6, max(high, 1.0) * 2.2)
            ax.set_ylim(floor / 2.5, shown.nmae.max() * 3)
            ax.axvspan(1.0, ax.get_xlim()[1], color="0.93", zorder=-1)
            ax.set(
                xscale="log",
                yscale="log",
                title=f"{r} | {c}",
                xlabel="wall time / AP's (shaded: slower than AP)" if i == len(rows) - 1 else "",
                ylabel="NMAE against AP" if j == 0 else "",
            )
            _log_ticks_plain(ax.xaxis)
            ax.yaxis.set_minor_formatter(mticker.NullFormatter())
            ax.tick_params(axis="both", labelsize=8)
    handles = [
        plt.Line2D([], [], marker=markers[f], ls="", color=palette[f], markersize=6)
        for f in families
    ]
    handles.append(plt.Line2D([], [], marker="*", ls="", color="k", markersize=9))
    handles.append(plt.Line2D([], [], color="0.3", lw=0.8, ls="--"))
    names = [*families, "AP (exact; drawn at the floor)", "Pareto frontier"]
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)
    fig.tight_layout()
    fig.canvas.draw()
    for (i, j), (front, shown) in fronts.items():
        texts = [
            "AP (exact)" if e == "ap" else m
            for e, m in zip(front.estimator, front.method, strict=True)
        ]
        _place_labels(axes[i][j], front.x_AP_time, front.nmae, texts, shown.x_AP_time, shown.nmae)
    return fig


def convergence_plot(frame: pd.DataFrame):
    """Error against K on log-log axes (plain K ticks); the slope is the rule's error order.

    Reference slopes -2 and -4 are drawn from the largest error; the rounding floor of
    :func:`~hvp_utils.analysis.benchmark.convergence` (``floor`` column) is drawn when it is
    within a decade of the smallest error, i.e. when it can be what the curves run into.
    """
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    rules = list(dict.fromkeys(frame.rule))
    palette = dict(zip(rules, sns.color_palette("tab10", n_colors=len(rules)), strict=True))
    for rule, marker in zip(rules, "osD^vPX", strict=False):
        curve = frame[frame.rule == rule].sort_values("K")
        ax.plot(
            curve.K,
            curve.max_abs_error,
            marker=marker,
            color=palette[rule],
            label=rule,
            lw=1.3,
            markersize=5,
        )
    ks = np.array(sorted(frame.K.unique()), dtype=float)
    top = frame.max_abs_error.max()
    for order, style in ((2, ":"), (4, "--")):
        ax.plot(
            ks, top * (ks / ks[0]) ** -order, color="0.5", ls=style, lw=0.8, label=f"slope -{order}"
        )
    if "floor" in frame and frame.floor.max() >= 0.1 * frame.max_abs_error.min():
        ax.axhline(frame.floor.max(), color="0.3", lw=0.8, ls="-.", label="rounding floor")
    ax.set(xscale="log", yscale="log", xlabel="steps K", ylabel="max |estimate - AP| (logit diff.)")
    ax.set_xticks(ks, [f"{k:g}" for k in ks])
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def roc_plot(
    estimates: list[Attribution],
    reference: list[str],
    *,
    ax=None,
    facet: bool = True,
    ncols: int = 4,
):
    """ROC curves of every estimator's ranking against the reference circuit.

    ``facet=True`` (default): one panel per estimator, its curve in its colour over the others
    in grey, its AUROC in the title, so that curves that coincide stay readable. ``facet=False``:
    every curve on one axes (``ax``), with distinct colours, line styles and markers, and the
    legend outside the axes. Returns the axes (an array of them when faceted).
    """
    found = {e.method: circuit_recovery(e, reference) for e in estimates}
    styles = method_styles(list(found))

    def draw(axes, method, highlight):
        roc = found[method].roc
        style = styles[method] if highlight else {"color": "0.82", "ls": "-", "marker": None}
        axes.plot(
            roc.fpr,
            roc.tpr,
            drawstyle="steps-post",
            lw=1.6 if highlight else 1.0,
            zorder=3 if highlight else 2,
            label=f"{method} ({found[method].auroc:.3f})",
            markevery=max(1, len(roc) // 8),
            markersize=5,
            **style,
        )

    def finish(axes):
        axes.plot([0, 1], [0, 1], color="0.6", lw=0.6, ls=":")
        axes.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.04))

    if not facet:
        if ax is None:
            _, ax = plt.subplots(figsize=(6.4, 3.6))
        for method in found:
            draw(ax, method, True)
        finish(ax)
        ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="circuit ROC")
        ax.legend(
            title="method (AUROC)",
            fontsize=8,
            title_fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            frameon=False,
        )
        return ax
    if ax is not None:
        raise ValueError("a faceted ROC plot makes its own figure; pass facet=False to use ax")
    nrows = -(-len(found) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.3 * ncols, 2.25 * nrows), sharex=True, sharey=True, squeeze=False
    )
    for panel, method in zip(axes.flat, found, strict=False):
        for other in found:
            if other != method:
                draw(panel, other, False)
        draw(panel, method, True)
        finish(panel)
        panel.set_title(f"{method}\nAUROC {found[method].auroc:.3f}", fontsize=9)
    for panel in list(axes.flat)[len(found) :]:
        panel.set_visible(False)
    for panel in axes[-1]:
        panel.set_xlabel("false-positive rate")
    for panel in axes[:, 0]:
        panel.set_ylabel("true-positive rate")
    fig.suptitle("ROC of each ranking against the reference circuit (others in grey)", fontsize=10)
    fig.tight_layout()
    return axes


#: Line styles and markers cycled with the colours, so that curves differ in more than hue.
_LINESTYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def method_styles(methods: list[str]) -> dict[str, dict]:
    """A colour (categorical palette without grey, which marks "the others"), line style and
    marker per method, in the given order."""
    tab10 = sns.color_palette("tab10")
    palette = [c for i, c in enumerate(tab10) if i != 7] + sns.color_palette("Dark2")  # no grey
    return {
        m: {
            "color": palette[i % len(palette)],
            "ls": _LINESTYLES[i % 4],
            "marker": _MARKERS[i % len(_MARKERS)],
        }
        for i, m in enumerate(methods)
    }


def faithfulness_plot(
    curves: pd.DataFrame, reference_size: int, *, truth_method: str = "AP", ncols: int = 4
):
    """Faithfulness against circuit size, one panel per ranking against ``truth_method``'s.

    ``curves``: columns ``size``, ``faithfulness``, ``method`` (as built from
    :func:`hvp_utils.faithfulness`). Each panel shows one ranking in its colour, the
    ``truth_method`` ranking dashed in black, the other rankings in grey, and a dotted line at
    ``reference_size``; the title gives the faithfulness at that size.
    """
    methods = [m for m in dict.fromkeys(curves.method) if m != truth_method]
    styles = method_styles(methods)
    by_method = {m: frame.sort_values("size") for m, frame in curves.groupby("method", sort=False)}
    nrows = -(-len(methods) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.3 * ncols, 2.25 * nrows), sharex=True, sharey=True, squeeze=False
    )
    for panel, method in zip(axes.flat, methods, strict=False):
        for other in methods:
            if other != method:
                frame = by_method[other]
                panel.plot(frame["size"], frame.faithfulness, color="0.82", lw=1.0, zorder=1)
        if truth_method in by_method:
            frame = by_method[truth_method]
            panel.plot(
                frame["size"],
                frame.faithfulness,
                color="k",
                ls="--",
                lw=1.0,
                zorder=3,
                label=truth_method,
            )
        frame = by_method[method]
        style = styles[method]
        panel.plot(
            frame["size"],
            frame.faithfulness,
            color=style["color"],
            ls="-",
            lw=1.6,
            marker=style["marker"],
            markersize=4,
            markevery=max(1, len(frame) // 8),
            zorder=2,
            label=method,
        )
        panel.axvline(reference_size, color="0.4", lw=0.8, ls=":")
        panel.axhline(1.0, color="0.6", lw=0.6)
        at = frame.loc[frame["size"] == reference_size, "faithfulness"]
        value = f"{float(at.iloc[0]):.3f}" if len(at) else "n/a"
        panel.set_title(f"{method}\nat k={reference_size}: {value}", fontsize=9)
    for panel in list(axes.flat)[len(methods) :]:
        panel.set_visible(False)
    for panel in axes[-1]:
        panel.set_xlabel("heads kept (k)")
    fig.supylabel("m(circuit) / m(model)", fontsize=10)
    handles = [
        plt.Line2D([], [], color="k", ls="--", label=f"{truth_method} ranking"),
        plt.Line2D([], [], color="0.82", label="other rankings"),
        plt.Line2D([], [], color="0.4", ls=":", label=f"reference size k={reference_size}"),
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=3,
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    fig.suptitle("Faithfulness of each ranking's top-k heads (the rest mean-ablated)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return axes


def accuracy_compute_plot(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    row: str,
    col: str,
    hue: str = "method",
    exact: str | None = None,
    xlabel: str = "",
    ylabel: str = "",
):
    """An error measure (``y``, log) against compute (``x``, log), one panel per (row, col)
    and one colour and marker per ``hue`` value, in a legend outside the panels.

    Values of ``y`` at or below 1e-12 (an exact method: ``exact`` names its ``hue`` value,
    drawn as a black star) sit on the panel's floor, half the smallest positive value, so
    that they stay on a log axis. A vertical line marks ``x = 1`` (the reference's cost
    when ``x`` is a ratio to it).
    """
    rows, cols = list(dict.fromkeys(frame[row])), list(dict.fromkeys(frame[col]))
    kinds = [h for h in dict.fromkeys(frame[hue]) if h != exact]
    palette = dict(zip(kinds, sns.color_palette("tab10", n_colors=len(kinds)), strict=True))
    markers = dict(zip(kinds, "osD^vPXh<>p"[: len(kinds)], strict=True))
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(3.6 * len(cols), 3.0 * len(rows)), squeeze=False
    )
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax, sub = axes[i][j], frame[(frame[row] == r) & (frame[col] == c)]
            positive = sub[y][sub[y] > 1e-12]
            floor = 0.5 * positive.min() if len(positive) else 1e-6
            shown = sub.assign(**{y: sub[y].where(sub[y] > 1e-12, floor)})
            for kind in kinds:
                points = shown[shown[hue] == kind]
                ax.scatter(
                    points[x],
                    points[y],
                    color=palette[kind],
                    marker=markers[kind],
                    s=36,
                    edgecolor="white",
                    linewidth=0.4,
                    zorder=3,
                )
            if exact is not None:
                points = shown[shown[hue] == exact]
                ax.scatter(points[x], points[y], marker="*", s=150, color="k", zorder=4)
            ax.axvline(1.0, color="0.6", lw=0.6)
            ax.set(xscale="log", yscale="log", title=f"{c} | {r}")
            ax.set_xlim(min(shown[x].min(), 1.0) / 2, max(shown[x].max(), 1.0) * 2)
            low = floor / 3
            ax.set_ylim(low, max(shown[y].max() * 3, low * 100))  # two decades at least
            ax.yaxis.set_minor_formatter(mticker.NullFormatter())
            _log_ticks_plain(ax.xaxis)
            ax.tick_params(axis="both", labelsize=8)
            ax.set_xlabel(xlabel if i == len(rows) - 1 else "")
            ax.set_ylabel(ylabel if j == 0 else "")
    handles = [
        plt.Line2D([], [], marker=markers[k], ls="", color=palette[k], markersize=6) for k in kinds
    ]
    names = list(kinds)
    if exact is not None:
        handles.append(plt.Line2D([], [], marker="*", ls="", color="k", markersize=9))
        names.append(f"{exact} (exact; drawn at the floor)")
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)
    fig.tight_layout()
    return fig
