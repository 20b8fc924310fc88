"""Exercises of notebook 02, *Diagnosis: downstream non-linearity or local curvature?*:
AtP_out of one query head written with plain hooks (the reference is ``hu.diagnose``; the
pass line compares it with AtP*'s QK fix, ``hu.atp_star(..., graddrop=False)``, the same
number for a query), and AtP*'s GradDrop for the head outputs of one layer (the reference is
``hu.atp_star(...).graddrop``).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_course.by_hand import corrupted_gradient
from hvp_course.exercise import Case, Context, Exercise, Mistake, Result
from hvp_utils.analysis.diagnosis import diagnose
from hvp_utils.core.components import Component, components
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import atp, atp_star

#: How many query heads the checks use.
N_CASES = 3


def query_component(model: Model, layer: int, head: int) -> Component:
    """The query of head ``L{layer}H{head}`` (``hook_q[:, :, head, :]``, every position)."""
    return components(model, kind="head_q", layers=[layer])[head]


def query_heads(ctx: Context) -> list[tuple[int, int]]:
    """The query heads with the largest local term |AtP_out - AtP| (AtP_out of a query is
    AtP*'s QK fix), and the one with the largest |AtP_out| in the last layer."""
    queries = components(ctx.model, kind="head_q")
    out, first = ctx.cached(
        "AtP* (QK fix) and AtP of the queries",
        lambda: (
            atp_star(ctx.model, ctx.task, queries, graddrop=False).values,
            atp(ctx.model, ctx.task, queries).values,
        ),
    )
    local = (out - first).abs()
    chosen = [divmod(int(i), ctx.n_heads) for i in local.argsort(descending=True)]
    chosen = chosen[: N_CASES - 1]
    last = ctx.n_layers - 1
    per_head = out.view(ctx.n_layers, ctx.n_heads)[last].abs()
    for head in per_head.argsort(descending=True).tolist():
        if (last, head) not in chosen:
            return chosen + [(last, head)]
    return chosen


# --------------------------------------------------------------------------------------------
# 1. AtP_out of one query head, with hooks


def atp_out_query_reference(model: Model, task: PatchingTask, layer: int, head: int) -> float:
    """``AtP_out = <grad_z m(x_r), z(clean q, corrupted k, v) - z_r>`` of the query of head
    ``L{layer}H{head}`` (``hu.diagnose``'s ``AtP_out`` column)."""
    return float(diagnose(model, task, [query_component(model, layer, head)]).AtP_out.iloc[0])


def _atp_out_by_hand(
    model: Model,
    task: PatchingTask,
    layer: int,
    head: int,
    *,
    every_head: bool = False,
    clean_z: bool = False,
) -> float:
    """AtP_out with plain hooks, and the slips of the mistakes below: the clean query of
    every head of the layer (``every_head``), or the clean run's z in place of the z of the
    clean query over the corrupted keys and values (``clean_z``)."""
    q_name, z_name = get_act_name("q", layer), get_act_name("z", layer)
    heads = slice(None) if every_head else [head]
    with torch.no_grad():
        _, clean = model.run_with_cache(
            task.clean_tokens, names_filter=lambda name: name in (q_name, z_name)
        )
        moved = {}

        def clean_query(q, hook):
            q = q.clone()
            q[:, :, heads] = clean[q_name][:, :, heads]
            return q

        def keep(z, hook):
            moved["z"] = z.detach().clone()
            return z

        model.run_with_hooks(
            task.corrupted_tokens, fwd_hooks=[(q_name, clean_query), (z_name, keep)]
        )
    z_r, grad = corrupted_gradient(model, task, z_name)
    output = clean[z_name] if clean_z else moved["z"]
    change = output - z_r
    return float((grad[:, :, heads] * change[:, :, heads]).sum())


def _atp_out_passed(r: Result) -> str:
    model, task = r.ctx.model, r.ctx.task
    comps = [query_component(model, *case.args[2:]) for case in r.cases]
    qk_fix = atp_star(model, task, comps, graddrop=False).values
    gap = float((qk_fix - torch.stack(r.expected)).abs().max())
    return (
        f"AtP_out of {', '.join(c.name for c in comps)} as hu.diagnose (largest difference "
        f"{r.diff:.1e}; AtP*'s QK fix agrees to {gap:.1e})"
    )


ATP_OUT_QUERY = Exercise(
    name="atp_out_query",
    notebook="02",
    summary="AtP_out of three query heads (the two largest local terms, the largest AtP_out "
    "of the last layer) equals hu.diagnose's AtP_out column (and AtP*'s QK fix).",
    reference=atp_out_query_reference,
    uses="hu.diagnose",
    what="AtP_out",
    cases=lambda ctx: [
        Case(f"L{layer}H{head}.q", (ctx.model, ctx.task, layer, head))
        for layer, head in query_heads(ctx)
    ],
    prompt_hints=True,
    mistakes=(
        Mistake(
            "that is AtP of the head's output, <grad_z m, z_clean - z_r>: the clean run's z "
            "also has the clean keys and values. o_c is the clean query attending over the "
            "corrupted keys and values: patch hook_q in the corrupted run and read its hook_z",
            wrong=partial(_atp_out_by_hand, clean_z=True),
        ),
        Mistake(
            "that is AtP of the query itself, <grad_q m, q_clean - q_r>, at the input side of "
            "the softmax; AtP_out takes the exact change of z and the gradient at hook_z",
            wrong=lambda model, task, layer, head: float(
                atp(model, task, [query_component(model, layer, head)]).values[0]
            ),
        ),
        Mistake(
            "that is AtP_out of the queries of every head of the layer at once: write the "
            "clean query into q[:, :, head] only, and take the inner product on z[:, :, head]",
            wrong=partial(_atp_out_by_hand, every_head=True),
        ),
        Mistake(
            "wrong sign: o_c - o_r = z(clean query, corrupted keys and values) - z(corrupted run)",
            wrong=lambda model, task, layer, head: (
                -atp_out_query_reference(model, task, layer, head)
            ),
        ),
    ),
    passed=_atp_out_passed,
)


# --------------------------------------------------------------------------------------------
# 2. GradDrop of the heads of one layer


def graddrop_heads_reference(model: Model, task: PatchingTask, layer: int) -> Tensor:
    """``|GD_h| = 1/(L-1) sum_l |AtP_h without layer l's gradient|`` of every head output of
    ``layer`` (``hu.atp_star(...).graddrop``)."""
    heads = components(model, kind="head_out", layers=[layer])
    return atp_star(model, task, heads).graddrop


def _graddrop_by_hand(
    model: Model,
    task: PatchingTask,
    layer: int,
    *,
    dropped: tuple[str, ...] = ("attn_out", "mlp_out"),
    from_own_layer: bool = False,
    zero_forward: bool = False,
    signed: bool = False,
    divisor: str = "L-1",
) -> Tensor:
    """GradDrop with plain hooks, and the slips of the mistakes below: only some outputs
    ``dropped``; the own layer dropped too (``from_own_layer``); the outputs zeroed in the
    forward pass instead of their gradient (``zero_forward``); signed estimates averaged
    (``signed``); the sum divided by L (``divisor="L"``)."""
    z_name = get_act_name("z", layer)
    with torch.no_grad():
        _, clean = model.run_with_cache(task.clean_tokens, names_filter=z_name)
    n_layers = model.cfg.n_layers
    estimates = []
    for drop in range(n_layers):
        if from_own_layer and drop == layer and not zero_forward:  # no path left: no gradient
            estimates.append(torch.zeros(model.cfg.n_heads, dtype=clean[z_name].dtype))
            continue
        cut = _zeroed if zero_forward else _detached
        hooks = [(get_act_name(name, drop), cut) for name in dropped] if drop > layer else []
        z_r, grad = corrupted_gradient(model, task, z_name, hooks=hooks)
        estimates.append((grad * (clean[z_name] - z_r)).sum((0, 1, 3)))
    stacked = torch.stack(estimates)
    total = stacked.sum(0).abs() if signed else stacked.abs().sum(0)
    return total / (n_layers if divisor == "L" else n_layers - 1)


def _detached(act: Tensor, hook) -> Tensor:
    """The same value, no gradient through it (GradDrop's drop)."""
    return act.detach()


def _zeroed(act: Tensor, hook) -> Tensor:
    """Zero: the output removed from the forward pass (a mistake)."""
    return torch.zeros_like(act)


def _graddrop_passed(r: Result) -> str:
    model, task = r.ctx.model, r.ctx.task
    layer = r.cases[0].args[2]
    first = atp(model, task, components(model, kind="head_out", layers=[layer])).values.abs()
    got = r.got[0]
    moved = int((got.argsort(descending=True) != first.argsort(descending=True)).sum())
    return (
        f"GradDrop of the heads of layers {', '.join(str(c.args[2]) for c in r.cases)} as "
        f"hu.atp_star (largest difference {r.diff:.1e}); in layer {layer} it reorders {moved} "
        f"of {len(got)} heads against |AtP|"
    )


GRADDROP_HEADS = Exercise(
    name="graddrop_heads",
    notebook="02",
    summary="AtP*'s GradDrop of every head output of the first and the last layer equals "
    "hu.atp_star's graddrop.",
    reference=graddrop_heads_reference,
    uses="hu.atp_star",
    what="GradDrop magnitudes",
    cases=lambda ctx: [
        # layer 0: every later layer dropped in turn; the last: none (GradDrop = L/(L-1) |AtP|)
        Case(f"layer {layer}", (ctx.model, ctx.task, layer))
        for layer in ctx.end_layers
    ],
    prompt_hints=True,
    mistakes=(
        Mistake(
            "the forward pass changed: zeroing a layer's output removes its contribution "
            "from every later activation. GradDrop keeps the forward pass and drops only the "
            "gradient through that output: a hook returning x.detach()",
            wrong=partial(_graddrop_by_hand, zero_forward=True),
        ),
        Mistake(
            "the gradient was dropped through the component's own layer as well: its head "
            "output reaches the metric only through that layer's attn_out, so the estimate "
            "vanishes. Layers at or before the component's own count with plain AtP",
            wrong=partial(_graddrop_by_hand, from_own_layer=True),
        ),
        Mistake(
            "only the attention output was dropped: GradDrop drops a layer's whole residual "
            "contribution, hook_attn_out and hook_mlp_out",
            wrong=partial(_graddrop_by_hand, dropped=("attn_out",)),
        ),
        Mistake(
            "the signed estimates were summed before the absolute value: paths that cancel "
            "would cancel again. Sum the magnitudes, |AtP without layer l|, over l",
            wrong=partial(_graddrop_by_hand, signed=True),
        ),
        Mistake(
            "divided by L: the sum over the L layers is divided by L - 1 (Kramar et al.'s "
            "normalisation, under which a component that no dropped layer touches scores "
            "L/(L-1) |AtP|)",
            wrong=partial(_graddrop_by_hand, divisor="L"),
        ),
    ),
    passed=_graddrop_passed,
)

EXERCISES = (ATP_OUT_QUERY, GRADDROP_HEADS)
