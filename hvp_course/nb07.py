"""Exercises of notebook 07, *Screen, flag, fix*: Spearman's rank correlation (the accuracy
every table of the notebook reports), Hutchinson's estimate of a diagonal with its standard
error (what the flag stage runs on the model, here on constructed matrices), the flag rule of
Screen-Flag-Fix, and its fix step with exact activation patching, a budget and the forward
passes it spends.

The references are the package's :func:`hvp_utils.spearman`, :func:`hvp_utils.flag_reasons`
and :func:`hvp_utils.screen_flag_fix` (``fix="patch"``). The pass lines also compare with
independent computations: Spearman from pandas' average ranks and NumPy's correlation, the
flags with the heads that ``hu.screen_flag_fix`` actually fixed, the fixed values with that
run's values and with activation patching of every head. Small constructed cases (ties, a
curved monotone relation, effects near the threshold on both sides, a sign change that the
score does not catch) expose the mistakes that the model's numbers might not.

A check runs on the notebook's own Screen-Flag-Fix run of the heads when it is passed
(``screen=``, an ``hu.screen_flag_fix`` result on every head, with ``tau=`` and ``threshold_share=``
as it was run) and on its activation patching of the heads (``truth=``); otherwise it computes
both on the small task.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from hvp_course.exercise import Call, Case, Context, Exercise, Mistake, Result, too_many_passes
from hvp_course.explain import (
    ExerciseFailed,
    as_values,
    booleans,
    close,
    items,
    scalar,
    shape_problem,
)
from hvp_utils.analysis.reliability import flag_reasons
from hvp_utils.analysis.screen_flag_fix import screen_flag_fix, within_budget
from hvp_utils.core.components import Component
from hvp_utils.core.metrics import pearson
from hvp_utils.core.metrics import spearman as package_spearman
from hvp_utils.core.results import ScreenFlagFixResult
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching

#: Screen-Flag-Fix's defaults (``hu.screen_flag_fix``): the score threshold, the circuit's
#: fraction of the largest |AtP| and the margin of the Lagrange interval (M2_hat = margin |g''|).
DEFAULT_TAU, DEFAULT_THRESHOLD_SHARE, MARGIN = 0.3, 0.1, 2.0


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
    return [*cases, Case("AtP against AP, every head", (first, truth_of(ctx)))]


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
    notebook="07",
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
# 2. The flag rule


def flag_reference(
    first: Tensor, second: Tensor, tau: float, threshold: float, margin: float = MARGIN
) -> Tensor:
    """Screen-Flag-Fix's flags (``hu.flag_reasons(..., max_second=margin |g''|).flags``)."""
    return flag_reasons(
        first, second, tau=tau, max_second=margin * second.abs(), threshold=threshold
    ).flags


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


def _why(first: Tensor, second: Tensor, tau: float, threshold: float, i: int) -> str:
    """Which reasons flag entry ``i`` (or that none holds), for the failure table."""
    reasons = flag_reasons(
        first, second, tau=tau, max_second=MARGIN * second.abs(), threshold=threshold
    )
    r = float(reasons.scores[i])
    half = MARGIN * float(second[i].abs()) / 2
    lo, hi = float(first[i]) - half, float(first[i]) + half
    on = [
        text
        for key, text in (
            ("flag_score", f"r = {r:.3g} > tau"),
            ("flag_sign", "g' and g' + g''/2 differ in sign"),
            ("flag_threshold", f"[{lo:.3g}, {hi:.3g}] straddles -+{threshold:.3g}"),
        )
        if bool(getattr(reasons, key)[i])
    ]
    return "; ".join(on) if on else f"no reason holds (r = {r:.3g}, interval [{lo:.3g}, {hi:.3g}])"


def _flag_case(label: str, names: list[str], first, second, tau, threshold) -> Case:
    """One call of the flag rule; each entry's label says why the rule flags it or not."""
    labels = tuple(
        f"{name} ({_why(first, second, tau, threshold, i)})" for i, name in enumerate(names)
    )
    return Case(label, (first, second, tau, threshold, MARGIN), labels=labels)


def _flag_cases(ctx: Context) -> list[Case]:
    """The two constructed screens and the heads' screen (theta = threshold_share x max |AtP|)."""
    cases = []
    for label, (tau, threshold, pairs) in FLAG_CASES.items():
        first = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
        second = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
        names = [f"g'={a:g}, g''={b:g} (tau {tau:g}, threshold {threshold:g})" for a, b in pairs]
        cases.append(_flag_case(label, names, first, second, tau, threshold))
    screen = screen_of(ctx)
    first, second = screen["screen"], screen["curvature"]
    threshold = _threshold_share(ctx) * float(first.abs().max())
    names = [c.name for c in ctx.heads]
    cases.append(_flag_case("the heads' screen", names, first, second, _tau(ctx), threshold))
    return cases


def _flag_passed(r: Result) -> str:
    fixed = screen_of(r.ctx)["flagged"]
    if not torch.equal(r.expected[-1].bool(), fixed):
        raise ValueError(
            "screen= was run with other options than the check's tau= and threshold_share= "
            "(pass the ones hu.screen_flag_fix ran with, and no budget)"
        )
    n_constructed = sum(len(c.args[0]) for c in r.cases[:-1])
    return (
        f"the flags of {n_constructed} constructed components and of all {len(fixed)} heads "
        f"as hu.flag_reasons ({int(fixed.sum())} heads flagged, the ones hu.screen_flag_fix "
        "fixed)"
    )


FLAG = Exercise(
    name="flag",
    notebook="07",
    summary="The flags of two constructed screens and of the heads' screen equal "
    "hu.flag_reasons; the heads' flags are the heads hu.screen_flag_fix fixed.",
    reference=flag_reference,
    uses="hu.flag_reasons",
    what="the flags (flagged: r > tau, or a sign change, or an interval straddling the threshold)",
    cases=_flag_cases,
    read=lambda output, case: booleans(output, len(case.args[0]), f"the flags of {case.label}"),
    axes=("component",),
    boolean=True,
    mistakes=(
        Mistake(
            "the third reason is missing: flag also the components whose Lagrange interval "
            "g' -+ margin |g''| / 2 straddles the threshold (it holds effects both above and "
            "below it), so that a component near the circuit's cut is checked even when its "
            "score is small",
            wrong=_flag_no_threshold,
        ),
        Mistake(
            "only the crossing of +threshold is tested: a negative effect whose interval "
            "crosses -threshold is as uncertain; test both -threshold and +threshold (the "
            "circuit's cut is on |effect|)",
            wrong=_flag_plus_only,
        ),
        Mistake(
            "the sign reason is g' (g' + g''/2) < 0, first order against second order, not "
            "g' g'' < 0: a curvature against the slope is common and only matters once the "
            "second-order estimate g' + g''/2 has the other sign",
            wrong=_flag_slope_against_curvature,
        ),
        Mistake(
            "the reliability score halves g'': r = |g''/2| / (|g'| + |g''/2|), since the "
            "second-order Taylor term is g''/2",
            wrong=_flag_not_halved,
        ),
        Mistake(
            "the Lagrange interval is g' -+ M2_hat / 2 with M2_hat = margin |g''| (the "
            "remainder is g''(xi)/2): its half-width is margin |g''| / 2, not margin |g''|",
            wrong=_flag_full_width,
        ),
        Mistake(
            "M2_hat = margin * |g''(0)|: the screen samples g'' at t = 0 only, and the margin "
            "widens that one sample into an estimate of max |g''| on [0, 1]; the half-width "
            "is margin |g''| / 2",
            wrong=_flag_no_margin,
        ),
        Mistake(
            "the sign reason needs the signed g': with |g'| in g' (g' + g''/2) < 0 a negative "
            "effect whose second-order estimate turns positive is never flagged",
            wrong=_flag_abs_sign,
        ),
    ),
    passed=_flag_passed,
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

EXERCISES = (SPEARMAN, HUTCHINSON, FLAG, FIX)
