"""Patch paths along t: g(t) of each component beside its Taylor lines and error bands.

For each component the path ``G(t) = g(t) - g(0)`` (activation patching at strength ``t``,
so ``G(1)`` is AP) is drawn with

    first order   T1(t) = g'(0) t                       band  T1 -+ M2 t^2 / 2,
    second order  T2(t) = g'(0) t + g''(0) t^2 / 2      band  T2 -+ M3 t^3 / 6,

the Lagrange remainders on ``[0, t]`` with ``M2 = max|g''|`` and ``M3 = max|g'''|`` estimated
as in :mod:`hvp_utils.analysis.reliability` (at ``t = 1`` the bands are the error bounds of
AtP and of the second-order estimate). :func:`path_curves` computes everything once;
the explorer in :mod:`hvp_utils.viz.explorer` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from hvp_utils.analysis.reliability import (
    REASON_NAMES,
    derivative_maximum,
    flag_reasons,
    path_nodes,
)
from hvp_utils.core.components import Component
from hvp_utils.core.engine import PatchContext, context_for, path_derivatives, path_derivatives_at
from hvp_utils.core.results import CostMeter
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Direction, Model


@dataclass
class PathCurves:
    """``curves``: long frame (component, t, AP_t, taylor1, taylor2, band1, band2);
    ``summary``: one row per component (AP, AtP, second-order estimate, M2, M3, score, flags)."""

    curves: pd.DataFrame
    summary: pd.DataFrame
    tau: float
    threshold: float | None


def _path_values(model, task, comps, ts, ctx, meter, chunk_size) -> torch.Tensor:
    """``g_c(t) - g_c(0)`` for every component and every ``t``: ``[len(ts), n]``."""
    stacked = [c for _ in ts for c in comps]
    t = torch.tensor([x for x in ts for _ in comps], dtype=torch.float64)
    values = path_derivatives(model, task, stacked, t, 0, ctx, meter, chunk_size).g
    return values.view(len(ts), len(comps)) - ctx.base_metric


def _summary(comps, pieces, tau, threshold) -> pd.DataFrame:
    h = 1.0 / (len(pieces) - 1)
    start = pieces[0]
    m2, _ = derivative_maximum(pieces, 2, h)
    m3, _ = derivative_maximum(pieces, 3, h)
    first, second = start.d1, start.d2
    reasons = flag_reasons(
        first, second, tau=tau, lower=first - m2 / 2, upper=first + m2 / 2, threshold=threshold
    )
    frame = pd.DataFrame(
        {
            "component": [c.name for c in comps],
            "kind": [c.kind for c in comps],
            "AtP": first.numpy(),
            "second_order": (first + second / 2).numpy(),
            "g2": second.numpy(),
            "M2": m2.numpy(),
            "M3": m3.numpy(),
            "score": reasons["scores"].numpy(),
        }
    )
    for column in REASON_NAMES:
        frame[column] = reasons[column].numpy()
    return frame


def path_curves(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    n_points: int = 11,
    n_nodes: int = 3,
    tau: float = 0.3,
    threshold: float | None = None,
    direction: Direction = "denoising",
    chunk_size: int | None = None,
    context: PatchContext | None = None,
) -> PathCurves:
    """AP at ``n_points`` strengths on [0, 1] and the Taylor lines and bands of each component.

    Args:
        model, task, comps: as for every estimator (see :func:`hvp_utils.atp`).
        n_points: evenly spaced strengths ``t`` at which ``g(t) - g(0)`` is patched exactly.
        n_nodes: nodes of the order-3 sweep that estimates ``M2`` and ``M3``.
        tau, threshold: the flags, as in :func:`~hvp_utils.analysis.reliability.reliability`
            (the threshold is tested against the order-1 band at ``t = 1``).
        direction: ``"denoising"`` (default) or ``"noising"``.
        chunk_size: replicates of the prompt batch per pass.
        context: a :class:`~hvp_utils.core.engine.PatchContext` shared with other estimators.

    Returns:
        :class:`PathCurves` (one order-0 sweep over all (component, t), one order-3 sweep at
        ``n_nodes`` nodes); ``summary.attrs["cost"]`` holds the cost.
    """
    meter = CostMeter()
    ctx = context_for(model, task, comps, direction, meter, context)
    ts = np.linspace(0.0, 1.0, n_points).tolist()
    values = _path_values(model, task, comps, ts, ctx, meter, chunk_size)
    nodes = path_nodes(n_nodes)
    pieces = path_derivatives_at(model, task, comps, nodes, 3, ctx, meter, chunk_size)
    summary = _summary(comps, pieces, tau, threshold)
    summary.insert(2, "AP", values[-1].numpy())
    rows = []
    for i, row in summary.iterrows():
        for k, t in enumerate(ts):
            taylor1 = row.AtP * t
            taylor2 = taylor1 + row.g2 * t**2 / 2
            rows.append(
                {
                    "component": row.component,
                    "t": t,
                    "AP_t": float(values[k, i]),
                    "taylor1": taylor1,
                    "taylor2": taylor2,
                    "band1": row.M2 * t**2 / 2,
                    "band2": row.M3 * t**3 / 6,
                }
            )
    summary.attrs["cost"] = meter.as_dict()
    return PathCurves(pd.DataFrame(rows), summary, tau, threshold)
