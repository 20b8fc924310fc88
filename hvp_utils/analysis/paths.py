"""Patch paths along t: g(t) of each component beside its Taylor lines and Lagrange interval.

For each component the path ``G(t) = g(t) - g(0)`` (activation patching at strength ``t``,
so ``G(1)`` is AP) is drawn with

    first order   T1(t) = g'(0) t                       band  T1 -+ M2_hat t^2 / 2,
    second order  T2(t) = g'(0) t + g''(0) t^2 / 2,

where the band is the Lagrange remainder of first order on ``[0, t]`` with ``M2_hat`` the
estimate of ``max_[0,1] |g''|`` from path samples, as in :mod:`hvp_utils.analysis.reliability`:
at ``t = 1`` the band is the Lagrange interval of AtP, the same interval the flags test
against the circuit threshold. :func:`path_curves` computes everything once; the explorer in
:mod:`hvp_utils.viz.explorer` draws it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from hvp_utils.analysis.reliability import (
    REASON_NAMES,
    derivative_maximum,
    flag_reasons,
    lagrange_interval,
    path_nodes,
)
from hvp_utils.core.components import Component
from hvp_utils.core.engine import EngineRun, PatchContext, path_derivatives, path_derivatives_at
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Direction, Model

#: A circuit threshold: one number for every component, or one per component kind.
Threshold = float | Mapping[str, float] | None


@dataclass
class PathCurves:
    """``curves``: long frame (component, t, AP_t, taylor1, taylor2, band);
    ``summary``: one row per component (AP, AtP, second-order estimate, g'', M2, the Lagrange
    interval ``lower``/``upper``, the ``threshold`` it was tested against, score, flags)."""

    curves: pd.DataFrame
    summary: pd.DataFrame
    tau: float
    threshold: Threshold


def _path_values(run: EngineRun, comps: list[Component], ts: list[float]) -> torch.Tensor:
    """``g_c(t) - g_c(0)`` for every component and every ``t``: ``[len(ts), n]``."""
    stacked = [c for _ in ts for c in comps]
    t = torch.tensor([x for x in ts for _ in comps], dtype=torch.float64)
    values = path_derivatives(run, stacked, t=t, order=0).g
    return values.view(len(ts), len(comps)) - run.context.base_metric


def component_thresholds(comps: list[Component], threshold: Threshold) -> torch.Tensor | None:
    """The threshold of each component (NaN for a kind the mapping does not name)."""
    if threshold is None:
        return None
    if isinstance(threshold, Mapping):
        values = [float(threshold.get(c.kind, float("nan"))) for c in comps]
    else:
        values = [float(threshold)] * len(comps)
    return torch.tensor(values, dtype=torch.float64)


def _summary(comps, pieces, tau, threshold) -> pd.DataFrame:
    h = 1.0 / (len(pieces) - 1)
    start = pieces[0]
    m2, _ = derivative_maximum(pieces, 2, h)
    first, second = start.d1, start.d2
    cuts = component_thresholds(comps, threshold)
    reasons = flag_reasons(first, second, tau=tau, max_second=m2, threshold=cuts)
    lower, upper = lagrange_interval(first, m2)
    frame = pd.DataFrame(
        {
            "component": [c.name for c in comps],
            "kind": [c.kind for c in comps],
            "AtP": first.numpy(),
            "second_order": (first + second / 2).numpy(),
            "g2": second.numpy(),
            "M2": m2.numpy(),
            "lower": lower.numpy(),
            "upper": upper.numpy(),
            "threshold": np.nan if cuts is None else cuts.numpy(),
            "score": reasons.scores.numpy(),
        }
    )
    for column in REASON_NAMES:
        frame[column] = getattr(reasons, column).numpy()
    return frame


def path_curves(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    n_points: int = 11,
    n_nodes: int = 3,
    tau: float = 0.3,
    threshold: Threshold = None,
    direction: Direction = "denoising",
    chunk_size: int | None = None,
    context: PatchContext | None = None,
) -> PathCurves:
    """AP at ``n_points`` strengths on [0, 1], the Taylor lines and the Lagrange band.

    Args:
        model, task, comps: as for every estimator (see :func:`hvp_utils.atp`).
        n_points: evenly spaced strengths ``t`` at which ``g(t) - g(0)`` is patched exactly.
        n_nodes: nodes of the second-order sweep that estimates ``max |g''|`` (``M2``), as in
            :func:`~hvp_utils.analysis.reliability.error_bounds` (same nodes, same estimate).
        tau: the score flag, as in :func:`~hvp_utils.analysis.reliability.reliability`.
        threshold: the circuit threshold the Lagrange interval is tested against: one number,
            or a mapping from component kind to its threshold (None: no threshold flag).
        direction: ``"denoising"`` (default) or ``"noising"``.
        chunk_size: replicates of the prompt batch per pass.
        context: a :class:`~hvp_utils.core.engine.PatchContext` shared with other estimators.

    Returns:
        :class:`PathCurves` (one order-0 sweep over all (component, t), one order-2 sweep at
        ``n_nodes`` nodes); ``summary.attrs["cost"]`` holds the cost.
    """
    run = EngineRun.start(
        model, task, comps, direction=direction, chunk_size=chunk_size, context=context
    )
    ts = np.linspace(0.0, 1.0, n_points).tolist()
    values = _path_values(run, comps, ts)
    pieces = path_derivatives_at(run, comps, nodes=path_nodes(n_nodes), order=2)
    summary = _summary(comps, pieces, tau, threshold)
    summary.insert(2, "AP", values[-1].numpy())
    rows = []
    for i, row in summary.iterrows():
        for k, t in enumerate(ts):
            taylor1 = row.AtP * t
            rows.append(
                {
                    "component": row.component,
                    "t": t,
                    "AP_t": float(values[k, i]),
                    "taylor1": taylor1,
                    "taylor2": taylor1 + row.g2 * t**2 / 2,
                    "band": row.M2 * t**2 / 2,
                }
            )
    summary.attrs["cost"] = run.meter.cost().as_row()
    return PathCurves(pd.DataFrame(rows), summary, tau, threshold)


def one_component(paths: PathCurves, name: str) -> PathCurves:
    """The rows of ``name`` in ``paths`` as a :class:`PathCurves` of its own."""
    if name not in set(paths.summary.component):
        raise KeyError(f"{name!r} is not in these path curves")
    return PathCurves(
        paths.curves[paths.curves.component == name].reset_index(drop=True),
        paths.summary[paths.summary.component == name].reset_index(drop=True),
        paths.tau,
        paths.threshold,
    )


class PathSource:
    """Patch paths on demand, for an explorer: ``source(perturbation, name)`` is
    :func:`path_curves` of that one component on that perturbation's task, computed the first
    time it is asked for (about half a second on the embedded model) and kept.

    The scale of a kind on a perturbation, :meth:`scale`, is its largest ``|AtP|`` over the
    given components (one gradient per perturbation, at construction): the circuit threshold
    is ``theta = share * scale``, as everywhere in the course.

    Args:
        model: the model.
        tasks: one task per perturbation name.
        comps: the components that can be explored.
        n_points, n_nodes, chunk_size, direction: as for :func:`path_curves`.
        precomputed: path curves already computed (per perturbation) with the same
            ``n_points`` and ``n_nodes``; their components are not computed again.
    """

    def __init__(
        self,
        model: Model,
        tasks: Mapping[str, PatchingTask],
        comps: list[Component],
        *,
        n_points: int = 11,
        n_nodes: int = 3,
        chunk_size: int | None = None,
        direction: Direction = "denoising",
        precomputed: Mapping[str, PathCurves] | None = None,
    ):
        from hvp_utils.estimators import atp

        if not comps:
            raise ValueError("PathSource needs at least one component to explore")
        if not tasks:
            raise ValueError("PathSource needs at least one task: {perturbation: task}")
        self.model, self.tasks = model, dict(tasks)
        self.components = {c.name: c for c in comps}
        self.options = dict(n_points=n_points, n_nodes=n_nodes, chunk_size=chunk_size)
        self.direction = direction
        self._first = {p: atp(model, task, comps, direction=direction) for p, task in tasks.items()}
        self._kept: dict[tuple[str, str], PathCurves] = {}
        for perturbation, paths in (precomputed or {}).items():
            for name in paths.summary.component:
                self._kept[(perturbation, name)] = one_component(paths, name)

    @property
    def perturbations(self) -> list[str]:
        return list(self.tasks)

    def kinds(self) -> list[str]:
        """The component kinds, in the order the components were given."""
        return list(dict.fromkeys(c.kind for c in self.components.values()))

    def names(self, kind: str) -> list[str]:
        """The components of ``kind``."""
        return [name for name, c in self.components.items() if c.kind == kind]

    def kind_of(self, name: str) -> str:
        return self.components[name].kind

    def scale(self, perturbation: str, kind: str) -> float:
        """``max |AtP|`` over the components of ``kind`` on ``perturbation``."""
        first = self._first[perturbation]
        values = [
            abs(float(v))
            for v, name in zip(first.values, first.names, strict=True)
            if self.components[name].kind == kind
        ]
        if not values:
            raise KeyError(f"no component of kind {kind!r}: one of {self.kinds()}")
        return max(values)

    def __call__(self, perturbation: str, name: str) -> PathCurves:
        if perturbation not in self.tasks:
            raise KeyError(f"unknown perturbation {perturbation!r}: one of {self.perturbations}")
        if name not in self.components:
            raise KeyError(f"unknown component {name!r}: pass it to PathSource(comps=...)")
        key = (perturbation, name)
        if key not in self._kept:
            self._kept[key] = path_curves(
                self.model,
                self.tasks[perturbation],
                [self.components[name]],
                direction=self.direction,
                **self.options,
            )
        return self._kept[key]
