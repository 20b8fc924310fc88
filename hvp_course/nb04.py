"""Exercises of notebook 04, *The second-order (HVP) correction*: ``g'(0)`` of every head of a
layer and the joint second-order term ``<delta_h, (H v)_h>`` from one Hessian-vector product
with ``v`` the sum of the heads' directions, written with plain hooks and
``torch.autograd.grad(create_graph=True)``, and the exact condition under which the
correction ``g''(0)/2`` makes AtP worse, which the learner derives in terms of two curvatures:
``g''(0)`` and its weighted average along the path, ``gbar''``.

The references are the package's :func:`hvp_utils.hvp_correction` (``mode="joint"``; the pass
line measures the cross terms against ``mode="diag"``) and the closed form
``g''(0) (g''(0) - 2 gbar'') > 0``; the pass line of the second compares the condition with
the direct comparison ``|e1 - c| > |e1|`` of the two errors.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_course.by_hand import zero_leaf_run
from hvp_course.exercise import Case, Context, Exercise, Mistake, Result, raised
from hvp_course.explain import booleans, tensor_pair
from hvp_utils.core.components import components
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching, hvp_correction

#: How many heads the first check uses.
N_CASES = 3


def atp_heads(ctx: Context) -> list[tuple[int, int]]:
    """The two heads with the largest |AtP| and the one with the largest |AtP| of the last
    layer, as (layer, head)."""
    first = ctx.head_atp().values
    chosen = [divmod(int(i), ctx.n_heads) for i in first.abs().argsort(descending=True)]
    chosen = chosen[: N_CASES - 1]
    last = ctx.n_layers - 1
    for head in first.view(ctx.n_layers, ctx.n_heads)[last].abs().argsort(descending=True):
        if (last, int(head)) not in chosen:
            return chosen + [(last, int(head))]
    return chosen


# --------------------------------------------------------------------------------------------
# 1. One HVP for every head of a layer


def joint_hvp_layer_reference(model: Model, task: PatchingTask, layer: int):
    """``(g'_h(0), <delta_h, (H v)_h>)`` of every head ``h`` of ``layer``, ``v = sum_h
    delta_h`` (``hu.hvp_correction(..., mode="joint")``'s ``first`` and ``second``)."""
    heads = components(model, kind="head_out", layers=[layer])
    est = hvp_correction(model, task, heads, mode="joint")
    return est.first, est.second


def _joint_by_hand(
    model: Model,
    task: PatchingTask,
    layer: int,
    *,
    per_head: bool = False,
    unsliced: bool = False,
    create_graph: bool = True,
    flip: bool = False,
    halve: bool = False,
) -> tuple[Tensor, Tensor]:
    """The joint HVP with plain hooks, and the slips of the mistakes below: one HVP per head
    (``per_head``: HVP diag), the whole layer's ``<v, H v>`` for every head (``unsliced``), no
    graph kept (``create_graph=False``), ``v = z_r - z_c`` (``flip``), the second term
    halved (``halve``)."""
    name = get_act_name("z", layer)
    with torch.no_grad():
        _, clean = model.run_with_cache(task.clean_tokens, names_filter=name)
    z_r, zero, metric = zero_leaf_run(model, task, name)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(metric, zero, create_graph=create_graph)
        v = (z_r - clean[name]) if flip else (clean[name] - z_r)
        first = (grad * v).sum((0, 1, 3))
        if per_head:
            second = torch.stack([_own_second(grad, zero, v, h) for h in range(v.shape[2])])
        else:
            (hv,) = torch.autograd.grad(first.sum(), zero)
            second = (hv * v).sum((0, 1, 3))
    if unsliced:
        second = second.sum().expand(len(second))
    return first.detach(), (second / 2 if halve else second).detach()


def _own_second(grad: Tensor, zero: Tensor, v: Tensor, head: int) -> Tensor:
    """``<delta_h, H delta_h>``: one HVP with the direction of head ``head`` alone."""
    delta = torch.zeros_like(v)
    delta[:, :, head] = v[:, :, head]
    (hv,) = torch.autograd.grad((grad * delta).sum(), zero, retain_graph=True)
    return (hv * delta).sum()


def _joint_passed(r: Result) -> str:
    model, task = r.ctx.model, r.ctx.task
    cross = []
    for case, (_, joint) in zip(r.cases, r.expected, strict=True):
        heads = components(model, kind="head_out", layers=[case.args[2]])
        own = hvp_correction(model, task, heads).second
        cross.append(float((joint - own).abs().max() / own.abs().max().clip(min=1e-12)))
    layers = ", ".join(str(case.args[2]) for case in r.cases)
    return (
        f"g'(0) and the joint term of every head of layers {layers} as hu.hvp_correction "
        f"(mode='joint'; largest difference {r.diff:.1e}), from one HVP per layer instead of "
        f"{model.cfg.n_heads}; the cross terms reach {max(cross):.0%} of the largest own "
        "g''(0) of a layer"
    )


JOINT_HVP_LAYER = Exercise(
    name="joint_hvp_layer",
    notebook="04",
    summary="g'(0) and <delta_h, (H v)_h> of every head of the first and the last layer, v the "
    "sum of the heads' directions, equal hu.hvp_correction(mode='joint').",
    reference=joint_hvp_layer_reference,
    uses="hu.hvp_correction",
    what="(g'(0), joint second-order term)",
    cases=lambda ctx: [
        Case(f"layer {layer}", (ctx.model, ctx.task, layer)) for layer in ctx.end_layers
    ],
    read=lambda output, case: tensor_pair(
        output, ("g'(0)", "joint term"), case.args[0].cfg.n_heads
    ),
    axes=("term", "head"),
    prompt_hints=True,
    mistakes=(
        Mistake(
            "the second torch.autograd.grad found no graph to differentiate: the first one "
            "must keep it, torch.autograd.grad(m, zero, create_graph=True), so that "
            "<grad, v> is itself a function of the zero leaf",
            wrong=partial(_joint_by_hand, create_graph=False),
            seen=raised("does not require grad", "does not have a grad_fn"),
        ),
        Mistake(
            "that is each head's own g''(0) (HVP diag), one HVP per head: the exercise spends "
            "one HVP on the whole layer, v = z_clean - z_r on every head, and reads each "
            "head's slice of H v; the difference is the cross terms",
            wrong=partial(_joint_by_hand, per_head=True),
        ),
        Mistake(
            "every head got the same number, <v, H v> of the whole layer: slice H v and v on "
            "head h before the inner product, (hv * v).sum((0, 1, 3))",
            wrong=partial(_joint_by_hand, unsliced=True),
        ),
        Mistake(
            "the second entry is halved, the correction itself; return <delta_h, (H v)_h> "
            "(the estimate adds half of it)",
            wrong=partial(_joint_by_hand, halve=True),
        ),
        Mistake(
            "g'(0) has the wrong sign and the second term the right one: v was taken as "
            "corrupted minus clean; denoising moves the corrupted activation towards the "
            "clean one, v = z_clean - z_corrupted",
            wrong=partial(_joint_by_hand, flip=True),
        ),
    ),
    passed=_joint_passed,
)


# --------------------------------------------------------------------------------------------
# 2. When the correction overshoots


def overshoots_reference(second: Tensor, mean_second: Tensor) -> Tensor:
    """``g''(0) (g''(0) - 2 gbar'') > 0``: with ``e1 = AP - AtP = gbar'' / 2`` and
    ``c = g''(0) / 2``, the corrected estimate AtP + c is further from AP than AtP
    (``|e1 - c| > |e1|``, i.e. ``c (c - 2 e1) > 0``)."""
    return second * (second - 2 * mean_second) > 0


def _overshoot_variant(
    second: Tensor, mean_second: Tensor, *, rule: str = "exact", error_factor: float = 0.5
) -> Tensor:
    """The condition with the slips of the mistakes below: AtP's error taken as
    ``error_factor * gbar''`` (the right one is 1/2), only the corrections that point away
    (``rule="away"``), or every correction larger than AtP's error (``rule="larger"``)."""
    e1, c = error_factor * mean_second, second / 2
    if rule == "away":
        return c * e1 < 0
    if rule == "larger":
        return c.abs() > e1.abs()
    return c * (c - 2 * e1) > 0


#: Synthetic (e1, c) pairs: both ways to overshoot, the helpful corrections in between, and a
#: correction that points the right way and goes between one and two times AtP's error.
SYNTHETIC_E1_C = (
    (1.0, -0.5),  # points away
    (-1.0, 0.25),  # points away
    (1.0, 2.5),  # goes more than twice as far
    (-0.5, -1.2),  # goes more than twice as far
    (0.5, 2.5),  # goes five times as far
    (1.0, 0.5),  # helps
    (-1.0, -1.0),  # exact
    (1.0, 1.5),  # between one and two times e1: still helps
    (-2.0, -3.0),  # the same, negative
    (0.25, 0.0),  # no curvature: no change
)


def _overshoot_cases(ctx: Context) -> list[Case]:
    """g''(0) and gbar'' = 2 (AP - AtP) of the MLP outputs and the heads of :func:`atp_heads`,
    then of the synthetic cases (g''(0) = 2 c, gbar'' = 2 e1)."""
    comps = components(ctx.model, kind="mlp_out") + [ctx.head(*p) for p in atp_heads(ctx)]
    ap, est = ctx.cached(
        "AP and HVP of the MLPs and three heads",
        lambda: (
            activation_patching(ctx.model, ctx.task, comps).values,
            hvp_correction(ctx.model, ctx.task, comps),
        ),
    )
    e1, c = torch.tensor(SYNTHETIC_E1_C, dtype=torch.float64).T
    labels = [c.name for c in comps] + [f"e1 = {a:+g}, c = {b:+g}" for a, b in SYNTHETIC_E1_C]
    args = (
        torch.cat([est.second.double(), 2 * c]),
        torch.cat([2 * (ap.double() - est.first.double()), 2 * e1]),
    )
    return [Case("the model and the synthetic cases", args, labels=tuple(labels))]


def _overshoots_passed(r: Result) -> str:
    second, mean_second = r.cases[0].args
    expected = r.expected[0].bool()
    e1, c = mean_second / 2, second / 2
    direct = (e1 - c).abs() > e1.abs()
    decided = ((e1 - c).abs() - e1.abs()).abs() > 1e-9 * (e1.abs() + c.abs()).clamp(min=1e-12)
    assert torch.equal(direct[decided], expected[decided]), (
        "g''(0) (g''(0) - 2 gbar'') > 0 is not |e1 - c| > |e1|"
    )
    n_model = len(expected) - len(SYNTHETIC_E1_C)
    worse = int(expected[:n_model].sum())
    return (
        f"which corrections overshoot, for {n_model} components of the model ({worse} "
        f"overshot) and {len(SYNTHETIC_E1_C)} synthetic cases, equals |AP - (AtP + c)| > "
        f"|AP - AtP|"
    )


OVERSHOOTS = Exercise(
    name="overshoots",
    notebook="04",
    summary="Which corrections overshoot, decided from g''(0) and the path's average curvature "
    "gbar'' alone, for the MLP outputs and three heads of the model and for synthetic cases of "
    "both kinds, equals |AP - (AtP + c)| > |AP - AtP|.",
    reference=overshoots_reference,
    uses="g''(0) (g''(0) - 2 gbar'') > 0",
    what="overshoots",
    cases=_overshoot_cases,
    read=lambda output, case: booleans(output, len(case.args[0]), "overshoots", strict=True),
    axes=("component",),
    boolean=True,
    mistakes=(
        Mistake(
            "that flags every correction larger than AtP's error, |c| > |e1|; a correction in "
            "AP's direction lands closer to AP as long as it goes less than twice as far: "
            "compare |e1 - c| with |e1|, e1 = gbar''/2 and c = g''(0)/2",
            wrong=partial(_overshoot_variant, rule="larger"),
        ),
        Mistake(
            "only the corrections that point away from AP (g''(0) and gbar'' of opposite "
            "signs) are flagged; one that points the right way but goes more than twice as "
            "far overshoots too",
            wrong=partial(_overshoot_variant, rule="away"),
        ),
        Mistake(
            "AtP's error was taken as gbar''; it is half of it, e1 = AP - AtP = "
            "integral of (1 - t) g''(t) dt = gbar'' / 2 (the weights 2 (1 - t) integrate to 1)",
            wrong=partial(_overshoot_variant, error_factor=1.0),
        ),
        Mistake(
            "the sign of AtP's error is flipped: e1 = AP - AtP = +gbar'' / 2 (AtP misses what "
            "the curvature adds along the path); with -gbar'' / 2 the condition flags the "
            "helpful corrections",
            wrong=partial(_overshoot_variant, error_factor=-0.5),
        ),
    ),
    passed=_overshoots_passed,
)

EXERCISES = (JOINT_HVP_LAYER, OVERSHOOTS)
