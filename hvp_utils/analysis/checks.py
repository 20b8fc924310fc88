"""Independent references a learner can call from a notebook (ARENA-style checks).

They rebuild one component's patch path with plain TransformerLens hooks, without the
replicated engine of :mod:`hvp_utils.core.engine`, and differentiate it with
``torch.autograd.functional`` and finite differences. The test suite uses the same functions.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch
from torch import Tensor

from hvp_utils.core.components import Component
from hvp_utils.core.engine import second_order_attention
from hvp_utils.core.results import Attribution
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import DIRECTIONS, Direction, Model, check_choice


def component_index(comp: Component, ndim: int) -> tuple:
    """Index tuple selecting the component's slice of an activation with ``ndim`` axes."""
    index: list = [slice(None)] * ndim
    for axis, i in comp.select:
        index[axis] = i
    return tuple(index)


def endpoints(model: Model, task: PatchingTask, comp: Component) -> tuple[Tensor, Tensor]:
    """Clean and corrupted activations at the component's hook (full hook tensors)."""
    with torch.no_grad():
        _, clean = model.run_with_cache(task.clean_tokens, names_filter=comp.hook)
        _, corrupt = model.run_with_cache(task.corrupted_tokens, names_filter=comp.hook)
    return clean[comp.hook], corrupt[comp.hook]


def slice_function(
    model: Model,
    task: PatchingTask,
    comp: Component,
    *,
    direction: Direction = "denoising",
):
    """The metric as a function of the component's slice on the base run.

    Args:
        model, task, comp: the model, the task and one component.
        direction: ``"denoising"`` (base: the corrupted run, source: the clean run) or
            ``"noising"`` (base: clean, source: corrupted).

    Returns:
        ``(phi, x_r, x_c)``: ``phi(x) = m(base run with the slice set to x)``, the slice on
        the base run ``x_r`` and on the source run ``x_c``.
    """
    check_choice(direction, DIRECTIONS, "direction")
    clean, corrupt = endpoints(model, task, comp)
    index = component_index(comp, clean.dim())
    base_tokens = task.corrupted_tokens if direction == "denoising" else task.clean_tokens
    base, source = (corrupt, clean) if direction == "denoising" else (clean, corrupt)

    def phi(x):
        def hook(act, hook):
            act = act.clone()
            act[index] = x
            return act

        logits = model.run_with_hooks(base_tokens, fwd_hooks=[(comp.hook, hook)])
        return task.metric(logits)

    return phi, base[index], source[index]


def path_function(
    model: Model,
    task: PatchingTask,
    comp: Component,
    *,
    direction: Direction = "denoising",
):
    """``g(t) = phi(x_r + t (x_c - x_r))``, differentiable in ``t`` (see :func:`slice_function`)."""
    phi, x_r, x_c = slice_function(model, task, comp, direction=direction)
    return lambda t: phi(x_r + t * (x_c - x_r))


def path_slope(
    model: Model,
    task: PatchingTask,
    comp: Component,
    *,
    direction: Direction = "denoising",
) -> Callable[[Tensor], Tensor]:
    """``t -> g'(t)`` on the component's patch path (:func:`path_function`), by one
    ``torch.autograd.grad``: ``t`` a 0-d tensor in the model's dtype, ``g'(t)`` a 0-d tensor of
    the same dtype (what a finite difference of the slope needs)."""
    g = path_function(model, task, comp, direction=direction)

    def slope(t: Tensor) -> Tensor:
        with torch.enable_grad():
            t = t.detach().clone().requires_grad_(True)
            (d,) = torch.autograd.grad(g(t), t)
        return d.detach()

    return slope


def path_derivative(g, t: float, order: int) -> float:
    """``d^order g / dt^order`` at ``t`` by repeated autograd on the scalar path."""
    t = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    value = g(t)
    for k in range(order):
        (value,) = torch.autograd.grad(value, t, create_graph=k + 1 < order)
    return float(value)


def check_second_order(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    estimate: Attribution,
    *,
    step: float = 1e-4,
    rtol: float = 1e-6,
    direction: Direction = "denoising",
) -> pd.DataFrame:
    """Compare ``estimate.first``/``.second`` (g'(0), g''(0) from :func:`hvp_correction`) with

    - ``<delta, H delta>`` from ``torch.autograd.functional.hvp`` on the component's slice,
    - central finite differences of the gradient, ``(g'(h) - g'(-h)) / 2h``.

    on each component's own patch path in ``direction`` (the estimate's direction).
    Raises ``AssertionError`` naming the first component that disagrees beyond ``rtol``.
    """
    rows = []
    for comp in comps:
        i = estimate.names.index(comp.name)
        phi, x_r, x_c = slice_function(model, task, comp, direction=direction)
        with second_order_attention(model):
            _, h_delta = torch.autograd.functional.hvp(phi, x_r, x_c - x_r)
        g = path_function(model, task, comp, direction=direction)
        rows.append(
            {
                "component": comp.name,
                "g1 (ours)": float(estimate.first[i]),
                "g1 (autograd)": path_derivative(g, 0.0, 1),
                "g2 (ours)": float(estimate.second[i]),
                "g2 (autograd.functional.hvp)": float(((x_c - x_r) * h_delta).sum()),
                "g2 (finite differences)": (
                    path_derivative(g, step, 1) - path_derivative(g, -step, 1)
                )
                / (2 * step),
            }
        )
    frame = pd.DataFrame(rows).set_index("component")
    for column in ("g2 (autograd.functional.hvp)", "g2 (finite differences)"):
        gap = (frame["g2 (ours)"] - frame[column]).abs()
        bad = gap > rtol * frame[column].abs().clip(lower=1.0)
        assert not bad.any(), f"g'' disagrees with {column} at {list(frame.index[bad])}"
    return frame
