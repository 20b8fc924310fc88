"""Exercises of notebook 01, *Activation patching versus attribution patching*: AtP of
noising every MLP neuron of one layer from one gradient (where to linearise is the learner's
call), the Taylor remainder AP - AtP as an integral of the path's curvature, and Spearman's
rank correlation, the score of "ranks like AP".

Each reference is the package's own implementation (``hu.atp(direction="noising")``,
``hu.path_derivative``, ``hu.spearman``); the pass lines also compare with minus the
denoising AtP, with AP - AtP (the remainder) and with pandas' average ranks.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_course.by_hand import corrupted_gradient
from hvp_course.exercise import Call, Case, Context, Exercise, Mistake, Result, too_many_passes
from hvp_course.explain import ExerciseFailed, close, scalar
from hvp_course.nb00 import ATP_MAX_FORWARDS
from hvp_utils.analysis.checks import path_derivative, path_function
from hvp_utils.core.components import Component, components
from hvp_utils.core.metrics import pearson
from hvp_utils.core.metrics import spearman as package_spearman
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching, atp

#: Midpoint nodes of the remainder's quadrature in the check (each costs one g'').
CHECK_NODES = 3


# --------------------------------------------------------------------------------------------
# 1. AtP of noising every neuron of one layer, from one gradient


def neuron_components(model: Model, layer: int) -> list[Component]:
    """The neurons of one layer (``hook_post``)."""
    return components(model, kind="neuron", layers=[layer])


def noising_atp_neurons_reference(model: Model, task: PatchingTask, layer: int) -> Tensor:
    """``AtP[n] = <grad_post m(x_c)[..., n], post_r[..., n] - post_c[..., n]>``: the tangent
    at the clean run of the path that moves neuron ``n`` to its corrupted value
    (``hu.atp(..., direction="noising")``)."""
    return atp(model, task, neuron_components(model, layer), direction="noising").values


def _noising_by_hand(
    model: Model,
    task: PatchingTask,
    layer: int,
    *,
    hook: str = "post",
    reduce: str = "sum",
    run: str = "clean",
    sign: float = 1.0,
) -> Tensor:
    """``sign * <grad at the run, the other run's activation - the run's>`` with plain hooks,
    and the slips of the mistakes below: the gradient on the corrupted run (``run``), the
    difference reversed (``sign``), another hook (``pre``), another reduction (``final``:
    the final position only)."""
    name = get_act_name(hook, layer)
    other = task.corrupted_tokens if run == "clean" else task.clean_tokens
    with torch.no_grad():
        _, cache = model.run_with_cache(other, names_filter=name)
    base, grad = corrupted_gradient(model, task, name, run=run)
    terms = sign * grad * (cache[name] - base)  # [batch pos d_mlp]
    return terms[:, -1].sum(0) if reduce == "final" else terms.sum((0, 1))


def _noising_many_passes(model: Model, task: PatchingTask, layer: int) -> Tensor:
    for _ in range(ATP_MAX_FORWARDS + 1):
        model(task.clean_tokens)
    return noising_atp_neurons_reference(model, task, layer)


def _noising_cases(ctx: Context) -> list[Case]:
    """The notebook's neuron layer (``layer=``, default the middle one) and the last layer."""
    given = ctx.n_layers // 2 if ctx.layer is None else ctx.layer
    return [
        Case(
            f"layer {layer}",
            (ctx.model, ctx.task, layer),
            labels=tuple(c.name for c in neuron_components(ctx.model, layer)),
            max_passes=ATP_MAX_FORWARDS,
        )
        for layer in sorted({int(given), ctx.n_layers - 1})
    ]


def _noising_passed(r: Result) -> str:
    where = " and ".join(str(case.args[2]) for case in r.cases)
    most = max(call.passes for call in r.calls)
    apart = []
    for case, noising in zip(r.cases, r.expected, strict=True):
        denoising = atp(r.ctx.model, r.ctx.task, neuron_components(r.ctx.model, case.args[2]))
        gap = (noising + denoising.values).abs().max() / noising.abs().max().clip(min=1e-12)
        apart.append(float(gap))
    return (
        f"noising AtP of the {r.ctx.model.cfg.d_mlp} neurons of layer {where} as "
        f"hu.atp(direction='noising') (largest difference {r.diff:.1e}), in at most {most:g} "
        f"forward passes; minus the denoising AtP differs from it by up to {max(apart):.0%} "
        "of its largest value: the two linearise the same path at opposite ends"
    )


NOISING_ATP_NEURONS = Exercise(
    name="noising_atp_neurons",
    notebook="01",
    summary="AtP of noising every neuron of the notebook's neuron layer and of the last layer, "
    "[d_mlp], equals hu.atp(direction='noising'), in at most four forward passes each.",
    reference=noising_atp_neurons_reference,
    uses="hu.atp",
    what="noising AtP of the neurons",
    cases=_noising_cases,
    axes=("d_mlp",),
    prompt_hints=True,
    counts_passes=True,
    mistakes=(
        Mistake(
            "that is the denoising AtP, the tangent at the corrupted run of the path towards "
            "the clean activation; noising starts from the clean run and moves each neuron "
            "to its corrupted value: the gradient on the clean run, times post_corrupted - "
            "post_clean",
            wrong=partial(_noising_by_hand, run="corrupted"),
        ),
        Mistake(
            "the gradient was taken on the corrupted run: the tangent of a path belongs at "
            "its start, and the noising path starts at the clean run (zero leaf at hook_post "
            "of task.clean_tokens)",
            wrong=partial(_noising_by_hand, run="corrupted", sign=-1.0),
        ),
        Mistake(
            "wrong sign: noising moves the clean activation towards the corrupted one, delta "
            "= post_corrupted - post_clean",
            wrong=partial(_noising_by_hand, sign=-1.0),
        ),
        Mistake(
            "these are the values of the pre-activations (mlp.hook_pre); the neuron kind "
            "patches the activation after the GELU, mlp.hook_post",
            wrong=partial(_noising_by_hand, hook="pre"),
        ),
        Mistake(
            "a mean over prompts where the sum belongs: the metric's 1/n_prompts is already "
            "in the gradient, so sum the products over the batch",
            wrong=lambda model, task, layer: (
                noising_atp_neurons_reference(model, task, layer) / task.n_prompts
            ),
        ),
        Mistake(
            "that is the final position only; a neuron component covers every position: sum "
            "the products over the batch and every position",
            wrong=partial(_noising_by_hand, reduce="final"),
        ),
        Mistake(
            f"the function ran more than {ATP_MAX_FORWARDS} forward passes: a cache of the "
            "corrupted run and ONE clean run with a zero leaf added at hook_post give every "
            "neuron at once",
            wrong=_noising_many_passes,
            seen=too_many_passes,
        ),
    ),
    passed=_noising_passed,
)


# --------------------------------------------------------------------------------------------
# 2. The Taylor remainder as an integral of g''


def midpoints(n_nodes: int) -> list[float]:
    """The nodes ``t_k = (k + 1/2) / n`` of the midpoint rule on [0, 1]."""
    return [(k + 0.5) / n_nodes for k in range(n_nodes)]


def taylor_remainder_reference(g, n_nodes: int) -> float:
    """``int_0^1 (1 - t) g''(t) dt`` by the midpoint rule with ``n_nodes`` nodes, each
    ``g''(t_k)`` by autograd twice (``hu.path_derivative``)."""
    return sum((1 - t) * path_derivative(g, t=t, order=2) for t in midpoints(n_nodes)) / n_nodes


def _remainder_weighted(g, n_nodes: int, weight, nodes=None) -> float:
    nodes = midpoints(n_nodes) if nodes is None else nodes
    return sum(weight(t) * path_derivative(g, t=t, order=2) for t in nodes) / n_nodes


def _remainder_components(ctx: Context) -> list[Component]:
    """The MLP output with the largest |AP| and the head with the largest |AP|."""
    mlps = components(ctx.model, kind="mlp_out")
    mlp_ap = ctx.cached("mlp_ap", lambda: activation_patching(ctx.model, ctx.task, mlps))
    layer, head = ctx.top_heads(1)[0]
    return [mlps[int(mlp_ap.values.abs().argmax())], ctx.head(layer, head)]


def _remainder_cases(ctx: Context) -> list[Case]:
    return [
        Case(c.name, (path_function(ctx.model, ctx.task, c), CHECK_NODES))
        for c in _remainder_components(ctx)
    ]


def _remainder_passed(r: Result) -> str:
    comps = _remainder_components(r.ctx)
    ap = activation_patching(r.ctx.model, r.ctx.task, comps).values
    first = atp(r.ctx.model, r.ctx.task, comps).values
    expected = torch.stack(r.expected)
    gap = float((expected - (ap - first)).abs().max())
    return (
        f"the remainders of {', '.join(c.name for c in comps)} as hu.path_derivative's "
        f"(largest difference {r.diff:.1e}); with {CHECK_NODES} nodes they are within "
        f"{gap:.1e} of AP - AtP"
    )


TAYLOR_REMAINDER = Exercise(
    name="taylor_remainder",
    notebook="01",
    summary="int (1 - t) g''(t) dt by the midpoint rule on the paths of the largest MLP and "
    "head effects equals hu.path_derivative's, and approaches AP - AtP.",
    reference=taylor_remainder_reference,
    uses="hu.path_derivative",
    what=f"int_0^1 (1 - t) g''(t) dt with {CHECK_NODES} midpoint nodes",
    cases=_remainder_cases,
    mistakes=(
        Mistake(
            "that is the integral with weight t: the remainder of the expansion around t = 1. "
            "Expanding around t = 0 (where AtP takes its slope) weighs g''(t) by (1 - t)",
            wrong=lambda g, n: _remainder_weighted(g, n, lambda t: t),
        ),
        Mistake(
            "that is int g''(t) dt = g'(1) - g'(0), the change of the slope along the path; "
            "the remainder weighs g''(t) by (1 - t)",
            wrong=lambda g, n: _remainder_weighted(g, n, lambda t: 1.0),
        ),
        Mistake(
            "that is g''(0)/2, the second-order Taylor term at t = 0; the remainder "
            "integrates (1 - t) g''(t) over the whole path, sampled at the midpoints",
            wrong=lambda g, n: path_derivative(g, t=0.0, order=2) / 2,
        ),
        Mistake(
            "that is the sum over the nodes: multiply it by the width 1/n of each interval "
            "of the midpoint rule",
            wrong=lambda g, n: n * taylor_remainder_reference(g, n),
        ),
        Mistake(
            "the nodes are the left end points k/n; use the midpoints t_k = (k + 1/2)/n",
            wrong=lambda g, n: _remainder_weighted(
                g, n, lambda t: 1 - t, nodes=[k / n for k in range(n)]
            ),
        ),
    ),
    passed=_remainder_passed,
)


# --------------------------------------------------------------------------------------------
# 3. Spearman's rank correlation


def spearman_reference(x: Tensor, y: Tensor) -> float:
    """Spearman's rank correlation, average ranks for ties (``hu.spearman``)."""
    return package_spearman(x, y)


def _spearman_pandas(x: Tensor, y: Tensor) -> float:
    """The same from pandas' average ranks and NumPy's correlation (independent)."""
    rx = pd.Series(x.double().numpy()).rank().to_numpy()
    ry = pd.Series(y.double().numpy()).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1])


def ordinal_ranks(v: Tensor) -> Tensor:
    """Ranks 0..n-1 by position in the sorted order (ties broken by that order)."""
    return v.argsort(stable=True).argsort().double()


def _spearman_ordinal(x: Tensor, y: Tensor) -> float:
    return pearson(ordinal_ranks(x), ordinal_ranks(y))


#: Constructed pairs (x, y): signed effects whose order differs from that of |effect|, a
#: curved but monotone relation (Spearman 1, Pearson below 1) and ties in both.
SPEARMAN_CASES = {
    "signed effects": ([3.0, -1.0, 2.0, -5.0, 0.5, 4.0], [2.5, 1.0, -2.0, -4.0, 0.0, 3.0]),
    "a curved monotone relation": (
        [0.1, 0.2, 0.5, 1.0, 2.0, 5.0],
        [0.001, 0.008, 0.125, 1.0, 8.0, 125.0],
    ),
    "ties": ([1.0, 2.0, 2.0, 3.0, 0.0, 2.0], [0.5, 1.0, 3.0, 2.0, 1.0, 2.0]),
}
TIES_CASE = "ties"


def _spearman_cases(ctx: Context) -> list[Case]:
    cases = [
        Case(label, (torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)))
        for label, (x, y) in SPEARMAN_CASES.items()
    ]
    first = ctx.head_atp().values.detach().double().cpu()
    truth = ctx.head_ap().values.detach().double().cpu()
    return [*cases, Case("AtP against AP, every head", (first, truth))]


def _wrong_only_with_ties(calls: list[Call]) -> bool:
    """The learner's rho is right on every case but the one with ties."""
    wrong = []
    for call in calls:
        try:
            got = scalar(call.output, call.case.label)
        except ExerciseFailed:
            return False
        expected = torch.tensor(spearman_reference(*call.case.args), dtype=torch.float64)
        if not close(got, expected, 1e-6, 1.0):
            wrong.append(call.case.label)
    return wrong == [TIES_CASE]


def _spearman_passed(r: Result) -> str:
    independent = torch.tensor([_spearman_pandas(*c.args) for c in r.cases], dtype=torch.float64)
    gap = float((torch.stack(r.expected) - independent).abs().max())
    return (
        f"rho of {len(r.cases)} pairs as hu.spearman (largest difference {r.diff:.1e}; pandas' "
        f"average ranks agree to {gap:.1e})"
    )


SPEARMAN = Exercise(
    name="spearman",
    notebook="01",
    summary="Spearman's rho of constructed pairs (signed, curved, tied) and of AtP against AP "
    "on every head equals hu.spearman (and pandas' average ranks).",
    reference=spearman_reference,
    uses="hu.spearman",
    what="rho",
    cases=_spearman_cases,
    read=lambda output, case: scalar(output, f"rho of {case.label}"),
    mistakes=(
        Mistake(
            "that is Pearson's correlation of the values themselves; Spearman's is Pearson's "
            "of their ranks (a curved but monotone relation has Spearman 1)",
            wrong=pearson,
        ),
        Mistake(
            "you ranked |x| and |y|: rank the signed values, as hu.compare does (the "
            "circuit's top-k is what ranks by |effect|)",
            wrong=lambda x, y: package_spearman(x.abs(), y.abs()),
        ),
        Mistake(
            "x.argsort() is the order (the index of the smallest value first), not the ranks: "
            "the rank of x[i] is where i sits in that order, x.argsort().argsort()",
            wrong=lambda x, y: pearson(x.argsort().double(), y.argsort().double()),
        ),
        Mistake(
            "rho is right without ties but not on x = [1, 2, 2, 3, 0, 2]: tied values share "
            "the mean of the ranks they occupy (the ranks of [5, 1, 5] are [2.5, 1, 2.5])",
            wrong=_spearman_ordinal,
            seen=_wrong_only_with_ties,
        ),
    ),
    passed=_spearman_passed,
)


EXERCISES = (NOISING_ATP_NEURONS, TAYLOR_REMAINDER, SPEARMAN)
