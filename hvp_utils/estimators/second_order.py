"""The Hessian-vector-product (HVP) correction to attribution patching.

Second-order Taylor expansion of the patch path at t = 0:

    Delta_c ~ g_c'(0) + g_c''(0) / 2,    g_c''(0) = < delta_c, H_cc delta_c >,

with ``H_cc`` the Hessian of the metric in the activation of ``c``. ``H_cc delta_c`` is one
Hessian-vector product (Pearlmutter's trick: differentiate ``<grad m, delta_c>`` once more),
so the correction costs one extra backward pass per *direction*. Three ways to spend it:

- ``mode="diag"``: one direction per component, exact ``g_c''(0)``. Directions share passes
  by replicating the prompt batch (see :mod:`hvp_utils.core.engine`); cost grows with the number
  of components, like activation patching.
- ``mode="joint"``: one direction for the whole set, ``v = sum_c delta_c``, and
  ``correction_c = <delta_c, (H v)_c> / 2``. One extra backward pass in all, but
  ``<delta_c, (H v)_c> = g_c''(0) + sum_{j != c} <delta_c, H_cj delta_j>``: the cross terms
  are interactions with components that activation patching keeps corrupted.
- ``mode="hutchinson"``: ``S`` random-sign directions ``v_s = sum_c sigma_sc delta_c`` and
  ``(1/S) sum_s sigma_sc <delta_c, (H v_s)_c>``, whose expectation is ``g_c''(0)``: the cross
  terms cancel on average, at ``S`` extra backward passes whatever the number of components.
"""

from __future__ import annotations

import torch

from hvp_utils.core.components import Component, group_by_hook
from hvp_utils.core.engine import (
    EngineRun,
    PatchContext,
    component_inner_products,
    hook_gradients,
    path_derivatives,
    stacked_masks,
)
from hvp_utils.core.results import (
    DIRECTION_SUFFIX,
    Estimator,
    SecondOrderAttribution,
    declare,
)
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import HVP_MODES, Direction, Family, HVPMode, Model, check_choice

#: The label of each mode (Hutchinson's adds its probe count ``S``).
LABELS = {"diag": "HVP diag", "joint": "HVP joint", "hutchinson": "HVP hutchinson"}


def hvp_correction(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    mode: HVPMode = "diag",
    n_probes: int = 16,
    seed: int = 0,
    direction: Direction = "denoising",
    chunk_size: int | None = None,
    context: PatchContext | None = None,
) -> SecondOrderAttribution:
    """AtP plus half the second derivative of each patch path: ``g_c'(0) + g_c''(0) / 2``.

    The second derivative is ``<delta_c, H_cc delta_c>`` (``mode="diag"``, exact), or
    ``<delta_c, (H v)_c>`` with ``v = sum_j delta_j`` (``"joint"``, cross terms included), or
    ``(1/S) sum_s sigma_sc <delta_c, (H v_s)_c>`` with ``v_s = sum_j sigma_sj delta_j`` and
    random signs ``sigma`` (``"hutchinson"``, cross terms cancel in expectation).

    Args:
        model, task, comps: as for every estimator (see :func:`hvp_utils.atp`).
        mode: ``"diag"`` (one HVP direction per component), ``"joint"`` (one direction for
            the whole set) or ``"hutchinson"`` (``n_probes`` random-sign directions).
        n_probes: Hutchinson probes ``S`` (``mode="hutchinson"`` only).
        seed: seed of the Hutchinson signs.
        direction: ``"denoising"`` (default) or ``"noising"``.
        chunk_size: replicates of the prompt batch per pass (components for ``diag``, probes
            for ``hutchinson``); the values do not depend on it.
        context: a :class:`~hvp_utils.core.engine.PatchContext` shared with other estimators.

    Returns:
        :class:`SecondOrderAttribution` with ``values = first + second / 2``, ``first``
        (``g_c'(0)``, i.e. AtP) and ``second`` (the estimate of ``g_c''(0)`` used).
    """
    check_choice(mode, HVP_MODES, "mode")
    if mode == "hutchinson" and n_probes < 1:
        raise ValueError(f"hutchinson needs n_probes >= 1 (got {n_probes})")
    run = EngineRun.start(
        model, task, comps, direction=direction, chunk_size=chunk_size, context=context
    )
    if mode == "diag":
        path = path_derivatives(run, comps, t=0.0, order=2)
        first, second = path.d1, path.d2
    else:
        signs = _direction_signs(len(comps), mode, n_probes, seed)
        first, second = _shared_direction_hvp(run, comps, signs)
    record = hvp_estimator(mode=mode, n_probes=n_probes, seed=seed, direction=direction)
    return SecondOrderAttribution.build(
        first + second / 2, comps, record, run.meter, first=first, second=second
    )


def hvp_estimator(
    *,
    mode: HVPMode = "diag",
    n_probes: int = 16,
    seed: int = 0,
    direction: Direction = "denoising",
    chunk_size: int | None = None,
) -> Estimator:
    """The record of :func:`hvp_correction` with these options (:data:`LABELS`; the probe
    count and seed count only for ``mode="hutchinson"``, in the label and the key)."""
    sampled = mode == "hutchinson"
    label = LABELS[mode] + (f" S={n_probes}" if sampled else "") + DIRECTION_SUFFIX[direction]
    probes = {"n_probes": n_probes, "seed": seed} if sampled else {}
    options = {"mode": mode, "direction": direction, "chunk_size": chunk_size, **probes}
    return declare("hvp", hvp_correction, label, Family.HVP, **options)


def _direction_signs(n: int, mode: HVPMode, n_probes: int, seed: int) -> torch.Tensor:
    """``[S, n]`` signs: one row of ones for ``joint``; ``n_probes`` rows of seeded
    Rademacher signs for ``hutchinson``."""
    if mode == "joint":
        return torch.ones(1, n, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n_probes, n), generator=generator).double() * 2 - 1


def _signed_directions(
    comps: list[Component], ctx: PatchContext, signs: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``v_s = sum_c sigma_sc delta_c`` at each hook, shaped ``[S, batch, ...]``."""
    directions = {}
    for hook, members in group_by_hook(comps).items():
        delta = ctx.deltas[hook]
        stacked = stacked_masks(comps, members, delta)  # [n_hook, 1, ...]
        hook_signs = signs[:, members].to(delta.dtype).to(delta.device)
        signed_mask = torch.einsum("sn,n...->s...", hook_signs, stacked)  # [S, 1, ...]
        directions[hook] = signed_mask * delta.unsqueeze(0)
    return directions


def _shared_direction_hvp(
    run: EngineRun, comps: list[Component], signs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """AtP and ``mean_s sigma_sc <delta_c, (H v_s)_c>`` with ``v_s = sum_c sigma_sc delta_c``.

    The directions are the replicates of one :func:`hook_gradients` call (forward, backward,
    double backward), chunked like every replicated pass.
    """
    ctx = run.context
    directions = _signed_directions(comps, ctx, signs)
    grads, hvps = hook_gradients(
        run, list(directions), replicates=signs.shape[0], directions=directions
    )
    first = component_inner_products(comps, grads, ctx)[0]  # every replicate: the base run
    curvature = component_inner_products(comps, hvps, ctx)  # [S, n]
    second = (signs.to(curvature.device) * curvature).mean(0)
    return first.cpu(), second.cpu()
