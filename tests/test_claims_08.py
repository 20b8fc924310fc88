"""Notebook 08's sentences, recomputed: from the tables it recorded and from docs/bench itself.

The takeaways page only reads the benchmark's CSV files, so every table it recorded must equal
what those files say now (a stale page after ``make bench`` fails here), and every sentence must
follow from the tables.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

import hvp_utils as hu
from tests.claims import ROOT, Recorded, close, params

BENCH = ROOT / "docs" / "bench"
LOCAL_KINDS = ("head_q", "head_k", "neuron_pre")


@pytest.fixture(scope="module")
def bench() -> pd.DataFrame:
    return pd.read_csv(BENCH / "estimators.csv")


def estimates(frame: pd.DataFrame) -> pd.DataFrame:
    """Every row but activation patching (ours and TransformerLens's)."""
    return frame[~frame.family.isin([hu.Family.AP, hu.Family.AP_PEER])]


def ranks_like_ap(row, spearman: float) -> bool:
    return bool(row.spearman >= spearman and row.topk_recall >= 1.0)


@params("08")
def test_the_source_is_the_committed_benchmark(path):
    rec = Recorded(path)
    record = json.loads((BENCH / "run.json").read_text())
    assert close(rec["bench_minutes"], record["seconds"] / 60)
    assert rec.says(f"`{record['command']}` in {record['seconds'] / 60:.1f} minutes")
    assert rec["perturbation"] in ("name_swap", "random_token")


@params("08")
def test_atp_error_table_and_the_answer(path, bench):
    rec = Recorded(path)
    table = rec.table("atp_nmae").set_index("kind")
    atp = bench[bench.estimator == "atp"].pivot_table(
        index="kind", columns="perturbation", values="nmae"
    )
    for p in table.columns:
        for kind in table.index:
            assert close(table.loc[kind, p], atp.loc[kind, p]), (kind, p)
        worst = list(table[p].sort_values(ascending=False).index[: len(LOCAL_KINDS)])
        assert rec[f"worst_kinds_{p}"] == worst
        assert rec[f"worst_are_local_{p}"] == (set(worst) == set(LOCAL_KINDS))
        assert rec.says(
            f"Under `{p}` AtP is furthest off on `{worst[0]}` ({table.loc[worst[0], p]:.3f})"
        )


@params("08")
def test_decision_table_follows_from_the_benchmark(path, bench):
    rec = Recorded(path)
    budget, spearman = rec["budget_x_atp"], rec["spearman_like_ap"]
    decision = rec.table("decision").set_index(["perturbation", "kind"])
    assert set(decision.index) == set(bench.groupby(["perturbation", "kind"]).groups)
    for (p, kind), row in decision.iterrows():
        group = bench[(bench.perturbation == p) & (bench.kind == kind)]
        atp = group[group.estimator == "atp"].iloc[0]
        assert close(row["AtP nmae"], atp.nmae)
        assert row["AtP ranks like AP"] == ranks_like_ap(atp, spearman)
        cheap = estimates(group)
        at_budget = cheap[cheap.x_AtP_time <= budget].sort_values("nmae").iloc[0]
        assert row["best at AtP cost"] == at_budget.method and close(
            row["its nmae"], at_budget.nmae
        )
        assert row["it ranks like AP"] == ranks_like_ap(at_budget, spearman)
        below = cheap[cheap.x_AP_time < 1.0].sort_values("nmae").iloc[0]
        assert row["best below AP cost"] == below.method and close(row["nmae below AP"], below.nmae)
        like = group[(group.spearman >= spearman) & (group.topk_recall >= 1.0)]
        assert row["cheapest ranking like AP"] == like.sort_values("seconds").iloc[0].method


@params("08")
def test_what_the_chart_says(path, bench):
    rec = Recorded(path)
    p = rec["perturbation"]
    decision = rec.table("decision").set_index(["perturbation", "kind"]).loc[p]
    kinds = list(decision.index)
    assert rec["atp_enough_kinds"] == [k for k in kinds if decision.loc[k, "AtP ranks like AP"]]
    assert rec["need_ap_kinds"] == [
        k for k in kinds if decision.loc[k, "cheapest ranking like AP"] == "AP"
    ]
    same = [
        k
        for k in kinds
        if decision.loc[k, "best at AtP cost"] == decision.loc[k, "best below AP cost"]
    ]
    assert rec["same_pick_kinds"] == same
    rows = bench[(bench.perturbation == p) & (bench.estimator == "atp_local")].set_index("kind")
    for kind in LOCAL_KINDS:
        ratio = rows.loc[kind, "nmae"] / decision.loc[kind, "AtP nmae"]
        assert close(rec[f"local_ratio_{kind}"], ratio, rel=1e-3)
        assert close(rec[f"local_x_atp_{kind}"], rows.loc[kind, "x_AtP_time"])
        first = decision.loc[kind, "AtP nmae"]
        assert rec.says(f"On `{kind}`, AtP (exact local) cuts AtP's NMAE from {first:.3f}")


@params("08")
def test_accuracy_for_compute(path, bench):
    rec = Recorded(path)
    p = rec["perturbation"]
    per_component = rec.table("per_component")
    expected = bench[
        bench.family.isin(["HVP (one point)", "IG (per component)", "multi-step HVP"])
        & ~bench.method.str.contains("joint|hutchinson")
    ]
    assert len(per_component) == len(expected)
    assert sorted(per_component.method.unique()) == sorted(expected.method.unique())
    assert close(rec["fastest_per_component_x_ap"], expected.x_AP_time.min())
    envelope = rec.table("envelope").set_index("kind")
    for kind, row in envelope.iterrows():
        group = estimates(bench[(bench.perturbation == p) & (bench.kind == kind)])
        assert close(row["best nmae at any cost"], group.nmae.min(), abs_=1e-9)
        assert close(row["best nmae below AP time"], group[group.x_AP_time < 1].nmae.min())
    assert rec["hardest_kind"] == envelope["best nmae at any cost"].idxmax()
    assert rec["most_accurate_all_slower_than_ap"] == bool((envelope["its x AP time"] > 1).all())
    joint = bench[(bench.perturbation == p) & (bench.method == "HVP joint")].set_index("kind")
    atp = bench[(bench.perturbation == p) & (bench.estimator == "atp")].set_index("kind")
    worse = [k for k in envelope.index if joint.loc[k, "nmae"] > atp.loc[k, "nmae"]]
    assert rec["joint_worse_kinds"] == worse


@params("08")
def test_neuron_level(path):
    rec = Recorded(path)
    p = rec["perturbation"]
    probes = pd.read_csv(BENCH / "hutchinson.csv")
    probes = probes[probes.perturbation == p].set_index("method")
    sweep = rec.table("sweep").set_index("method")
    for method in probes.index:
        assert close(sweep.loc[method, "nmae"], probes.loc[method, "nmae"])
    assert close(rec["diag_x_atp"], probes.loc["HVP diag", "x_AtP_time"])
    hutch = probes[probes.n_probes.notna()].sort_values("n_probes")
    beats = hutch[hutch.nmae < probes.loc["AtP", "nmae"]]
    fewest = int(beats.n_probes.iloc[0]) if len(beats) else None
    assert rec["fewest_probes_beating_atp"] == fewest
    if fewest is not None:
        assert rec.says(f"Hutchinson needs {fewest} probes to beat AtP")


@params("08")
def test_every_kind_gets_a_rule_of_thumb(path):
    rec = Recorded(path)
    p = rec["perturbation"]
    decision = rec.table("decision").set_index(["perturbation", "kind"]).loc[p]
    for kind, row in decision.iterrows():
        lead = f"`{kind}`: {row['best at AtP cost']}"
        assert rec.says(lead), lead
