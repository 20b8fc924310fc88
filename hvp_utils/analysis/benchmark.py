"""Accuracy against compute: run many estimators on the same components, measure each against
activation patching, and time them in the same process.

Every estimator has the signature ``(model, task, comps)`` once its own options are bound with
:func:`functools.partial`, and returns an :class:`~hvp_utils.core.results.Attribution`, so this
module never special-cases a method.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd
from transformer_lens import HookedTransformer

from hvp_utils.estimators.atp_star import atp_star
from hvp_utils.core.components import Component
from hvp_utils.estimators.atp import atp
from hvp_utils.core.metrics import compare
from hvp_utils.estimators.patching import activation_patching
from hvp_utils.estimators.quadrature import ERROR_ORDER, integrated_gradients, multistep_hvp
from hvp_utils.core.results import Attribution
from hvp_utils.estimators.second_order import hvp_correction
from hvp_utils.core.tasks import PatchingTask

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


def pareto_frontier(frame: pd.DataFrame) -> pd.DataFrame:
    """Estimators that no other estimator beats on both time and NMAE."""
    ordered = frame.sort_values(["x_AP_time", "nmae"])
    best, keep = np.inf, []
    for index, r in ordered.iterrows():
        if r.nmae < best:
            best = r.nmae
            keep.append(index)
    return ordered.loc[keep]

