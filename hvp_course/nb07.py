"""Exercises of notebook 07, *Screen, flag, fix*: Spearman's rank correlation (the accuracy
every table of the notebook reports), the flag rule of Screen-Flag-Fix, and its fix step with
exact activation patching, a budget and the forward passes it spends.

The references are the package's :func:`hvp_utils.spearman`, :func:`hvp_utils.flag_reasons`
and :func:`hvp_utils.screen_flag_fix` (``fix="patch"``). The checkers also compare with
independent computations: Spearman from pandas' average ranks and NumPy's correlation, the
flags with the heads that ``hu.screen_flag_fix`` actually fixed, the fixed values with that
run's values and with activation patching of every head. Small constructed cases (ties, a
curved monotone relation, effects near the threshold on both sides, a sign change that the
score does not catch) expose the mistakes that the model's numbers might not.

A check runs on the notebook's own Screen-Flag-Fix run of the heads when it is passed
(``screen=``, an ``hu.screen_flag_fix`` result on every head, with ``tau=`` and ``fraction=``
as it was run) and on its activation patching of the heads (``truth=``); otherwise it computes
both on the small cached task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from hvp_utils.analysis.reliability import flag_reasons
from hvp_utils.analysis.screen_flag_fix import screen_flag_fix, within_budget
from hvp_utils.core.components import Component
from hvp_utils.core.metrics import pearson
from hvp_utils.core.metrics import spearman as package_spearman
from hvp_utils.core.results import Attribution
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching, atp
from hvp_utils.exercises.framework import (
    SHOW_ENTRIES,
    Context,
    ExerciseFailed,
    as_values,
    call,
    exercise,
    expect_close,
    scalar,
    shape_problem,
)

#: Screen-Flag-Fix's defaults (``hu.screen_flag_fix``): the score threshold, the circuit's
#: fraction of the largest |AtP| and the margin of the Lagrange interval (M2_hat = margin |g''|).
DEFAULT_TAU, DEFAULT_FRACTION, MARGIN = 0.3, 0.1, 2.0


def _screen(ctx: Context) -> Attribution:
    """The Screen-Flag-Fix (patch) run of every head: the notebook's (``screen=``) or one on
    the cached task, with ``extras`` ``screen`` (AtP), ``curvature`` (g'') and ``flagged``."""
    given = ctx.extra.get("screen")
    names = [c.name for c in ctx.heads]
    if given is not None:
        if list(given.names) != names or "curvature" not in given.extras:
            raise ValueError("screen= must be an hu.screen_flag_fix result on every head_out")
        return given
    return ctx.cached(
        "nb07_screen",
        lambda: screen_flag_fix(
            ctx.model, ctx.task, ctx.heads, fix="patch", tau=_tau(ctx), fraction=_fraction(ctx)
        ),
    )


def _truth(ctx: Context) -> Tensor:
    """Activation patching of every head: the notebook's (``truth=``) or the context's."""
    given = ctx.extra.get("truth")
    if given is not None:
        if list(given.names) != [c.name for c in ctx.heads]:
            raise ValueError("truth= must be hu.activation_patching of every head_out")
        return given.values.detach().double().cpu()
    return ctx.head_ap().values.detach().double().cpu()


def _tau(ctx: Context) -> float:
    return float(ctx.extra.get("tau", DEFAULT_TAU))


def _fraction(ctx: Context) -> float:
    return float(ctx.extra.get("fraction", DEFAULT_FRACTION))


def _clone(x: Tensor) -> Tensor:
    return x.detach().clone()


# --------------------------------------------------------------------------------------------
# 1. Spearman's rank correlation


def spearman_reference(x: Tensor, y: Tensor) -> float:
    """Spearman's rank correlation, average ranks for ties (``hu.spearman``)."""
    return package_spearman(x, y)


def _spearman_pandas(x: Tensor, y: Tensor) -> float:
    """The same from pandas' average ranks and NumPy's correlation (independent)."""
    rx = pd.Series(x.double().numpy()).rank().to_numpy()
    ry = pd.Series(y.double().numpy()).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1])


def _ordinal_ranks(v: Tensor) -> Tensor:
    """Ranks 0..n-1 by position in the sorted order (ties broken by that order)."""
    return v.argsort(stable=True).argsort().double()


def _spearman_ordinal(x: Tensor, y: Tensor) -> float:
    return pearson(_ordinal_ranks(x), _ordinal_ranks(y))


def _spearman_argsort_once(x: Tensor, y: Tensor) -> float:
    return pearson(x.argsort().double(), y.argsort().double())


def _spearman_abs(x: Tensor, y: Tensor) -> float:
    return package_spearman(x.abs(), y.abs())


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


@exercise(
    "spearman",
    notebook="07",
    reference=spearman_reference,
    uses="hu.spearman",
    mistakes={
        "Pearson of the values": (pearson, "Pearson"),
        "ranks of |x|": (_spearman_abs, "signed"),
        "argsort once": (_spearman_argsort_once, "argsort().argsort()"),
        "ties not averaged": (_spearman_ordinal, "tied values"),
    },
)
def check_spearman(fn, ctx: Context) -> str:
    """Spearman's rho of constructed pairs (signed, curved, tied) and of AtP against AP on
    every head equals ``hu.spearman`` (and pandas' average ranks)."""
    __tracebackhide__ = True
    pairs = {
        name: (torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
        for name, (x, y) in SPEARMAN_CASES.items()
    }
    first = ctx.cached("nb07_atp_heads", lambda: atp(ctx.model, ctx.task, ctx.heads).values)
    pairs["AtP against AP, every head"] = (first.detach().double().cpu(), _truth(ctx))
    labels = list(pairs)
    got = torch.stack(
        [
            scalar(call(fn, _clone(x), _clone(y), name="spearman"), f"rho of {label}")
            for label, (x, y) in pairs.items()
        ]
    )
    expected = torch.tensor(
        [spearman_reference(x, y) for x, y in pairs.values()], dtype=torch.float64
    )
    independent = torch.tensor(
        [_spearman_pandas(x, y) for x, y in pairs.values()], dtype=torch.float64
    )
    gap = float((expected - independent).abs().max())
    others = [i for i, label in enumerate(labels) if label != TIES_CASE]
    tie = labels.index(TIES_CASE)
    near = (got - expected).abs() <= ctx.rtol * (1 + expected.abs())
    if bool(near[others].all()) and not bool(near[tie]):
        x, y = pairs[TIES_CASE]
        raise ExerciseFailed(
            f"rho is right without ties but not on x = {x.tolist()}, y = {y.tolist()}: tied "
            "values share the mean of the ranks they occupy (the ranks of [5, 1, 5] are "
            f"[2.5, 1, 2.5]); expected {float(expected[tie]):+.6f}, got {float(got[tie]):+.6f}"
        )

    def of(variant: Callable) -> Callable[[], Tensor]:
        return lambda: torch.tensor([variant(x, y) for x, y in pairs.values()], dtype=torch.float64)

    diff = expect_close(
        got,
        expected,
        what="rho",
        rtol=ctx.rtol,
        labels=labels,
        known={
            "that is Pearson's correlation of the values themselves; Spearman's is Pearson's "
            "of their ranks (a curved but monotone relation has Spearman 1)": of(pearson),
            "you ranked |x| and |y|: rank the signed values, as hu.compare does (the "
            "circuit's top-k is what ranks by |effect|)": of(_spearman_abs),
            "x.argsort() is the order (the index of the smallest value first), not the ranks: "
            "the rank of x[i] is where i sits in that order, x.argsort().argsort()": of(
                _spearman_argsort_once
            ),
        },
        sign_hint="rho is positive when x and y increase together",
    )
    return (
        f"rho of {len(labels)} pairs as hu.spearman (largest difference {diff:.1e}; pandas' "
        f"average ranks agree to {gap:.1e})"
    )


# --------------------------------------------------------------------------------------------
# 2. The flag rule


def flag_reference(
    first: Tensor, second: Tensor, tau: float, threshold: float, margin: float = MARGIN
) -> Tensor:
    """Screen-Flag-Fix's flags (``hu.flag_reasons(..., max_second=margin |g''|)["flags"]``)."""
    return flag_reasons(
        first, second, tau=tau, max_second=margin * second.abs(), threshold=threshold
    )["flags"]


def _flag_parts(first, second, tau, threshold, margin, *, halve=True, half_width=None):
    """Score, sign and threshold reasons, with the switches the mistakes below flip."""
    half = (second / 2).abs() if halve else second.abs()
    score = half / (first.abs() + half + 1e-12) > tau
    sign = first * (first + second / 2) < 0
    width = margin * second.abs() / 2 if half_width is None else half_width
    lower, upper = first - width, first + width
    crosses_plus = (lower < threshold) & (upper > threshold)
    crosses_minus = (lower < -threshold) & (upper > -threshold)
    return score, sign, crosses_plus, crosses_minus


def _flag_no_threshold(first, second, tau, threshold, margin=MARGIN):
    score, sign, _, _ = _flag_parts(first, second, tau, threshold, margin)
    return score | sign


def _flag_plus_only(first, second, tau, threshold, margin=MARGIN):
    score, sign, plus, _ = _flag_parts(first, second, tau, threshold, margin)
    return score | sign | plus


def _flag_slope_against_curvature(first, second, tau, threshold, margin=MARGIN):
    score, _, plus, minus = _flag_parts(first, second, tau, threshold, margin)
    return score | (first * second < 0) | plus | minus


def _flag_not_halved(first, second, tau, threshold, margin=MARGIN):
    score, sign, plus, minus = _flag_parts(first, second, tau, threshold, margin, halve=False)
    return score | sign | plus | minus


def _flag_full_width(first, second, tau, threshold, margin=MARGIN):
    width = margin * second.abs()
    score, sign, plus, minus = _flag_parts(first, second, tau, threshold, margin, half_width=width)
    return score | sign | plus | minus


def _flag_no_margin(first, second, tau, threshold, margin=MARGIN):
    width = second.abs() / 2
    score, sign, plus, minus = _flag_parts(first, second, tau, threshold, margin, half_width=width)
    return score | sign | plus | minus


def _flag_abs_sign(first, second, tau, threshold, margin=MARGIN):
    score, _, plus, minus = _flag_parts(first, second, tau, threshold, margin)
    return score | (first.abs() * (first.abs() + second / 2) < 0) | plus | minus


#: Constructed screens: (tau, threshold, [(g', g''), ...]). The first holds a component flagged
#: by its score only, one just under tau unless g'' is left unhalved, a slope against the
#: curvature that flips nothing, components whose interval crosses +threshold or -threshold,
#: one that crosses only with the margin and one that crosses only with the full width; the
#: second (tau above 1/2, where the score cannot see a sign change) sign changes of both signs.
FLAG_CASES = {
    "constructed screen 1": (
        0.3,
        0.5,
        [
            (2.0, 0.2),
            (1.0, 1.5),
            (3.2, 2.2),
            (2.0, -0.4),
            (0.45, 0.1),
            (-0.45, 0.1),
            (0.7, 0.28),
            (1.0, 0.3),
        ],
    ),
    "constructed screen 2": (0.6, 5.0, [(1.0, -2.4), (-1.0, 2.4), (1.0, 2.4), (2.0, -0.5)]),
}

#: Known slips of the flag rule: message -> the wrong rule.
FLAG_MISTAKES = {
    "the third reason is missing: flag also the components whose Lagrange interval g' -+ "
    "margin |g''| / 2 straddles the threshold (it holds effects both above and below it), "
    "so that a component near the circuit's cut is checked even when its score is small": (
        _flag_no_threshold
    ),
    "only the crossing of +threshold is tested: a negative effect whose interval crosses "
    "-threshold is as uncertain; test both -threshold and +threshold (the circuit's cut is "
    "on |effect|)": _flag_plus_only,
    "the sign reason is g' (g' + g''/2) < 0, first order against second order, not "
    "g' g'' < 0: a curvature against the slope is common and only matters once the "
    "second-order estimate g' + g''/2 has the other sign": _flag_slope_against_curvature,
    "the reliability score halves g'': r = |g''/2| / (|g'| + |g''/2|), since the "
    "second-order Taylor term is g''/2": _flag_not_halved,
    "the Lagrange interval is g' -+ M2_hat / 2 with M2_hat = margin |g''| (the remainder "
    "is g''(xi)/2): its half-width is margin |g''| / 2, not margin |g''|": _flag_full_width,
    "M2_hat = margin * |g''(0)|: the screen samples g'' at t = 0 only, and the margin widens "
    "that one sample into an estimate of max |g''| on [0, 1]; the half-width is "
    "margin |g''| / 2": _flag_no_margin,
    "the sign reason needs the signed g': with |g'| in g' (g' + g''/2) < 0 a negative "
    "effect whose second-order estimate turns positive is never flagged": _flag_abs_sign,
}


def _flag_cases(ctx: Context) -> list[tuple[str, list[str], Tensor, Tensor, float, float]]:
    """(label, entry names, g', g'', tau, threshold) of every case the checks use."""
    cases = []
    for label, (tau, threshold, pairs) in FLAG_CASES.items():
        first = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
        second = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
        names = [f"g'={a:g}, g''={b:g} (tau {tau:g}, threshold {threshold:g})" for a, b in pairs]
        cases.append((label, names, first, second, tau, threshold))
    sff = _screen(ctx)
    first = sff.extras["screen"].detach().double().cpu()
    second = sff.extras["curvature"].detach().double().cpu()
    threshold = _fraction(ctx) * float(first.abs().max())
    names = [c.name for c in ctx.heads]
    cases.append(("the heads' screen", names, first, second, _tau(ctx), threshold))
    return cases


def _as_flags(got, n: int, what: str) -> Tensor:
    """The learner's flags as a bool tensor [n], or a failure saying why not."""
    __tracebackhide__ = True
    values = as_values(got, what)
    problem = shape_problem(values, torch.zeros(n), ("component",))
    if problem:
        raise ExerciseFailed(f"{what}: {problem}")
    values = values.reshape(n)
    if not bool(((values == 0) | (values == 1)).all()):
        raise ExerciseFailed(
            f"{what} holds values other than True/False (e.g. {float(values.max()):.4g}): "
            "return one boolean per component, True where it is flagged (not the scores)"
        )
    return values.bool()


def _why(first: Tensor, second: Tensor, tau: float, threshold: float, i: int) -> str:
    reasons = flag_reasons(
        first, second, tau=tau, max_second=MARGIN * second.abs(), threshold=threshold
    )
    r = float(reasons["scores"][i])
    half = MARGIN * float(second[i].abs()) / 2
    lo, hi = float(first[i]) - half, float(first[i]) + half
    on = [
        text
        for key, text in (
            ("flag_score", f"r = {r:.3g} > tau"),
            ("flag_sign", "g' and g' + g''/2 differ in sign"),
            ("flag_threshold", f"[{lo:.3g}, {hi:.3g}] straddles -+{threshold:.3g}"),
        )
        if bool(reasons[key][i])
    ]
    return "; ".join(on) if on else f"no reason holds (r = {r:.3g}, interval [{lo:.3g}, {hi:.3g}])"


@exercise(
    "flag",
    notebook="07",
    reference=flag_reference,
    uses="hu.flag_reasons",
    mistakes={
        "no threshold reason": (_flag_no_threshold, "third reason is missing"),
        "+threshold only": (_flag_plus_only, "-threshold"),
        "g' g'' < 0 as the sign reason": (_flag_slope_against_curvature, "not g' g'' < 0"),
        "g'' not halved in the score": (_flag_not_halved, "halves g''"),
    },
)
def check_flag(fn, ctx: Context) -> str:
    """The flags of two constructed screens and of the heads' screen equal
    ``hu.flag_reasons``; the heads' flags are the heads ``hu.screen_flag_fix`` fixed."""
    __tracebackhide__ = True
    cases = _flag_cases(ctx)
    got, expected = [], []
    for label, names, first, second, tau, threshold in cases:
        out = call(fn, _clone(first), _clone(second), tau, threshold, MARGIN, name="flag")
        got.append(_as_flags(out, len(names), f"the flags of {label}"))
        expected.append(flag_reference(first, second, tau, threshold))
    sff = _screen(ctx)
    fixed = sff.extras["flagged"].bool().cpu()
    if not torch.equal(expected[-1], fixed):
        raise ValueError(
            "screen= was run with other options than the check's tau= and fraction= (pass the "
            "ones hu.screen_flag_fix ran with, and no budget)"
        )
    wrong = [not torch.equal(g, e) for g, e in zip(got, expected, strict=True)]
    if not any(wrong):
        heads = cases[-1][1]
        return (
            f"the flags of {sum(len(c[1]) for c in cases[:-1])} constructed components and of "
            f"all {len(heads)} heads as hu.flag_reasons ({int(fixed.sum())} heads flagged, the "
            "ones hu.screen_flag_fix fixed)"
        )
    for message, rule in FLAG_MISTAKES.items():
        theirs = [
            rule(first, second, tau, threshold, MARGIN).bool()
            for _, _, first, second, tau, threshold in cases
        ]
        if all(torch.equal(g, t) for g, t in zip(got, theirs, strict=True)):
            raise ExerciseFailed(f"the flags: {message}")
    rows = []
    for (_, names, first, second, tau, threshold), g, e in zip(cases, got, expected, strict=True):
        for i in (g != e).nonzero().flatten().tolist():
            state = "flagged, but should not be" if g[i] else "not flagged, but should be"
            rows.append(f"  {names[i]}: {state} ({_why(first, second, tau, threshold, i)})")
    more = f"\n  ... {len(rows) - SHOW_ENTRIES} more" if len(rows) > SHOW_ENTRIES else ""
    raise ExerciseFailed(
        "the flags differ from the rule (flagged: r > tau, or a sign change, or an interval "
        "straddling the threshold):\n" + "\n".join(rows[:SHOW_ENTRIES]) + more
    )


# --------------------------------------------------------------------------------------------
# 3. The fix


def _chosen(flagged: Tensor, second: Tensor, budget: int | None) -> list[int]:
    """The flagged indices the fix patches: all, or the ``budget`` most curved (``|g''|``)."""
    return within_budget(flagged.bool().cpu(), second.abs().cpu(), budget, len(flagged))


def fix_reference(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    first: Tensor,
    second: Tensor,
    flagged: Tensor,
    budget: int | None = None,
) -> tuple[Tensor, int]:
    """AP on the flagged components (at most ``budget``, most curved first), AtP elsewhere,
    and one forward pass per patched component (``hu.screen_flag_fix(fix="patch")``)."""
    chosen = _chosen(flagged, second, budget)
    values = first.detach().clone().double().cpu()
    if chosen:
        values[chosen] = activation_patching(model, task, [comps[i] for i in chosen]).values
    return values, len(chosen)


def _fix_everything_kept_flagged(model, task, comps, first, second, flagged, budget=None):
    everywhere = activation_patching(model, task, comps).values
    chosen = _chosen(flagged, second, budget)
    values = first.detach().clone().double()
    values[chosen] = everywhere[chosen]
    return values, len(chosen)


def _fix_largest_atp_first(model, task, comps, first, second, flagged, budget=None):
    return fix_reference(model, task, comps, first, first, flagged, budget)


def _fix_counting_every_run(model, task, comps, first, second, flagged, budget=None):
    chosen = _chosen(flagged, second, budget)
    values = first.detach().clone().double()
    if not chosen:
        return values, 0
    patched = activation_patching(model, task, [comps[i] for i in chosen])
    values[chosen] = patched.values
    return values, patched.cost["forward"]


def _fix_second_order(model, task, comps, first, second, flagged, budget=None):
    chosen = _chosen(flagged, second, budget)
    values = first.detach().clone().double()
    values[chosen] = (first + second / 2)[chosen].double()
    return values, len(chosen)


@contextmanager
def counting_batch_passes(model: Model, n_prompts: int) -> Iterator[list[float]]:
    """Forward passes inside the block in the package's unit, one pass over the prompt batch:
    the rows reaching the last block's output divided by ``n_prompts`` (a pass over ``k``
    replicated copies of the batch counts ``k``, wherever in the model it starts)."""
    count = [0.0]
    hook = model.hook_dict[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]

    def tick(module, args, output):
        count[0] += output.shape[0] / n_prompts

    handle = hook.register_forward_hook(tick)
    try:
        yield count
    finally:
        handle.remove()


def _fix_output(got, n: int, label: str) -> tuple[Tensor, float]:
    """The learner's (values, passes), or a failure saying why not."""
    __tracebackhide__ = True
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        kind = type(got).__name__
        size = f" of {len(got)} items" if isinstance(got, (tuple, list)) else ""
        raise ExerciseFailed(
            f"{label}: return two things, (values, forward passes); got a {kind}{size}"
        )
    values = as_values(got[0], f"the values ({label})")
    problem = shape_problem(values, torch.zeros(n), ("component",))
    if problem:
        raise ExerciseFailed(f"the values ({label}): {problem}")
    passes = as_values(got[1], f"the forward passes ({label})")
    if passes.numel() != 1:
        raise ExerciseFailed(
            f"the forward passes ({label}): return one number, got shape {tuple(passes.shape)}"
        )
    return values.reshape(n), float(passes)


def _other_subset(values, first, truth, flagged, chosen, budget, rtol, label) -> None:
    """Fail saying so when ``values`` are AtP with AP on some other flagged components (at
    most ``budget``) than the most curved ones."""
    __tracebackhide__ = True
    tol = rtol * max(1.0, float(truth.abs().max()))
    at_first = (values - first).abs() <= tol
    at_truth = (values - truth).abs() <= tol
    fixed = at_truth & ~at_first
    others = fixed & ~torch.isin(torch.arange(len(values)), torch.tensor(chosen, dtype=torch.long))
    if (
        bool((at_first | at_truth).all())
        and bool(flagged[fixed].all())
        and int(fixed.sum()) <= budget
        and bool(others.any())
    ):
        raise ExerciseFailed(
            f"the values ({label}): you fixed {int(fixed.sum())} flagged components, but not "
            f"the {budget} most curved: with a budget, fix the flagged components with the "
            "largest |g''| first (where AtP's error is likely largest)"
        )


@exercise(
    "fix",
    notebook="07",
    reference=fix_reference,
    uses="hu.screen_flag_fix",
    mistakes={
        "patch every component, keep the flagged": (
            _fix_everything_kept_flagged,
            "patched every component",
        ),
        "largest |AtP| first": (_fix_largest_atp_first, "most curved"),
        "the count includes the clean and corrupted runs": (
            _fix_counting_every_run,
            "already paid",
        ),
        "the second-order estimate as the fix": (_fix_second_order, "second-order"),
    },
)
def check_fix(fn, ctx: Context) -> str:
    """On the heads' screen, with every flagged head, with a budget (twice) and with none:
    the values equal ``hu.screen_flag_fix(fix="patch")`` (AP where fixed, from patching every
    head) and the count is one forward pass per patched head, as actually spent."""
    __tracebackhide__ = True
    model, task, comps = ctx.model, ctx.task, ctx.heads
    sff = _screen(ctx)
    first = sff.extras["screen"].detach().double().cpu()
    second = sff.extras["curvature"].detach().double().cpu()
    flagged = sff.extras["flagged"].bool().cpu()
    truth = _truth(ctx)
    names = [c.name for c in comps]
    n_flagged = int(flagged.sum())
    half = max(1, n_flagged // 2)
    # a curvature that orders the flagged heads against |AtP|: the most curved is the smallest
    reverse = 1.0 / (first.abs() + 1e-12)
    cases = [
        ("every flagged head", second, None),
        (f"budget {half}", second, half),
        (f"budget {half}, the smallest |AtP| most curved", reverse, half),
        ("budget 0", second, 0),
    ]
    for label, curvature, budget in cases:
        arguments = (_clone(first), _clone(curvature), flagged.clone())
        with counting_batch_passes(model, task.n_prompts) as spent:
            got = call(fn, model, task, list(comps), *arguments, budget, name="fix")
        if not torch.equal(arguments[0], first):
            raise ExerciseFailed(
                f"{label}: your function changed `first` in place (values = first, then "
                "values[...] = ...): start from a copy, first.clone(), or the screen's AtP is "
                "overwritten"
            )
        values, passes = _fix_output(got, len(comps), label)
        chosen = _chosen(flagged, curvature, budget)
        expected = first.clone()
        expected[chosen] = truth[chosen]
        if budget is None:
            gap = float((sff.values.detach().double().cpu() - expected).abs().max())
            if gap > ctx.rtol * max(1.0, float(truth.abs().max())):
                raise ValueError(
                    f"screen= and truth= disagree by {gap:.2g} on the flagged heads: pass the "
                    "Screen-Flag-Fix (patch) run and the AP of the same heads and task"
                )
        flagged_first = [i for i in first.abs().argsort(descending=True).tolist() if flagged[i]]
        by_atp = first.clone()
        by_atp[flagged_first[:budget]] = truth[flagged_first[:budget]]
        every = first.clone()
        every[flagged] = truth[flagged]
        second_order = first.clone()
        second_order[chosen] = (first + curvature / 2)[chosen]
        known = {
            "every component holds its AP value: replace AtP on the chosen components only "
            "(the others keep the screen's AtP, that is the point of the workflow)": truth,
            "with a budget, fix the most curved flagged components first (largest |g''|, "
            "where AtP's error is likely largest), not the largest |AtP|": by_atp,
        }
        if budget is not None:
            known[
                "every flagged component was fixed: with a budget, fix only the `budget` "
                "most curved of them"
            ] = every
        known[
            "that is the second-order estimate g' + g''/2 on the chosen components: the "
            "patch fix replaces AtP by the exact AP"
        ] = second_order
        try:
            expect_close(
                values,
                expected,
                what=f"the values ({label})",
                rtol=ctx.rtol,
                labels=names,
                known=known,
                sign_hint="AP = m(corrupted run with the component patched to clean) - "
                "m(corrupted)",
            )
        except ExerciseFailed as err:
            if "values differ from the reference" in str(err) and budget is not None:
                _other_subset(values, first, truth, flagged, chosen, budget, ctx.rtol, label)
            raise
        k = len(chosen)
        if spent[0] > k + 2.5:
            raise ExerciseFailed(
                f"the values are right ({label}), but your function ran {spent[0]:.0f} forward "
                f"passes (in units of one pass over the prompt batch) to fix {k} components: "
                f"it patched every component, or patched some twice. AP of {k} components "
                f"costs {k} (plus the clean and corrupted runs, 2): patch only the chosen ones"
            )
        if passes != k:
            if passes == k + 2:
                hint = (
                    "that count includes the clean and corrupted runs that "
                    "hu.activation_patching makes for itself; in the workflow the screen "
                    "already paid for them (hu.screen_flag_fix's cost['stages']['fix'])"
                )
            elif passes == len(comps) + 2 or passes == len(comps):
                hint = "that is what AP of every component costs, not the fix"
            else:
                hint = "the fix spends one forward pass per patched component"
            raise ExerciseFailed(
                f"the forward passes ({label}): expected {k}, got {passes:g}: {hint}"
            )
    stage = sff.cost.get("stages", {}).get("fix", {}).get("forward", 0)
    return (
        f"AP on the {n_flagged} flagged heads as hu.screen_flag_fix (and on the {half} most "
        f"curved with a budget), {n_flagged} forward passes as its fix stage counts ({stage})"
    )
