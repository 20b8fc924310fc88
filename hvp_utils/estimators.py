"""Estimators of the patching effect, all with the signature ``(model, task, comps, ...)``
and the :class:`~hvp_utils.results.Attribution` result type.

Attribution patching (AtP) is the first-order Taylor estimate of the patch path at t = 0:

    AtP_c = g_c'(0) = < grad_{a_c} m(x_base), delta_c >

One forward and one backward pass on the base input give it for every component at once.
"""

from __future__ import annotations

from transformer_lens import HookedTransformer

from hvp_utils.components import Component, group_by_hook
from hvp_utils.engine import component_inner_products, hook_gradients, prepare
from hvp_utils.results import Attribution, CostMeter
from hvp_utils.tasks import PatchingTask


def atp(
    model: HookedTransformer,
    task: PatchingTask,
    comps: list[Component],
    direction: str = "denoising",
) -> Attribution:
    """Attribution patching: ``<grad_{a_c} m(x_base), delta_c>`` for every component."""
    meter = CostMeter()
    ctx = prepare(model, task, comps, direction, meter)
    grads, _ = hook_gradients(model, task, ctx, list(group_by_hook(comps)), meter)
    values = component_inner_products(comps, grads, ctx)[0]
    return Attribution.build(values.cpu(), comps, "AtP", meter)
