"""Accuracy against compute: run many estimators on the same components, measure each against
activation patching, and time them in the same process.

Every estimator has the signature ``(model, task, comps)`` once its own options are bound with
:func:`functools.partial`, and returns an :class:`~hvp_utils.results.Attribution`, so this
module never special-cases a method.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from transformer_lens import HookedTransformer

from hvp_utils.atp_star import atp_star
from hvp_utils.components import Component
from hvp_utils.estimators import atp
from hvp_utils.metrics import compare
from hvp_utils.patching import activation_patching
from hvp_utils.quadrature import ERROR_ORDER, integrated_gradients, multistep_hvp
from hvp_utils.results import Attribution
from hvp_utils.second_order import hvp_correction
from hvp_utils.tasks import PatchingTask

Estimator = Callable[[HookedTransformer, PatchingTask, list[Component]], Attribution]


def estimator_family(method: str) -> str:
    """Coarse family of a method label, for colouring plots."""
    for prefix, family in (
        ("AtP*", "AtP*"),
        ("AtP", "AtP"),
        ("HVP", "HVP (one point)"),
        ("multistep", "multi-step HVP"),
        ("IG joint", "IG (joint per hook)"),
        ("IG", "IG (per component)"),
        ("AP", "AP"),
    ):
        if method.startswith(prefix):
            return family
    return "other"


def default_estimators(quick: bool = False) -> list[Estimator]:
    """The estimator grid of notebook 05 and ``make bench`` (``quick``: a smaller grid)."""
    grid: list[Estimator] = [
        atp,
        atp_star,
        partial(hvp_correction, mode="diag"),
        partial(hvp_correction, mode="joint"),
        partial(hvp_correction, mode="hutchinson", samples=16),
        partial(multistep_hvp, steps=1, rule="radau"),
        partial(multistep_hvp, steps=2, rule="radau"),
        partial(multistep_hvp, steps=2, rule="taylor"),
        partial(multistep_hvp, steps=1, rule="trapezoid"),
        partial(integrated_gradients, steps=1),
        partial(integrated_gradients, steps=2),
        partial(integrated_gradients, steps=4),
        partial(integrated_gradients, steps=1, rule="gauss"),
        partial(integrated_gradients, steps=2, joint=True),
        partial(integrated_gradients, steps=8, joint=True),
    ]
    if not quick:
        grid += [
            partial(multistep_hvp, steps=4, rule="taylor"),
            partial(multistep_hvp, steps=2, rule="trapezoid"),
            partial(integrated_gradients, steps=8),
            partial(integrated_gradients, steps=2, rule="gauss"),
        ]
    return grid


def run_estimators(
    model: HookedTransformer,
    task: PatchingTask,
    comps: list[Component],
    estimators: list[Estimator] | None = None,
    truth: Attribution | None = None,
    **labels,
) -> tuple[pd.DataFrame, dict[str, Attribution]]:
    """Run each estimator once; one row each with :func:`compare` metrics, pass counts, and
    wall time as ratios to AtP and to AP (all measured here, in this process)."""
    truth = truth or activation_patching(model, task, comps)
    results = {"AP": truth}
    for estimator in estimators or default_estimators():
        result = estimator(model, task, comps)
        results[result.method] = result
    rows = []
    for result in results.values():
        row = compare(result, truth).reset_index().iloc[0].to_dict()
        row.update({k: result.cost[k] for k in ("forward", "backward", "hvp")})
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["x_AtP_time"] = (
        frame.seconds / results["AtP"].cost["seconds"] if "AtP" in results else np.nan
    )
    frame["x_AP_time"] = frame.seconds / truth.cost["seconds"]
    frame["family"] = frame.method.map(estimator_family)
    for key, value in labels.items():
        frame[key] = value
    return frame, results


def convergence(
    model: HookedTransformer,
    task: PatchingTask,
    comps: list[Component],
    steps: tuple[int, ...] = (1, 2, 4, 8),
    truth: Attribution | None = None,
    chunk_size: int | None = None,
) -> pd.DataFrame:
    """NMAE against AP of every quadrature rule at each K, with the derived error order."""
    truth = truth or activation_patching(model, task, comps, chunk_size=chunk_size)
    multi = partial(multistep_hvp, model, task, comps, chunk_size=chunk_size)
    ig = partial(integrated_gradients, model, task, comps, chunk_size=chunk_size)
    runs = {
        "taylor": lambda k: multi(steps=k, rule="taylor"),
        "trapezoid": lambda k: multi(steps=k, rule="trapezoid"),
        "radau": lambda k: multi(steps=k, rule="radau"),
        "midpoint": lambda k: ig(steps=k),
        "gauss": lambda k: ig(steps=k, rule="gauss"),
    }
    rows = []
    for rule, run in runs.items():
        for k in steps:
            result = run(k)
            error = (result.values - truth.values).abs()
            rows.append(
                {
                    "rule": rule,
                    "K": k,
                    "nmae": float(error.mean() / truth.values.abs().mean()),
                    "max_abs_error": float(error.max()),
                    "seconds": result.cost["seconds"],
                    "derived_order": ERROR_ORDER[rule],
                }
            )
    return pd.DataFrame(rows)


def fitted_orders(frame: pd.DataFrame, value: str = "max_abs_error") -> pd.DataFrame:
    """Slope of log(error) against log(1/K) per rule over the K of ``frame`` (the error order)."""
    rows = []
    for rule, group in frame.groupby("rule", sort=False):
        slope = np.polyfit(np.log(group.K), np.log(group[value].clip(lower=1e-300)), 1)[0]
        rows.append(
            {"rule": rule, "derived_order": group.derived_order.iloc[0], "fitted_order": -slope}
        )
    return pd.DataFrame(rows).set_index("rule")


def pareto_plot(frame: pd.DataFrame, row: str, col: str):
    """NMAE against wall time (log-log), one point per estimator, one panel per (row, col),
    with the Pareto frontier (estimators nothing beats on both axes) drawn and labelled."""
    rows, cols = frame[row].unique(), frame[col].unique()
    families = list(dict.fromkeys(frame.family))
    palette = dict(zip(families, sns.color_palette(n_colors=len(families)), strict=True))
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(3.4 * len(cols), 2.9 * len(rows)), squeeze=False
    )
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax, sub = axes[i][j], frame[(frame[row] == r) & (frame[col] == c)]
            sns.scatterplot(
                sub,
                x="x_AP_time",
                y="nmae",
                hue="family",
                palette=palette,
                s=30,
                ax=ax,
                legend=False,
            )
            front = _frontier(sub[sub.method != "AP"])
            ax.plot(front.x_AP_time, front.nmae, color="0.3", lw=0.8, ls="--", zorder=0)
            for _, point in front.iterrows():
                ax.annotate(
                    point.method,
                    (point.x_AP_time, point.nmae),
                    fontsize=6,
                    xytext=(3, 2),
                    textcoords="offset points",
                )
            ax.axvline(1.0, color="0.6", lw=0.6)
            ax.set(
                xscale="log",
                yscale="log",
                title=f"{r} | {c}",
                xlabel="wall time / AP" if i == len(rows) - 1 else "",
                ylabel="NMAE vs AP" if j == 0 else "",
            )
    handles = [plt.Line2D([], [], marker="o", ls="", color=palette[f]) for f in families]
    fig.legend(handles, families, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    return fig


def _frontier(frame: pd.DataFrame) -> pd.DataFrame:
    """Estimators that no other estimator beats on both time and NMAE."""
    ordered = frame.sort_values(["x_AP_time", "nmae"])
    best, keep = np.inf, []
    for index, r in ordered.iterrows():
        if r.nmae < best:
            best = r.nmae
            keep.append(index)
    return ordered.loc[keep]


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
