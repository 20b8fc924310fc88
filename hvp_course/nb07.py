"""Exercises of notebook 07, *Screen, flag, fix*: Hutchinson's estimate of a diagonal with its
standard error (what the flag stage runs on the model, here on constructed matrices), the
margin of the flag's Lagrange interval calibrated on components whose exact effect is known,
and the fix step with exact activation patching, a budget and the forward passes it spends.

The references are closed forms (the mean and standard error of the probe terms; the smallest
margin whose intervals cover a share of the components) and :func:`hvp_utils.screen_flag_fix`
(``fix="patch"``). The pass lines also compare with independent computations: the estimates
with the exact diagonal and the closed-form spread, the margin with the interval rule itself
(at that margin the share is covered, just below it not), the fixed values with that run's
values and with activation patching of every head. Small constructed cases (a diagonal
matrix, components with g'' = 0, a tie at the interval's edge, a share no finite margin
covers) expose the mistakes that the model's numbers might not.

A check runs on the notebook's own Screen-Flag-Fix run of the heads when it is passed
(``screen=``, an ``hu.screen_flag_fix`` result on every head, with ``tau=`` and ``threshold_share=``
as it was run) and on its activation patching of the heads (``truth=``); otherwise it computes
both on the small task.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hvp_course.exercise import Call, Case, Context, Exercise, Mistake, Result, too_many_passes
from hvp_course.explain import (
    ExerciseFailed,
    as_values,
    items,
    scalar,
    shape_problem,
)
from hvp_utils.analysis.reliability import reliability_score
from hvp_utils.analysis.screen_flag_fix import DEFAULT_MARGIN, screen_flag_fix, within_budget
from hvp_utils.core.components import Component
from hvp_utils.core.results import ScreenFlagFixResult
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching

#: Screen-Flag-Fix's defaults (``hu.screen_flag_fix``): the score threshold and the circuit's
#: fraction of the largest |AtP|.
DEFAULT_TAU, DEFAULT_THRESHOLD_SHARE = 0.3, 0.1


def _tau(ctx: Context) -> float:
    return DEFAULT_TAU if ctx.tau is None else float(ctx.tau)


def _threshold_share(ctx: Context) -> float:
    return DEFAULT_THRESHOLD_SHARE if ctx.threshold_share is None else float(ctx.threshold_share)


def screen_of(ctx: Context) -> dict:
    """The Screen-Flag-Fix (patch) run of every head, the notebook's (``screen=``) or one on
    the task: its values, AtP (``screen``), g'' (``curvature``), the flags and the forward
    passes of its fix stage."""
    if ctx.screen is None:
        tau, threshold_share = _tau(ctx), _threshold_share(ctx)
        return ctx.cached(
            f"screen-flag-fix of the heads, tau {tau}, threshold_share {threshold_share}",
            lambda: _screen_columns(
                screen_flag_fix(
                    ctx.model,
                    ctx.task,
                    ctx.heads,
                    fix="patch",
                    tau=tau,
                    threshold_share=threshold_share,
                )
            ),
        )
    if list(ctx.screen.names) != [c.name for c in ctx.heads] or not isinstance(
        ctx.screen, ScreenFlagFixResult
    ):
        raise ValueError("screen= must be an hu.screen_flag_fix result on every head_out")
    return _screen_columns(ctx.screen)


def _screen_columns(run) -> dict:
    return {
        "values": run.values.detach().double().cpu(),
        "screen": run.first.detach().double().cpu(),
        "curvature": run.second.detach().double().cpu(),
        "flagged": run.fixed.bool().cpu(),
        "fix_passes": run.cost.stages["fix"].forward if "fix" in run.cost.stages else 0,
    }


def truth_of(ctx: Context) -> Tensor:
    """Activation patching of every head: the notebook's (``truth=``) or the context's."""
    truth = ctx.head_ap() if ctx.truth is None else ctx.truth
    if list(truth.names) != [c.name for c in ctx.heads]:
        raise ValueError("truth= must be hu.activation_patching of every head_out")
    return truth.values.detach().double().cpu()


# --------------------------------------------------------------------------------------------
# 1b. Hutchinson's estimate of a diagonal, with its standard error


def _probe_terms(mvp, probes: Tensor) -> Tensor:
    """One term per probe and entry, ``s_c (M s)_c``: [S, n]."""
    return torch.stack([s * mvp(s) for s in probes.double()])


def hutchinson_reference(mvp, probes: Tensor) -> tuple[Tensor, Tensor]:
    """Hutchinson's estimate of diag(M) from the S probes (rows of ``probes``, entries +-1)
    and its standard error:

        d_c = mean_s s_c (M s)_c,   se_c = std_s(s_c (M s)_c) / sqrt(S)   (std with S - 1)."""
    terms = _probe_terms(mvp, probes)
    return terms.mean(0), terms.std(0) / len(probes) ** 0.5


def _hutch_no_sign(mvp, probes):
    terms = torch.stack([mvp(s) for s in probes.double()])
    return terms.mean(0), terms.std(0) / len(probes) ** 0.5


def _hutch_sum(mvp, probes):
    terms = _probe_terms(mvp, probes)
    return terms.sum(0), terms.std(0) / len(probes) ** 0.5


def _hutch_population_std(mvp, probes):
    terms = _probe_terms(mvp, probes)
    return terms.mean(0), terms.std(0, correction=0) / len(probes) ** 0.5


def _hutch_spread_of_one_term(mvp, probes):
    terms = _probe_terms(mvp, probes)
    return terms.mean(0), terms.std(0)


def _hutch_over_s(mvp, probes):
    terms = _probe_terms(mvp, probes)
    return terms.mean(0), terms.std(0) / len(probes)


def _symmetric(n: int, seed: int, *, off_diagonal: float) -> Tensor:
    """A random symmetric n x n matrix: N(0, 1) diagonal, off-diagonal entries of that scale."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64) * off_diagonal
    m = (a + a.T) / 2
    m.diagonal().copy_(torch.randn(n, generator=g, dtype=torch.float64))
    return m


def _signs(s: int, n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (s, n), generator=g).double() * 2 - 1


#: (matrix, probes) of each case: a small matrix, a diagonal one (exact, no spread) and one of
#: the size of a model's heads with strong interactions (many probes, to compare the spread
#: with its closed form).
HUTCHINSON_CASES = {
    "a 4 x 4 matrix, 3 probes": (_symmetric(4, 0, off_diagonal=1.0), _signs(3, 4, 1)),
    "a diagonal matrix, 2 probes": (torch.diag(torch.arange(1.0, 6.0).double()), _signs(2, 5, 2)),
    "a 48 x 48 matrix, 400 probes": (_symmetric(48, 3, off_diagonal=0.5), _signs(400, 48, 4)),
}
LARGE_CASE = "a 48 x 48 matrix, 400 probes"


def _matrix_product(m: Tensor):
    """``v -> M v``: all the exercise may do with M."""
    return lambda v: m @ v


def _hutchinson_cases(ctx: Context) -> list[Case]:
    cases = []
    for label, (m, probes) in HUTCHINSON_CASES.items():
        n = m.shape[0]
        labels = (
            *[f"estimate of M[{c}, {c}]" for c in range(n)],
            *[f"standard error {c}" for c in range(n)],
        )
        cases.append(Case(label, (_matrix_product(m), probes.clone()), labels=labels))
    return cases


def _read_hutchinson(output, case: Case) -> Tensor:
    """The learner's ``(estimate, standard error)`` as one ``[2n]`` tensor."""
    __tracebackhide__ = True
    n = case.args[1].shape[1]
    estimate, error = items(output, ("estimate", "standard error"), case.label)
    parts = []
    for what, value in (("the estimate", estimate), ("the standard error", error)):
        values = as_values(value, f"{what} ({case.label})")
        problem = shape_problem(values, torch.zeros(n), ("component",))
        if problem:
            raise ExerciseFailed(f"{what} ({case.label}): {problem}")
        parts.append(values.reshape(n))
    return torch.cat(parts)


def _hutchinson_passed(r: Result) -> str:
    m, probes = HUTCHINSON_CASES[LARGE_CASE]
    estimate, error = r.expected[list(HUTCHINSON_CASES).index(LARGE_CASE)].split(m.shape[0])
    off = m - torch.diag(m.diagonal())
    closed = (off.pow(2).sum(1) / len(probes)).sqrt()  # sqrt(sum_{d != c} M_cd^2 / S)
    within = int(((estimate - m.diagonal()).abs() <= 2 * error).sum())
    ratio = float((error / closed).median())
    return (
        f"estimates and standard errors as the formula; on the 48 x 48 matrix with "
        f"{len(probes)} probes, {within} of 48 estimates lie within two standard errors of the "
        f"exact diagonal, and the standard errors are {ratio:.2f} times the closed form "
        "sqrt(sum over d != c of M_cd^2 / S) (median)"
    )


HUTCHINSON = Exercise(
    name="hutchinson",
    notebook="07",
    summary="Hutchinson's estimate of a diagonal and its standard error from given +-1 probes, "
    "on constructed symmetric matrices (a diagonal one is exact), checked against the exact "
    "diagonal and the closed-form spread.",
    reference=hutchinson_reference,
    uses="the mean of s_c (M s)_c over the probes and its standard error",
    what="the estimate and its standard error",
    cases=_hutchinson_cases,
    read=_read_hutchinson,
    mistakes=(
        Mistake(
            "(M s)_c alone averages to 0 over random signs: multiply it by the probe's own "
            "entry s_c, since E[s_c s_d] is 1 for d = c and 0 otherwise",
            wrong=_hutch_no_sign,
        ),
        Mistake("that is the sum over the probes: the estimate is their mean", wrong=_hutch_sum),
        Mistake(
            "the sample standard deviation divides by S - 1 (torch.std's default), not by S",
            wrong=_hutch_population_std,
        ),
        Mistake(
            "that is the spread of one probe's term; the mean of S independent terms has "
            "standard error std / sqrt(S)",
            wrong=_hutch_spread_of_one_term,
        ),
        Mistake(
            "divide the standard deviation by sqrt(S), not by S: the variance of a mean falls "
            "like 1/S, its standard deviation like 1/sqrt(S)",
            wrong=_hutch_over_s,
        ),
    ),
    passed=_hutchinson_passed,
)


# --------------------------------------------------------------------------------------------
# 2. Calibrating the flag's margin


def margin_needs(first: Tensor, second: Tensor, exact: Tensor) -> Tensor:
    """The smallest margin that covers each component on its own: ``2 |AP - AtP| / |g''|``;
    with ``g'' = 0`` the interval is the point AtP, covered by every margin (0) when AP equals
    AtP and by none (inf) otherwise."""
    gap, curvature = (exact - first).double().abs(), second.double().abs()
    point = torch.where(gap > 0, torch.full_like(gap, math.inf), torch.zeros_like(gap))
    return torch.where(curvature > 0, 2 * gap / curvature, point)


def smallest_covering(needs: Tensor, coverage: float) -> float:
    """The smallest margin at which at least ``coverage`` of the components are covered: the
    k-th smallest need, k the smallest count with ``k / n >= coverage`` (ties only add)."""
    ranked = needs.sort().values
    share = torch.arange(1, len(ranked) + 1, dtype=torch.float64) / len(ranked)
    return float(ranked[share >= coverage][0])


def calibrated_margin_reference(
    first: Tensor, second: Tensor, exact: Tensor, coverage: float
) -> float:
    """The smallest margin m whose Lagrange intervals ``|AP - AtP| <= m |g''| / 2`` hold at
    least ``coverage`` of the components (inf when no finite margin does)."""
    return smallest_covering(margin_needs(first, second, exact), coverage)


def _covered(first: Tensor, second: Tensor, exact: Tensor, margin: float) -> Tensor:
    """The interval rule itself, independent of the needs: AP within m |g''| / 2 of AtP (a
    point interval when g'' = 0, whatever the margin)."""
    gap, half = (exact - first).double().abs(), second.double().abs() / 2
    width = torch.where(half > 0, margin * half, torch.zeros_like(half))
    return gap <= width


def _margin_interpolated(first, second, exact, coverage):
    return float(torch.quantile(margin_needs(first, second, exact), coverage))


def _margin_no_factor_two(first, second, exact, coverage):
    return smallest_covering(margin_needs(first, second, exact) / 2, coverage)


def _margin_signed_curvature(first, second, exact, coverage):
    needs = margin_needs(first, second, exact)
    return smallest_covering(torch.where(second < 0, -needs, needs), coverage)


def _margin_signed(first, second, exact, coverage):
    needs = margin_needs(first, second, exact)
    flip = (second < 0) != (exact < first)
    return smallest_covering(torch.where(flip, -needs, needs), coverage)


def _margin_flat_zero(first, second, exact, coverage):
    needs = margin_needs(first, second, exact)
    return smallest_covering(torch.where(second == 0, torch.zeros_like(needs), needs), coverage)


def _margin_plain_division(first, second, exact, coverage):
    needs = 2 * (exact - first).double().abs() / second.double().abs()  # 0/0 is nan
    return float(needs.sort().values[math.ceil(coverage * len(needs)) - 1])


def _margin_strict(first, second, exact, coverage):
    needs = margin_needs(first, second, exact)
    for margin in needs.sort().values.tolist():
        if float((needs < margin).double().mean()) >= coverage:
            return margin
    return math.inf


def _screen(rows: list[tuple[float, float, float]]) -> tuple[Tensor, Tensor, Tensor]:
    """(first, second, exact) from rows (g', g'', the margin the component needs, with the
    sign of AP - AtP); a need of inf or 0 with g'' = 0 puts AP off AtP or on it."""
    first, second, exact = [], [], []
    for atp, curvature, need in rows:
        gap = math.copysign(1.0, need) * (0.25 if math.isinf(need) else abs(need * curvature) / 2)
        first.append(atp)
        second.append(curvature)
        exact.append(atp + gap)
    return tuple(torch.tensor(v, dtype=torch.float64) for v in (first, second, exact))


#: Three components with g'' = 0 (two with AP = AtP, one off it) and two curved ones.
FLAT_ROWS = [
    (0.5, 0.0, 0.0),
    (-0.2, 0.0, 0.0),
    (0.1, 0.0, math.inf),
    (1.0, 0.5, 1.0),
    (-0.4, -2.0, 0.4),
]
#: Constructed screens: (coverage, [(g', g'', signed need), ...]) and the answer in closed form.
#: The first has ten distinct needs, with both signs of g'' and of AP - AtP (the 9th smallest
#: need is 6, the interpolated 90% quantile 6.4); the second three components with g'' = 0 (two
#: with AP = AtP, one off it); the third the same at coverage 1 (no finite margin); the fourth
#: a tie at the edge (needs 1, 2, 2, 5: margin 2 covers three, half is asked for).
MARGIN_CASES = {
    "ten components, coverage 0.9": (
        0.9,
        [
            (0.3, 0.4, 1.0),
            (-0.1, -0.2, 3.0),
            (0.7, 1.0, -0.5),
            (-0.05, -0.5, -2.5),
            (0.2, 0.8, 1.5),
            (1.1, -1.0, -4.0),
            (-0.6, 0.25, 6.0),
            (0.05, 0.5, -2.0),
            (0.4, -0.4, 10.0),
            (-1.5, 2.0, 3.5),
        ],
        6.0,
    ),
    "g'' = 0 for three components, coverage 0.8": (
        0.8,
        FLAT_ROWS,
        1.0,
    ),
    "g'' = 0 for three components, coverage 1": (
        1.0,
        FLAT_ROWS,
        math.inf,
    ),
    "a tie at the edge, coverage 0.5": (
        0.5,
        [(0.0, 1.0, 1.0), (1.0, -1.0, -2.0), (-1.0, 0.5, 2.0), (2.0, 0.2, -5.0)],
        2.0,
    ),
}
#: The coverages asked of the heads' screen.
HEAD_COVERAGES = (0.9, 0.5)


def _margin_cases(ctx: Context) -> list[Case]:
    """The constructed screens, then the heads' screen (AtP, g'' and AP of every head) at each
    of :data:`HEAD_COVERAGES`."""
    cases = []
    for label, (coverage, rows, answer) in MARGIN_CASES.items():
        first, second, exact = _screen(rows)
        closed = calibrated_margin_reference(first, second, exact, coverage)
        if closed != answer:
            raise AssertionError(f"{label}: the closed form {answer} but the reference {closed}")
        cases.append(Case(label, (first, second, exact, coverage)))
    screen = screen_of(ctx)
    first, second, exact = screen["screen"], screen["curvature"], truth_of(ctx)
    n = len(first)
    for coverage in HEAD_COVERAGES:
        label = f"the screen of the {n} heads, coverage {coverage:g}"
        cases.append(Case(label, (first.clone(), second.clone(), exact.clone(), coverage)))
    return cases


def _margin_passed(r: Result) -> str:
    """The pass line; the reference is confirmed on every case by the interval rule itself:
    at its margin at least ``coverage`` of the components are covered, just below it fewer."""
    for case, expected in zip(r.cases, r.expected, strict=True):
        first, second, exact, coverage = case.args
        margin = float(expected)
        if math.isfinite(margin):
            share = float(_covered(first, second, exact, margin).double().mean())
            below = float(_covered(first, second, exact, margin * (1 - 1e-9)).double().mean())
            if share < coverage or (margin > 0 and below >= coverage):
                raise ValueError(f"{case.label}: margin {margin} is not the smallest covering one")
        elif float(_covered(first, second, exact, 1e300).double().mean()) >= coverage:
            raise ValueError(f"{case.label}: a finite margin covers {coverage:g}")
    head_case = r.cases[len(MARGIN_CASES)]
    first, second, exact, coverage = head_case.args
    margin = float(r.expected[len(MARGIN_CASES)])
    n = len(first)
    at_margin = int(_covered(first, second, exact, margin).sum())
    at_two = int(_covered(first, second, exact, DEFAULT_MARGIN).sum())
    return (
        f"the smallest covering margin of {len(MARGIN_CASES)} constructed screens and of the "
        f"{n} heads' screen; on the heads, margin {margin:.3g} holds the AP of {at_margin} of "
        f"{n} in their intervals (coverage {coverage:g}), margin {DEFAULT_MARGIN:g} holds {at_two}"
    )


CALIBRATED_MARGIN = Exercise(
    name="calibrated_margin",
    notebook="07",
    summary="The smallest margin whose Lagrange intervals hold the exact effect of at least a "
    "share of the components, on constructed screens (g'' = 0, ties at the edge, no finite "
    "margin) and on the heads' screen against their AP, as the closed form (and the interval "
    "rule itself).",
    reference=calibrated_margin_reference,
    uses="the smallest margin whose intervals cover the share",
    what="the margin",
    cases=_margin_cases,
    read=lambda output, case: scalar(output, f"the margin of {case.label}"),
    mistakes=(
        Mistake(
            "that is an interpolated quantile (torch.quantile): it lies between two components' "
            "needs and covers no more components than the lower one; the smallest margin that "
            "covers the share is itself one component's need, the k-th smallest with k the "
            "smallest count such that k / n >= coverage",
            wrong=_margin_interpolated,
        ),
        Mistake(
            "the margins are half what they should be: the interval's half-width is "
            "m |g''| / 2, so a component with |AP - AtP| = gap needs m = 2 gap / |g''|",
            wrong=_margin_no_factor_two,
        ),
        Mistake(
            "g'' entered with its sign: the interval AtP -+ m |g''| / 2 is symmetric, and a "
            "negative g'' gives a negative need, which every margin seems to cover; divide by "
            "|g''|",
            wrong=_margin_signed_curvature,
        ),
        Mistake(
            "the needs carry the signs of AP - AtP and of g'': the interval is symmetric, so "
            "a component needs 2 |AP - AtP| / |g''| whichever side of AtP its AP lies on",
            wrong=_margin_signed,
        ),
        Mistake(
            "a component with g''(0) = 0 has the interval [AtP, AtP], one point: every margin "
            "covers it when AP = AtP (need 0), none when AP differs (need inf, "
            "float('inf')); you gave it 0 either way",
            wrong=_margin_flat_zero,
        ),
        Mistake(
            "with g''(0) = 0 and AP = AtP, 2 |AP - AtP| / |g''| is 0/0 = nan, and sorting puts "
            "nan last: that component is covered by every margin, its need is 0",
            wrong=_margin_plain_division,
        ),
        Mistake(
            "a component whose AP lies on the edge of its interval is covered (<=, the "
            "interval is closed): at the k-th smallest need that component counts, so no "
            "larger margin is needed",
            wrong=_margin_strict,
        ),
    ),
    passed=_margin_passed,
)


# --------------------------------------------------------------------------------------------
# 3. The fix


def _chosen(flagged: Tensor, second: Tensor, budget: int | None) -> list[int]:
    """The flagged indices the fix patches: all, or the ``budget`` most curved (``|g''|``)."""
    return within_budget(flagged.bool().cpu(), second.abs().cpu(), max_fixed=budget)


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


def _fix_everywhere(model, task, comps, first, second, flagged, budget=None):
    values = activation_patching(model, task, comps).values
    return values, len(_chosen(flagged, second, budget))


def _fix_ignoring_budget(model, task, comps, first, second, flagged, budget=None):
    return fix_reference(model, task, comps, first, second, flagged, None)


def _fix_largest_atp_first(model, task, comps, first, second, flagged, budget=None):
    return fix_reference(model, task, comps, first, first, flagged, budget)


def _fix_by_score_first(model, task, comps, first, second, flagged, budget=None):
    score = reliability_score(first, second)
    return fix_reference(model, task, comps, first, score, flagged, budget)


def _fix_counting_every_run(model, task, comps, first, second, flagged, budget=None):
    values, k = fix_reference(model, task, comps, first, second, flagged, budget)
    return values, k + 2 if k else 0


def _fix_counting_ap_of_everything(model, task, comps, first, second, flagged, budget=None):
    values, _ = fix_reference(model, task, comps, first, second, flagged, budget)
    return values, len(comps) + 2


def _fix_second_order(model, task, comps, first, second, flagged, budget=None):
    chosen = _chosen(flagged, second, budget)
    values = first.detach().clone().double()
    values[chosen] = (first + second / 2)[chosen].double()
    return values, len(chosen)


def _read_fix(output, case: Case) -> Tensor:
    """The learner's ``(values, passes)`` as one ``[n + 1]`` tensor, or a failure saying why."""
    __tracebackhide__ = True
    n = len(case.args[2])
    values, passes = items(output, ("values", "forward passes"), case.label)
    values = as_values(values, f"the values ({case.label})")
    problem = shape_problem(values, torch.zeros(n), ("component",))
    if problem:
        raise ExerciseFailed(f"the values ({case.label}): {problem}")
    passes = scalar(passes, f"the forward passes ({case.label})")
    return torch.cat([values.reshape(n), passes.reshape(1)])


def _other_flagged_subset(calls: list[Call]) -> bool:
    """With a budget, the learner patched at most ``budget`` flagged components, but not the
    most curved ones."""
    for call in calls:
        model, task, comps, first, second, flagged, budget = call.case.args
        if budget is None:
            continue
        try:
            values = _read_fix(call.output, call.case)[:-1]
        except ExerciseFailed:
            return False
        truth = activation_patching(model, task, comps).values.double()
        tol = 1e-6 * max(1.0, float(truth.abs().max()))
        at_first, at_truth = (values - first).abs() <= tol, (values - truth).abs() <= tol
        fixed = at_truth & ~at_first
        chosen = torch.zeros(len(values), dtype=torch.bool)
        chosen[_chosen(flagged, second, budget)] = True
        if (
            bool((at_first | at_truth).all())
            and bool(flagged[fixed].all())
            and int(fixed.sum()) <= budget
            and bool((fixed & ~chosen).any())
        ):
            return True
    return False


def _fix_cases(ctx: Context) -> list[Case]:
    """On the heads' screen: every flagged head, a budget of half of them (twice: with the
    screen's curvature, and with one that makes the smallest |AtP| the most curved) and a
    budget of 0."""
    screen = screen_of(ctx)
    first, second, flagged = screen["screen"], screen["curvature"], screen["flagged"]
    half = max(1, int(flagged.sum()) // 2)
    reverse = 1.0 / (first.abs() + 1e-12)
    names = tuple(c.name for c in ctx.heads)
    cases = []
    for label, curvature, budget in (
        ("every flagged head", second, None),
        (f"budget {half}", second, half),
        (f"budget {half}, the smallest |AtP| most curved", reverse, half),
        ("budget 0", second, 0),
    ):
        k = len(_chosen(flagged, curvature, budget))
        args = (ctx.model, ctx.task, list(ctx.heads), first.clone(), curvature.clone())
        cases.append(
            Case(
                label,
                (*args, flagged.clone(), budget),
                labels=(*names, f"forward passes ({label}): one per patched component"),
                max_passes=k + 2.5,
            )
        )
    return cases


def _fix_passed(r: Result) -> str:
    screen = screen_of(r.ctx)
    flagged = screen["flagged"]
    every = r.expected[0][:-1]
    truth = truth_of(r.ctx)
    scale = max(1.0, float(truth.abs().max()))
    for other in (screen["values"], torch.where(flagged, truth, screen["screen"])):
        gap = float((other - every).abs().max())
        if gap > r.ctx.rtol * scale:
            raise ValueError(
                f"screen= and truth= disagree by {gap:.2g} on the flagged heads: pass the "
                "Screen-Flag-Fix (patch) run and the AP of the same heads and task"
            )
    n_flagged, half = int(flagged.sum()), r.cases[1].args[-1]
    return (
        f"AP on the {n_flagged} flagged heads as hu.screen_flag_fix (and on the {half} most "
        f"curved with a budget), {n_flagged} forward passes as its fix stage counts "
        f"({screen['fix_passes']})"
    )


FIX = Exercise(
    name="fix",
    notebook="07",
    summary="On the heads' screen, with every flagged head, with a budget (twice) and with "
    "none: the values equal hu.screen_flag_fix(fix='patch') (AP where fixed) and the count is "
    "one forward pass per patched head, as actually spent.",
    reference=fix_reference,
    uses="hu.screen_flag_fix",
    what="the values and the forward passes",
    cases=_fix_cases,
    read=_read_fix,
    counts_passes=True,
    mistakes=(
        Mistake(
            "every component holds its AP value: replace AtP on the chosen components only "
            "(the others keep the screen's AtP, that is the point of the workflow)",
            wrong=_fix_everywhere,
        ),
        Mistake(
            "every flagged component was fixed: with a budget, fix only the `budget` most "
            "curved of them",
            wrong=_fix_ignoring_budget,
        ),
        Mistake(
            "with a budget, you fixed the flagged components with the largest reliability score "
            "first: r is the share of the estimate that first order misses, a relative miss. "
            "The budget buys the largest absolute misses, and AtP misses by about |g''|/2 "
            "whatever the size of g': rank by |g''|",
            wrong=_fix_by_score_first,
        ),
        Mistake(
            "with a budget, fix the most curved flagged components first (largest |g''|, "
            "where AtP's error is likely largest), not the largest |AtP| or another subset",
            wrong=_fix_largest_atp_first,
            seen=_other_flagged_subset,
        ),
        Mistake(
            "that is the second-order estimate g' + g''/2 on the chosen components: the patch "
            "fix replaces AtP by the exact AP",
            wrong=_fix_second_order,
        ),
        Mistake(
            "that count includes the clean and corrupted runs that hu.activation_patching "
            "makes for itself; in the workflow the screen already paid for them: the fix "
            "spends one forward pass per patched component",
            wrong=_fix_counting_every_run,
        ),
        Mistake(
            "that count is what AP of every component costs, not the fix: it spends one "
            "forward pass per patched component",
            wrong=_fix_counting_ap_of_everything,
        ),
        Mistake(
            "your function ran more forward passes than the components it fixes (plus the "
            "clean and corrupted runs, 2): it patched every component, or patched some "
            "twice; patch only the chosen ones",
            wrong=_fix_everything_kept_flagged,
            seen=too_many_passes,
        ),
    ),
    passed=_fix_passed,
)

EXERCISES = (HUTCHINSON, CALIBRATED_MARGIN, FIX)
