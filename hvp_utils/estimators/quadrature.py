"""Multi-step estimators: quadrature of ``Delta_c = int_0^1 g_c'(t) dt`` along the patch path.

With ``K`` steps of width ``h = 1/K`` and nodes ``t_k = k h``:

- ``rule="taylor"`` (left-endpoint Taylor, the multi-step HVP of DESIGN.md):
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
from transformer_lens import HookedTransformer

from hvp_utils.core.components import Component, group_by_hook
from hvp_utils.core.engine import (
    component_inner_products,
    hook_gradients,
    PatchContext,
    context_for,
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
    MultistepRule,
    check_choice,
)
from hvp_utils.estimators.registry import describe

#: Error order in h = 1/K of each rule (derived in the module docstring, checked in tests).
ERROR_ORDER = {"taylor": 2, "trapezoid": 4, "radau": 4, "midpoint": 2, "gauss": 4}
RADAU_NODE, RADAU_WEIGHTS = 0.75, (11 / 27, 16 / 27, 1 / 18)  # g'(a), g'(a + 3h/4), h g''(a)


def multistep_hvp(
    model: HookedTransformer,
    task: PatchingTask,
    comps: list[Component],
    *,
    steps: int = 2,
    rule: MultistepRule = "trapezoid",
    direction: Direction = "denoising",
    chunk_size: int | None = None,
    context: PatchContext | None = None,
) -> Attribution:
    """K-step quadrature of ``int_0^1 g_c'`` using ``g'`` and ``g''`` (see module docstring).

    Args:
        model, task, comps: as for every estimator (see :func:`hvp_utils.atp`).
        steps: the number of steps ``K`` (step width ``h = 1/K``).
        rule: ``"taylor"`` (order 2), ``"trapezoid"`` (order 4, evaluates t = 1) or
            ``"radau"`` (order 4, never touches t = 1).
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
    model: HookedTransformer,
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
    """Integrated Gradients, ``sum_nodes w g_c'(t)``: midpoint rule ``h sum_k g_c'(t_k + h/2)``
    or two-point Gauss-Legendre per step (``rule="gauss"``).

    ``mode="joint"``: every component of a hook point moves together along
    ``a_h(t) = a_h^b + t * sum_{c on h} delta_c`` and ``IG_c = h sum_k <grad_{a_h} m, delta_c>``
    at the midpoints; ``K`` replicated passes per hook.
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    check_choice(rule, IG_RULES, "rule")
    check_choice(mode, IG_MODES, "mode")
    meter = CostMeter()
    ctx = context_for(model, task, comps, direction, meter, context)
    nodes, weights = ig_nodes(steps, rule)
    label = describe("ig", steps=steps, rule=rule, mode=mode, direction=direction)
    if mode == "per_component":
        pieces = path_derivatives_at(model, task, comps, nodes, 1, ctx, meter, chunk_size)
        values = sum(w * p.d1 for w, p in zip(weights, pieces, strict=True))
        return Attribution.build(values, comps, label, meter)
    values = torch.zeros(len(comps), dtype=torch.float64)
    ts = torch.tensor(nodes, dtype=torch.float64)
    w = torch.tensor(weights, dtype=torch.float64)
    for hook, members in group_by_hook(comps).items():
        delta = ctx.deltas[hook]
        step = union_masks([comps[i] for i in members], ctx)[hook] * delta  # [B, ...]
        scale = ts.to(delta.dtype).view(-1, *[1] * delta.dim())
        offsets = {hook: scale * step.unsqueeze(0)}  # [K, B, ...]
        grads, _ = hook_gradients(model, task, ctx, [hook], meter, len(nodes), offsets=offsets)
        members_comps = [comps[i] for i in members]
        per_node = component_inner_products(members_comps, grads, ctx)  # [nodes, n_hook]
        values[members] = (w[:, None] * per_node.cpu()).sum(0)
    return Attribution.build(values, comps, label, meter)


def ig_nodes(steps: int, rule: IGRule) -> tuple[list[float], list[float]]:
    """Quadrature nodes and weights on [0, 1] for K steps of the midpoint or Gauss rule."""
    h = 1.0 / steps
    if rule == "midpoint":
        return [(k + 0.5) * h for k in range(steps)], [h] * steps
    offset = 0.5 / 3**0.5
    nodes = [(k + 0.5 + sign * offset) * h for k in range(steps) for sign in (-1, 1)]
    return nodes, [h / 2] * (2 * steps)
