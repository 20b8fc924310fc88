"""AtP*: attribution patching with the two fixes of Kramar et al. 2024 (arXiv:2403.00745).

**QK fix.** A query or key patch acts on the metric through the attention softmax, which
saturates: its linearisation can miss most of the effect. AtP* computes the change of the
attention pattern *exactly* and linearises only from the pattern on:

    AtP*_c = sum_{heads h reading c} <grad_{pattern_h} m(x_base), pattern_h(c patched) - pattern_h>

A head's pattern depends only on its own query and key, so patching every head's query (or
key) of a layer in one partial forward pass (that layer only) gives every head's exact new
pattern. Other component kinds keep plain AtP.

**GradDrop.** Paths through different later layers can cancel in the gradient. For every
layer ``l`` the estimate is recomputed with the gradient through layer ``l``'s residual
contributions (attention and MLP outputs) dropped, and

    |AtP*_GD(c)| = 1/(L-1) sum_{l=1}^{L} |AtP*_{drop l}(c)|,

where dropping a layer at or before the component's own leaves its estimate unchanged. This
is a *magnitude* for ranking components; ``values`` carry it with the sign of the QK-fixed
estimate, and ``extras`` keep both parts (``qk_fixed``, ``graddrop``).
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

from hvp_utils.core.components import Component
from hvp_utils.core.engine import (
    PatchContext,
    component_inner_products,
    hook_gradients,
    context_for,
    local_output,
)
from hvp_utils.core.results import Attribution, CostMeter
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Direction
from hvp_utils.estimators.registry import describe

QK_KINDS = ("head_q", "head_k")


def pattern_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def exact_pattern_changes(
    model: HookedTransformer, ctx: PatchContext, comps: list[Component], meter: CostMeter
) -> dict[str, torch.Tensor]:
    """For each query/key hook among ``comps``: pattern(all heads patched) - base pattern.

    One partial forward pass (a single layer) per hook.
    """
    changes = {}
    for hook in sorted({c.hook for c in comps if c.kind in QK_KINDS}):
        layer = int(hook.split(".")[1])
        one = torch.ones((), dtype=ctx.deltas[hook].dtype, device=ctx.deltas[hook].device)
        with torch.no_grad():
            patched = local_output(model, ctx, hook, pattern_hook(layer), one)
        changes[hook] = patched - ctx.base_acts[pattern_hook(layer)]
        meter.add(forward=1)
    return changes


def _query_heads(model: HookedTransformer, comp: Component) -> list[int]:
    """Query heads whose pattern a query/key component changes (several for a shared GQA key)."""
    head = dict(comp.select)[2]
    if comp.kind == "head_q":
        return [head]
    n_kv = getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads
    group = model.cfg.n_heads // n_kv
    return list(range(head * group, (head + 1) * group))


def _estimate(model, task, comps, ctx, changes, meter, frozen=()) -> torch.Tensor:
    """QK-fixed AtP of every component, with the gradient through ``frozen`` hooks dropped."""
    qk = [i for i, c in enumerate(comps) if c.kind in QK_KINDS]
    plain = [i for i, c in enumerate(comps) if c.kind not in QK_KINDS]
    hooks = sorted({comps[i].hook for i in plain} | {pattern_hook(comps[i].layer) for i in qk})
    grads, _ = hook_gradients(model, task, ctx, hooks, meter, frozen_hooks=frozen)
    values = torch.zeros(len(comps), dtype=torch.float64)
    if plain:
        plain_grads = {h: g for h, g in grads.items() if not h.endswith("hook_pattern")}
        values[plain] = component_inner_products([comps[i] for i in plain], plain_grads, ctx)[0]
    for i in qk:
        c = comps[i]
        grad, change = grads[pattern_hook(c.layer)][0], changes[c.hook]
        heads = _query_heads(model, c)
        values[i] = (grad[:, heads] * change[:, heads]).sum().double().cpu()
    return values


def atp_star(
    model: HookedTransformer,
    task: PatchingTask,
    comps: list[Component],
    *,
    graddrop: bool = True,
    direction: Direction = "denoising",
    context: PatchContext | None = None,
) -> Attribution:
    """AtP with the QK fix for query/key components and (optionally) GradDrop.

    Args:
        model, task, comps: as for every estimator (see :func:`hvp_utils.atp`).
        graddrop: apply GradDrop (``values`` are then magnitudes signed like the QK fix).
        direction: ``"denoising"`` (default) or ``"noising"``.
        context: a :class:`~hvp_utils.core.engine.PatchContext` shared with other estimators
            (it must cache the attention patterns of the query/key layers).

    Returns:
        :class:`Attribution`; ``extras``: ``qk_fixed`` and (with GradDrop) ``graddrop``.
    """
    meter = CostMeter()
    qk_layers = {c.layer for c in comps if c.kind in QK_KINDS}
    extra = tuple(pattern_hook(layer) for layer in qk_layers)
    ctx = context_for(model, task, comps, direction, meter, context, extra_hooks=extra)
    spec = describe("atp_star", graddrop=graddrop, direction=direction)
    changes = exact_pattern_changes(model, ctx, comps, meter)
    qk_fixed = _estimate(model, task, comps, ctx, changes, meter)
    if not graddrop:
        return Attribution.build(qk_fixed, comps, spec, meter, qk_fixed=qk_fixed)
    n_layers = model.cfg.n_layers
    layers = torch.tensor([c.layer for c in comps])
    total = torch.zeros(len(comps), dtype=torch.float64)
    for layer in range(n_layers):
        frozen = (f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out")
        downstream = layers < layer
        dropped = (
            _estimate(model, task, comps, ctx, changes, meter, frozen)
            if downstream.any()
            else qk_fixed
        )
        total += torch.where(downstream, dropped, qk_fixed).abs()
    magnitude = total / max(n_layers - 1, 1)
    values = torch.where(qk_fixed < 0, -magnitude, magnitude)
    return Attribution.build(values, comps, spec, meter, qk_fixed=qk_fixed, graddrop=magnitude)
