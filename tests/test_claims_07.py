"""Notebook 07's verdicts, recomputed from the tables it recorded (committed run and reruns).

Every verdict and value notebook 07 states is recomputed here with independent pandas/numpy
code from the rows the notebook recorded beside it (accuracy and pass counts of every method at
every granularity and perturbation, the per-head values, the budget curve and the wall-time
table), then compared with the verdict keys and values the notebook states.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import hvp_utils as hu
from tests.claims import Recorded, close, params

SFF, ATP, AP, HVP = "SFF (patch)", "AtP alone", "AP everywhere", "HVP everywhere"
LIKE_AP, MIN_GAIN = 0.99, 0.01  # the notebook's thresholds, restated


def ranks_correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1])


def featured(rec: Recorded) -> str:
    """The perturbation the summary's pass counts are read under (one for every granularity)."""
    stated = rec.verdicts("workflow.summary_misranks", "workflow.summary_ranks_like_ap")
    (first,) = {values["featured"] for _, values in stated}
    return first


def perturbations(rec: Recorded, accuracy: pd.DataFrame) -> list[str]:
    first = featured(rec)
    return [first, *[p for p in dict.fromkeys(accuracy.perturbation) if p != first]]


def cheaper_and_worth(rec: Recorded) -> dict[str, tuple[list[str], list[str]]]:
    """Per granularity: where SFF (patch) takes less wall time than AP, and where it lifts
    Spearman over AtP alone by at least MIN_GAIN."""
    acc, timings = rec.table("accuracy"), rec.table("timings")
    perts = perturbations(rec, acc)
    times = timings.set_index(["granularity", "perturbation", "method"])["x AP time"]
    sp = acc.set_index(["granularity", "perturbation", "method"]).spearman
    return {
        g: (
            [p for p in perts if times[g, p, SFF] < 1],
            [p for p in perts if sp[g, p, SFF] - sp[g, p, ATP] >= MIN_GAIN - 1e-5],
        )
        for g in dict.fromkeys(acc.granularity)
    }


@params("07")
def test_what_the_fix_gains(path):
    rec = Recorded(path)
    acc = rec.table("accuracy")
    perts = perturbations(rec, acc)
    assert len(perts) == 2
    table = acc.set_index(["granularity", "perturbation", "method"])
    granularities = list(dict.fromkeys(acc.granularity))
    assert len(granularities) == 3
    for g in granularities:
        n = int(table.loc[(g, perts[0], ATP), "components"])
        key, stated = rec.only("workflow.atp_misranks", "workflow.atp_ranks_like_ap", granularity=g)
        assert (stated["n"], stated["like_ap"]) == (n, LIKE_AP)
        assert [d["perturbation"] for d in stated["detail"]] == perts
        for d in stated["detail"]:
            atp, sff = (
                table.loc[(g, d["perturbation"], ATP)],
                table.loc[(g, d["perturbation"], SFF)],
            )
            assert close(d["atp"], atp.spearman) and close(d["sff"], sff.spearman)
            assert d["flagged"] == int(sff.flagged) and 0 <= sff.flagged <= n
        misranks = [p for p in perts if table.loc[(g, p, ATP), "spearman"] < LIKE_AP]
        if not misranks:
            assert key == "workflow.atp_ranks_like_ap"
        else:
            assert key == "workflow.atp_misranks" and stated["misranks"] == misranks
            towards = all(
                table.loc[(g, p, SFF), "spearman"] > table.loc[(g, p, ATP), "spearman"]
                for p in perts
            )
            assert stated["towards"] is towards
        # a flagged subset costs no more forward passes than all
        for p in perts:
            assert table.loc[(g, p, SFF), "forward"] <= table.loc[(g, p, AP), "forward"]
    heads = rec.table("heads")
    for p, rows in heads.groupby("perturbation"):
        for method in (ATP, SFF):
            rho = ranks_correlation(rows[method].to_numpy(), rows[AP].to_numpy())
            assert close(table.loc[("heads", p, method), "spearman"], rho, rel=1e-3)
        flagged = rows.flagged.astype(bool)
        assert int(flagged.sum()) == int(table.loc[("heads", p, SFF), "flagged"])
        fixed = np.where(flagged, rows[AP], rows[ATP])
        assert np.allclose(rows[SFF], fixed, rtol=1e-4, atol=1e-6), "patch: AP where flagged"
    atp_rows, sff_rows = acc[acc.method == ATP], acc[acc.method == SFF]
    circuits = {
        "n_atp": int((atp_rows["top-k recall"] == 1.0).sum()),
        "n_sff": int((sff_rows["top-k recall"] == 1.0).sum()),
        "n_cells": len(atp_rows),
    }
    assert rec.only("workflow.same_circuit")[1] == circuits
    key, stated = rec.only(
        "workflow.summary_same_circuit_everywhere", "workflow.summary_same_circuit"
    )
    assert stated == circuits
    everywhere = circuits["n_atp"] == circuits["n_cells"]
    assert (key == "workflow.summary_same_circuit_everywhere") is everywhere

    fixes = ["SFF (patch)", "SFF (hvp)", "SFF (multistep)"]
    ran = acc[acc.method.isin(fixes)]
    wide = ran.pivot_table(
        index=["granularity", "perturbation"], columns="method", values="spearman"
    )
    wide = wide.dropna()
    totals = (
        ran.assign(total=ran.forward + ran.backward + ran.hvp)
        .pivot_table(index=["granularity", "perturbation"], columns="method", values="total")
        .loc[wide.index]
    )
    others = fixes[1:]
    best = {
        "n_best": int((wide[SFF] >= wide[others].max(axis=1)).sum()),
        "n_fewest": int((totals[SFF] <= totals[others].min(axis=1)).sum()),
        "n_cells": len(wide),
    }
    assert rec.only("workflow.patch_fix_best")[1] == best
    key, stated = rec.only("workflow.summary_patch_best_everywhere", "workflow.summary_patch_best")
    assert stated == best
    everywhere = best["n_best"] == best["n_fewest"] == best["n_cells"]
    assert (key == "workflow.summary_patch_best_everywhere") is everywhere

    hvp = acc[acc.method == HVP].set_index(["granularity", "perturbation"])
    ap = acc[acc.method == AP].set_index(["granularity", "perturbation"]).loc[hvp.index]
    _, stated = rec.only("workflow.hvp_everywhere_passes")
    assert stated["extra_forward"] == sorted({int(v) for v in hvp.forward - ap.forward})
    assert stated["backward_per_component"] == sorted(set(hvp.backward / hvp.components))
    assert stated["hvp_per_component"] == sorted(set(hvp.hvp / hvp.components))
    assert (hvp.forward >= ap.forward).all() and (hvp.backward > 0).all()


@params("07")
def test_where_it_pays_off(path):
    rec = Recorded(path)
    acc, timings = rec.table("accuracy"), rec.table("timings")
    perts = perturbations(rec, acc)
    times = timings.set_index(["granularity", "perturbation", "method"])["x AP time"]
    sp = acc.set_index(["granularity", "perturbation", "method"]).spearman
    keys = ("workflow.pays_off", "workflow.ap_better_buy", "workflow.screen_enough")
    for g, (cheaper, worth) in cheaper_and_worth(rec).items():
        key, stated = rec.only(*keys, "workflow.pays_off_partly", granularity=g)
        assert (stated["cheaper"], stated["worth"]) == (cheaper, worth)
        assert stated["perturbations"] == perts and stated["min_gain"] == MIN_GAIN
        assert all(close(c, times[g, p, SFF]) for c, p in zip(stated["costs"], perts, strict=True))
        lifts = [sp[g, p, SFF] - sp[g, p, ATP] for p in perts]
        assert all(close(a, b, abs_=1e-5) for a, b in zip(stated["lifts"], lifts, strict=True))
        both = [p for p in perts if p in cheaper and p in worth]
        if len(both) == len(perts):
            assert key == "workflow.pays_off"
        elif not cheaper and worth:
            assert key == "workflow.ap_better_buy"
        elif cheaper and not worth:
            assert key == "workflow.screen_enough"
            atp = [times[g, p, ATP] for p in perts]
            assert all(close(a, b) for a, b in zip(stated["atp_costs"], atp, strict=True))
        else:
            assert key == "workflow.pays_off_partly" and stated["both"] == both
        # AP everywhere is the time reference
        assert close(times[g, perts[0], AP], 1.0)
    hvp = timings[timings.method == HVP]["x AP time"]
    _, stated = rec.only("workflow.hvp_everywhere_slower")
    assert (stated["n_slower"], stated["n_runs"]) == (int((hvp > 1).sum()), len(hvp))
    assert close(stated["fastest"], hvp.min()) and close(stated["slowest"], hvp.max())


@params("07")
def test_answer_where_it_pays_off(path):
    rec = Recorded(path)
    acc = rec.table("accuracy")
    perts = perturbations(rec, acc)
    table = acc.set_index(["granularity", "perturbation", "method"])
    full = []
    for g, (cheaper, worth) in cheaper_and_worth(rec).items():
        key, stated = rec.only(
            "workflow.answer_pays_off",
            "workflow.answer_few_components",
            "workflow.answer_screen_enough",
            "workflow.answer_mixed",
            granularity=g,
        )
        assert stated["n"] == int(table.loc[(g, perts[0], ATP), "components"])
        if len(cheaper) == len(worth) == len(perts):
            full.append(g)
            assert key == "workflow.answer_pays_off"
        elif not cheaper and len(worth) == len(perts):
            assert key == "workflow.answer_few_components"
        elif len(cheaper) == len(perts) and not worth:
            assert key == "workflow.answer_screen_enough"
        else:
            assert key == "workflow.answer_mixed"
            assert (stated["cheaper"], stated["worth"]) == (cheaper, worth)
    assert rec.only("workflow.answer_pays_at")[1]["granularities"] == full


@params("07")
def test_summary(path):
    rec = Recorded(path)
    acc = rec.table("accuracy")
    first = featured(rec)
    perts = perturbations(rec, acc)
    table = acc.set_index(["granularity", "perturbation", "method"])
    for g in dict.fromkeys(acc.granularity):
        sff, ap = table.loc[(g, first, SFF)], table.loc[(g, first, AP)]
        # AP: one forward pass per component plus the clean and corrupted runs
        assert ap.forward == ap.components + 2 and ap.backward == 0
        key, stated = rec.only(
            "workflow.summary_misranks", "workflow.summary_ranks_like_ap", granularity=g
        )
        passes = (stated["sff_forward"], stated["sff_backward"], stated["sff_hvp"])
        assert passes == (int(sff.forward), int(sff.backward), int(sff.hvp))
        assert (stated["ap_forward"], stated["n"]) == (int(ap.forward), int(ap.components))
        atp = [table.loc[(g, p, ATP), "spearman"] for p in perts]
        misranks = [p for p, rho in zip(perts, atp, strict=True) if rho < LIKE_AP]
        if not misranks:
            assert key == "workflow.summary_ranks_like_ap"
            continue
        assert key == "workflow.summary_misranks" and stated["misranks"] == misranks
        assert all(close(a, b) for a, b in zip(stated["atp"], atp, strict=True))
        sffs = [table.loc[(g, p, SFF), "spearman"] for p in perts]
        assert all(close(a, b) for a, b in zip(stated["sff"], sffs, strict=True))


def test_atp_costs_what_the_table_says(toy64, toy_task):
    """AtP's pass counts (the table's 'AtP alone' rows), from the package."""
    comps = hu.components(toy64, "head_out", layers=[0])
    cost = hu.atp(toy64, toy_task, comps).cost
    assert (cost.forward, cost.backward, cost.hvp) == (3, 1, 0)


@params("07")
def test_what_a_budget_buys(path):
    rec = Recorded(path)
    acc = rec.table("accuracy").set_index(["granularity", "perturbation", "method"])
    heads, curve = rec.table("budget_heads"), rec.table("budget")
    flagged = heads.flagged.astype(bool).to_numpy()
    n = int(flagged.sum())
    key, stated = rec.only(
        "workflow.budget_never", "workflow.budget_none_needed", "workflow.budget_reaches"
    )
    p = stated["perturbation"]
    assert p == featured(rec) and stated["like_ap"] == LIKE_AP
    assert stated["n_flagged"] == n == int(acc.loc[("heads", p, SFF), "flagged"])
    assert list(curve.budget) == list(range(n + 1))
    assert (curve["forward passes"] == curve.budget).all(), "the fix: one forward pass per patch"
    # the curve again, from the heads' AtP, curvature and AP: fix the most curved flagged first
    order = [i for i in np.argsort(-heads.curvature.abs().to_numpy(), kind="stable") if flagged[i]]
    ap = heads.AP.to_numpy()
    rho = {}
    for b in curve.budget:
        values = heads.AtP.to_numpy().copy()
        values[order[:b]] = ap[order[:b]]
        rho[b] = ranks_correlation(values, ap)
        assert close(curve.spearman[b], rho[b], rel=1e-3), b
    assert close(stated["atp"], rho[0], rel=1e-3) and close(stated["all_fixed"], rho[n], rel=1e-3)
    assert close(rho[0], acc.loc[("heads", p, ATP), "spearman"], rel=1e-3)
    assert close(rho[n], acc.loc[("heads", p, SFF), "spearman"], rel=1e-3)
    reached = [b for b in curve.budget if curve.spearman[b] >= LIKE_AP]
    if not reached:
        assert key == "workflow.budget_never"
    elif reached[0] == 0:
        assert key == "workflow.budget_none_needed"
    else:
        assert key == "workflow.budget_reaches" and stated["n_fixed"] == reached[0]
        assert close(stated["reached"], rho[reached[0]], rel=1e-3)
        assert stated["ap_forward"] == int(acc.loc[("heads", p, AP), "forward"])


COVERAGE, MARGIN, THRESHOLD_SHARE = 0.9, 2.0, 0.1  # the notebook's calibration, restated
CALIBRATED = "calibrated margin"


def smallest_covering_margin(
    atp: np.ndarray, curvature: np.ndarray, ap: np.ndarray, coverage: float
) -> float:
    """The smallest m such that |AP - AtP| <= m |g''| / 2 for at least ``coverage`` of the
    components (a point interval where g'' = 0), by trying 0 and every component's own ratio
    upwards."""
    gap, half = np.abs(ap - atp), np.abs(curvature) / 2
    curved = half > 0
    for m in np.unique(np.concatenate([[0.0], gap[curved] / half[curved]])):
        covered = np.where(curved, gap <= m * half, gap == 0)
        if covered.sum() >= coverage * len(gap) - 1e-9:
            return float(m)
    return float("inf")


def interval_covers(atp, curvature, ap, m: float) -> np.ndarray:
    return np.abs(ap - atp) <= m * np.abs(curvature) / 2


def straddles_cut(atp, curvature, m: float, threshold: float) -> np.ndarray:
    lo, hi = atp - m * np.abs(curvature) / 2, atp + m * np.abs(curvature) / 2
    return ((lo < threshold) & (hi > threshold)) | ((lo < -threshold) & (hi > -threshold))


@params("07")
def test_calibrating_the_margin(path):
    rec = Recorded(path)
    table, heads = rec.table("margins"), rec.table("margin_heads")
    table[CALIBRATED] = table[CALIBRATED].astype(float).fillna(np.inf)  # inf is recorded as None
    assert (rec["margin_coverage"], rec["margin_default"]) == (COVERAGE, MARGIN)
    acc = rec.table("accuracy")
    sff = acc[acc.method == SFF].set_index(["granularity", "perturbation"])
    cells = table.set_index(["granularity", "perturbation"])
    assert sorted(cells.index) == sorted(sff.index), "one row per screen"
    assert (cells.components == sff.loc[cells.index].components).all()
    changed = cells.components - cells.unchanged  # unchanged components are in neither half
    assert (cells.calibration == changed // 2).all()
    assert (cells["held out"] == changed - cells.calibration).all()
    default, at = f"margin {MARGIN:g}", "calibrated"
    for column in (f"held-out covered, {default}", f"held-out covered, {at}"):
        assert table[column].between(0, 1).all()

    # the heads' rows again, from the per-head AtP, curvature and AP
    for p, rows in heads.groupby("perturbation", sort=False):
        row = cells.loc[("heads", p)]
        atp, curv, ap = (rows[c].to_numpy(float) for c in ("AtP", "curvature", "AP"))
        cal = rows.calibration.astype(bool).to_numpy()
        changed = (atp != 0) | (curv != 0)
        assert len(rows) == row.components and (~changed).sum() == row.unchanged
        assert cal.sum() == row.calibration and not (cal & ~changed).any()
        m = smallest_covering_margin(atp[cal], curv[cal], ap[cal], COVERAGE)
        assert close(row[CALIBRATED], m, rel=1e-3), (p, row[CALIBRATED], m)
        # the target holds on the calibration half
        assert interval_covers(atp[cal], curv[cal], ap[cal], m * (1 + 1e-6)).mean() >= COVERAGE
        threshold = THRESHOLD_SHARE * np.abs(atp).max()
        assert close(row.threshold, threshold, rel=1e-4)
        for name, margin in ((default, MARGIN), (at, float(row[CALIBRATED]))):
            held = changed & ~cal
            covered = interval_covers(atp[held], curv[held], ap[held], margin).mean()
            assert close(row[f"held-out covered, {name}"], covered, abs_=1e-4), (p, name)
            near = straddles_cut(atp[held], curv[held], margin, threshold).sum()
            assert row[f"held-out flagged, {name}"] == near, (p, name)

    # the verdicts, from the table
    perts = list(dict.fromkeys(table.perturbation))
    granularities = list(dict.fromkeys(table.granularity))
    calibrated = {g: [float(cells.loc[(g, p), CALIBRATED]) for p in perts] for g in granularities}
    stated = rec["margin_calibrated"]
    assert list(stated) == granularities
    for g in granularities:
        margins = [np.inf if m is None else m for m in stated[g]]
        assert all(a == b or close(a, b) for a, b in zip(margins, calibrated[g], strict=True)), g
        assert rec.says(f"{g} {' and '.join(f'{m:.2f}' for m in calibrated[g])}")
    narrow = [g for g in granularities if min(calibrated[g]) >= MARGIN]
    wide = [g for g in granularities if max(calibrated[g]) < MARGIN]
    assert (rec["margin_too_narrow"], rec["margin_too_wide"]) == (narrow, wide)
    if narrow:
        assert rec.says("is too narrow at " + ", ".join(narrow[:-1]))
    if wide:
        assert rec.says("wider than needed at " + ", ".join(wide[:-1]))
    # unchanged components (AtP = g'' = 0: patching them changes nothing) are left out
    unchanged = {
        g: [int(cells.loc[(g, p), "unchanged"]) for p in perts]
        for g in granularities
        if (table[table.granularity == g].unchanged > 0).any()
    }
    assert rec["margin_unchanged"] == unchanged
    for g, counts in unchanged.items():
        n = int(cells.loc[(g, perts[0]), "components"])
        assert rec.says(f"{' and '.join(str(k) for k in dict.fromkeys(counts))} of the {n} at {g}")
    for name in (default, at):
        shares = table[f"held-out covered, {name}"]
        assert rec["margin_met"][name] == int((shares >= COVERAGE - 1e-9).sum())
        low, high = rec["margin_held_out"][name]
        assert close(low, shares.min()) and close(high, shares.max())
    flags = rec["margin_flags"]
    cal_flags, two_flags = table[f"held-out flagged, {at}"], table[f"held-out flagged, {default}"]
    assert (flags["calibrated"], flags["default"]) == (int(cal_flags.sum()), int(two_flags.sum()))
    assert flags["fewer"] == int((cal_flags < two_flags).sum())
    assert flags["more"] == int((cal_flags > two_flags).sum())
    assert rec.says(f"flag {flags['calibrated']} held-out components in all")
    # a wider interval straddles the cut wherever a narrower one does
    below = table[CALIBRATED] < MARGIN
    assert (cal_flags[below] <= two_flags[below]).all()
    assert (cal_flags[~below] >= two_flags[~below]).all()
    # so does its coverage: a wider margin covers every component a narrower one does
    cal_cov, two_cov = table[f"held-out covered, {at}"], table[f"held-out covered, {default}"]
    assert (cal_cov[below] <= two_cov[below] + 1e-9).all()
    assert (cal_cov[~below] >= two_cov[~below] - 1e-9).all()
    sizes = rec["margin_calibration_sizes"]
    assert sizes == [int(table.calibration.min()), int(table.calibration.max())]
    assert rec.says("from this prompt sample and one random split"), "a sample-bound verdict"
