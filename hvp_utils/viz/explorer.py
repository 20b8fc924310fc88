"""Patch-path explorer: g(t) of a component beside its Taylor lines, Lagrange band and flags.

:func:`static_path_figure` draws a list of components from a
:class:`~hvp_utils.analysis.paths.PathCurves` (deterministic, for committed notebook outputs);
:class:`PathExplorer` (:func:`explore`) is the interactive explorer: drop-downs for the
perturbation, kind and component, sliders for tau and theta, live in JupyterLab and a static
figure of its selection elsewhere.
"""

from __future__ import annotations

import base64
import io
import math
import os

import matplotlib.pyplot as plt
import pandas as pd
import torch

from hvp_utils.analysis.paths import PathCurves, PathSource
from hvp_utils.analysis.reliability import (
    REASON_NAMES,
    flag_reasons,
    lagrange_interval,
    reasons_text,
)
from hvp_utils.core.results import FlagReasons
from hvp_utils.viz.plots import threshold_lines

#: Legend label of the band: the Lagrange interval of AtP on [0, t], from estimated maxima.
BAND_LABEL = "Lagrange interval: g'(0) t ± M̂₂ t²/2"


def flag_text(row: pd.Series) -> str:
    """Short reasons a component is flagged ("ok" when none)."""
    return reasons_text(row)


def draw_path_panel(
    ax: plt.Axes,
    paths: PathCurves,
    name: str,
    *,
    legend: bool = True,
    theta: float | None = None,
    verdict: str | None = None,
) -> None:
    """One component: AP at strength t (dots), the tangent g'(0) t (AtP at t = 1) with its
    Lagrange band, the parabola of the second-order estimate, and the circuit threshold
    ``±theta`` (dotted): ``theta`` when given, else the one the paths were computed with.
    The title gives the reliability score and ``verdict`` (default: the paths' own flags)."""
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
    theta = float(row.get("threshold", float("nan"))) if theta is None else float(theta)
    if not math.isnan(theta):
        threshold_lines(ax, theta)
    verdict = flag_text(row) if verdict is None else verdict
    ax.set_title(f"{name}  r={row.score:.2f}\n{verdict}", fontsize=9)
    ax.set_xlabel("patch strength t")
    if legend:
        ax.legend(fontsize=8, loc="best")


def static_path_figure(
    paths: PathCurves, *, names: list[str] | None = None, ncols: int = 3, height: float = 2.7
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


def in_jupyter_frontend() -> bool:
    """True in a kernel that a Jupyter server started for a notebook (JupyterLab, Notebook 7:
    the server sets ``JPY_SESSION_NAME``), False under papermill, nbval or a plain script."""
    return bool(os.environ.get("JPY_SESSION_NAME"))


def flag_explanation(row: pd.Series, tau: float, theta: float) -> list[str]:
    """Why the component is flagged or not at this ``tau`` and ``theta``, one line per rule
    of :func:`~hvp_utils.analysis.reliability.flag_reasons` (recomputed from the row's
    ``AtP``, ``g2`` and ``M2``)."""
    reasons = flag_reasons_of(row, tau, theta)
    first, second = float(row.AtP), float(row.AtP + row.g2 / 2)
    lower, upper = lagrange_interval(torch.tensor([first]), torch.tensor([float(row.M2)]))
    lower, upper = float(lower[0]), float(upper[0])
    score = float(reasons.scores[0])
    mark = {True: "flagged", False: "ok"}
    return [
        f"r>tau ({mark[bool(reasons.flag_score[0])]}): r = |g''(0)/2| / (|g'(0)| + "
        f"|g''(0)/2|) = {score:.2f} {'>' if score > tau else '≤'} τ = {tau:.2f}",
        f"sign ({mark[bool(reasons.flag_sign[0])]}): AtP = {first:+.3g}, "
        f"AtP + g''(0)/2 = {second:+.3g}",
        f"threshold ({mark[bool(reasons.flag_threshold[0])]}): the Lagrange interval "
        f"[{lower:.3g}, {upper:.3g}] "
        + ("crosses" if bool(reasons.flag_threshold[0]) else "does not cross")
        + f" ±θ = ±{theta:.3g}",
    ]


def flag_reasons_of(row: pd.Series, tau: float, theta: float) -> FlagReasons:
    """:func:`~hvp_utils.analysis.reliability.flag_reasons` of one summary row of
    :class:`~hvp_utils.analysis.paths.PathCurves` at another ``tau`` and ``theta``."""

    def one(x) -> torch.Tensor:
        return torch.tensor([float(x)], dtype=torch.float64)

    return flag_reasons(
        one(row.AtP), one(row.g2), tau=tau, max_second=one(row.M2), threshold=float(theta)
    )


class PathExplorer:
    """The patch-path explorer: perturbation, kind and component drop-downs and sliders for
    ``tau`` and the circuit threshold (``theta = threshold_share * the kind's largest |AtP|``),
    drawing
    g(t), the tangent and parabola, the Lagrange band, ``±theta`` and why the component is
    flagged.

    Displayed in a notebook, it is the live widget in JupyterLab (a kernel started by a
    Jupyter server; paths of components not seen yet are computed on demand by ``source``),
    and elsewhere (papermill, the rendered course) the figure of its current selection, as a
    static PNG, with a plain-text summary. ``interactive`` forces one or the other.

    Args:
        source: a :class:`~hvp_utils.analysis.paths.PathSource` (patch paths on demand).
        tau: the starting score threshold.
        threshold_share: the starting circuit-threshold share.
        perturbation, component: the starting selection (default: the first of each).
        interactive: None (default: live only in a Jupyter frontend), True or False.
    """

    def __init__(
        self,
        source: PathSource,
        *,
        tau: float = 0.3,
        threshold_share: float = 0.1,
        perturbation: str | None = None,
        component: str | None = None,
        interactive: bool | None = None,
    ):
        self.source = source
        self.perturbation = perturbation or source.perturbations[0]
        first_kind = source.kinds()[0]
        self.component = component or source.names(first_kind)[0]
        self.tau, self.threshold_share = float(tau), float(threshold_share)
        self.interactive = interactive
        self._widget = None

    # the drawing --------------------------------------------------------------------------
    @property
    def theta(self) -> float:
        kind = self.source.kind_of(self.component)
        return self.threshold_share * self.source.scale(self.perturbation, kind)

    def row(self) -> pd.Series:
        paths = self.source(self.perturbation, self.component)
        return paths.summary.set_index("component").loc[self.component]

    def verdict(self) -> str:
        reasons = flag_reasons_of(self.row(), self.tau, self.theta)
        on = [short for column, short in REASON_NAMES.items() if bool(getattr(reasons, column)[0])]
        return "flagged: " + ", ".join(on) if on else "ok"

    def figure(self) -> plt.Figure:
        """The current selection's panel, with the three flag rules written below it."""
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        paths = self.source(self.perturbation, self.component)
        draw_path_panel(ax, paths, self.component, theta=self.theta, verdict=self.verdict())
        ax.set_title(f"{self.perturbation} · " + ax.get_title(), fontsize=9)
        ax.set_ylabel("effect on the metric (logit difference)")
        lines = flag_explanation(self.row(), self.tau, self.theta)
        fig.tight_layout(rect=(0, 0.07 * len(lines) / 1.5, 1, 1))
        fig.text(0.02, 0.01, "\n".join(lines), fontsize=8, va="bottom", family="monospace")
        return fig

    def __repr__(self) -> str:
        return (
            f"PathExplorer({self.perturbation}, {self.component}, tau={self.tau:.2f}, "
            f"theta={self.threshold_share:.2f} x largest |AtP| = {self.theta:.3g}): "
            f"{self.verdict()}"
        )

    # the widget ---------------------------------------------------------------------------
    def widget(self):
        """The ipywidgets controls and the panel (built once)."""
        if self._widget is None:
            self._widget = self._build_widget()
        return self._widget

    def _build_widget(self):
        import ipywidgets as widgets
        from IPython.display import display

        source = self.source
        menu = dict(style={"description_width": "90px"}, layout=widgets.Layout(width="290px"))
        perturbation = widgets.Dropdown(
            options=source.perturbations,
            value=self.perturbation,
            description="perturbation",
            **menu,
        )
        kind = widgets.Dropdown(
            options=source.kinds(), value=source.kind_of(self.component), description="kind", **menu
        )
        component = widgets.Dropdown(
            options=source.names(kind.value), value=self.component, description="component", **menu
        )
        slider = dict(
            continuous_update=False, readout_format=".2f", style={"description_width": "initial"}
        )
        tau = widgets.FloatSlider(
            value=self.tau, min=0.0, max=1.0, step=0.05, description="τ (score)", **slider
        )
        share = widgets.FloatSlider(
            value=self.threshold_share,
            min=0.0,
            max=1.0,
            step=0.01,
            description="θ share of max |AtP|",
            **slider,
        )
        out, why = widgets.Output(), widgets.HTML()

        def redraw(change=None):
            if change is not None and change["owner"] is kind:
                component.options = source.names(kind.value)
                component.value = component.options[0]
                return  # the component's own change redraws
            self.perturbation, self.component = perturbation.value, component.value
            self.tau, self.threshold_share = tau.value, share.value
            with out:
                out.clear_output(wait=True)
                fig = self.figure()
                display(fig)
                plt.close(fig)
            why.value = f"<b>{self.component}</b> on {self.perturbation}: {self.verdict()}"

        for control in (perturbation, kind, component, tau, share):
            control.observe(redraw, names="value")
        redraw()
        controls = widgets.HBox(
            [widgets.VBox([perturbation, kind, component]), widgets.VBox([tau, share])]
        )
        return widgets.VBox([controls, why, out])

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        live = in_jupyter_frontend() if self.interactive is None else self.interactive
        bundle = {"text/plain": repr(self)}
        if live:
            view = self.widget()._repr_mimebundle_()
            bundle["application/vnd.jupyter.widget-view+json"] = view[
                "application/vnd.jupyter.widget-view+json"
            ]
        fig = self.figure()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
        plt.close(fig)
        bundle["image/png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
        return bundle


def explore(source: PathSource, **options) -> PathExplorer:
    """The explorer of :class:`PathExplorer` on ``source`` (options: tau, threshold_share,
    perturbation, component, interactive). Display it (the last line of a cell)."""
    return PathExplorer(source, **options)


def draw_overshoot_panel(ax: plt.Axes, paths: PathCurves, name: str, *, label: str = "") -> None:
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
    panels: list[tuple[PathCurves, str, str]], *, ncols: int = 3, height: float = 2.9
) -> plt.Figure:
    """:func:`draw_overshoot_panel` for each ``(paths, component, label)`` in a grid, with one
    legend below it; ``label`` names the run (e.g. the perturbation)."""
    ncols = max(1, min(ncols, len(panels)))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, height * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < len(panels):
            paths, name, label = panels[k]
            draw_overshoot_panel(ax, paths, name, label=label)
        else:
            ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("effect on the metric\n(logit difference)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    legend_height = 0.25 + 0.22 * -(-len(labels) // 3)
    fig.tight_layout(rect=(0, legend_height / fig.get_figheight(), 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    return fig
