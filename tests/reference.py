"""Independent references for the tests: the patch path of one component built from plain
TransformerLens hooks (no hvp_utils engine), differentiable in t or in the activation."""

from __future__ import annotations

import torch


def component_index(comp, ndim: int) -> tuple:
    index: list = [slice(None)] * ndim
    for axis, i in comp.select:
        index[axis] = i
    return tuple(index)


def endpoints(model, task, comp):
    """Clean and corrupted activations at the component's hook."""
    with torch.no_grad():
        _, clean = model.run_with_cache(task.clean_tokens, names_filter=comp.hook)
        _, corrupt = model.run_with_cache(task.corrupted_tokens, names_filter=comp.hook)
    return clean[comp.hook], corrupt[comp.hook]


def slice_function(model, task, comp):
    """phi(x) = m(corrupted run with the component's slice of the activation set to x),
    and the corrupted and clean slices (x_r, x_c)."""
    clean, corrupt = endpoints(model, task, comp)
    index = component_index(comp, clean.dim())

    def phi(x):
        def hook(act, hook):
            act = act.clone()
            act[index] = x
            return act

        logits = model.run_with_hooks(task.corrupted_tokens, fwd_hooks=[(comp.hook, hook)])
        return task.metric(logits)

    return phi, corrupt[index], clean[index]


def path_function(model, task, comp):
    """g(t) = phi(x_r + t (x_c - x_r)), differentiable in t."""
    phi, x_r, x_c = slice_function(model, task, comp)
    return lambda t: phi(x_r + t * (x_c - x_r))


def path_derivative(g, t: float, order: int) -> float:
    """d^order g / dt^order at t by repeated autograd on the scalar path."""
    t = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    value = g(t)
    for k in range(order):
        (value,) = torch.autograd.grad(value, t, create_graph=k + 1 < order)
    return float(value)
