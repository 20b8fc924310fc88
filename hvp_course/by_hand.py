"""Computations written with plain hooks, as a learner writes them: the building blocks of
the known mistakes (and of a few independent references)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from hvp_utils.core.components import Component, components
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model


def head_component(model: Model, layer: int, head: int) -> Component:
    """The head output ``L{layer}H{head}`` (``hook_z[:, :, head, :]``, every position)."""
    return components(model, kind="head_out", layers=[layer])[head]


def layer_component(model: Model, layer: int) -> Component:
    """Every head of one layer as one component: the whole ``hook_z`` (a common mistake)."""
    hook = head_component(model, layer, 0).hook
    return Component(
        name=f"L{layer} (every head)", kind="custom", hook=hook, layer=layer, select=()
    )


def zero_leaf_run(
    model: Model,
    task: PatchingTask,
    name: str,
    *,
    hooks: Sequence[tuple[str, Callable]] = (),
    run: Literal["corrupted", "clean"] = "corrupted",
) -> tuple[Tensor, Tensor, Tensor]:
    """The corrupted run (or the clean one) with a zero leaf added at hook ``name`` (and any
    other forward ``hooks``): ``(a_r, zero, m)``, the activation there, the leaf and the
    metric ``m(x_r)`` as a function of it (one forward pass, graph kept).
    ``torch.autograd.grad(m, zero)`` is ``dm/da`` at ``a_r``; with ``create_graph=True`` it
    can be differentiated again (an HVP). The leaf is needed because the weights are frozen:
    nothing else would carry a gradient."""
    saved = {}

    def add_zero(act, hook):
        saved["act"] = act.detach()
        saved["zero"] = torch.zeros_like(act, requires_grad=True)
        return act + saved["zero"]

    with torch.enable_grad():
        tokens = task.clean_tokens if run == "clean" else task.corrupted_tokens
        logits = model.run_with_hooks(tokens, fwd_hooks=[(name, add_zero), *hooks])
        metric = task.metric(logits)
    return saved["act"], saved["zero"], metric


def corrupted_gradient(
    model: Model,
    task: PatchingTask,
    name: str,
    *,
    hooks: Sequence[tuple[str, Callable]] = (),
    run: Literal["corrupted", "clean"] = "corrupted",
) -> tuple[Tensor, Tensor]:
    """The activation ``a_r`` at hook ``name`` on the corrupted run (or the clean one) and
    ``dm(x_r)/da`` there (with any other forward ``hooks`` in place), from one forward and one
    backward pass (:func:`zero_leaf_run`)."""
    act, zero, metric = zero_leaf_run(model, task, name, hooks=hooks, run=run)
    (grad,) = torch.autograd.grad(metric, zero)
    return act, grad
