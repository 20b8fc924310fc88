"""Exercises of notebook 04, *The second-order (HVP) correction*: ``g'(0)`` and ``g''(0)`` of
one head's patch path by Pearlmutter's trick, written with plain hooks and
``torch.autograd.grad(create_graph=True)``, and the exact condition under which the
correction ``g''(0)/2`` makes AtP worse.

The references are the package's :func:`hvp_utils.hvp_correction` (``mode="diag"``) and the
closed form ``c (c - 2 e1) > 0``; the pass lines also compare with
``torch.autograd.functional.hvp`` and central finite differences of ``g'``
(:func:`hvp_utils.check_second_order`), and the condition with the direct comparison
``|e1 - c| > |e1|`` of the two errors.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_course.by_hand import head_component, zero_leaf_run
from hvp_course.exercise import Case, Context, Exercise, Mistake, Result, raised
from hvp_course.explain import booleans, items, scalar
from hvp_utils.analysis.checks import check_second_order
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
# 1. g'(0) and g''(0) of one head by the HVP trick


def hvp_head_reference(model: Model, task: PatchingTask, layer: int, head: int):
    """``(g'(0), g''(0)) = (<grad_z m, delta>, <delta, H delta>)`` of head ``L{layer}H{head}``'s
    output (``hu.hvp_correction``'s ``first`` and ``second``)."""
    est = hvp_correction(model, task, [head_component(model, layer, head)])
    return float(est.first[0]), float(est.second[0])


def _hvp_by_hand(
    model: Model,
    task: PatchingTask,
    layer: int,
    head: int,
    *,
    every_head: bool = False,
    create_graph: bool = True,
    flip: bool = False,
) -> tuple[float, float]:
    """The HVP trick with plain hooks, and the slips of the mistakes below: the direction of
    every head of the layer (``every_head``), no graph kept (``create_graph=False``) and
    ``delta = z_r - z_c`` (``flip``)."""
    name = get_act_name("z", layer)
    heads = slice(None) if every_head else [head]
    with torch.no_grad():
        _, clean = model.run_with_cache(task.clean_tokens, names_filter=name)
    z_r, zero, metric = zero_leaf_run(model, task, name)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(metric, zero, create_graph=create_graph)
        delta = torch.zeros_like(z_r)
        delta[:, :, heads] = (clean[name] - z_r)[:, :, heads]
        if flip:
            delta = -delta
        first = (grad * delta).sum()
        (hv,) = torch.autograd.grad(first, zero)
    return float(first.detach()), float((hv * delta).sum())


def _halved(model, task, layer, head):
    first, second = hvp_head_reference(model, task, layer, head)
    return first, second / 2


def _read_derivatives(output, case: Case) -> Tensor:
    """The learner's ``(g'(0), g''(0))`` as a ``[2]`` tensor, or a failure saying why not."""
    names = ("g'(0)", "g''(0)")
    pair = items(output, names, case.label)
    n_prompts = case.args[1].n_prompts
    return torch.stack(
        [
            scalar(x, f"{name} of {case.label}", n_prompts)
            for x, name in zip(pair, names, strict=True)
        ]
    )


def _hvp_head_passed(r: Result) -> str:
    model, task = r.ctx.model, r.ctx.task
    heads = [head_component(model, *case.args[2:]) for case in r.cases]
    diag = hvp_correction(model, task, heads)
    table = check_second_order(model, task, heads, diag)
    independent = max(
        float(
            ((table["g2 (ours)"] - table[column]).abs() / table[column].abs().clip(lower=1.0)).max()
        )
        for column in ("g2 (autograd.functional.hvp)", "g2 (finite differences)")
    )
    return (
        f"g'(0) and g''(0) of {', '.join(c.name for c in heads)} as hu.hvp_correction (largest "
        f"difference {r.diff:.1e}); torch.autograd.functional.hvp and finite differences of g' "
        f"agree to {independent:.0e}"
    )


HVP_HEAD = Exercise(
    name="hvp_head",
    notebook="04",
    summary="g'(0) and g''(0) of three heads' outputs (the two largest |AtP| and the largest "
    "of the last layer) equal hu.hvp_correction's, which torch.autograd.functional.hvp and "
    "finite differences confirm.",
    reference=hvp_head_reference,
    uses="hu.hvp_correction",
    what="(g'(0), g''(0))",
    cases=lambda ctx: [
        Case(
            f"L{layer}H{head}",
            (ctx.model, ctx.task, layer, head),
            labels=(f"g'(0) of L{layer}H{head}", f"g''(0) of L{layer}H{head}"),
        )
        for layer, head in atp_heads(ctx)
    ],
    read=_read_derivatives,
    prompt_hints=True,
    mistakes=(
        Mistake(
            "the second torch.autograd.grad found no graph to differentiate: the first one "
            "must keep it, torch.autograd.grad(m, zero, create_graph=True), so that "
            "<grad, delta> is itself a function of the zero leaf",
            wrong=partial(_hvp_by_hand, create_graph=False),
            seen=raised("does not require grad", "does not have a grad_fn"),
        ),
        Mistake(
            "the direction covers every head of the layer: delta is z_clean - z_corrupted on "
            "z[:, :, head] only, zero for the other heads (in the gradient's inner product "
            "and in the HVP's)",
            wrong=partial(_hvp_by_hand, every_head=True),
        ),
        Mistake(
            "the second entry is g''(0)/2, the correction itself; return g''(0) = <delta, H "
            "delta> (the notebook halves it)",
            wrong=_halved,
        ),
        Mistake(
            "g'(0) has the wrong sign and g''(0) the right one: delta was taken as corrupted "
            "minus clean; denoising moves the corrupted activation towards the clean one, "
            "delta = z_clean - z_corrupted (clean minus corrupted)",
            wrong=partial(_hvp_by_hand, flip=True),
        ),
    ),
    passed=_hvp_head_passed,
)


# --------------------------------------------------------------------------------------------
# 2. When the correction overshoots


def overshoots_reference(ap: Tensor, atp: Tensor, second: Tensor) -> Tensor:
    """``c (c - 2 e1) > 0`` with ``e1 = AP - AtP`` and ``c = g''(0)/2``: the corrected
    estimate AtP + c is further from AP than AtP."""
    e1, c = ap - atp, second / 2
    return c * (c - 2 * e1) > 0


def _overshoot_variant(ap, atp, second, *, halve=True, rule="exact", e1_sign=1.0) -> Tensor:
    e1, c = e1_sign * (ap - atp), (second / 2 if halve else second)
    if rule == "away":
        return c * e1 < 0
    return c * (c - 2 * e1) > 0


#: Synthetic (e1, c) pairs: both ways to overshoot, the helpful corrections in between, and a
#: correction that points the right way and goes between one and two times AtP's error.
SYNTHETIC_E1_C = (
    (1.0, -0.5),  # points away
    (-1.0, 0.25),  # points away
    (1.0, 2.5),  # goes more than twice as far
    (-0.5, -1.2),  # goes more than twice as far
    (1.0, 0.5),  # helps
    (-1.0, -1.0),  # exact
    (1.0, 1.5),  # between one and two times e1: still helps
    (-2.0, -3.0),  # the same, negative
    (0.25, 0.0),  # no curvature: no change
)


def _overshoot_cases(ctx: Context) -> list[Case]:
    """AP, AtP and g''(0) of the MLP outputs and the heads of :func:`atp_heads`, then of the
    synthetic cases (AtP = 1 for each, AP = 1 + e1, g'' = 2 c)."""
    comps = components(ctx.model, kind="mlp_out") + [ctx.head(*p) for p in atp_heads(ctx)]
    ap, est = ctx.cached(
        "AP and HVP of the MLPs and three heads",
        lambda: (
            activation_patching(ctx.model, ctx.task, comps).values,
            hvp_correction(ctx.model, ctx.task, comps),
        ),
    )
    e1, c = torch.tensor(SYNTHETIC_E1_C, dtype=torch.float64).T
    ones = torch.ones_like(e1)
    labels = [c.name for c in comps] + [f"e1 = {a:+g}, c = {b:+g}" for a, b in SYNTHETIC_E1_C]
    args = (
        torch.cat([ap.double(), ones + e1]),
        torch.cat([est.first.double(), ones]),
        torch.cat([est.second.double(), 2 * c]),
    )
    return [Case("the model and the synthetic cases", args, labels=tuple(labels))]


def _overshoots_passed(r: Result) -> str:
    ap, first, second = r.cases[0].args
    expected = r.expected[0].bool()
    e1, c = ap - first, second / 2
    direct = (e1 - c).abs() > e1.abs()
    decided = ((e1 - c).abs() - e1.abs()).abs() > 1e-9 * (e1.abs() + c.abs()).clamp(min=1e-12)
    assert torch.equal(direct[decided], expected[decided]), (
        "c (c - 2 e1) > 0 is not |e1 - c| > |e1|"
    )
    n_model = len(expected) - len(SYNTHETIC_E1_C)
    worse = int(expected[:n_model].sum())
    return (
        f"the overshoot condition of {n_model} components of the model ({worse} overshot) and "
        f"{len(SYNTHETIC_E1_C)} synthetic cases equals |e1 - c| > |e1|"
    )


OVERSHOOTS = Exercise(
    name="overshoots",
    notebook="04",
    summary="Which corrections overshoot, for the MLP outputs and three heads of the model and "
    "for synthetic cases of both kinds, equals |e1 - c| > |e1| (c (c - 2 e1) > 0).",
    reference=overshoots_reference,
    uses="c (c - 2 e1) > 0",
    what="overshoots",
    cases=_overshoot_cases,
    read=lambda output, case: booleans(output, len(case.args[0]), "overshoots", strict=True),
    axes=("component",),
    boolean=True,
    mistakes=(
        Mistake(
            "that flags every correction that goes further than AtP's error, |c| > |e1| (the "
            "same as testing with c = g''(0) instead of c = g''(0)/2); a correction in AP's "
            "direction lands closer to AP as long as |c| < 2 |e1|, less than twice AtP's "
            "error: test c (c - 2 e1) > 0 with c = g''(0)/2",
            wrong=partial(_overshoot_variant, halve=False),
        ),
        Mistake(
            "only the corrections that point away from AP (c e1 < 0) are flagged; one that "
            "points the right way but goes more than twice as far (|c| > 2 |e1|) overshoots "
            "too: test c (c - 2 e1) > 0",
            wrong=partial(_overshoot_variant, rule="away"),
        ),
        Mistake(
            "e1 = AP - AtP, AtP's error (what AtP misses); with AtP - AP the condition becomes "
            "c (c + 2 e1) > 0, the wrong side",
            wrong=partial(_overshoot_variant, e1_sign=-1.0),
        ),
    ),
    passed=_overshoots_passed,
)

EXERCISES = (HVP_HEAD, OVERSHOOTS)
