"""Notebook 07's findings, recomputed from the tables it recorded (committed run and reruns).

Every number a sentence of notebook 07 states is recomputed here with independent code from
the rows the notebook recorded beside it (accuracy and pass counts of every method at every
granularity and perturbation, and the wall-time table), and each sentence is checked to use
the wording the recomputed number calls for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import hvp_utils as hu
from hvp_utils import count_phrase as count
from tests.claims import Recorded, close, params

SFF, ATP, AP, HVP = "SFF (patch)", "AtP alone", "AP everywhere", "HVP everywhere"


def ranks_correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1])


def perturbations(rec: Recorded, accuracy: pd.DataFrame) -> list[str]:
    featured = rec["featured_perturbation"]
    return [featured, *[p for p in dict.fromkeys(accuracy.perturbation) if p != featured]]


@params("07")
def test_what_the_fix_gains(path):
    rec = Recorded(path)
    acc = rec.table("accuracy")
    like_ap = rec["ranks_like_ap_spearman"]
    perts = perturbations(rec, acc)
    assert len(perts) == 2
    table = acc.set_index(["granularity", "perturbation", "method"])
    granularities = list(dict.fromkeys(acc.granularity))
    assert len(granularities) == 3
    for g in granularities:
        n = int(table.loc[(g, perts[0], ATP), "components"])
        details = []
        misranks = []
        for p in perts:
            atp, sff = table.loc[(g, p, ATP)], table.loc[(g, p, SFF)]
            assert close(rec[f"atp_spearman_{g}_{p}"], atp.spearman)
            assert close(rec[f"sff_spearman_{g}_{p}"], sff.spearman)
            assert rec[f"flagged_{g}_{p}"] == int(sff.flagged)
            assert 0 <= sff.flagged <= n
            if atp.spearman < like_ap:
                misranks.append(p)
            details.append(
                f"`{p}` {rec[f'atp_spearman_{g}_{p}']:.4f} -> {rec[f'sff_spearman_{g}_{p}']:.4f}, "
                f"{int(sff.flagged)} of {n} fixed"
            )
        assert rec[f"atp_misranks_{g}"] == misranks
        verdict = "AtP misranks" if misranks else "AtP alone already ranks like AP"
        assert rec.says(f"{g} ({n} components): {verdict}")
        assert rec.says("AtP -> SFF (patch): " + "; ".join(details) + ".")
        if misranks:
            towards = all(
                rec[f"sff_spearman_{g}_{p}"] > rec[f"atp_spearman_{g}_{p}"] for p in perts
            )
            moves = "moves the ranking towards" if towards else "does not always move"
            assert rec.says(f"{g} ({n} components): AtP misranks") and rec.says(moves)
        # SFF (patch) replaces AtP by AP exactly on the flagged components: its pass counts
        # are the screen's plus one forward pass per flagged component
        for p in perts:
            sff, ap = table.loc[(g, p, SFF)], table.loc[(g, p, AP)]
            assert sff.forward <= ap.forward, (
                "a flagged subset costs no more forward passes than all"
            )
    heads = rec.table("heads")
    for p, rows in heads.groupby("perturbation"):
        for method, column in ((ATP, "AtP"), (SFF, "SFF (patch)")):
            rho = ranks_correlation(rows[column].to_numpy(), rows.AP.to_numpy())
            assert close(table.loc[("heads", p, method), "spearman"], rho, rel=1e-3)
        flagged = rows.flagged.astype(bool)
        assert int(flagged.sum()) == rec[f"flagged_heads_{p}"]
        fixed = np.where(flagged, rows.AP, rows.AtP)
        assert np.allclose(rows["SFF (patch)"], fixed, rtol=1e-4, atol=1e-6), (
            "patch: AP where flagged"
        )
    atp_rows, sff_rows = acc[acc.method == ATP], acc[acc.method == SFF]
    n_cells = len(atp_rows)
    same_atp = int((atp_rows["top-k recall"] == 1.0).sum())
    same_sff = int((sff_rows["top-k recall"] == 1.0).sum())
    assert rec["atp_same_circuit"] == same_atp and rec["sff_same_circuit"] == same_sff
    cell = "(granularity, perturbation) cell"
    assert rec.says(
        f"AtP alone puts AP's circuit on top (top-k recall 1) in {count(same_atp, n_cells, cell)}"
    )
    assert rec.says(f"SFF (patch) in {count(same_sff, n_cells, 'cell')}")
    wide = acc[acc.method.str.startswith("SFF")].pivot_table(
        index=["granularity", "perturbation"], columns="method", values="spearman"
    )
    wide = wide.dropna()
    totals = (
        acc.assign(total=acc.forward + acc.backward + acc.hvp)
        .pivot_table(index=["granularity", "perturbation"], columns="method", values="total")
        .loc[wide.index]
    )
    others = ["SFF (hvp)", "SFF (multistep)"]
    best = int((wide[SFF] >= wide[others].max(axis=1)).sum())
    fewest = int((totals[SFF] <= totals[others].min(axis=1)).sum())
    assert rec["patch_ranks_best"] == best and rec["patch_fewest_passes"] == fewest
    assert rec.says(
        f"in {count(best, len(wide), 'cell')} and uses the fewest passes in "
        + count(fewest, len(wide), "cell")
    )
    hvp = acc[acc.method == HVP].set_index(["granularity", "perturbation"])
    ap = acc[acc.method == AP].set_index(["granularity", "perturbation"]).loc[hvp.index]
    assert rec["hvp_everywhere_extra_forward"] == sorted({int(v) for v in hvp.forward - ap.forward})
    assert rec["hvp_everywhere_backward_per_component"] == sorted(
        set(hvp.backward / hvp.components)
    )
    assert rec["hvp_everywhere_hvp_per_component"] == sorted(set(hvp.hvp / hvp.components))
    assert (hvp.forward >= ap.forward).all() and (hvp.backward > 0).all()


@params("07")
def test_where_it_pays_off(path):
    rec = Recorded(path)
    acc, timings = rec.table("accuracy"), rec.table("timings")
    perts = perturbations(rec, acc)
    min_gain = rec["worthwhile_spearman_gain"]
    times = timings.set_index(["granularity", "perturbation", "method"])["x AP time"]
    sp = acc.set_index(["granularity", "perturbation", "method"]).spearman
    pays_at = []
    for g in dict.fromkeys(acc.granularity):
        cheaper = [p for p in perts if times[g, p, SFF] < 1]
        worth = [p for p in perts if sp[g, p, SFF] - sp[g, p, ATP] >= min_gain - 1e-5]
        assert rec[f"sff_cheaper_than_ap_{g}"] == cheaper
        assert rec[f"sff_worth_it_{g}"] == worth
        both = [p for p in perts if p in cheaper and p in worth]
        if both:
            pays_at.append(g)
        costs = " and ".join(f"{times[g, p, SFF]:.2g}x" for p in perts)
        if len(both) == len(perts):
            assert rec.says(f"{g}: SFF (patch) takes {costs} AP's time and raises Spearman by")
            assert rec.says("here it pays off.")
        elif not cheaper and worth:
            assert rec.says(f"over AtP alone but takes {costs} AP's time, longer than patching")
            assert rec.says("AP everywhere is the better buy.")
        elif cheaper and not worth:
            atp_costs = " and ".join(f"{times[g, p, ATP]:.2g}x" for p in perts)
            assert rec.says(
                f"{g}: SFF (patch) takes {costs} AP's time, but AtP alone, at {atp_costs}"
            )
            assert rec.says("the screen alone is enough here.")
        # AP everywhere is the time reference
        assert close(times[g, perts[0], AP], 1.0)
    assert rec["pays_at"] == pays_at
    hvp = timings[timings.method == HVP]["x AP time"]
    slower = int((hvp > 1).sum())
    assert rec["hvp_everywhere_slower_than_ap"] == slower
    runs = "both runs" if slower == len(hvp) == 2 else count(slower, len(hvp), "run")
    assert rec.says(f"HVP everywhere took longer than AP everywhere in {runs}")


@params("07")
def test_summary(path):
    rec = Recorded(path)
    acc = rec.table("accuracy")
    featured = rec["featured_perturbation"]
    for g in dict.fromkeys(acc.granularity):
        rows = acc[(acc.granularity == g) & (acc.perturbation == featured)].set_index("method")
        sff, ap = rows.loc[SFF], rows.loc[AP]
        assert rec.says(
            f"SFF (patch) spends {int(sff.forward)} forward, {int(sff.backward)} backward and "
            f"{int(sff.hvp)} double-backward passes where AP spends {int(ap.forward)} forward"
        )
        # AP: one forward pass per component plus the clean and corrupted runs
        assert ap.forward == ap.components + 2 and ap.backward == 0
        n = int(ap.components)
        verdict = "AtP misranks" if rec[f"atp_misranks_{g}"] else "AtP alone already ranks like AP"
        assert rec.says(f"{g} ({n} components): {verdict} (Spearman")
        if rec[f"atp_misranks_{g}"]:
            perts = perturbations(rec, acc)
            values = " and ".join(f"{rec[f'sff_spearman_{g}_{p}']:.4f}" for p in perts)
            assert rec.says(
                f"with the flagged ones fixed by exact patching, Spearman is {values} (AtP: "
            )
    n_cells = int((acc.method == ATP).sum())
    assert rec.says(
        "AtP alone recovers AP's circuit (top-k recall 1) in "
        + count(rec["atp_same_circuit"], n_cells, "cell")
    )


def test_atp_costs_what_the_table_says(toy64, toy_task):
    """AtP's pass counts (the table's 'AtP alone' rows), from the package."""
    comps = hu.components(toy64, "head_out", layers=[0])
    cost = hu.atp(toy64, toy_task, comps).cost
    assert (cost["forward"], cost["backward"], cost["hvp"]) == (3, 1, 0)


@params("07")
def test_what_a_budget_buys(path):
    rec = Recorded(path)
    acc = rec.table("accuracy").set_index(["granularity", "perturbation", "method"])
    featured, like_ap = rec["featured_perturbation"], rec["ranks_like_ap_spearman"]
    heads, curve = rec.table("budget_heads"), rec.table("budget")
    flagged = heads.flagged.astype(bool).to_numpy()
    n = int(flagged.sum())
    assert rec["budget_flagged_heads"] == n == int(acc.loc[("heads", featured, SFF), "flagged"])
    assert list(curve.budget) == list(range(n + 1))
    assert (curve["forward passes"] == curve.budget).all(), "the fix: one forward pass per patch"
    # the curve again, from the heads' AtP, curvature and AP: fix the most curved flagged first
    order = [i for i in np.argsort(-heads.curvature.abs().to_numpy(), kind="stable") if flagged[i]]
    ap = heads.AP.to_numpy()
    for b, rho in zip(curve.budget, curve.spearman, strict=True):
        values = heads.AtP.to_numpy().copy()
        values[order[:b]] = ap[order[:b]]
        assert close(rho, ranks_correlation(values, ap), rel=1e-3), b
    assert close(curve.spearman.iloc[0], acc.loc[("heads", featured, ATP), "spearman"])
    assert close(curve.spearman.iloc[-1], acc.loc[("heads", featured, SFF), "spearman"])
    reached = curve[curve.spearman >= like_ap]
    enough = int(reached.budget.min()) if len(reached) else None
    assert rec["budget_first_like_ap"] == enough
    rho = dict(zip(curve.budget, curve.spearman, strict=True))
    ends = f"AtP alone {rho[0]:.4f}, all {n} fixed {rho[n]:.4f}"
    if enough is None:
        assert rec.says(f"Spearman stays below {like_ap} ({ends}).")
    elif enough == 0:
        assert rec.says(f"AtP alone already ranks the heads like AP under `{featured}`")
    else:
        ap_forward = int(acc.loc[("heads", featured, AP), "forward"])
        assert rec.says(
            f"Spearman first reaches {like_ap} with {count(enough, n, 'flagged head')} fixed "
            f"({rho[enough]:.4f}; {ends}): {enough} forward"
        )
        assert rec.says(f"on top of the screen's, where AP everywhere spends {ap_forward}.")


@params("07")
def test_answer_where_it_pays_off(path):
    rec = Recorded(path)
    acc, timings = rec.table("accuracy"), rec.table("timings")
    perts = perturbations(rec, acc)
    min_gain = rec["worthwhile_spearman_gain"]
    times = timings.set_index(["granularity", "perturbation", "method"])["x AP time"]
    table = acc.set_index(["granularity", "perturbation", "method"])
    full = []
    for g in dict.fromkeys(acc.granularity):
        cheaper = [p for p in perts if times[g, p, SFF] < 1]
        lift = {
            p: table.loc[(g, p, SFF), "spearman"] - table.loc[(g, p, ATP), "spearman"]
            for p in perts
        }
        worth = [p for p in perts if lift[p] >= min_gain - 1e-5]
        n = int(table.loc[(g, perts[0], ATP), "components"])
        start = f"{g} ({n} components): "
        if len(cheaper) == len(worth) == len(perts):
            full.append(g)
            assert rec.says(start + "it pays off, cheaper than AP everywhere")
        elif not cheaper and len(worth) == len(perts):
            assert rec.says(start + "the fix is worth it, but with this few components")
        elif len(cheaper) == len(perts) and not worth:
            assert rec.says(
                start + "cheaper than AP everywhere, but the fix lifts Spearman by less"
            )
        else:
            assert rec.says(start + "cheaper than AP everywhere under ")
    assert rec["answer_pays_everywhere"] == full
    where = " and ".join(full) if full else "no granularity"
    assert rec.says(f"In this run SFF (patch) pays off under every perturbation at {where}:")
