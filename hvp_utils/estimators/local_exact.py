"""AtP with the exact local non-linearity: attribution patching read after the local map.

A component's activation ``a`` reaches the metric through a local map ``o = phi(a)`` of its
own layer (:mod:`hvp_utils.core.local_maps`: the attention softmax for queries and keys, the
activation function for neuron pre-activations). With ``o_b = phi(a^b)`` on the base run,

    AtP_local(c) = < grad_o m(x_base), o_c - o_b >,     o_c = phi(a^b + delta_c),

where ``o_c`` is the output with only ``c``'s input entries moved to their source value: the
local non-linearity is exact, the downstream is linearised at the base run. This is
``AtP_out`` of :func:`hvp_utils.diagnose`, so its error against AP is ``E_down`` alone (no
``E_local``). For kinds without a local map (identity) it is plain AtP,
``<grad_a m(x_base), delta_c>``.

Cost: AtP's (two caching forwards, one forward and one backward on the base input for the
gradients at the output hooks and at the hooks of the identity components) plus one partial
pass of a single layer per input hook. Heads are independent inside the softmax and neurons
inside the activation function, so moving the *whole* hook in that pass gives every
component's own ``o_c - o_b`` on its output slice at once.

Components restricted to positions (custom :class:`~hvp_utils.core.components.Component`\\ s
selecting a position, or any axis besides the head/neuron one). Along the axes of
:data:`~hvp_utils.core.local_maps.ALIGNED_AXES` (a query position, a pattern row, a neuron's
position) output index ``i`` depends only on input index ``i``: the same pass serves, and the
output slice is narrowed to the component's positions. A key position feeds every query
position (the softmax runs over keys), so there moving the whole hook would mix different
components' keys: components are grouped by their selection on such axes (key positions,
``d_head``, pattern columns), and each group gets one pass with only its entries moved
(every head at once): one pass per key-position group.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from jaxtyping import Float
from torch import Tensor

from hvp_utils.core.components import Component, check_components
from hvp_utils.core.engine import (
    PatchContext,
    component_inner_products,
    context_for,
    hook_gradients,
)
from hvp_utils.core.local_maps import (
    ALIGNED_AXES,
    LOCAL_MAPS,
    UNIT_AXES,
    check_local_map,
    local_change,
    output_hook,
    output_slice,
    with_delta,
)
from hvp_utils.core.results import Attribution, CostMeter
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Direction, Model
from hvp_utils.estimators.registry import describe

#: One partial pass: the input hook and the selection on non-aligned axes that moves.
PassKey = tuple[str, tuple[tuple[int, int], ...]]


def local_passes(comps: list[Component], local: list[int]) -> dict[PassKey, list[int]]:
    """The partial passes that give each local-map component its own exact output change.

    Args:
        comps: components.
        local: indices of the components with a local map.

    Returns:
        ``{(input hook, moved selection): [i, ...]}``: components of one hook whose selection
        off the unit and aligned axes is the same share one pass, which moves that selection
        of every unit (the whole hook when it is empty, as for every kind of
        :func:`~hvp_utils.components`).
    """
    passes: dict[PassKey, list[int]] = {}
    for i in local:
        c = comps[i]
        if UNIT_AXES[c.kind] not in dict(c.select):
            raise ValueError(
                f"{c.name}: a {c.kind} component must select its head or neuron "
                f"(axis {UNIT_AXES[c.kind]} of {c.hook})"
            )
        fixed = {UNIT_AXES[c.kind], *ALIGNED_AXES[c.kind]}
        moved = tuple(pair for pair in c.select if pair[0] not in fixed)
        passes.setdefault((c.hook, moved), []).append(i)
    return passes


def narrowed_slice(model: Model, comp: Component) -> Component:
    """:func:`~hvp_utils.core.local_maps.output_slice` narrowed to the component's selection
    on the aligned axes (e.g. a query at one position: that position of ``hook_z``)."""
    aligned = ALIGNED_AXES[comp.kind]
    narrowed = tuple((aligned[axis], i) for axis, i in comp.select if axis in aligned)
    return replace(output_slice(model, comp), select=narrowed)


def _pass_estimates(
    model: Model,
    ctx: PatchContext,
    comps: list[Component],
    moved: tuple[tuple[int, int], ...],
    grads: dict[str, Tensor],
    meter: CostMeter,
) -> Float[Tensor, "n_pass"]:  # noqa: F821
    """``<grad_o m, o_c - o_b>`` for the components of one partial pass."""
    first = comps[0]
    delta = ctx.deltas[first.hook]
    where = Component("moved", first.kind, first.hook, first.layer, moved)
    where = where.mask(delta.shape, dtype=delta.dtype, device=delta.device) if moved else None
    outs = [narrowed_slice(model, c) for c in comps]
    out_hook = outs[0].hook
    change = local_change(model, ctx, first.hook, out_hook, layer=first.layer, where=where)
    meter.add(forward=1)
    field = {out_hook: grads[out_hook]}
    return component_inner_products(outs, field, with_delta(ctx, out_hook, change))[0].cpu()


def atp_local(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    direction: Direction = "denoising",
    context: PatchContext | None = None,
    chunk_size: int | None = None,
) -> Attribution:
    """AtP with the exact local map: ``<grad_o m(x_base), phi(a^b + delta_c) - phi(a^b)>``.

    Args:
        model, task, comps: as for every estimator (see :func:`hvp_utils.atp`).
        direction: ``"denoising"`` (clean into corrupted, default) or ``"noising"``.
        context: a :class:`~hvp_utils.core.engine.PatchContext` shared with other estimators
            (it must cache the local maps' output hooks:
            ``extra_hooks=tuple(output_hook(c) for c in comps)``).
        chunk_size: replicates per pass, as for every estimator; the gradients come from one
            replicate (the base input), so it changes nothing.

    Returns:
        :class:`Attribution` with ``values[i]`` the module docstring's ``AtP_local`` (plain
        AtP for kinds without a local map); cost 3 forwards (2 with a shared context), 1
        backward, and 1 single-layer forward per partial pass (one per input hook for the
        kinds of :func:`hvp_utils.components`).
    """
    comps = check_components(comps)
    check_local_map(model, comps)
    meter = CostMeter()
    local = [i for i, c in enumerate(comps) if c.kind in LOCAL_MAPS]
    plain = [i for i, c in enumerate(comps) if c.kind not in LOCAL_MAPS]
    out_hooks = {output_hook(comps[i]) for i in local}
    extra = tuple(sorted(out_hooks))
    ctx = context_for(model, task, comps, direction, meter, context, extra_hooks=extra)
    hooks = sorted({comps[i].hook for i in plain} | out_hooks)
    grads, _ = hook_gradients(model, task, ctx, hooks, meter, chunk_size=chunk_size)
    values = torch.zeros(len(comps), dtype=torch.float64)
    if plain:
        values[plain] = component_inner_products([comps[i] for i in plain], grads, ctx)[0].cpu()
    for (_, moved), members in local_passes(comps, local).items():
        members_comps = [comps[i] for i in members]
        values[members] = _pass_estimates(model, ctx, members_comps, moved, grads, meter)
    return Attribution.build(values, comps, describe("atp_local", direction=direction), meter)
