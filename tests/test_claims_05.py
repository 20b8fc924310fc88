"""Notebook 05's findings, recomputed from the tables it recorded (committed run and reruns).

Every verdict and value notebook 05 states is recomputed here with the test's own code from
the rows the notebook recorded beside it (NMAE and pass counts per estimator, the wall-time
table, the convergence curves, their fits and the answer to the doubling prediction), and
compared with the verdict keys and values the notebook states. The last tests check
the fitting rule itself (the rounding floor and plateaus) on constructed curves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hvp_utils as hu
from tests.claims import Recorded, close, params

PER_COMPONENT = ["IG (per component)", "multi-step HVP"]
RADAU1, GAUSS1 = "multistep[rule=radau,steps=1]", "ig[rule=gauss,steps=1]"


def keys_of(duels: pd.DataFrame) -> dict[str, str]:
    """Registry key -> label of the estimators in the duel table."""
    return dict(zip(duels.key, duels.method, strict=True))


def test_the_keys_the_tests_name_are_the_registry_keys():
    assert hu.multistep_estimator(steps=1, rule="radau").key == RADAU1
    assert hu.ig_estimator(steps=1, rule="gauss").key == GAUSS1


def duel(duels: pd.DataFrame, a: str, b: str) -> dict:
    """Challenger ``a`` against incumbent ``b`` recomputed from the recorded duel rows."""
    left = duels[duels.key == a].set_index(["perturbation", "kind"]).sort_index()
    right = duels[duels.key == b].set_index(["perturbation", "kind"]).sort_index()
    assert list(left.index) == list(right.index) and len(left) >= 2
    ratio = left.nmae / right.nmae
    return {
        "challenger": left.method.iloc[0],
        "incumbent": right.method.iloc[0],
        "n_cells": len(left),
        "n_challenger_better": int((left.nmae < right.nmae).sum()),
        "same_forward_backward": bool(
            (left.forward == right.forward).all() and (left.backward == right.backward).all()
        ),
        "extra_hvp": sorted({int(v) for v in left.hvp - right.hvp}),
        "ratio": ratio,
    }


def pairs() -> dict[str, tuple[str, str]]:
    return {
        "radau_vs_gauss": (RADAU1, GAUSS1),
        "taylor_vs_midpoint": (
            hu.multistep_estimator(steps=2, rule="taylor").key,
            hu.ig_estimator(steps=2).key,
        ),
    }


DUEL_KEYS = (
    "quadrature.duel_incumbent_better",
    "quadrature.duel_challenger_better",
    "quadrature.duel_split",
)


@params("05")
def test_radau_against_gauss_and_taylor_against_midpoint(path):
    rec = Recorded(path)
    duels = rec.table("duels")
    for name, (a, b) in pairs().items():
        expected = duel(duels, a, b)
        ratio = expected.pop("ratio")
        key, stated = rec.only(*DUEL_KEYS, duel=name)
        assert {k: stated[k] for k in expected} == expected
        assert close(stated["ratio_min"], ratio.min(), rel=1e-3)
        assert close(stated["ratio_max"], ratio.max(), rel=1e-3)
        wins, n = expected["n_challenger_better"], expected["n_cells"]
        assert key == {0: DUEL_KEYS[0], n: DUEL_KEYS[1]}.get(wins, DUEL_KEYS[2])
    radau = duel(duels, RADAU1, GAUSS1)
    gauss_wins = radau["n_cells"] - radau["n_challenger_better"]
    pays_extra = radau["same_forward_backward"] and min(radau["extra_hvp"]) > 0
    if gauss_wins == radau["n_cells"]:
        expected = (
            "quadrature.gauss_beats_radau" if pays_extra else "quadrature.gauss_more_accurate"
        )
    elif gauss_wins == 0:
        expected = "quadrature.radau_more_accurate"
    else:
        expected = "quadrature.radau_gauss_mixed"
    key, stated = rec.only(
        "quadrature.gauss_beats_radau",
        "quadrature.gauss_more_accurate",
        "quadrature.radau_more_accurate",
        "quadrature.radau_gauss_mixed",
    )
    assert key == expected
    assert (stated["radau"], stated["gauss"]) == (radau["challenger"], radau["incumbent"])
    # the summary states the same duels
    key, stated = rec.only(
        "quadrature.gauss_beats_radau_everywhere", "quadrature.gauss_more_accurate_in"
    )
    everywhere = gauss_wins == radau["n_cells"] and pays_extra
    assert key == (
        "quadrature.gauss_beats_radau_everywhere"
        if everywhere
        else "quadrature.gauss_more_accurate_in"
    )
    if not everywhere:
        assert (stated["n_better"], stated["n_cells"]) == (gauss_wins, radau["n_cells"])
    taylor = duel(duels, *pairs()["taylor_vs_midpoint"])
    midpoint_wins = taylor["n_cells"] - taylor["n_challenger_better"]
    key, stated = rec.only("quadrature.midpoint_better_everywhere", "quadrature.midpoint_better_in")
    assert (stated["n_better"], stated["n_cells"]) == (midpoint_wins, taylor["n_cells"])
    assert (stated["taylor"], stated["midpoint"]) == (taylor["challenger"], taylor["incumbent"])
    assert (key == "quadrature.midpoint_better_everywhere") == (midpoint_wins == taylor["n_cells"])


@params("05")
def test_the_frontier_ends_at_ap_and_everything_slower_is_dominated(path):
    rec = Recorded(path)
    timings = rec.table("timings")
    passes = rec.table("passes").set_index(["perturbation", "kind", "key"])
    n_panels = 0
    for (p, kind), group in timings.groupby(["perturbation", "kind"], sort=False):
        n_panels += 1
        # of estimators with the same numbers, the one with the fewest passes is on the plot
        spent = [passes.loc[(p, kind, k), ["forward", "backward", "hvp"]].sum() for k in group.key]
        by_passes = group.assign(passes=spent).sort_values("passes", kind="stable")
        untied = by_passes[~by_passes.nmae.round(10).duplicated()]
        ordered = untied.sort_values(["x_AP_time", "nmae"])
        front, best = [], np.inf
        for _, row in ordered.iterrows():
            if row.nmae < best:
                best = row.nmae
                front.append(row.method)
        _, stated = rec.only("quadrature.frontier", perturbation=p, kind=kind)
        assert stated["frontier"] == front
        ap = group[group.key == "ap"].iloc[0]
        assert front[-1] == ap.method, "AP (NMAE 0) must end the frontier"
        slower = group[(group.key != "ap") & (group.x_AP_time > ap.x_AP_time)]
        assert (slower.nmae > 0).all() and not set(slower.method) & set(front)
        n_slow = int((group.x_AP_time > 1).sum())
        assert (stated["n_slower_than_ap"], stated["n_estimators"]) == (n_slow, len(group) - 1)
    assert len(rec.verdicts("quadrature.frontier")) == n_panels
    times = timings.pivot_table(index=["perturbation", "kind"], columns="key", values="x_AP_time")
    faster = int((times[GAUSS1] < times[RADAU1]).sum())
    key, stated = rec.only("quadrature.gauss_faster_everywhere", "quadrature.gauss_faster_in_some")
    assert (stated["n_faster"], stated["n_panels"]) == (faster, n_panels)
    labels = keys_of(timings.drop_duplicates("key"))
    assert (stated["gauss"], stated["radau"]) == (labels[GAUSS1], labels[RADAU1])
    if faster == n_panels:
        assert key == "quadrature.gauss_faster_everywhere"
        slowdown = times[RADAU1] / times[GAUSS1]
        assert close(stated["slowdown_min"], slowdown.min(), rel=1e-3)
        assert close(stated["slowdown_max"], slowdown.max(), rel=1e-3)
    else:
        assert key == "quadrature.gauss_faster_in_some"
    runs = timings[timings.family.isin(PER_COMPONENT) | (timings.key == "hvp")]
    _, stated = rec.only("quadrature.per_component_slower")
    assert (stated["n_slower"], stated["n_runs"]) == (int((runs.x_AP_time > 1).sum()), len(runs))


def fit_range(points: pd.DataFrame, floor: float) -> int:
    """How many of the K-sorted points the fit keeps: trailing points at the floor or on a
    plateau (local order below 0.5) are left out."""
    k = points.K.to_numpy(float)
    e = points.max_abs_error.to_numpy(float)
    keep = len(k)
    while keep > 1:
        local = np.log(e[keep - 2] / e[keep - 1]) / np.log(k[keep - 1] / k[keep - 2])
        if e[keep - 1] <= floor or local < 0.5:
            keep -= 1
        else:
            break
    return keep


@params("05")
def test_error_orders(path):
    rec = Recorded(path)
    curves, fits = rec.table("convergence"), rec.table("fits")
    tolerances = {v["tolerance"] for _, v in rec.verdicts("quadrature.fitted_orders")}
    (tol,) = tolerances
    for p, curve in curves.groupby("perturbation"):
        floor = float(curve.floor.max())
        scale = floor / (10 * float(curve.eps.max()))
        assert 0.1 < scale < 1e3, "the floor is 10 x eps x max|AP| (logits)"
        sub = fits[fits.perturbation == p].set_index("rule")
        match, slow, fast = [], [], []
        for rule, points in curve.groupby("rule", sort=False):
            points = points[points.K >= 2].sort_values("K")
            keep = fit_range(points, floor)
            k, e = points.K.to_numpy(float), points.max_abs_error.to_numpy(float)
            assert sub.loc[rule, "k_max"] == int(k[keep - 1])
            assert bool(sub.loc[rule, "excluded"]) == (keep < len(k))
            if keep >= 2:
                slope = np.polyfit(np.log(k[:keep]), np.log(e[:keep]), 1)[0]
                assert close(sub.loc[rule, "fitted_order"], -slope, rel=1e-3)
                gap = -slope - points.derived_order.iloc[0]
                if abs(gap) < tol:
                    match.append(rule)
                elif gap <= -tol:
                    slow.append(rule)
                else:
                    fast.append(rule)
        _, stated = rec.only("quadrature.fitted_orders", perturbation=p)
        assert (stated["matching"], stated["slower"], stated["faster"]) == (match, slow, fast)
        assert (stated["n_matching"], stated["n_rules"]) == (len(match), len(sub))
        assert [r["rule"] for r in stated["rules"]] == list(sub.index)
        for r in stated["rules"]:
            row = sub.loc[r["rule"]]
            assert r["derived_order"] == row.derived_order
            if np.isnan(row.fitted_order):
                assert r["fitted_order"] is None
            else:
                assert close(r["fitted_order"], row.fitted_order)
        grows = [
            rule
            for rule, points in curve[curve.K >= 2].sort_values("K").groupby("rule", sort=False)
            if (np.diff(points.max_abs_error.to_numpy()) > 0).any()
        ]
        stated = rec.verdicts("quadrature.error_grows", perturbation=p)
        assert [v["rules"] for _, v in stated] == ([grows] if grows else [])
        stated = rec.verdicts("quadrature.slower_than_derived", perturbation=p)
        if slow:
            last = curve[(curve.K == curve.K.max()) & curve.rule.isin(slow)]
            ((_, stated),) = stated
            assert stated["rules"] == slow and stated["worst"] == list(dict.fromkeys(last.worst))
            assert stated["k_max"] == curve.K.max()
        else:
            assert not stated
        stated = rec.verdicts("quadrature.faster_than_derived", perturbation=p)
        assert [v["rules"] for _, v in stated] == ([fast] if fast else [])
        cut = sub[sub.excluded.astype(bool)]
        if cut.empty:
            _, stated = rec.only("quadrature.no_cut", perturbation=p)
            assert close(stated["floor"], floor, rel=1e-3)
            assert close(stated["smallest_error"], curve.max_abs_error.min(), rel=1e-3)
            assert (stated["k_min"], stated["k_max"]) == (sub.k_min.min(), sub.k_max.max())
        for rule, row in cut.iterrows():
            key, stated = rec.only(
                "quadrature.cut_at_floor", "quadrature.cut_at_plateau", perturbation=p, rule=rule
            )
            at_floor = "floor" in row.excluded
            assert key == ("quadrature.cut_at_floor" if at_floor else "quadrature.cut_at_plateau")
            assert stated["excluded"] == row.excluded
        # the summary's count
        _, stated = rec.only("quadrature.orders_shown", perturbation=p)
        assert stated["n_matching"] == len(match) and stated["tolerance"] == tol
        assert stated["cut"] is (not cut.empty) and stated["k_max"] == curve.K.max()


@params("05")
def test_doubling_answer(path):
    """The answer to the prediction: how much each rule's largest error shrinks when K
    doubles at the end of the grid, against (K_hi / K_lo) ** derived order."""
    rec = Recorded(path)
    _, stated = rec.only("quadrature.doubling")
    curves = rec.table("convergence")
    curve = curves[curves.perturbation == stated["perturbation"]]
    lo, hi = sorted(curve.K.unique())[-2:]
    assert (stated["k_from"], stated["k_to"]) == (lo, hi)
    errors = curve.pivot_table(index="K", columns="rule", values="max_abs_error")
    derived = curve.drop_duplicates("rule").set_index("rule").derived_order
    shrink = {rule: errors.loc[lo, rule] / errors.loc[hi, rule] for rule in curve.rule.unique()}
    assert [r["rule"] for r in stated["rules"]] == list(shrink)
    for r in stated["rules"]:
        assert close(r["shrink"], shrink[r["rule"]], rel=1e-3)
        assert r["derived_order"] == derived[r["rule"]]
    high = min(v for r, v in shrink.items() if derived[r] == 4)
    low = max(v for r, v in shrink.items() if derived[r] == 2)
    key, _ = rec.only("quadrature.order4_faster", "quadrature.order4_not_all_faster")
    assert key == ("quadrature.order4_faster" if high > low else "quadrature.order4_not_all_faster")


@params("05")
def test_pass_counts(path):
    rec = Recorded(path)
    passes = rec.table("passes")
    per_comp = passes[passes.family.isin(PER_COMPONENT) | (passes.key == "hvp")]
    ap = passes[passes.key == "ap"].set_index(["perturbation", "kind"]).forward
    joined = per_comp.join(ap.rename("ap_forward"), on=["perturbation", "kind"])
    more = int((joined.forward >= joined.ap_forward).sum())
    order = list(dict.fromkeys(passes.key))
    labels = passes.drop_duplicates("key").set_index("key").method
    flat = [labels[k] for k in order if passes[passes.key == k].forward.nunique() == 1]
    _, stated = rec.only("quadrature.pass_growth")
    assert (stated["n_more"], stated["n_runs"]) == (more, len(per_comp))
    assert stated["flat"] == flat and "AtP" in flat
    atp = hu.atp_estimator()
    assert atp.key in order  # AtP's cost, from the package: 3 forward passes and 1 backward
    assert set(passes[passes.key == atp.key].forward) == {3}


def test_fitted_orders_leave_out_the_floor_and_plateaus():
    k = np.array([1, 2, 4, 8, 16])
    clean = 1.0 * k.astype(float) ** -4
    frame = pd.DataFrame(
        {"rule": "r", "K": k, "max_abs_error": clean, "derived_order": 4, "floor": 0.0}
    )
    fit = hu.fitted_orders(frame).loc["r"]
    assert fit.fitted_order == pytest.approx(4.0) and fit.excluded == "" and fit.k_max == 16
    floored = frame.assign(max_abs_error=np.maximum(clean, 1e-4), floor=2e-4)
    fit = hu.fitted_orders(floored).loc["r"]
    assert fit.excluded == "16 (floor)" and fit.k_max == 8
    assert fit.fitted_order == pytest.approx(4.0, abs=0.05)
    plateau = frame.assign(max_abs_error=np.r_[clean[:3], clean[2] * 0.9, clean[2] * 0.85])
    fit = hu.fitted_orders(plateau).loc["r"]
    assert fit.excluded == "8 (plateau), 16 (plateau)" and fit.k_max == 4
    assert fit.fitted_order == pytest.approx(4.0)
    all_floor = frame.assign(floor=1.0)
    assert np.isnan(hu.fitted_orders(all_floor).loc["r"].fitted_order)


@params("05")
def test_the_error_estimate_against_the_truth(path):
    """Section 5: the a-posteriori (Richardson) error estimate of every (rule, component),
    recomputed from the recorded differences d1 = I_2K - I_K, d2 = I_4K - I_2K and
    I_4K - AP with the test's own formulas, and the counts its sentences state. The record
    keeps inf and nan as missing values: a refused estimate has no error and no order."""
    rec = Recorded(path)
    table, stated = rec.table("error_estimates"), rec["error_estimates"]
    curves = rec.table("convergence")
    curve = curves[curves.perturbation == table.perturbation.iloc[0]]
    assert stated["steps"] == sorted(int(k) for k in curve.K.unique())[-3:]
    assert set(table.rule) == set(curve.rule)
    assert not table.duplicated(["rule", "component"]).any()
    assert set(curve.worst) <= set(table.component), "the components of the convergence study"
    derived = curve.drop_duplicates("rule").set_index("rule").derived_order
    assert (table.derived_order == table.rule.map(derived)).all()
    d1, d2 = table.d1.to_numpy(float), table.d2.to_numpy(float)
    converged = d2 == 0
    refused = ~converged & ((np.abs(d1) <= np.abs(d2)) | (d1 * d2 < 0))
    trusted = ~converged & ~refused
    assert table.estimated_error[refused].isna().all()
    assert (table.estimated_error[converged] == 0).all()
    assert table.observed_order[~trusted].isna().all()
    for i in np.flatnonzero(trusted):
        a, b = abs(d1[i]), abs(d2[i])
        row = table.iloc[i]
        assert close(row.observed_order, np.log(a / b) / np.log(2), rel=1e-3, abs_=1e-4)
        error = b * b / (a - b)  # |d2| / (2^p - 1) with 2^p = |d1| / |d2|
        assert close(row.estimated_error, error, rel=1e-3, abs_=0)
        assert close(row.true_error, abs(row.finest_minus_ap), rel=1e-4, abs_=0)
        extrapolated = abs(row.finest_minus_ap + np.sign(d2[i]) * error)
        assert abs(row.extrapolated_error - extrapolated) <= 1e-3 * max(row.true_error, error)
    rows = table[trusted]
    ratio = rows.estimated_error / rows.true_error
    within = (ratio <= stated["factor"]) & (ratio >= 1 / stated["factor"])
    agree = (rows.observed_order - rows.derived_order).abs() < stated["tolerance"]
    expected = {
        "n_pairs": len(table),
        "n_refused": int(refused.sum()),
        "n_converged": int(converged.sum()),
        "n_trusted": int(trusted.sum()),
        "n_within": int(within.sum()),
        "n_agree": int(agree.sum()),
        "n_agree_within": int((agree & within).sum()),
        "n_other_within": int((~agree & within).sum()),
        "n_closer": int((rows.extrapolated_error < rows.true_error).sum()),
    }
    assert {k: stated[k] for k in expected} == expected
    assert stated["tolerance"] == hu.findings.quadrature.ORDER_TOLERANCE
    n, n_trusted = expected["n_pairs"], expected["n_trusted"]
    assert rec.says(f"refused {expected['n_refused']} of the {n} (rule, component) pairs")
    assert rec.says(f"gave a finite error for {n_trusted}.")
    if n_trusted:
        assert close(stated["ratio_min"], ratio.min(), rel=1e-3)
        assert close(stated["ratio_max"], ratio.max(), rel=1e-3)
        assert rec.says(
            f"Of those {n_trusted}, {expected['n_within'] or 'none'} came within a factor of "
            f"{stated['factor']:g} of the true error"
        )
        assert rec.says(f"for {expected['n_agree']} of the {n_trusted}")
        assert rec.says(f"closer to AP than I_4K for {expected['n_closer']} of the {n_trusted}.")
        assert rec.says("none of them had reached its rule's asymptotic regime") == (
            expected["n_agree"] == 0
        )
        marked = rec.says("marked exactly the estimates that missed")
        other = n_trusted - expected["n_agree"]
        assert marked == (
            0 < expected["n_agree"] == expected["n_agree_within"]
            and other > 0
            and expected["n_other_within"] == 0
        )
