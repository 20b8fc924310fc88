"""Patch-path explorer: g(t) of a component beside its Taylor lines, error band and flags.

:func:`static_path_figure` draws a list of components from a
:class:`~hvp_utils.analysis.paths.PathCurves` (deterministic, for committed notebook outputs)
and :func:`explore` wraps the same panel in an ipywidgets dropdown.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from hvp_utils.analysis.paths import PathCurves
from hvp_utils.analysis.reliability import reasons_text


def flag_text(row: pd.Series) -> str:
    """Short reasons a component is flagged ("ok" when none)."""
    return reasons_text(row)


def draw_path_panel(ax: plt.Axes, paths: PathCurves, name: str, legend: bool = True) -> None:
    """One component: AP at strength t (dots), Taylor lines, order-1 and order-2 bands."""
    curve = paths.curves[paths.curves.component == name]
    row = paths.summary.set_index("component").loc[name]
    t = curve.t.to_numpy()
    for order, colour, alpha in ((1, "C0", 0.12), (2, "C1", 0.25)):
        centre, band = curve[f"taylor{order}"], curve[f"band{order}"]
        ax.fill_between(
            t,
            centre - band,
            centre + band,
            color=colour,
            alpha=alpha,
            lw=0,
            label=f"order-{order} bound",
        )
    ax.plot(t, curve.taylor1, color="C0", ls="--", lw=1.2, label="g'(0) t  (AtP)")
    ax.plot(t, curve.taylor2, color="C1", ls="--", lw=1.2, label="+ g''(0) t²/2")
    ax.plot(t, curve.AP_t, color="k", marker="o", ms=3, lw=1, label="g(t) - g(0)  (AP)")
    if paths.threshold is not None:
        for sign in (1, -1):
            ax.axhline(sign * paths.threshold, color="0.5", lw=0.7, ls=":")
    ax.set_title(f"{name}  r={row.score:.2f}\n{flag_text(row)}", fontsize=9)
    ax.set_xlabel("patch strength t")
    if legend:
        ax.legend(fontsize=7, loc="best")


def static_path_figure(
    paths: PathCurves, names: list[str] | None = None, ncols: int = 3, height: float = 2.7
) -> plt.Figure:
    """The explorer's panel for each of ``names`` (default: every component) in a grid."""
    names = list(paths.summary.component) if names is None else list(names)
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, height * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < len(names):
            draw_path_panel(ax, paths, names[k], legend=k == 0)
        else:
            ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("effect on the metric")
    fig.tight_layout()
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
            fig.tight_layout()
            display(fig)
            plt.close(fig)

    dropdown.observe(redraw, names="value")
    redraw()
    return widgets.VBox([dropdown, out])
