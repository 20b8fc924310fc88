"""Patch-path explorer: g(t) of a component beside its Taylor lines, Lagrange band and flags.

:func:`static_path_figure` draws a list of components from a
:class:`~hvp_utils.analysis.paths.PathCurves` (deterministic, for committed notebook outputs)
and :func:`explore` wraps the same panel in an ipywidgets dropdown.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from hvp_utils.analysis.paths import PathCurves
from hvp_utils.analysis.reliability import reasons_text
from hvp_utils.viz.plots import threshold_lines

#: Legend label of the band: the Lagrange interval of AtP on [0, t], from estimated maxima.
BAND_LABEL = "Lagrange interval: g'(0) t ± M̂₂ t²/2"


def flag_text(row: pd.Series) -> str:
    """Short reasons a component is flagged ("ok" when none)."""
    return reasons_text(row)


def draw_path_panel(ax: plt.Axes, paths: PathCurves, name: str, legend: bool = True) -> None:
    """One component: AP at strength t (dots), the tangent g'(0) t (AtP at t = 1) with its
    Lagrange band, the parabola of the second-order estimate, and the circuit threshold
    ``±theta`` (dotted) when the paths were computed with one."""
    curve = paths.curves[paths.curves.component == name]
    row = paths.summary.set_index("component").loc[name]
    t = curve.t.to_numpy()
    ax.fill_between(
        t,
        curve.taylor1 - curve.band,
        curve.taylor1 + curve.band,
        color="C0",
        alpha=0.15,
        lw=0,
        label=BAND_LABEL,
    )
    ax.plot(t, curve.taylor1, color="C0", ls="--", lw=1.3, label="tangent g'(0) t  (AtP at t=1)")
    ax.plot(t, curve.taylor2, color="C1", ls="-.", lw=1.3, label="parabola + g''(0) t²/2")
    ax.plot(t, curve.AP_t, color="k", marker="o", ms=3, lw=1, label="g(t) - g(0)  (AP at t=1)")
    theta = float(row.get("threshold", float("nan")))
    if not math.isnan(theta):
        threshold_lines(ax, theta)
    ax.set_title(f"{name}  r={row.score:.2f}\n{flag_text(row)}", fontsize=9)
    ax.set_xlabel("patch strength t")
    if legend:
        ax.legend(fontsize=8, loc="best")


def static_path_figure(
    paths: PathCurves, names: list[str] | None = None, ncols: int = 3, height: float = 2.7
) -> plt.Figure:
    """The explorer's panel for each of ``names`` (default: every component) in a grid, with
    one legend for all panels below the grid."""
    names = list(paths.summary.component) if names is None else list(names)
    ncols = max(1, min(ncols, len(names)))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, height * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < len(names):
            draw_path_panel(ax, paths, names[k], legend=False)
        else:
            ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("effect on the metric\n(logit difference)")
    handles, labels = {}, []
    for ax in axes.flat[: len(names)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    rows_of_legend = -(-len(labels) // 3)
    legend_height = 0.25 + 0.22 * rows_of_legend  # inches
    fig.tight_layout(rect=(0, legend_height / fig.get_figheight(), 1, 1))
    fig.legend(
        [handles[label] for label in labels],
        labels,
        loc="lower center",
        ncol=min(3, len(labels)),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    return fig


def explore(paths: PathCurves):
    """ipywidgets explorer: a dropdown of components and the selected one's path panel."""
    import ipywidgets as widgets
    from IPython.display import display

    names = list(paths.summary.component)
    dropdown = widgets.Dropdown(options=names, value=names[0], description="component")
    out = widgets.Output()

    def redraw(change=None):
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5.5, 3.6))
            draw_path_panel(ax, paths, dropdown.value)
            ax.set_ylabel("effect on the metric (logit difference)")
            fig.tight_layout()
            display(fig)
            plt.close(fig)

    dropdown.observe(redraw, names="value")
    redraw()
    return widgets.VBox([dropdown, out])


def draw_overshoot_panel(ax: plt.Axes, paths: PathCurves, name: str, label: str = "") -> None:
    """Where the second-order correction lands: the exact path g(t) - g(0) (dots), the tangent
    g'(0) t and the parabola g'(0) t + g''(0) t^2 / 2, and at t = 1 AP, AtP and the corrected
    estimate, with the first-order error e1 = AP - AtP and the correction c = g''(0)/2 drawn as
    arrows from AtP."""
    curve = paths.curves[paths.curves.component == name]
    row = paths.summary.set_index("component").loc[name]
    t = curve.t.to_numpy()
    ap, atp, c = float(row.AP), float(row.AtP), float(row.g2) / 2
    ax.plot(t, curve.AP_t, color="k", marker="o", ms=3, lw=1, label="exact path g(t) - g(0)")
    ax.plot(t, curve.taylor1, color="C0", ls="--", lw=1.3, label="tangent g'(0) t")
    ax.plot(t, curve.taylor2, color="C1", ls="-.", lw=1.3, label="parabola g'(0) t + g''(0) t²/2")
    ax.scatter([1.0], [ap], s=70, marker="*", color="k", zorder=4, label="AP = g(1) - g(0)")
    ax.scatter([1.0], [atp], s=30, marker="s", color="C0", zorder=4, label="AtP = g'(0)")
    ax.scatter([1.0], [atp + c], s=36, marker="D", color="C1", zorder=4, label="AtP + g''(0)/2")
    for x, end, colour in ((1.04, ap, "C0"), (1.08, atp + c, "C1")):
        ax.annotate(
            "",
            xy=(x, end),
            xytext=(x, atp),
            arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.4},
        )
    ax.text(1.04, (ap + atp) / 2, " e₁", color="C0", fontsize=8, ha="left", va="center")
    ax.text(1.08, atp + c / 2, " c", color="C1", fontsize=8, ha="left", va="center")
    e1 = ap - atp
    why = (
        "c opposes e₁"
        if c * e1 < 0
        else ("|c| > 2|e₁|" if abs(c) > 2 * abs(e1) else "no overshoot")
    )
    head = f"{name}, {label}" if label else name
    ax.set_title(
        f"{head}: {why}\n|AtP - AP| = {abs(e1):.2f}, |AtP + c - AP| = {abs(e1 - c):.2f}",
        fontsize=9,
    )
    ax.set_xlim(-0.03, 1.17)
    ax.set_xlabel("patch strength t")


def overshoot_figure(
    panels: list[tuple[PathCurves, str, str]], ncols: int = 3, height: float = 2.9
) -> plt.Figure:
    """:func:`draw_overshoot_panel` for each ``(paths, component, label)`` in a grid, with one
    legend below it; ``label`` names the run (e.g. the perturbation)."""
    ncols = max(1, min(ncols, len(panels)))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, height * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < len(panels):
            draw_overshoot_panel(ax, *panels[k])
        else:
            ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("effect on the metric\n(logit difference)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    legend_height = 0.25 + 0.22 * -(-len(labels) // 3)
    fig.tight_layout(rect=(0, legend_height / fig.get_figheight(), 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    return fig
