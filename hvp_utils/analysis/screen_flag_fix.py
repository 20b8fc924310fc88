"""Screen-Flag-Fix: spend exact or second-order compute only where first order is unreliable.

1. **Screen and flag** in one replicated pass: its base replicate gives AtP, ``g_c'(0)``, for
   every component, and ``S`` random-sign Hessian-vector products beside it give a
   Hutchinson estimate of every ``g_c''(0)``, at a cost that does not grow with the number
   of components. A component is flagged (:func:`~hvp_utils.analysis.reliability.flag_reasons`)
   when its reliability score ``r_c = |g''/2| / (|g'| + |g''/2|)`` exceeds ``tau``, when
   first and second order disagree in sign, or when its Lagrange interval
   ``g' -+ M2_hat / 2`` (:func:`~hvp_utils.analysis.reliability.lagrange_interval`) straddles
   the selection threshold (default: ``threshold_share`` of the largest |AtP|), so that it
   could fall on either side of the circuit's cut. The screen has ``g''`` at ``t = 0`` only,
   so its estimate of ``max_[0,1] |g''|`` is that one sample widened by ``margin`` (``g''``
   varies along the path): ``M2_hat = margin * |g''(0)|``.
2. **Fix** only the flagged ones (at most ``max_fixed``, largest ``|g''|/2`` first) with exact
   activation patching (``fix="patch"``), the per-component HVP correction (``"hvp"``) or
   the order-4 Hermite-Radau multi-step rule (``"multistep"``), in the same prepared
   context as the screen.

The result's ``cost`` adds up both stages and keeps each one in ``cost.stages``.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from hvp_utils.analysis.reliability import flag_reasons
from hvp_utils.core.components import Component, check_components
from hvp_utils.core.engine import PatchContext, context_for
from hvp_utils.core.results import (
    DIRECTION_SUFFIX,
    Cost,
    CostMeter,
    Estimator,
    ScreenFlagFixResult,
    declare,
)
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import FIXES, Direction, Family, Fix, Model, check_choice
from hvp_utils.estimators.patching import activation_patching
from hvp_utils.estimators.quadrature import multistep_hvp
from hvp_utils.estimators.second_order import hvp_correction

#: How far the flag stage widens its one sample of the curvature: ``M2_hat = margin |g''(0)|``.
DEFAULT_MARGIN = 2.0

FIX_ESTIMATORS = {
    "patch": activation_patching,
    "hvp": partial(hvp_correction, mode="diag"),
    "multistep": partial(multistep_hvp, steps=1, rule="radau"),
}
#: The label of Screen-Flag-Fix with each fix.
LABELS = {"patch": "SFF (patch)", "hvp": "SFF (hvp)", "multistep": "SFF (multistep)"}


def screen_flag_fix(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    fix: Fix = "patch",
    max_fixed: int | None = None,
    max_fixed_share: float | None = None,
    tau: float = 0.3,
    threshold: float | None = None,
    threshold_share: float = 0.1,
    margin: float = DEFAULT_MARGIN,
    n_probes: int = 8,
    seed: int = 0,
    direction: Direction = "denoising",
    chunk_size: int | None = None,
    context: PatchContext | None = None,
) -> ScreenFlagFixResult:
    """AtP everywhere, corrected on the flagged components only (see the module docstring).

    Args:
        model, task, comps: as for every estimator (see :func:`hvp_utils.atp`).
        fix: ``"patch"``, ``"hvp"`` or ``"multistep"``: what replaces AtP where flagged.
        max_fixed: the most components fixed (None: no limit).
        max_fixed_share: the most components fixed, as a share of ``comps`` (rounded down;
            None: no limit).
        tau: flag components whose reliability score exceeds it.
        threshold: the circuit's cut on ``|effect|`` (None: ``threshold_share`` of the
            largest |AtP|).
        threshold_share: see ``threshold``.
        margin: ``M2_hat = margin * |g''(0)|``, the estimate of ``max |g''|`` behind the
            Lagrange interval ``g' -+ M2_hat / 2`` tested against the threshold.
        n_probes: Hutchinson probes ``S`` of the flag stage; ``seed`` seeds their signs.
        direction: ``"denoising"`` (default) or ``"noising"``.
        chunk_size: replicates of the prompt batch per pass.
        context: a :class:`~hvp_utils.core.engine.PatchContext` shared with other estimators.

    Returns:
        :class:`ScreenFlagFixResult` with AtP where not fixed and the fix elsewhere, the
        screen (``first``, ``second``), the flag ``reasons`` and the ``fixed`` mask;
        ``cost.stages`` holds ``screen_flag`` and ``fix``.
    """
    check_choice(fix, FIXES, "fix")
    comps = check_components(comps)
    meter = CostMeter()
    ctx = context_for(model, task, comps, direction=direction, meter=meter, context=context)
    screen = hvp_correction(
        model,
        task,
        comps,
        mode="hutchinson",
        n_probes=n_probes,
        seed=seed,
        direction=direction,
        chunk_size=chunk_size,
        context=ctx,
    )
    stages = {"screen_flag": meter.cost() + screen.cost}
    first, second = screen.first, screen.second
    cut = threshold_share * float(first.abs().max()) if threshold is None else threshold
    reasons = flag_reasons(first, second, tau=tau, max_second=margin * second.abs(), threshold=cut)
    limits = [n for n in (max_fixed, _share_count(max_fixed_share, len(comps))) if n is not None]
    chosen = within_budget(reasons.flags, second.abs(), max_fixed=min(limits, default=None))
    values = first.clone()
    if chosen:
        fixer = FIX_ESTIMATORS[fix]
        subset = [comps[i] for i in chosen]
        fixed = fixer(model, task, subset, direction=direction, chunk_size=chunk_size, context=ctx)
        values[chosen] = fixed.values
        stages["fix"] = fixed.cost
    selected = torch.zeros(len(comps), dtype=torch.bool)
    selected[chosen] = True
    record = sff_estimator(
        fix=fix,
        max_fixed=max_fixed,
        max_fixed_share=max_fixed_share,
        tau=tau,
        threshold=threshold,
        threshold_share=threshold_share,
        margin=margin,
        n_probes=n_probes,
        seed=seed,
        direction=direction,
    )
    return ScreenFlagFixResult.build(
        values,
        comps,
        record,
        Cost.of_stages(stages),
        first=first,
        second=second,
        reasons=reasons,
        fixed=selected,
    )


def sff_estimator(
    *, fix: Fix = "patch", direction: Direction = "denoising", **options
) -> Estimator:
    """The record of :func:`screen_flag_fix` with these options (:data:`LABELS`)."""
    label = LABELS[fix] + DIRECTION_SUFFIX[direction]
    return declare(
        "sff", screen_flag_fix, label, Family.SFF, fix=fix, direction=direction, **options
    )


def _share_count(share: float | None, n: int) -> int | None:
    """``int(share * n)``, or None without a share."""
    return None if share is None else int(share * n)


def within_budget(flagged: Tensor, priority: Tensor, *, max_fixed: int | None) -> list[int]:
    """The flagged indices to fix, in index order: the ``max_fixed`` with the largest
    ``priority`` (``|g''(0)|``, the most curved first); None fixes every flagged one."""
    order = [i for i in priority.argsort(descending=True).tolist() if flagged[i]]
    return sorted(order if max_fixed is None else order[:max_fixed])
