"""Activation patching (AP), the ground truth every estimator is measured against.

    Delta_c = g_c(1) - g_c(0) = m(x_base with a_c <- a_c^source) - m(x_base)

Denoising (default) patches the clean activation into the corrupted run. N components cost
N forward passes over the prompt batch, run as a few replicated (batched) forward passes.
"""

from __future__ import annotations

from functools import partial

import torch

from hvp_utils.core.components import Component, group_by_hook
from hvp_utils.core.engine import EngineRun, PatchContext, path_derivatives, stacked_masks
from hvp_utils.core.readout import run_with_answer_logits
from hvp_utils.core.results import DIRECTION_SUFFIX, Attribution, Estimator, declare
from hvp_utils.core.tasks import PatchingTask, metric_per_prompt
from hvp_utils.core.types import Direction, Family, Model


def activation_patching(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    direction: Direction = "denoising",
    chunk_size: int | None = None,
    context: PatchContext | None = None,
) -> Attribution:
    """Exact patching effect ``Delta_c = g_c(1) - g_c(0)`` of every component.

    Args:
        model, task, comps: as for every estimator (see :func:`hvp_utils.atp`).
        direction: ``"denoising"`` (clean into corrupted, default) or ``"noising"``.
        chunk_size: patched copies of the prompt batch per forward pass (default: as many as
            fit a fixed token budget); the values do not depend on it.
        context: a :class:`~hvp_utils.core.engine.PatchContext` shared with other estimators.

    Returns:
        :class:`Attribution` with ``values[i] = m(x_base with a_i <- a_i^source) - m(x_base)``;
        cost ``2 + n`` forwards (``n`` with a shared context).
    """
    run = EngineRun.start(
        model, task, comps, direction=direction, chunk_size=chunk_size, context=context
    )
    path = path_derivatives(run, comps, t=1.0, order=0)
    record = ap_estimator(direction=direction)
    return Attribution.build(path.g - run.context.base_metric, comps, record, run.meter)


def ap_estimator(*, direction: Direction = "denoising", chunk_size: int | None = None) -> Estimator:
    """The record of :func:`activation_patching` with these options (label ``AP``)."""
    label = "AP" + DIRECTION_SUFFIX[direction]
    return declare(
        "ap", activation_patching, label, Family.AP, direction=direction, chunk_size=chunk_size
    )


@torch.no_grad()
def joint_patching(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    direction: Direction = "denoising",
) -> float:
    """Exact effect of patching every component of ``comps`` at once:

        Delta_S = m(x_base with a_c <- a_c^source for every c in S) - m(x_base)

    The separate effects of :func:`activation_patching` need not add up to it: components on
    one path carry the same signal, so their sum can exceed the joint effect (or fall short of
    it). Costs one caching pass over the source prompts and two forward passes.

    Args:
        model, task, comps: as for every estimator; the components may sit on several hooks.
        direction: ``"denoising"`` (clean into corrupted, default) or ``"noising"``.
    """
    if not comps:
        raise ValueError("joint_patching needs at least one component")
    base, source = (task.corrupted_tokens, task.clean_tokens)
    if direction == "noising":
        base, source = source, base
    hooks = group_by_hook(comps)
    _, cache = model.run_with_cache(source, names_filter=lambda name: name in hooks)
    masks = {h: stacked_masks(comps, members, cache[h]).amax(0) for h, members in hooks.items()}

    def patch(act, hook, name):  # name bound per hook: a bridge's hook.name is its own
        return act + masks[name] * (cache[name] - act)

    answers = task.answers_for(task.n_prompts)
    fwd_hooks = [(hook, partial(patch, name=hook)) for hook in hooks]
    patched, _ = run_with_answer_logits(model, base, answers, fwd_hooks=fwd_hooks)
    plain = metric_per_prompt(model, task, base)
    return float(task.answer_metric(patched).mean() - plain.mean())
