"""Multi-step estimators: quadrature of ``Delta_c = int_0^1 g_c'(t) dt`` along the patch path.

With ``K`` steps of width ``h = 1/K`` and nodes ``t_k = k h``:

- ``rule="taylor"`` (left-endpoint Taylor: the multi-step HVP):
  ``sum_{k<K} [h g'(t_k) + h^2/2 g''(t_k)]``. Each step is exact up to its cubic term,
  ``g'''(xi) h^3 / 6``; summed over ``K`` steps the error is
  ``h^2/6 (g''(1) - g''(0)) + O(h^3)``: **order 2**.
- ``rule="trapezoid"`` (trapezoid with end-point derivative correction, Euler-Maclaurin):
  ``h [g'(0)/2 + g'(t_1) + ... + g'(t_{K-1}) + g'(1)/2] - h^2/12 (g''(1) - g''(0))``.
  Per step ``h/2 (f(a) + f(b)) - h^2/12 (f'(b) - f'(a))`` integrates a cubic ``f = g'``
  exactly (two-point Hermite rule); the interior ``g''`` terms telescope, so only the two
  end points need a Hessian-vector product. Error ``-h^4/720 (g^(5)(1) - g^(5)(0))``:
  **order 4**, exact for paths ``g`` of degree up to 4.
  It evaluates the path at t = 1, so it holds the exact ``g(1) - g(0)`` as a by-product:
  per component it can never be cheaper than activation patching.
- ``rule="radau"`` (Hermite-Radau, derived here): on each step ``[a, a + h]``
  ``h [11/27 g'(a) + 16/27 g'(a + 3h/4)] + h^2/18 g''(a)``. The four weights and the node
  3/4 solve the moment equations for ``1, t, t^2, t^3``, so each step is exact for a cubic
  ``g'``: **order 4**, never touching t = 1. At K = 1 it is the HVP correction's
  ``g'(0), g''(0)`` plus one gradient at t = 3/4.
- Integrated Gradients, midpoint rule: ``h sum_k g'(t_k + h/2)``, error
  ``h^2/24 (g''(1) - g''(0))``: **order 2**, with a constant four times smaller than the
  Taylor rule's and no Hessian-vector products. Gauss-Legendre nodes
  ``t_k + h (1/2 -+ 1/(2 sqrt 3))`` with weights ``h/2``: **order 4**, still gradients only.

Per-component rules replicate the batch once per (component, node): their cost grows with
the number of components. ``integrated_gradients(..., mode="joint")`` instead interpolates all
components of one hook point together (as EAP-IG and sparse feature circuits do): ``K``
passes per hook whatever the number of components, at the price of the interactions
between components of the same hook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hvp_utils.core.components import Component, group_by_hook
from hvp_utils.core.engine import (
    EngineRun,
    PatchContext,
    component_inner_products,
    hook_gradients,
    path_derivatives_at,
    union_masks,
)
from hvp_utils.core.results import DIRECTION_SUFFIX, Attribution, Estimator, declare
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import (
    IG_MODES,
    IG_RULES,
    MULTISTEP_RULES,
    Direction,
    Family,
    IGMode,
    IGRule,
    Model,
    MultistepRule,
    check_choice,
)


@dataclass(frozen=True)
class QuadratureRule:
    """One step ``[a, a + h]`` of a rule for ``int f`` with ``f = g'``:

        int_a^{a+h} f ~ h sum_j w_j f(a + x_j h) + h^2 sum_j v_j f'(a + x_j h),

    ``nodes`` = ``x_j`` (fractions of the step), ``first_weights`` = ``w_j``,
    ``second_weights`` = ``v_j`` (the ``g''`` terms), ``error_order`` = ``p`` with the error
    of the K-step rule ``O(h^p)`` (derived in the module docstring, checked in tests).
    """

    nodes: tuple[float, ...]
    first_weights: tuple[float, ...]
    second_weights: tuple[float, ...]
    error_order: int


_GAUSS_OFFSET = 0.5 / 3**0.5
#: Every quadrature rule of the package: multi-step HVP (``taylor``, ``trapezoid``,
#: ``radau``) and Integrated Gradients (``midpoint``, ``gauss``; no ``g''`` terms).
RULES: dict[str, QuadratureRule] = {
    "taylor": QuadratureRule((0.0,), (1.0,), (0.5,), 2),
    "trapezoid": QuadratureRule((0.0, 1.0), (0.5, 0.5), (1 / 12, -1 / 12), 4),
    "radau": QuadratureRule((0.0, 0.75), (11 / 27, 16 / 27), (1 / 18, 0.0), 4),
    "midpoint": QuadratureRule((0.5,), (1.0,), (0.0,), 2),
    "gauss": QuadratureRule((0.5 - _GAUSS_OFFSET, 0.5 + _GAUSS_OFFSET), (0.5, 0.5), (0.0, 0.0), 4),
}
#: The label of each Integrated Gradients variant (the step count ``K`` is added).
IG_LABELS = {
    ("per_component", "midpoint"): "IG",
    ("per_component", "gauss"): "IG gauss",
    ("joint", "midpoint"): "IG joint",
    ("joint", "gauss"): "IG joint gauss",
}
IG_FAMILIES = {"per_component": Family.IG, "joint": Family.IG_JOINT}


def composite_rule(rule: str, steps: int) -> list[tuple[float, float, float]]:
    """The K-step rule on [0, 1]: ``(t, a, b)`` per node, ``int_0^1 f ~ sum a f(t) + b f'(t)``.

    Nodes shared by neighbouring steps are merged (their weights added: the trapezoid's
    interior ``g''`` terms cancel), in order of ``t``.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1 (got {steps})")
    check_choice(rule, tuple(RULES), "quadrature rule")
    r, h = RULES[rule], 1.0 / steps
    merged: dict[float, list[float]] = {}
    for k in range(steps):
        for x, w, v in zip(r.nodes, r.first_weights, r.second_weights, strict=True):
            weights = merged.setdefault((k + x) * h, [0.0, 0.0])
            weights[0] += h * w
            weights[1] += h * h * v
    return sorted((t, a, b) for t, (a, b) in merged.items())


def apply_rule(
    rule: str, *, steps: int, first: Callable[[float], float], second: Callable | None = None
) -> float:
    """``sum a f(t) + b f'(t)`` of :func:`composite_rule` for a scalar function: ``first(t)``
    is ``f = g'``, ``second(t)`` its derivative ``g''`` (needed only by rules with ``g''``
    terms), so the result estimates ``int_0^1 first``."""
    total = 0.0
    for t, a, b in composite_rule(rule, steps):
        total += a * first(t) + (b * second(t) if b else 0.0)
    return total


def ig_nodes(steps: int, *, rule: IGRule) -> tuple[list[float], list[float]]:
    """Nodes and weights of Integrated Gradients on [0, 1] (:func:`composite_rule`): midpoint
    ``t_k = (k + 1/2) h`` with weights ``h``; Gauss ``(k + 1/2 -+ 1/(2 sqrt 3)) h`` with
    weights ``h/2`` (two nodes per step)."""
    check_choice(rule, IG_RULES, "rule")
    nodes = composite_rule(rule, steps)
    return [t for t, _, _ in nodes], [a for _, a, _ in nodes]


def _rule_values(run: EngineRun, comps: list[Component], rule: str, steps: int) -> torch.Tensor:
    """``sum a g_c'(t) + b g_c''(t)`` over the nodes of :func:`composite_rule` for every
    component: one order-2 sweep over the nodes with a ``g''`` term, one order-1 sweep over
    the rest."""
    nodes = composite_rule(rule, steps)
    curved = [(t, a, b) for t, a, b in nodes if b]
    flat = [(t, a, b) for t, a, b in nodes if not b]
    values = 0.0
    for group, order in ((curved, 2), (flat, 1)):
        ts = [t for t, _, _ in group]
        pieces = path_derivatives_at(run, comps, nodes=ts, order=order)
        for (_, a, b), p in zip(group, pieces, strict=True):
            values = values + (a * p.d1 + b * p.d2 if b else a * p.d1)
    return values


def multistep_hvp(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    steps: int = 2,
    rule: MultistepRule = "trapezoid",
    direction: Direction = "denoising",
    chunk_size: int | None = None,
    context: PatchContext | None = None,
) -> Attribution:
    """K-step quadrature of ``Delta_c = int_0^1 g_c'(t) dt`` using ``g'`` and ``g''``.

    With ``h = 1/K`` and ``t_k = k h`` (derivations in the module docstring; the rules are
    the rows of :data:`RULES`):

    - ``taylor``: ``sum_{k<K} [h g'(t_k) + h^2/2 g''(t_k)]`` (order 2);
    - ``trapezoid``: ``h [g'(0)/2 + sum_{0<k<K} g'(t_k) + g'(1)/2] - h^2/12 (g''(1) - g''(0))``
      (order 4, evaluates t = 1);
    - ``radau``: ``sum_{k<K} h [11/27 g'(t_k) + 16/27 g'(t_k + 3h/4)] + h^2/18 g''(t_k)``
      (order 4, never touches t = 1).

    Args:
        model, task, comps: as for every estimator (see :func:`hvp_utils.atp`).
        steps: the number of steps ``K`` (step width ``h = 1/K``).
        rule: ``"taylor"``, ``"trapezoid"`` or ``"radau"``.
        direction: ``"denoising"`` (default) or ``"noising"``.
        chunk_size: replicates of the prompt batch per pass; the values do not depend on it.
        context: a :class:`~hvp_utils.core.engine.PatchContext` shared with other estimators.

    Returns:
        :class:`Attribution` with the quadrature estimate of ``g_c(1) - g_c(0)``.
    """
    check_choice(rule, MULTISTEP_RULES, "rule")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    run = EngineRun.start(
        model, task, comps, direction=direction, chunk_size=chunk_size, context=context
    )
    values = _rule_values(run, comps, rule, steps)
    record = multistep_estimator(steps=steps, rule=rule, direction=direction)
    return Attribution.build(values, comps, record, run.meter)


def multistep_estimator(
    *,
    steps: int = 2,
    rule: MultistepRule = "trapezoid",
    direction: Direction = "denoising",
    chunk_size: int | None = None,
) -> Estimator:
    """The record of :func:`multistep_hvp` with these options (label ``multistep <rule> K=<K>``)."""
    label = f"multistep {rule} K={steps}" + DIRECTION_SUFFIX[direction]
    options = {"steps": steps, "rule": rule, "direction": direction, "chunk_size": chunk_size}
    return declare("multistep", multistep_hvp, label, Family.MULTISTEP, **options)


def integrated_gradients(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    steps: int = 2,
    rule: IGRule = "midpoint",
    mode: IGMode = "per_component",
    direction: Direction = "denoising",
    chunk_size: int | None = None,
    context: PatchContext | None = None,
) -> Attribution:
    """Integrated Gradients: ``IG_c = sum_j w_j g_c'(t_j)`` on the nodes of :func:`ig_nodes`.

    ``mode="per_component"``: ``g_c`` is the component's own patch path (one replicate per
    component and node). ``mode="joint"``: every component of a hook point moves together,
    ``a_h(t) = a_h^b + t * sum_{c on h} delta_c`` (entries covered by several components
    move once), and ``IG_c = sum_j w_j <grad_{a_h} m(a_h(t_j)), delta_c>``: one replicate per
    node and hook, whatever the number of components, at the price of the interactions
    between components of the same hook.

    Args:
        model, task, comps: as for every estimator (see :func:`hvp_utils.atp`).
        steps: the number of steps ``K``.
        rule: ``"midpoint"`` (``h sum_k g'(t_k + h/2)``, order 2) or ``"gauss"`` (two-point
            Gauss-Legendre per step, order 4).
        mode: ``"per_component"`` or ``"joint"``.
        direction: ``"denoising"`` (default) or ``"noising"``.
        chunk_size: replicates of the prompt batch per pass; the values do not depend on it.
        context: a :class:`~hvp_utils.core.engine.PatchContext` shared with other estimators.

    Returns:
        :class:`Attribution` with the IG estimate of ``g_c(1) - g_c(0)``.
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    check_choice(rule, IG_RULES, "rule")
    check_choice(mode, IG_MODES, "mode")
    run = EngineRun.start(
        model, task, comps, direction=direction, chunk_size=chunk_size, context=context
    )
    if mode == "per_component":
        values = _rule_values(run, comps, rule, steps)
    else:
        nodes, weights = ig_nodes(steps, rule=rule)
        values = _joint_ig(run, comps, nodes, weights)
    record = ig_estimator(steps=steps, rule=rule, mode=mode, direction=direction)
    return Attribution.build(values, comps, record, run.meter)


def ig_estimator(
    *,
    steps: int = 2,
    rule: IGRule = "midpoint",
    mode: IGMode = "per_component",
    direction: Direction = "denoising",
    chunk_size: int | None = None,
) -> Estimator:
    """The record of :func:`integrated_gradients` with these options (:data:`IG_LABELS`)."""
    label = f"{IG_LABELS[mode, rule]} K={steps}" + DIRECTION_SUFFIX[direction]
    options = {"steps": steps, "rule": rule, "mode": mode, "direction": direction}
    return declare(
        "ig", integrated_gradients, label, IG_FAMILIES[mode], **options, chunk_size=chunk_size
    )


def _joint_ig(
    run: EngineRun, comps: list[Component], nodes: list[float], weights: list[float]
) -> torch.Tensor:
    """``sum_j w_j <grad_{a_h} m(a_h^b + t_j * union_mask_h * delta_h), delta_c>`` per
    component; the nodes of one hook are the replicates of one :func:`hook_gradients` call."""
    ctx = run.context
    values = torch.zeros(len(comps), dtype=torch.float64)
    ts = torch.tensor(nodes, dtype=torch.float64)
    w = torch.tensor(weights, dtype=torch.float64)
    for hook, members in group_by_hook(comps).items():
        hook_comps = [comps[i] for i in members]
        delta = ctx.deltas[hook]
        step = union_masks(hook_comps, ctx)[hook] * delta  # [batch, ...]
        scale = ts.to(delta.dtype).to(delta.device).view(-1, *[1] * delta.dim())
        offsets = {hook: scale * step.unsqueeze(0)}  # [nodes, batch, ...]
        grads, _ = hook_gradients(run, [hook], replicates=len(nodes), offsets=offsets)
        per_node = component_inner_products(hook_comps, grads, ctx).cpu()  # [nodes, n_hook]
        values[members] = (w[:, None] * per_node).sum(0)
    return values
