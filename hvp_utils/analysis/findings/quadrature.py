"""The verdicts of notebook 05: multi-step HVP against Integrated Gradients, accuracy for
compute.

The tables come from :mod:`hvp_utils.analysis.benchmark`: the estimator grid of
:func:`~hvp_utils.analysis.benchmark.run_estimators` (one row per estimator, perturbation and
kind: ``key``, ``method``, ``family``, ``nmae``, pass counts and ``x_AP_time``), the
convergence curves of :func:`~hvp_utils.analysis.benchmark.convergence` (one row per
perturbation, rule and K) and the error orders fitted to them by
:func:`~hvp_utils.analysis.benchmark.fitted_orders` (one row per perturbation and rule).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from hvp_utils.analysis.benchmark import pareto_frontier
from hvp_utils.analysis.findings.record import Findings
from hvp_utils.core.types import Family
from hvp_utils.estimators import ig_estimator, multistep_estimator

#: A fitted error order within this of the derived one shows the derived order.
ORDER_TOLERANCE = 0.6
#: Families of the estimators that patch each component along its own path.
PER_COMPONENT_FAMILIES = (Family.IG, Family.MULTISTEP)
DUEL_COLUMNS = ["perturbation", "kind", "key", "method", "nmae", "forward", "backward", "hvp"]
TIMING_COLUMNS = ["perturbation", "kind", "key", "method", "family", "nmae", "x_AP_time"]
PASS_COLUMNS = ["perturbation", "kind", "key", "method", "family", "forward", "backward", "hvp"]
CONVERGENCE_COLUMNS = [
    "perturbation",
    "rule",
    "K",
    "max_abs_error",
    "worst",
    "derived_order",
    "floor",
    "eps",
]
#: An error estimate within this factor of the true error (either way) tracks it.
ESTIMATE_FACTOR = 2.0
ESTIMATE_COLUMNS = [
    "perturbation",
    "rule",
    "component",
    "derived_order",
    "d1",
    "d2",
    "finest_minus_ap",
    "observed_order",
    "estimated_error",
    "true_error",
    "extrapolated_error",
]
FIT_COLUMNS = [
    "perturbation",
    "rule",
    "derived_order",
    "fitted_order",
    "k_min",
    "k_max",
    "excluded",
]


def duel_pairs() -> dict[str, tuple[str, str]]:
    """(challenger, incumbent) estimator keys with the same number of gradient nodes per
    step: Radau (K = 1) against Gauss-Legendre (K = 1), left Taylor against midpoint (K = 2)."""
    return {
        "radau_vs_gauss": (
            multistep_estimator(steps=1, rule="radau").key,
            ig_estimator(steps=1, rule="gauss").key,
        ),
        "taylor_vs_midpoint": (
            multistep_estimator(steps=2, rule="taylor").key,
            ig_estimator(steps=2).key,
        ),
    }


def duel(bench: pd.DataFrame, challenger: str, incumbent: str) -> dict[str, Any]:
    """Challenger against incumbent over the (perturbation, kind) cells: how often the
    challenger's NMAE is lower, the range of the NMAE ratio challenger / incumbent, whether
    both use the same forward and backward passes, and the challenger's extra HVP passes."""
    left = bench[bench.key == challenger].set_index(["perturbation", "kind"])
    right = bench[bench.key == incumbent].set_index(["perturbation", "kind"]).loc[left.index]
    ratio = left.nmae / right.nmae
    return dict(
        challenger=left.method.iloc[0],
        incumbent=right.method.iloc[0],
        n_cells=len(left),
        n_challenger_better=int((left.nmae < right.nmae).sum()),
        ratio_min=float(ratio.min()),
        ratio_max=float(ratio.max()),
        same_forward_backward=bool(
            (left.forward == right.forward).all() and (left.backward == right.backward).all()
        ),
        extra_hvp=sorted({int(v) for v in left.hvp - right.hvp}),
    )


def duels(bench: pd.DataFrame) -> Findings:
    """Each duel of :func:`duel_pairs` (:func:`duel`): who is more accurate in every cell, or
    how the cells split; then the verdict on Radau against Gauss-Legendre at one step, which
    beats the other on accuracy everywhere (the incumbent winning ties) and at which cost."""
    found = Findings("05", "Radau against Gauss-Legendre, and Taylor against midpoint")
    pairs = duel_pairs()
    rows = bench[bench.key.isin({k for pair in pairs.values() for k in pair})]
    found.table("duels", rows[DUEL_COLUMNS])
    results = {name: duel(rows, *pair) for name, pair in pairs.items()}
    for name, result in results.items():
        wins, n = result["n_challenger_better"], result["n_cells"]
        if wins == 0:
            key = "quadrature.duel_incumbent_better"
        elif wins == n:
            key = "quadrature.duel_challenger_better"
        else:
            key = "quadrature.duel_split"
        found.state(key, duel=name, **result)
    radau = results["radau_vs_gauss"]
    gauss_wins = radau["n_cells"] - radau["n_challenger_better"]
    if gauss_wins == radau["n_cells"]:
        key = (
            "quadrature.gauss_beats_radau"
            if _radau_pays_extra(radau)
            else "quadrature.gauss_more_accurate"
        )
    elif gauss_wins == 0:
        key = "quadrature.radau_more_accurate"
    else:
        key = "quadrature.radau_gauss_mixed"
    found.state(key, radau=radau["challenger"], gauss=radau["incumbent"])
    return found


def _radau_pays_extra(result: dict[str, Any]) -> bool:
    """Same gradient passes, and at least one double-backward pass more in every cell."""
    return result["same_forward_backward"] and min(result["extra_hvp"]) > 0


def per_component_rows(bench: pd.DataFrame) -> pd.DataFrame:
    """The runs of estimators that patch each component on its own path: per-component IG,
    multi-step HVP and the per-component HVP correction (key ``hvp``)."""
    return bench[bench.family.isin(PER_COMPONENT_FAMILIES) | (bench.key == "hvp")]


def frontier(bench: pd.DataFrame) -> Findings:
    """Per (perturbation, kind) panel: the Pareto frontier of wall time (``x_AP_time``) against
    NMAE and how many estimators take longer than AP; in how many panels Gauss-Legendre at
    K = 1 is faster than Radau at K = 1; how many per-component runs are slower than AP.

    Wall time varies between runs: the verdicts are those of this run's measurement."""
    found = Findings("05", "Who is on the frontier (wall time)")
    found.table("timings", bench[TIMING_COLUMNS])
    for (p, kind), group in bench.groupby(["perturbation", "kind"], sort=False):
        found.state(
            "quadrature.frontier",
            perturbation=p,
            kind=kind,
            frontier=list(pareto_frontier(group).method),
            n_slower_than_ap=int((group.x_AP_time > 1).sum()),
            n_estimators=len(group) - 1,
        )
    radau_key, gauss_key = duel_pairs()["radau_vs_gauss"]
    labels = bench.drop_duplicates("key").set_index("key").method
    times = bench.pivot_table(index=["perturbation", "kind"], columns="key", values="x_AP_time")
    n_faster = int((times[gauss_key] < times[radau_key]).sum())
    values = dict(
        gauss=labels[gauss_key], radau=labels[radau_key], n_faster=n_faster, n_panels=len(times)
    )
    if n_faster == len(times):
        slowdown = times[radau_key] / times[gauss_key]
        found.state(
            "quadrature.gauss_faster_everywhere",
            **values,
            slowdown_min=float(slowdown.min()),
            slowdown_max=float(slowdown.max()),
        )
    else:
        found.state("quadrature.gauss_faster_in_some", **values)
    runs = per_component_rows(bench)
    found.state(
        "quadrature.per_component_slower",
        n_slower=int((runs.x_AP_time > 1).sum()),
        n_runs=len(runs),
    )
    return found


def doubling(curve: pd.DataFrame) -> Findings:
    """The answer to the doubling question on one perturbation's convergence curve: per rule
    the shrink factor of the largest error from the last K but one to the last,
    ``e(K_lo) / e(K_hi)``, beside ``(K_hi / K_lo) ** derived order``; and whether every order-4
    rule shrank faster than every order-2 rule."""
    found = Findings("05", "Answer")
    k_lo, k_hi = (int(k) for k in sorted(curve.K.unique())[-2:])
    errors = curve.pivot_table(index="K", columns="rule", values="max_abs_error", sort=False)
    derived = curve.drop_duplicates("rule").set_index("rule").derived_order
    shrink = {r: float(errors.loc[k_lo, r] / errors.loc[k_hi, r]) for r in errors.columns}
    found.state(
        "quadrature.doubling",
        perturbation=curve.perturbation.iloc[0],
        k_from=k_lo,
        k_to=k_hi,
        rules=[dict(rule=r, shrink=v, derived_order=int(derived[r])) for r, v in shrink.items()],
    )
    slowest_order4 = min(v for r, v in shrink.items() if derived[r] == 4)
    fastest_order2 = max(v for r, v in shrink.items() if derived[r] == 2)
    found.state(
        "quadrature.order4_faster"
        if slowest_order4 > fastest_order2
        else "quadrature.order4_not_all_faster",
        slowest_order4=slowest_order4,
        fastest_order2=fastest_order2,
    )
    return found


def order_gaps(fits: pd.DataFrame, *, tolerance: float) -> dict[str, list[str]]:
    """Rules of one perturbation's fits (indexed by rule) whose fitted order is within
    ``tolerance`` of the derived one (``matching``), below it by at least ``tolerance``
    (``slower``) or above it by at least ``tolerance`` (``faster``); unfitted rules are none."""
    gap = fits.fitted_order - fits.derived_order
    return dict(
        matching=[r for r in fits.index if abs(gap[r]) < tolerance],
        slower=[r for r in fits.index if gap[r] <= -tolerance],
        faster=[r for r in fits.index if gap[r] >= tolerance],
    )


def _featured_first(frame: pd.DataFrame, featured: str) -> list[str]:
    return [featured, *[p for p in dict.fromkeys(frame.perturbation) if p != featured]]


def error_orders(
    convergence: pd.DataFrame,
    fits: pd.DataFrame,
    *,
    featured: str,
    fit_from: int,
    tolerance: float = ORDER_TOLERANCE,
) -> Findings:
    """Per perturbation (``featured`` first): the fitted error orders against the derived ones
    (:func:`order_gaps`); the rules fitting slower or faster than derived; the rules whose
    error grows from one K to the next at ``K >= fit_from``; and which fits leave out trailing
    K at the rounding floor or on a plateau."""
    found = Findings("05", "Error orders")
    found.table("convergence", convergence[CONVERGENCE_COLUMNS])
    found.table("fits", fits[FIT_COLUMNS])
    for p in _featured_first(convergence, featured):
        sub = fits[fits.perturbation == p].set_index("rule")
        curve = convergence[convergence.perturbation == p]
        floor = float(curve.floor.max())
        k_max = int(curve.K.max())
        gaps = order_gaps(sub, tolerance=tolerance)
        found.state(
            "quadrature.fitted_orders",
            perturbation=p,
            rules=[
                dict(
                    rule=r,
                    fitted_order=None if math.isnan(row.fitted_order) else float(row.fitted_order),
                    derived_order=int(row.derived_order),
                )
                for r, row in sub.iterrows()
            ],
            n_matching=len(gaps["matching"]),
            n_rules=len(sub),
            tolerance=tolerance,
            **gaps,
        )
        if gaps["slower"]:
            last = curve[(curve.K == k_max) & curve.rule.isin(gaps["slower"])]
            found.state(
                "quadrature.slower_than_derived",
                perturbation=p,
                rules=gaps["slower"],
                k_max=k_max,
                worst=last.worst.unique().tolist(),
            )
        if gaps["faster"]:
            found.state("quadrature.faster_than_derived", perturbation=p, rules=gaps["faster"])
        fitted = curve[curve.K >= fit_from].sort_values("K")
        grows = [
            r for r, g in fitted.groupby("rule", sort=False) if (g.max_abs_error.diff() > 0).any()
        ]
        if grows:
            found.state(
                "quadrature.error_grows", perturbation=p, rules=grows, k_from=fit_from, k_to=k_max
            )
        cut = sub[sub.excluded.astype(bool)]
        if cut.empty:
            found.state(
                "quadrature.no_cut",
                perturbation=p,
                floor=floor,
                smallest_error=float(curve.max_abs_error.min()),
                k_min=int(sub.k_min.min()),
                k_max=int(sub.k_max.max()),
            )
        for rule, row in cut.iterrows():
            found.state(
                "quadrature.cut_at_floor"
                if "floor" in row.excluded
                else "quadrature.cut_at_plateau",
                perturbation=p,
                rule=rule,
                excluded=row.excluded,
                floor=floor,
            )
    return found


def summary(
    bench: pd.DataFrame,
    *,
    convergence: pd.DataFrame,
    fits: pd.DataFrame,
    featured: str,
    tolerance: float = ORDER_TOLERANCE,
) -> Findings:
    """The section verdicts together: per perturbation how many rules show their derived order
    and whether a fit is cut short; the two duels; how many per-component runs use at least as
    many forward passes as AP, and which estimators' passes do not grow with the components
    (the same forward count for every kind)."""
    found = Findings("05", "Summary")
    n_rules = int((fits.perturbation == featured).sum())
    for p in _featured_first(fits, featured):
        sub = fits[fits.perturbation == p].set_index("rule")
        found.state(
            "quadrature.orders_shown",
            perturbation=p,
            n_matching=len(order_gaps(sub, tolerance=tolerance)["matching"]),
            n_rules=n_rules,
            tolerance=tolerance,
            k_max=int(convergence[convergence.perturbation == p].K.max()),
            cut=bool(sub.excluded.astype(bool).any()),
        )
    pairs = duel_pairs()
    radau = duel(bench, *pairs["radau_vs_gauss"])
    gauss_wins = radau["n_cells"] - radau["n_challenger_better"]
    names = dict(radau=radau["challenger"], gauss=radau["incumbent"])
    if gauss_wins == radau["n_cells"] and _radau_pays_extra(radau):
        found.state("quadrature.gauss_beats_radau_everywhere", **names)
    else:
        found.state(
            "quadrature.gauss_more_accurate_in",
            **names,
            n_better=gauss_wins,
            n_cells=radau["n_cells"],
        )
    taylor = duel(bench, *pairs["taylor_vs_midpoint"])
    midpoint_wins = taylor["n_cells"] - taylor["n_challenger_better"]
    found.state(
        "quadrature.midpoint_better_everywhere"
        if midpoint_wins == taylor["n_cells"]
        else "quadrature.midpoint_better_in",
        taylor=taylor["challenger"],
        midpoint=taylor["incumbent"],
        n_better=midpoint_wins,
        n_cells=taylor["n_cells"],
    )
    found.table("passes", bench[PASS_COLUMNS])
    forward = bench.pivot_table(index="key", columns="kind", values="forward", aggfunc="first")
    labels = bench.drop_duplicates("key").set_index("key").method
    flat = [labels[k] for k in dict.fromkeys(bench.key) if forward.loc[k].nunique() == 1]
    runs = per_component_rows(bench).set_index(["perturbation", "kind"])
    ap_forward = bench[bench.key == "ap"].set_index(["perturbation", "kind"]).forward
    found.state(
        "quadrature.pass_growth",
        n_more=int((runs.forward >= ap_forward.reindex(runs.index)).sum()),
        n_runs=len(runs),
        flat=flat,
    )
    return found


def error_estimates(
    table: pd.DataFrame,
    *,
    steps: list[int],
    tolerance: float = ORDER_TOLERANCE,
    factor: float = ESTIMATE_FACTOR,
) -> Findings:
    """How well the a-posteriori (Richardson) error estimate from the estimates at ``steps``
    (K, 2K, 4K) tracked the true error against AP, one row of ``table`` per (rule, component):
    the differences ``d1 = I_2K - I_K``, ``d2 = I_4K - I_2K``, ``finest_minus_ap = I_4K - AP``,
    the ``observed_order`` and ``estimated_error`` (inf: refused, not yet asymptotic; 0:
    converged), the ``true_error`` ``|I_4K - AP|`` and the ``extrapolated_error``
    ``|I_4K + d2 / (2^p - 1) - AP|``.

    States how many pairs the estimate refused; of the others (trusted), how many estimates
    were within ``factor`` of the true error, how many observed orders were within
    ``tolerance`` of the derived one and how many of those and of the rest were within the
    factor; and how often extrapolation came closer to AP than the finest estimate."""
    found = Findings("05", "How well the estimate tracked the truth")
    found.table("error_estimates", table[ESTIMATE_COLUMNS])
    estimated = table.estimated_error.to_numpy(float)
    refused, converged = np.isinf(estimated), estimated == 0
    trusted = table[~refused & ~converged]
    ratio = trusted.estimated_error / trusted.true_error
    within = (ratio <= factor) & (ratio >= 1 / factor)
    agree = (trusted.observed_order - trusted.derived_order).abs() < tolerance
    values = dict(
        steps=[int(k) for k in steps],
        n_pairs=len(table),
        n_refused=int(refused.sum()),
        n_converged=int(converged.sum()),
        n_trusted=len(trusted),
        n_within=int(within.sum()),
        ratio_min=float(ratio.min()) if len(trusted) else None,
        ratio_max=float(ratio.max()) if len(trusted) else None,
        n_agree=int(agree.sum()),
        n_agree_within=int((agree & within).sum()),
        n_other_within=int((~agree & within).sum()),
        n_closer=int((trusted.extrapolated_error < trusted.true_error).sum()),
        factor=factor,
        tolerance=tolerance,
    )
    found.record("error_estimates", values)
    for text in estimate_sentences(values):
        found.say(text)
    return found


def estimate_sentences(v: dict[str, Any]) -> list[str]:
    """The sentences of :func:`error_estimates` from its recorded values."""
    n, trusted = v["n_pairs"], v["n_trusted"]
    steps = ", ".join(map(str, v["steps"]))
    factor, tol = f"{v['factor']:g}", f"{v['tolerance']:g}"
    first = (
        f"From the estimates at K = {steps} alone, the error estimate refused {v['n_refused']} "
        f"of the {n} (rule, component) pairs as not yet in the asymptotic regime (error inf)"
    )
    if v["n_converged"]:
        first += f", found {v['n_converged']} converged (error 0)"
    sentences = [f"{first} and gave a finite error for {trusted}."]
    if not trusted:
        return sentences
    low, high = f"{v['ratio_min']:.2g}", f"{v['ratio_max']:.2g}"
    ratios = low if low == high else f"from {low} to {high}"
    sentences.append(
        f"Of those {trusted}, {v['n_within'] or 'none'} came within a factor of {factor} of the "
        f"true error |I_4K - AP| (estimated / true {ratios})."
    )
    agree, other = v["n_agree"], trusted - v["n_agree"]
    text = (
        f"The observed order was within {tol} of the order derived in section 1 for {agree} of "
        f"the {trusted}"
    )
    if not agree:
        text += ": by that test none of them had reached its rule's asymptotic regime yet"
    elif agree == 1:
        came = "came" if v["n_agree_within"] else "did not come"
        text += f", and its estimate {came} within the factor"
    else:
        text += f", and {v['n_agree_within']} of those {agree} estimates came within the factor"
    if agree and other:
        if other == 1:
            text += "; the estimate whose observed order was further off "
            text += "did too" if v["n_other_within"] else "did not"
        else:
            text += f"; of the {other} whose observed order was further off, "
            text += f"{v['n_other_within']} did" if v["n_other_within"] else "none did"
        if v["n_agree_within"] == agree and v["n_other_within"] == 0:
            text += (
                ": an observed order far from the derived one marked exactly the estimates "
                "that missed"
            )
    sentences.append(text + ".")
    sentences.append(
        f"The extrapolated value I_4K + d2 / (2^p - 1) was closer to AP than I_4K for "
        f"{v['n_closer']} of the {trusted}."
    )
    return sentences
