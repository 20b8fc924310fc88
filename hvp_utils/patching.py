"""Activation patching (AP), the ground truth every estimator is measured against.

    Delta_c = g_c(1) - g_c(0) = m(x_base with a_c <- a_c^source) - m(x_base)

Denoising (default) patches the clean activation into the corrupted run. N components cost
N forward passes over the prompt batch, run as a few replicated (batched) forward passes.
"""

from __future__ import annotations

from transformer_lens import HookedTransformer

from hvp_utils.components import Component
from hvp_utils.engine import path_derivatives, prepare
from hvp_utils.results import Attribution, CostMeter
from hvp_utils.tasks import PatchingTask


def activation_patching(
    model: HookedTransformer,
    task: PatchingTask,
    comps: list[Component],
    direction: str = "denoising",
    chunk_size: int | None = None,
) -> Attribution:
    """Exact patching effect ``g_c(1) - g_c(0)`` of every component.

    ``chunk_size`` is the number of patched copies of the batch in one forward pass.
    """
    meter = CostMeter()
    ctx = prepare(model, task, comps, direction, meter)
    path = path_derivatives(model, task, comps, 1.0, 0, ctx, meter, chunk_size)
    return Attribution.build(path.g - ctx.base_metric, comps, "AP", meter)
