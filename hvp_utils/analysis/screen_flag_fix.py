"""Screen-Flag-Fix: spend exact or second-order compute only where first order is unreliable.

1. **Screen** every component with AtP: ``g_c'(0)`` from one backward pass.
2. **Flag** with curvature whose cost does not grow with the number of components: a
   Hutchinson estimate of every ``g_c''(0)`` from ``S`` random-sign Hessian-vector products
   (one replicated pass). A component is flagged when its reliability score
   ``r_c = |g''/2| / (|g'| + |g''/2|)`` exceeds ``tau``, when first and second order disagree
   in sign, or when its interval ``g' +- margin * |g''|/2`` straddles the selection threshold
   (default: ``fraction`` of the largest |AtP|), so that it could fall on either side of the
   circuit's cut. ``margin`` widens the interval because ``g''`` varies along the path.
3. **Fix** only the flagged ones (at most ``budget``, largest ``|g''|/2`` first) with exact
   activation patching (``fix="patch"``), the per-component HVP correction (``"hvp"``) or
   the order-4 Hermite-Radau multi-step rule (``"multistep"``).

The result's ``cost`` adds up all three stages and keeps each one under ``cost["stages"]``.
"""

from __future__ import annotations

from functools import partial

import torch
from transformer_lens import HookedTransformer

from hvp_utils.core.components import Component, check_components
from hvp_utils.estimators.atp import atp
from hvp_utils.estimators.patching import activation_patching
from hvp_utils.estimators.quadrature import multistep_hvp
from hvp_utils.analysis.reliability import reliability_score, sign_change, straddles
from hvp_utils.core.results import Attribution
from hvp_utils.estimators.second_order import hvp_correction
from hvp_utils.core.tasks import PatchingTask

FIXES = {
    "patch": activation_patching,
    "hvp": partial(hvp_correction, mode="diag"),
    "multistep": partial(multistep_hvp, steps=1, rule="radau"),
}


def screen_flag_fix(
    model: HookedTransformer,
    task: PatchingTask,
    comps: list[Component],
    fix: str = "patch",
    budget: int | float | None = None,
    tau: float = 0.3,
    threshold: float | None = None,
    fraction: float = 0.1,
    margin: float = 2.0,
    samples: int = 8,
    seed: int = 0,
    direction: str = "denoising",
    chunk_size: int | None = None,
) -> Attribution:
    """AtP everywhere, corrected on the flagged components only (see the module docstring).

    ``budget``: the most components fixed, as a count or a fraction of ``comps``.
    Extras: ``flagged`` (bool), ``scores``, ``screen`` (AtP), ``curvature`` (Hutchinson g'').
    """
    if fix not in FIXES:
        raise ValueError(f"unknown fix {fix!r}; use one of {sorted(FIXES)}")
    comps = check_components(comps)
    screen = atp(model, task, comps, direction=direction)
    flag = hvp_correction(
        model, task, comps, mode="hutchinson", samples=samples, seed=seed, direction=direction
    )
    first, second = screen.values, flag.second
    scores = reliability_score(first, second)
    cut = fraction * float(first.abs().max()) if threshold is None else threshold
    spread = margin * second.abs() / 2
    flagged = (
        (scores > tau) | sign_change(first, second) | straddles(first - spread, first + spread, cut)
    )
    chosen = _within_budget(flagged, second.abs(), budget, len(comps))
    values, stages = first.clone(), {"screen": screen.cost, "flag": flag.cost}
    if chosen:
        subset = [comps[i] for i in chosen]
        fixed = FIXES[fix](model, task, subset, direction=direction, chunk_size=chunk_size)
        values[chosen] = fixed.values
        stages["fix"] = fixed.cost
    selected = torch.zeros(len(comps), dtype=torch.bool)
    selected[chosen] = True
    return Attribution(
        values=values,
        names=[c.name for c in comps],
        method=f"SFF ({fix})",
        cost=_total_cost(stages),
        kinds=[c.kind for c in comps],
        extras={"flagged": selected, "scores": scores, "screen": first, "curvature": second},
    )


def _within_budget(flagged, priority, budget, n) -> list[int]:
    """Flagged indices, most curved first, cut to the budget."""
    order = [i for i in priority.argsort(descending=True).tolist() if flagged[i]]
    if budget is None:
        return sorted(order)
    limit = int(budget * n) if isinstance(budget, float) and budget < 1 else int(budget)
    return sorted(order[:limit])


def _total_cost(stages: dict[str, dict]) -> dict:
    keys = ("seconds", "forward", "backward", "hvp", "third_order")
    total = {k: sum(stage.get(k, 0) for stage in stages.values()) for k in keys}
    total["stages"] = {name: dict(cost) for name, cost in stages.items()}
    return total
