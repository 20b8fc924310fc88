"""Exercises of notebook 04, *The second-order (HVP) correction*: ``g'(0)`` and ``g''(0)`` of
one head's patch path by Pearlmutter's trick, written with plain hooks and
``torch.autograd.grad(create_graph=True)``, and the exact condition under which the
correction ``g''(0)/2`` makes AtP worse.

The references are the package's :func:`hvp_utils.hvp_correction` (``mode="diag"``); the
first checker also compares with ``torch.autograd.functional.hvp`` and central finite
differences of ``g'`` (:func:`hvp_utils.check_second_order`), the second with the direct
comparison ``|e1 - c| > |e1|`` of the two errors and with synthetic cases that separate the
two ways to overshoot.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_utils.analysis.checks import check_second_order
from hvp_utils.core.components import Component, components
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching, atp, hvp_correction
from hvp_utils.exercises.framework import (
    Context,
    ExerciseFailed,
    as_values,
    call,
    exercise,
    expect_close,
    scalar,
    shape_problem,
    zero_leaf_run,
)

#: How many heads the first check uses.
N_CASES = 3


def _cases(ctx: Context) -> list[tuple[int, int]]:
    """The two heads with the largest |AtP| and the one with the largest |AtP| of the last
    layer, as (layer, head)."""

    def pick():
        first = atp(ctx.model, ctx.task, ctx.heads).values
        chosen = [divmod(int(i), ctx.n_heads) for i in first.abs().argsort(descending=True)]
        chosen = chosen[: N_CASES - 1]
        last = ctx.n_layers - 1
        for head in first.view(ctx.n_layers, ctx.n_heads)[last].abs().argsort(descending=True):
            if (last, int(head)) not in chosen:
                return chosen + [(last, int(head))]
        return chosen

    return ctx.cached("nb04_cases", pick)


def _case_heads(ctx: Context) -> list[Component]:
    return [ctx.head(layer, head) for layer, head in _cases(ctx)]


def _diag(ctx: Context):
    """``hu.hvp_correction(mode="diag")`` of the heads of :func:`_cases`."""
    return ctx.cached("nb04_diag", lambda: hvp_correction(ctx.model, ctx.task, _case_heads(ctx)))


# --------------------------------------------------------------------------------------------
# 1. g'(0) and g''(0) of one head by the HVP trick


def hvp_head_reference(model: Model, task: PatchingTask, layer: int, head: int):
    """``(g'(0), g''(0)) = (<grad_z m, delta>, <delta, H delta>)`` of head ``L{layer}H{head}``'s
    output (``hu.hvp_correction``'s ``first`` and ``second``)."""
    comp = components(model, "head_out", layers=[layer])[head]
    est = hvp_correction(model, task, [comp])
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


def _no_graph(model, task, layer, head):
    return _hvp_by_hand(model, task, layer, head, create_graph=False)


def _halved(model, task, layer, head):
    first, second = hvp_head_reference(model, task, layer, head)
    return first, second / 2


def _pair_of_numbers(got, label: str, n_prompts: int) -> tuple[Tensor, Tensor]:
    """The learner's (g'(0), g''(0)) as two 0-d tensors, or a failure saying why not."""
    __tracebackhide__ = True
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        kind = type(got).__name__
        size = f" of {len(got)} items" if isinstance(got, (tuple, list)) else ""
        raise ExerciseFailed(
            f"return two numbers, (g'(0), g''(0)), for {label}; got a {kind}{size}"
        )
    return tuple(
        scalar(x, f"{name} of {label}", n_prompts)
        for x, name in zip(got, ("g'(0)", "g''(0)"), strict=True)
    )


@exercise(
    "hvp_head",
    notebook="04",
    reference=hvp_head_reference,
    uses="hu.hvp_correction",
    mistakes={
        "no create_graph": (_no_graph, "create_graph=True"),
        "every head of the layer": (
            lambda model, task, layer, head: _hvp_by_hand(
                model, task, layer, head, every_head=True
            ),
            "every head of the layer",
        ),
        "g''(0)/2": (_halved, "g''(0)/2"),
        "delta = corrupted - clean": (
            lambda model, task, layer, head: _hvp_by_hand(model, task, layer, head, flip=True),
            "clean minus corrupted",
        ),
    },
)
def check_hvp_head(fn, ctx: Context) -> str:
    """g'(0) and g''(0) of three heads' outputs (the two largest |AtP| and the largest of the
    last layer) equal ``hu.hvp_correction``'s, which ``torch.autograd.functional.hvp`` and
    finite differences confirm."""
    __tracebackhide__ = True
    model, task = ctx.model, ctx.task
    cases = _cases(ctx)
    heads = _case_heads(ctx)
    labels = [c.name for c in heads]
    got = []
    for (layer, head), label in zip(cases, labels, strict=True):
        try:
            pair = call(fn, model, task, layer, head, name="hvp_head")
        except ExerciseFailed as err:
            text = str(err.__cause__ or err)
            if "does not require grad" in text or "does not have a grad_fn" in text:
                raise ExerciseFailed(
                    "the second torch.autograd.grad found no graph to differentiate: the "
                    "first one must keep it, torch.autograd.grad(m, zero, create_graph=True), "
                    "so that <grad, delta> is itself a function of the zero leaf"
                ) from err
            raise
        got.append(torch.stack(_pair_of_numbers(pair, label, task.n_prompts)))
    got = torch.stack(got).T  # [2, cases]
    diag = _diag(ctx)
    expected = torch.stack([diag.first, diag.second])
    diff = expect_close(
        got,
        expected,
        what="(g'(0), g''(0))",
        rtol=ctx.rtol,
        labels=[f"{d} of {n}" for d in ("g'(0)", "g''(0)") for n in labels],
        axes=("derivative", "component"),
        n_prompts=task.n_prompts,
        known={
            "the direction covers every head of the layer: delta is z_clean - z_corrupted on "
            "z[:, :, head] only, zero for the other heads (in the gradient's inner product "
            "and in the HVP's)": lambda: (
                torch.tensor(
                    [_hvp_by_hand(model, task, *case, every_head=True) for case in cases],
                    dtype=torch.float64,
                ).T
            ),
            "the second entry is g''(0)/2, the correction itself; return g''(0) = <delta, H "
            "delta> (the notebook halves it)": torch.stack([diag.first, diag.second / 2]),
            "g'(0) has the wrong sign and g''(0) the right one: delta was taken as corrupted "
            "minus clean; denoising moves the corrupted activation towards the clean one, "
            "delta = z_clean - z_corrupted (clean minus corrupted)": torch.stack(
                [-diag.first, diag.second]
            ),
        },
        sign_hint="delta = z_clean - z_corrupted, the gradient on the corrupted run",
    )
    table = ctx.cached("nb04_check", lambda: check_second_order(model, task, heads, diag))
    independent = max(
        float(
            ((table["g2 (ours)"] - table[column]).abs() / table[column].abs().clip(lower=1.0)).max()
        )
        for column in ("g2 (autograd.functional.hvp)", "g2 (finite differences)")
    )
    return (
        f"g'(0) and g''(0) of {', '.join(labels)} as hu.hvp_correction (largest difference "
        f"{diff:.1e}); torch.autograd.functional.hvp and finite differences of g' agree to "
        f"{independent:.0e}"
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
    if rule == "once":
        return (c * e1 < 0) | (c.abs() > e1.abs())
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


def _effects(ctx: Context) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """AP, AtP and g''(0) of the MLP outputs and the heads of :func:`_cases`, then of the
    synthetic cases (AtP = 1 for each, AP = 1 + e1, g'' = 2 c)."""

    def build():
        comps = components(ctx.model, "mlp_out") + _case_heads(ctx)
        ap = activation_patching(ctx.model, ctx.task, comps).values
        est = hvp_correction(ctx.model, ctx.task, comps)
        return ap, est.first, est.second, [c.name for c in comps]

    ap, first, second, names = ctx.cached("nb04_effects", build)
    e1, c = torch.tensor(SYNTHETIC_E1_C, dtype=torch.float64).T
    ones = torch.ones_like(e1)
    labels = names + [f"e1 = {a:+g}, c = {b:+g}" for a, b in SYNTHETIC_E1_C]
    return (
        torch.cat([ap, ones + e1]),
        torch.cat([first, ones]),
        torch.cat([second, 2 * c]),
        labels,
    )


@exercise(
    "overshoots",
    notebook="04",
    reference=overshoots_reference,
    uses="c (c - 2 e1) > 0",
    mistakes={
        "c = g''(0)": (
            lambda ap, atp, second: _overshoot_variant(ap, atp, second, halve=False),
            "c = g''(0)/2",
        ),
        "only pointing away": (
            lambda ap, atp, second: _overshoot_variant(ap, atp, second, rule="away"),
            "more than twice",
        ),
        "further than e1": (
            lambda ap, atp, second: _overshoot_variant(ap, atp, second, rule="once"),
            "less than twice AtP's error",
        ),
        "e1 = AtP - AP": (
            lambda ap, atp, second: _overshoot_variant(ap, atp, second, e1_sign=-1.0),
            "e1 = AP - AtP",
        ),
    },
)
def check_overshoots(fn, ctx: Context) -> str:
    """Which corrections overshoot, for the MLP outputs and three heads of the model and for
    synthetic cases of both kinds, equals ``|e1 - c| > |e1|`` (``c (c - 2 e1) > 0``)."""
    __tracebackhide__ = True
    ap, first, second, labels = _effects(ctx)
    got = call(fn, ap.clone(), first.clone(), second.clone(), name="overshoots")
    if not (isinstance(got, Tensor) and got.dtype == torch.bool):
        kind = got.dtype if isinstance(got, Tensor) else type(got).__name__
        if not isinstance(got, Tensor):
            as_values(got, "overshoots")  # None, a str, ...: says so
        raise ExerciseFailed(
            f"overshoots returned {kind}; return the boolean tensor of the comparison "
            "(c * (c - 2 * e1) > 0), one True/False per component"
        )
    values = as_values(got, "overshoots")
    expected = overshoots_reference(ap, first, second)
    problem = shape_problem(values, expected.double(), ("component",))
    if problem:
        raise ExerciseFailed(f"overshoots: {problem}")
    values = values.reshape(expected.shape)
    if not bool(((values == 0) | (values == 1)).all()):
        raise ExerciseFailed(
            "overshoots holds values other than True/False: return the boolean tensor of the "
            "comparison (c * (c - 2 * e1) > 0), not the product itself"
        )
    # the direct definition agrees with the derived condition (away from rounding-level ties)
    e1, c = ap - first, second / 2
    direct = (e1 - c).abs() > e1.abs()
    decided = ((e1 - c).abs() - e1.abs()).abs() > 1e-9 * (e1.abs() + c.abs()).clamp(min=1e-12)
    assert torch.equal(direct[decided], expected[decided]), (
        "the condition disagrees with |e1 - c| > |e1|"
    )

    def variant(**kw):
        return _overshoot_variant(ap, first, second, **kw).double()

    expect_close(
        values,
        expected.double(),
        what="overshoots",
        rtol=ctx.rtol,
        labels=labels,
        axes=("component",),
        known={
            "that flags every correction that goes further than AtP's error, |c| > |e1| "
            "(the same as testing with c = g''(0) instead of c = g''(0)/2); a correction "
            "in AP's direction lands closer to AP as long as |c| < 2 |e1|, less than twice "
            "AtP's error: test c (c - 2 e1) > 0 with c = g''(0)/2": variant(halve=False),
            "only the corrections that point away from AP (c e1 < 0) are flagged; one that "
            "points the right way but goes more than twice as far (|c| > 2 |e1|) overshoots "
            "too: test c (c - 2 e1) > 0": variant(rule="away"),
            "e1 = AP - AtP, AtP's error (what AtP misses); with AtP - AP the condition "
            "becomes c (c + 2 e1) > 0, the wrong side": variant(e1_sign=-1.0),
        },
        sign_hint="overshoot iff c (c - 2 e1) > 0, e1 = AP - AtP, c = g''(0)/2",
    )
    n_model = len(labels) - len(SYNTHETIC_E1_C)
    worse = int(expected[:n_model].sum())
    return (
        f"the overshoot condition of {n_model} components of the model ({worse} overshot) and "
        f"{len(SYNTHETIC_E1_C)} synthetic cases equals |e1 - c| > |e1|"
    )
