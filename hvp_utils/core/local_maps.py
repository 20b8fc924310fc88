"""Local maps: the non-linearity between a component's activation and the next hook.

A component's activation ``a`` reaches the metric through a *local map* ``o = phi(a)`` inside
its own layer, then through everything downstream of ``o``:

    kind           input hook    phi                            output hook (its slice)
    head_q         hook_q        softmax(q k^T) v               hook_z (the same head)
    head_k         hook_k        softmax(q k^T) v               hook_z (the query heads it
                                                                feeds; a GQA group)
    head_pattern   hook_pattern  pattern @ v (linear)           hook_z (the same head)
    neuron_pre     hook_pre      act(pre) (* pre_linear, gated) hook_post (the same neuron)
    anything else  its own       identity                       its own

Heads are independent inside the softmax and neurons inside the activation function: the
output slice of head (neuron) ``u`` depends only on the input entries of unit ``u``
(:data:`UNIT_AXES`), so moving a whole input hook gives every unit's own output change in one
partial pass of the layer. Along the axes of :data:`ALIGNED_AXES` the output at index ``i``
depends only on the input at index ``i`` (a query at position ``p`` feeds only position
``p`` of ``hook_z``); along any other axis (a key position feeds every query position) it
does not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_utils.core.components import Component, query_heads
from hvp_utils.core.engine import PatchContext, local_output
from hvp_utils.core.types import Model

#: Component kind -> ``get_act_name`` of its local map's output (kinds not listed: identity).
LOCAL_MAPS = {"head_q": "z", "head_k": "z", "head_pattern": "z", "neuron_pre": "post"}
#: The kinds whose local map is curved (softmax, activation function): the only ones with
#: ``E_local != 0``; ``head_pattern``'s map to ``z`` is linear.
CURVED_LOCAL_KINDS = ("head_q", "head_k", "neuron_pre")
#: Per local kind, the input axis of its independent units (heads, neurons).
UNIT_AXES = {"head_q": 2, "head_k": 2, "head_pattern": 1, "neuron_pre": 2}
#: Per local kind, ``{input axis: output axis}`` along which output index ``i`` depends only
#: on input index ``i`` (the batch; query positions; neuron positions).
ALIGNED_AXES = {
    "head_q": {0: 0, 1: 1},
    "head_k": {0: 0},
    "head_pattern": {0: 0, 2: 1},
    "neuron_pre": {0: 0, 1: 1},
}


@dataclass(frozen=True)
class OutputSlice(Component):
    """A component's slice of its local map's output hook: ``act[:, ..., idx, ...]`` with
    several indices ``idx`` on one axis (a grouped-query key feeds several query heads),
    narrowed further by ``select`` (kept as size-1 axes by :meth:`take`)."""

    axis: int = 2
    indices: tuple[int, ...] = ()

    def mask(self, act_shape: tuple[int, ...], dtype=torch.float32, device=None) -> Tensor:
        shape = [1] * len(act_shape)
        shape[self.axis] = act_shape[self.axis]
        mask = torch.zeros(shape, dtype=dtype, device=device)
        index: list = [slice(None)] * len(act_shape)
        index[self.axis] = list(self.indices)
        mask[tuple(index)] = 1
        return mask * super().mask(act_shape, dtype=dtype, device=device)

    def take(self, act: Float[Tensor, "batch ..."]) -> Tensor:
        index: list = [slice(None)] * act.dim()
        for axis, i in self.select:
            index[axis] = slice(i, i + 1)
        index[self.axis] = list(self.indices)
        return act[tuple(index)]


def output_hook(comp: Component) -> str:
    """The hook holding the output ``o`` of the component's local map (its own for identity)."""
    suffix = LOCAL_MAPS.get(comp.kind)
    return comp.hook if suffix is None else get_act_name(suffix, comp.layer)


def output_slice(model: Model, comp: Component) -> Component:
    """The component's output ``o`` as a slice of :func:`output_hook`: the query heads a
    query/key/pattern feeds (axis 2 of ``hook_z``), the neuron a pre-activation feeds."""
    if comp.kind not in LOCAL_MAPS:
        return comp
    index = dict(comp.select)[UNIT_AXES[comp.kind]]
    if comp.kind == "neuron_pre":
        indices = (index,)
    else:
        indices = tuple(query_heads(model.cfg, comp.kind, index))
    return OutputSlice(comp.name, comp.kind, output_hook(comp), comp.layer, (), 2, indices)


def check_local_map(model: Model, comps: list[Component]) -> None:
    """Neuron pre-activations must act neuron by neuron (not through SoLU's layer norm)."""
    act_fn = str(getattr(model.cfg, "act_fn", ""))
    if any(c.kind == "neuron_pre" for c in comps) and "solu" in act_fn:
        raise ValueError(
            f"act_fn {act_fn!r} mixes neurons (layer norm after the activation), so a neuron's "
            "pre-activation has no per-neuron local map; diagnose 'neuron' components instead"
        )


def with_delta(ctx: PatchContext, hook: str, delta: Tensor) -> PatchContext:
    """The same base run with ``delta`` as the patch direction at ``hook``."""
    return replace(ctx, deltas={hook: delta}, base_acts={hook: ctx.base_acts[hook]})


def local_change(
    model: Model,
    ctx: PatchContext,
    *,
    in_hook: str,
    out_hook: str,
    layer: int,
    where: Tensor | None = None,
) -> Tensor:
    """``phi(a^b + where * delta) - phi(a^b)`` at ``out_hook``: the exact change of the local
    map's output when ``in_hook`` moves to its source value (one partial pass of ``layer``).

    Args:
        model: the model.
        ctx: the context; it caches ``out_hook`` (the base output ``phi(a^b)``).
        in_hook, out_hook: the local map's input and output hooks (block ``layer``).
        layer: the block of both hooks.
        where: a 0/1 mask broadcastable to ``in_hook``'s activation: the entries that move
            (None: every entry).

    Returns:
        The change of ``out_hook``'s activation, shaped like it (no autograd graph).
    """
    delta = ctx.deltas[in_hook] if where is None else ctx.deltas[in_hook] * where
    one = torch.ones((), dtype=delta.dtype, device=delta.device)
    with torch.no_grad():
        moved = local_output(
            model,
            with_delta(ctx, in_hook, delta),
            in_hook=in_hook,
            out_hook=out_hook,
            scale=one,
            layer=layer,
        )
    return moved - ctx.base_acts[out_hook]
