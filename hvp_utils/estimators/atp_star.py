"""AtP*: attribution patching with the two fixes of Kramar et al. 2024 (arXiv:2403.00745).

**QK fix.** A query or key patch acts on the metric through the attention softmax, which
saturates: its linearisation can miss most of the effect. AtP* computes the change of the
attention pattern *exactly* and linearises only from the pattern on:

    AtP*_c = sum_{heads h reading c} <grad_{pattern_h} m(x_base), pattern_h(c patched) - pattern_h>

A head's pattern depends only on its own query and key, so patching every head's query (or
key) of a layer in one partial forward pass (that layer only) gives every head's exact new
pattern. Other component kinds (``head_pattern`` included) keep plain AtP.

**GradDrop.** Paths through different later layers can cancel in the gradient. For every
layer ``l`` the estimate is recomputed with the gradient through layer ``l``'s residual
contributions (attention and MLP outputs) dropped, and

    |AtP*_GD(c)| = 1/(L-1) sum_{l=1}^{L} |AtP*_{drop l}(c)|,

where dropping a layer at or before the component's own leaves its estimate unchanged. This
is a *magnitude* for ranking components; ``values`` carry it with the sign of the QK-fixed
estimate, and the result keeps both parts (``qk_fixed``, ``graddrop``). The dropped estimates
are replicates of one replicated backward pass (one replicate per later layer).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_utils.core.components import Component, group_by_hook, query_heads
from hvp_utils.core.engine import (
    EngineRun,
    PatchContext,
    component_inner_products,
    hook_gradients,
)
from hvp_utils.core.local_maps import local_change
from hvp_utils.core.results import (
    DIRECTION_SUFFIX,
    AtPStarAttribution,
    Estimator,
    declare,
)
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Direction, Family, Model

#: The label of AtP* with and without GradDrop.
LABELS = {True: "AtP*", False: "AtP* (QK fix)"}
#: Component kinds that act through the attention pattern (the QK fix applies to them).
QK_KINDS = ("head_q", "head_k")


def exact_pattern_changes(run: EngineRun, comps: list[Component]) -> dict[str, Tensor]:
    """The exact change of the attention pattern when a query or key hook is patched.

    Args:
        run: the model, the context (it caches the patterns of the query/key layers) and the
            meter (one forward per query/key hook).
        comps: components; only those of :data:`QK_KINDS` are used.

    Returns:
        ``{hook: pattern_l(a_hook^b + delta_hook) - pattern_l(a_hook^b)}`` for each query/key
        hook of ``comps`` (every head patched at once; ``l`` the hook's layer), from one
        partial forward pass of that layer only.
    """
    changes = {}
    layers = {c.hook: c.layer for c in comps if c.kind in QK_KINDS}
    for hook, layer in sorted(layers.items()):
        pattern = get_act_name("pattern", layer)
        changes[hook] = local_change(
            run.model, run.context, in_hook=hook, out_hook=pattern, layer=layer
        )
        run.meter.add(forward=1)
    return changes


def _qk_fixed_estimates(
    run: EngineRun, comps: list[Component], changes: dict[str, Tensor], drops: list[int | None]
) -> Tensor:
    """``[len(drops), n]``: the QK-fixed AtP of every component, replicate ``r`` with the
    gradient through layer ``drops[r]``'s attention and MLP outputs dropped (None: none)."""
    qk = [i for i, c in enumerate(comps) if c.kind in QK_KINDS]
    plain = [i for i, c in enumerate(comps) if c.kind not in QK_KINDS]
    plain_comps = [comps[i] for i in plain]
    patterns = {get_act_name("pattern", comps[i].layer) for i in qk}
    hooks = sorted(set(group_by_hook(plain_comps)) | patterns)
    frozen: dict[str, Tensor] = {}
    for r, layer in enumerate(drops):
        if layer is None:
            continue
        for name in ("attn_out", "mlp_out"):
            hook = get_act_name(name, layer)
            frozen.setdefault(hook, torch.zeros(len(drops), dtype=torch.bool))[r] = True
    grads, _ = hook_gradients(run, hooks, replicates=len(drops), frozen=frozen)
    ctx = run.context
    values = torch.zeros(len(drops), len(comps), dtype=torch.float64)
    if plain:
        values[:, plain] = component_inner_products(plain_comps, grads, ctx).cpu()
    for i in qk:
        c = comps[i]
        heads = query_heads(run.model.cfg, c.kind, dict(c.select)[2])
        grad = grads[get_act_name("pattern", c.layer)][:, :, heads]  # [R, batch, heads, q, k]
        change = changes[c.hook][:, heads]  # [batch, heads, q, k]
        values[:, i] = (grad * change).flatten(1).sum(1).double().cpu()
    return values


def atp_star(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    graddrop: bool = True,
    direction: Direction = "denoising",
    chunk_size: int | None = None,
    context: PatchContext | None = None,
) -> AtPStarAttribution:
    """AtP with the QK fix for query/key components and (optionally) GradDrop.

    Args:
        model, task, comps: as for every estimator (see :func:`hvp_utils.atp`).
        graddrop: apply GradDrop (``values`` are then magnitudes signed like the QK fix).
        direction: ``"denoising"`` (default) or ``"noising"``.
        chunk_size: replicates per pass (the GradDrop layers are replicates); the values do
            not depend on it.
        context: a :class:`~hvp_utils.core.engine.PatchContext` shared with other estimators
            (it must cache the attention patterns of the query/key layers:
            ``extra_hooks=(get_act_name("pattern", l), ...)``).

    Returns:
        :class:`AtPStarAttribution`: ``qk_fixed`` (``AtP*_c`` of the module docstring:
        the pattern-level AtP for query/key components, ``g_c'(0)`` for the rest) and, with
        GradDrop, ``graddrop = 1/(L-1) sum_l |AtP*_{drop l}(c)|``; ``values`` are
        ``qk_fixed`` without GradDrop, else ``sign(qk_fixed) * graddrop``.
    """
    qk_layers = sorted({c.layer for c in comps if c.kind in QK_KINDS})
    extra = tuple(get_act_name("pattern", layer) for layer in qk_layers)
    run = EngineRun.start(
        model,
        task,
        comps,
        direction=direction,
        chunk_size=chunk_size,
        context=context,
        extra_hooks=extra,
    )
    record = atp_star_estimator(graddrop=graddrop, direction=direction)
    changes = exact_pattern_changes(run, comps)
    n_layers = model.cfg.n_layers
    drops = [None]
    if graddrop:
        drops += list(range(min(c.layer for c in comps) + 1, n_layers))
    estimates = _qk_fixed_estimates(run, comps, changes, drops)
    qk_fixed = estimates[0]
    if not graddrop:
        return AtPStarAttribution.build(
            qk_fixed, comps, record, run.meter, qk_fixed=qk_fixed, graddrop=None
        )
    layers = torch.tensor([c.layer for c in comps])
    per_layer = qk_fixed.expand(n_layers, -1).clone()  # dropping layer l <= own layer: AtP*
    for r, layer in enumerate(drops[1:], start=1):
        per_layer[layer] = torch.where(layers < layer, estimates[r], qk_fixed)
    magnitude = per_layer.abs().sum(0) / max(n_layers - 1, 1)
    values = torch.where(qk_fixed < 0, -magnitude, magnitude)
    return AtPStarAttribution.build(
        values, comps, record, run.meter, qk_fixed=qk_fixed, graddrop=magnitude
    )


def atp_star_estimator(
    *, graddrop: bool = True, direction: Direction = "denoising", chunk_size: int | None = None
) -> Estimator:
    """The record of :func:`atp_star` with these options (:data:`LABELS`)."""
    label = LABELS[graddrop] + DIRECTION_SUFFIX[direction]
    options = {"graddrop": graddrop, "direction": direction, "chunk_size": chunk_size}
    return declare("atp_star", atp_star, label, Family.ATP_STAR, **options)
