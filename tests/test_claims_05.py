"""Notebook 05's findings, recomputed from the tables it recorded (committed run and reruns).

Every number a sentence of notebook 05 states is recomputed here with independent code from
the rows the notebook recorded beside it (NMAE and pass counts per estimator, the wall-time
table, the convergence curves, their fits and the answer to the doubling prediction), and each
sentence is checked to use the wording the recomputed number calls for. The last tests check
the fitting rule itself (the rounding floor and plateaus) on constructed curves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hvp_utils as hu
from hvp_utils import count_phrase as count
from tests.claims import Recorded, close, params

CELL = "(perturbation, kind) cell"
RADAU1, GAUSS1 = "multistep[rule=radau,steps=1]", "ig[rule=gauss,steps=1]"


def keys_of(duels: pd.DataFrame) -> dict[str, str]:
    """Registry key -> label of the estimators in the duel table."""
    return dict(zip(duels.key, duels.method, strict=True))


def test_the_keys_the_tests_name_are_the_registry_keys():
    assert hu.multistep_estimator(steps=1, rule="radau").key == RADAU1
    assert hu.ig_estimator(steps=1, rule="gauss").key == GAUSS1


@params("05")
def test_radau_against_gauss_and_taylor_against_midpoint(path):
    rec = Recorded(path)
    duels = rec.table("duels")
    pairs = {
        "radau_vs_gauss": (RADAU1, GAUSS1),
        "taylor_vs_midpoint": (
            hu.multistep_estimator(steps=2, rule="taylor").key,
            hu.ig_estimator(steps=2).key,
        ),
    }
    labels = keys_of(duels.drop_duplicates("key"))
    for name, (a, b) in pairs.items():
        left = duels[duels.key == a].set_index(["perturbation", "kind"]).sort_index()
        right = duels[duels.key == b].set_index(["perturbation", "kind"]).sort_index()
        assert list(left.index) == list(right.index) and len(left) >= 2
        n = len(left)
        wins = int((left.nmae < right.nmae).sum())
        assert rec[f"{name}_challenger_more_accurate"] == wins
        same = bool(
            (left.forward == right.forward).all() and (left.backward == right.backward).all()
        )
        assert rec[f"{name}_same_forward_backward"] == same
        extra = sorted({int(v) for v in left.hvp - right.hvp})
        assert rec[f"{name}_extra_hvp"] == extra
        ratio = left.nmae / right.nmae
        assert close(rec[f"{name}_nmae_ratio_min"], ratio.min(), rel=1e-3)
        assert close(rec[f"{name}_nmae_ratio_max"], ratio.max(), rel=1e-3)
        la, lb = labels[a], labels[b]
        lo, hi = rec[f"{name}_nmae_ratio_min"], rec[f"{name}_nmae_ratio_max"]
        spread = f"({la}'s NMAE is {lo:.2f}x to {hi:.2f}x {lb}'s)"
        if wins == 0:
            assert rec.says(f"{lb} is more accurate than {la} in {count(n, n, CELL)} {spread}")
        elif wins == n:
            assert rec.says(f"{la} is more accurate than {lb} in {count(n, n, CELL)} {spread}")
        else:
            assert rec.says(
                f"{la} is more accurate than {lb} in {count(wins, n, CELL)} and less accurate "
                f"in the other {n - wins} {spread}"
            )
        if same and min(extra) > 0:
            assert rec.says(f"{la} adds " + " or ".join(map(str, extra)) + " double-backward")
    wins = rec["radau_vs_gauss_challenger_more_accurate"]
    everywhere = (
        wins == 0
        and rec["radau_vs_gauss_same_forward_backward"]
        and min(rec["radau_vs_gauss_extra_hvp"]) > 0
    )
    assert rec["gauss_beats_radau_everywhere"] == everywhere
    radau, gauss = labels[RADAU1], labels[GAUSS1]
    if everywhere:
        assert rec.says(f"So at one step {gauss} beats our {radau} on accuracy and on passes alike")
        assert rec.says(f"{gauss} beats our {radau} on accuracy in every (perturbation, kind) cell")
    else:
        assert not rec.says("beats our")


@params("05")
def test_the_frontier_ends_at_ap_and_everything_slower_is_dominated(path):
    rec = Recorded(path)
    timings = rec.table("timings")
    n_panels = 0
    for (p, kind), group in timings.groupby(["perturbation", "kind"], sort=False):
        n_panels += 1
        ordered = group.sort_values(["x_AP_time", "nmae"])
        front, best = [], np.inf
        for _, row in ordered.iterrows():
            if row.nmae < best:
                best = row.nmae
                front.append(row.method)
        assert rec[f"frontier_{p}_{kind}"] == front
        ap = group[group.key == "ap"].iloc[0]
        assert front[-1] == ap.method, "AP (NMAE 0) must end the frontier"
        slower = group[(group.key != "ap") & (group.x_AP_time > ap.x_AP_time)]
        assert (slower.nmae > 0).all() and not set(slower.method) & set(front)
        n_slow = int((group.x_AP_time > 1).sum())
        assert rec[f"slower_than_ap_{p}_{kind}"] == n_slow
        assert rec.says(
            f"`{p}`, {kind}: the frontier runs "
            + " -> ".join(front)
            + f"; {count(n_slow, len(group) - 1, 'estimator')} take longer than AP"
        )
    assert rec["ap_ends_frontier"] == n_panels
    times = timings.pivot_table(index=["perturbation", "kind"], columns="key", values="x_AP_time")
    faster = int((times[GAUSS1] < times[RADAU1]).sum())
    assert rec["gauss_faster_than_radau"] == faster
    assert rec.says(
        f"took less wall time than multistep radau K=1 in {count(faster, n_panels, 'panel')}"
    )


@params("05")
def test_error_orders(path):
    rec = Recorded(path)
    curves, fits = rec.table("convergence"), rec.table("fits")
    tol = rec["order_tolerance"]
    featured = rec["featured_perturbation"]
    for p, curve in curves.groupby("perturbation"):
        floor = float(curve.floor.max())
        assert close(rec[f"floor_{p}"], floor, rel=1e-3)
        assert close(rec[f"smallest_error_{p}"], curve.max_abs_error.min(), rel=1e-3)
        eps = rec["machine_eps"]
        scale = floor / (10 * eps)
        assert 0.1 < scale < 1e3, "the floor is 10 x eps x max|AP| (logits)"
        sub = fits[fits.perturbation == p].set_index("rule")
        match, slow = [], []
        for rule, points in curve.groupby("rule", sort=False):
            points = points[points.K >= 2].sort_values("K")
            k = points.K.to_numpy(float)
            e = points.max_abs_error.to_numpy(float)
            keep = len(k)
            while keep > 1:
                local = np.log(e[keep - 2] / e[keep - 1]) / np.log(k[keep - 1] / k[keep - 2])
                if e[keep - 1] <= floor or local < 0.5:
                    keep -= 1
                else:
                    break
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
        grows = [
            rule
            for rule, points in curve[curve.K >= 2].sort_values("K").groupby("rule", sort=False)
            if (np.diff(points.max_abs_error.to_numpy()) > 0).any()
        ]
        assert rec[f"non_monotone_{p}"] == grows
        assert rec.says(f"`{p}`: the error of {', '.join(grows)} grows") == bool(grows)
        assert rec[f"matching_{p}"] == match
        assert rec[f"slower_{p}"] == slow
        assert rec.says(f"`{p}`: fitted orders ")
        assert rec.says(f"{count(len(match), len(sub), 'rule')} within {tol} of the derived order")
        if slow:
            last = curve[(curve.K == curve.K.max()) & curve.rule.isin(slow)]
            worst = list(dict.fromkeys(last.worst))
            assert rec[f"worst_at_largest_K_{p}"] == worst
            assert rec.says(f"{', '.join(slow)} fit")
        if not sub.excluded.astype(bool).any():
            assert rec.says(
                f"`{p}`: no trailing error is at the rounding floor (10 x eps x max|AP| = "
                f"{rec[f'floor_{p}']:.1e}; the smallest error is {rec[f'smallest_error_{p}']:.1e})"
            )
        else:
            assert rec.says(f"`{p}`: ") and any("leaves out K =" in s for s in rec.sentences)
    n_rules = len(fits[fits.perturbation == featured])
    for p, sub in fits.groupby("perturbation"):
        matched = len(rec[f"matching_{p}"])
        assert rec[f"summary_matching_{p}"] == matched
        text = (
            f"Error orders under `{p}`: {count(matched, n_rules, 'quadrature rule')} show their "
            f"derived order (fitted within {tol})"
        )
        if matched < n_rules:
            text += "; the others are still pre-asymptotic"
        assert rec.says(text)
        cut = bool(sub.excluded.astype(bool).any())
        assert any(
            s.startswith(f"Error orders under `{p}`")
            and s.endswith(
                "(section 4)." if cut else "no fit is cut short by the rounding floor or a plateau."
            )
            for s in rec.sentences
        )


@params("05")
def test_doubling_answer(path):
    """The answer to the prediction: how much each rule's largest error shrinks when K
    doubles at the end of the grid, against (K_hi / K_lo) ** derived order."""
    rec = Recorded(path)
    curves = rec.table("convergence")
    curve = curves[curves.perturbation == rec["featured_perturbation"]]
    lo, hi = rec["doubling_from"], rec["doubling_to"]
    assert [lo, hi] == sorted(curve.K.unique())[-2:]
    errors = curve.pivot_table(index="K", columns="rule", values="max_abs_error")
    derived = curve.drop_duplicates("rule").set_index("rule").derived_order
    shrink = {}
    for rule in curve.rule.unique():
        shrink[rule] = errors.loc[lo, rule] / errors.loc[hi, rule]
        recorded = rec[f"shrink_{rule}"]
        assert close(recorded, shrink[rule], rel=1e-3)
        predicted = (hi / lo) ** derived[rule]
        assert rec.says(f"{rule} {recorded:.1f}x (order {derived[rule]} predicts {predicted:g}x)")
    high = min(v for r, v in shrink.items() if derived[r] == 4)
    low = max(v for r, v in shrink.items() if derived[r] == 2)
    faster = bool(high > low)
    assert rec["order4_all_faster"] == faster
    assert rec.says("Every order-4 rule shrank its error faster than every order-2 rule") == faster
    assert rec.says("Not every order-4 rule shrank its error faster") == (not faster)


@params("05")
def test_pass_counts(path):
    rec = Recorded(path)
    passes = rec.table("passes")
    per_comp = passes[
        passes.family.isin(["IG (per component)", "multi-step HVP"]) | (passes.key == "hvp")
    ]
    ap = passes[passes.key == "ap"].set_index(["perturbation", "kind"]).forward
    joined = per_comp.join(ap.rename("ap_forward"), on=["perturbation", "kind"])
    more = int((joined.forward >= joined.ap_forward).sum())
    assert rec["per_component_more_forward_than_ap"] == more
    assert rec.says(
        "use at least as many forward passes as AP, plus backward passes, in "
        + count(more, len(per_comp), "run")
    )
    order = list(dict.fromkeys(passes.key))
    labels = passes.drop_duplicates("key").set_index("key").method
    flat = [labels[k] for k in order if passes[passes.key == k].forward.nunique() == 1]
    assert rec["flat_cost"] == flat and "AtP" in flat
    assert rec.says(
        "the estimators whose passes do not grow with the number of components are "
        + ", ".join(flat)
    )
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
