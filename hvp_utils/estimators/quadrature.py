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

import torch

from hvp_utils.core.components import Component, group_by_hook
from hvp_utils.core.engine import (
    PatchContext,
    component_inner_products,
    context_for,
    hook_gradients,
    path_derivatives_at,
    union_masks,
)
from hvp_utils.core.results import Attribution, CostMeter
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import (
    IG_MODES,
    IG_RULES,
    MULTISTEP_RULES,
    Direction,
    IGMode,
    IGRule,
    Model,
    MultistepRule,
    check_choice,
)
from hvp_utils.estimators.registry import describe

#: Error order in h = 1/K of each rule (derived in the module docstring, checked in tests).
ERROR_ORDER = {"taylor": 2, "trapezoid": 4, "radau": 4, "midpoint": 2, "gauss": 4}
RADAU_NODE, RADAU_WEIGHTS = 0.75, (11 / 27, 16 / 27, 1 / 18)  # g'(a), g'(a + 3h/4), h g''(a)


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

    With ``h = 1/K`` and ``t_k = k h`` (derivations in the module docstring):

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
    meter = CostMeter()
    ctx = context_for(model, task, comps, direction, meter, context)
    h = 1.0 / steps
    left = [k * h for k in range(steps)]
    if rule == "taylor":
        pieces = path_derivatives_at(model, task, comps, left, 2, ctx, meter, chunk_size)
        values = sum(h * p.d1 + h**2 / 2 * p.d2 for p in pieces)
    elif rule == "radau":
        w_left, w_node, w_curve = RADAU_WEIGHTS
        starts = path_derivatives_at(model, task, comps, left, 2, ctx, meter, chunk_size)
        nodes = [t + RADAU_NODE * h for t in left]
        inner = path_derivatives_at(model, task, comps, nodes, 1, ctx, meter, chunk_size)
        values = sum(
            h * (w_left * a.d1 + w_node * b.d1) + h**2 * w_curve * a.d2
            for a, b in zip(starts, inner, strict=True)
        )
    else:
        ends = path_derivatives_at(model, task, comps, [0.0, 1.0], 2, ctx, meter, chunk_size)
        interior = [k * h for k in range(1, steps)]
        inner = path_derivatives_at(model, task, comps, interior, 1, ctx, meter, chunk_size)
        trapezoid = h * ((ends[0].d1 + ends[1].d1) / 2 + sum((p.d1 for p in inner), 0.0))
        values = trapezoid - h**2 / 12 * (ends[1].d2 - ends[0].d2)
    spec = describe("multistep", steps=steps, rule=rule, direction=direction)
    return Attribution.build(values, comps, spec, meter)


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
    meter = CostMeter()
    ctx = context_for(model, task, comps, direction, meter, context)
    nodes, weights = ig_nodes(steps, rule)
    spec = describe("ig", steps=steps, rule=rule, mode=mode, direction=direction)
    if mode == "per_component":
        pieces = path_derivatives_at(model, task, comps, nodes, 1, ctx, meter, chunk_size)
        values = sum(w * p.d1 for w, p in zip(weights, pieces, strict=True))
    else:
        values = _joint_ig(model, task, comps, ctx, nodes, weights, meter, chunk_size)
    return Attribution.build(values, comps, spec, meter)


def _joint_ig(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    ctx: PatchContext,
    nodes: list[float],
    weights: list[float],
    meter: CostMeter,
    chunk_size: int | None,
) -> torch.Tensor:
    """``sum_j w_j <grad_{a_h} m(a_h^b + t_j * union_mask_h * delta_h), delta_c>`` per
    component; the nodes of one hook are the replicates of one :func:`hook_gradients` call."""
    values = torch.zeros(len(comps), dtype=torch.float64)
    ts = torch.tensor(nodes, dtype=torch.float64)
    w = torch.tensor(weights, dtype=torch.float64)
    for hook, members in group_by_hook(comps).items():
        hook_comps = [comps[i] for i in members]
        delta = ctx.deltas[hook]
        step = union_masks(hook_comps, ctx)[hook] * delta  # [batch, ...]
        scale = ts.to(delta.dtype).to(delta.device).view(-1, *[1] * delta.dim())
        offsets = {hook: scale * step.unsqueeze(0)}  # [nodes, batch, ...]
        grads, _ = hook_gradients(
            model, task, ctx, [hook], meter, len(nodes), offsets=offsets, chunk_size=chunk_size
        )
        per_node = component_inner_products(hook_comps, grads, ctx).cpu()  # [nodes, n_hook]
        values[members] = (w[:, None] * per_node).sum(0)
    return values


def ig_nodes(steps: int, rule: IGRule) -> tuple[list[float], list[float]]:
    """Quadrature nodes and weights of Integrated Gradients on [0, 1].

    Args:
        steps: the number of steps ``K`` (``h = 1/K``).
        rule: ``"midpoint"`` or ``"gauss"``.

    Returns:
        ``(nodes, weights)``: midpoint ``t_k = (k + 1/2) h`` with weights ``h``; Gauss
        ``t = (k + 1/2 -+ 1/(2 sqrt 3)) h`` with weights ``h/2`` (two nodes per step).
    """
    check_choice(rule, IG_RULES, "rule")
    h = 1.0 / steps
    if rule == "midpoint":
        return [(k + 0.5) * h for k in range(steps)], [h] * steps
    offset = 0.5 / 3**0.5
    nodes = [(k + 0.5 + sign * offset) * h for k in range(steps) for sign in (-1, 1)]
    return nodes, [h / 2] * (2 * steps)
