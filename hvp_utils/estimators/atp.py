"""Attribution patching (AtP): the first-order Taylor estimate of every patch path at t = 0.

    AtP_c = g_c'(0) = < grad_{a_c} m(x_base), delta_c >

One forward and one backward pass on the base input give it for every component at once
(plus the two forward passes that cache the clean and corrupted activations).
"""

from __future__ import annotations

from hvp_utils.core.components import Component, group_by_hook
from hvp_utils.core.engine import (
    EngineRun,
    PatchContext,
    component_inner_products,
    hook_gradients,
)
from hvp_utils.core.results import DIRECTION_SUFFIX, Attribution, Estimator, declare
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Direction, Family, Model


def atp(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    direction: Direction = "denoising",
    chunk_size: int | None = None,
    context: PatchContext | None = None,
) -> Attribution:
    """Attribution patching: ``AtP_c = g_c'(0) = <grad_{a_c} m(x_base), delta_c>``.

    Args:
        model: the model (weights frozen).
        task: clean and corrupted prompts and the metric ``m``.
        comps: the components to attribute (see :func:`hvp_utils.components`).
        direction: ``"denoising"`` (clean into corrupted, default) or ``"noising"``.
        chunk_size: replicates per pass, as for every estimator; AtP runs one replicate (the
            base input), so it changes nothing.
        context: a :class:`~hvp_utils.core.engine.PatchContext` shared with other estimators.

    Returns:
        :class:`Attribution` with ``values[i] = g_i'(0)``; cost 3 forwards (the clean and
        corrupted caching runs, the corrupted forward that is differentiated) and 1 backward;
        with a shared context the caching runs are paid by the context: 1 forward, 1 backward.
    """
    run = EngineRun.start(
        model, task, comps, direction=direction, chunk_size=chunk_size, context=context
    )
    grads, _ = hook_gradients(run, list(group_by_hook(comps)))
    values = component_inner_products(comps, grads, run.context)[0]
    record = atp_estimator(direction=direction)
    return Attribution.build(values.cpu(), comps, record, run.meter)


def atp_estimator(
    *, direction: Direction = "denoising", chunk_size: int | None = None
) -> Estimator:
    """The record of :func:`atp` with these options (label ``AtP``)."""
    label = "AtP" + DIRECTION_SUFFIX[direction]
    return declare("atp", atp, label, Family.ATP, direction=direction, chunk_size=chunk_size)
