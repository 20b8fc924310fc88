"""Notebook 08's verdicts, recomputed: from the tables it recorded and from docs/bench itself.

The takeaways page only reads the benchmark's CSV files, so every table it recorded must equal
what those files say now (a stale page after ``make bench`` fails here), and every verdict and
value it states must follow from the tables, recomputed here with the test's own pandas code.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

import hvp_utils as hu
from tests.claims import ROOT, Recorded, close, notebook_paths, params

BENCH = ROOT / "docs" / "bench"
LOCAL_KINDS = ("head_q", "head_k", "neuron_pre")
SPEARMAN_LIKE_AP = 0.99  # the notebook's spearman_like_ap, restated


@pytest.fixture(scope="module")
def bench() -> pd.DataFrame:
    return pd.read_csv(BENCH / "estimators.csv")


def estimates(frame: pd.DataFrame) -> pd.DataFrame:
    """Every row but activation patching (ours and TransformerLens's)."""
    return frame[~frame.family.isin([hu.Family.AP, hu.Family.AP_PEER])]


def ranks_like_ap(row) -> bool:
    return bool(row.spearman >= SPEARMAN_LIKE_AP and row.topk_recall >= 1.0)


def labels(frame: pd.DataFrame, *, family: hu.Family | None = None, key: str | None = None) -> set:
    """The display labels the benchmark gave to one family's or one estimator key's rows."""
    rows = frame[frame.family == family] if family is not None else frame[frame.estimator == key]
    return set(rows.method)


def featured(rec: Recorded) -> str:
    return rec.only("takeaways.rerun")[1]["perturbation"]


@params("08")
def test_the_source_is_the_committed_benchmark(path):
    rec = Recorded(path)
    record = json.loads((BENCH / "run.json").read_text())
    _, stated = rec.only("takeaways.source")
    assert stated["command"] == record["command"]
    assert close(stated["minutes"], record["seconds"] / 60)
    assert featured(rec) in ("name_swap", "random_token")
    asked = rec.only("takeaways.rerun")[1]
    settings = record["settings"]
    differ = [k for k in ("model_name", "n_prompts", "seed", "dtype") if settings[k] != asked[k]]
    key, stated = rec.only(
        "takeaways.same_settings", "takeaways.settings_differ", "takeaways.settings_unknown"
    )
    assert key == ("takeaways.settings_differ" if differ else "takeaways.same_settings")
    if differ:
        assert [d["name"] for d in stated["differ"]] == differ


def committed(number: str):
    return notebook_paths(number)[0]


def test_the_benchmark_measures_what_notebooks_01_and_05_show(bench):
    """The benchmark runs on the prompts of notebooks 01-07, so where it measures what they
    measured, its numbers are theirs: AtP's NMAE per kind and perturbation (notebook 01) and
    every estimator of notebook 05's grid, with its pass counts, on head outputs, queries and
    MLP outputs."""
    record = json.loads((BENCH / "run.json").read_text())
    assert record["settings"]["n_prompts"] == 8 and record["settings"]["seed"] == 0, (
        "docs/bench was not made at the notebooks' settings: run make bench"
    )
    rows = bench.set_index(["perturbation", "kind", "key"])
    nmae_01 = Recorded(committed("01")).table("nmae_by_kind")
    shared = nmae_01[nmae_01.kind.isin(["head_out", "mlp_out"])]
    assert len(shared) == 4
    for r in shared.itertuples():
        assert close(r.nmae, rows.loc[(r.perturbation, r.kind, "atp")].nmae), r
    nb05 = Recorded(committed("05"))
    timings, passes = nb05.table("timings"), nb05.table("passes")
    assert set(timings.kind) == {"head_out", "head_q", "mlp_out"}
    shared = timings.key.isin(bench.key)
    # 05's grid has joint IG at K = 4, the bench's at K = 2 and 8; every other estimator is in both
    assert set(timings.key[~shared]) <= {"ig[mode=joint,steps=4]"}
    for r in timings[shared].itertuples():
        assert close(r.nmae, rows.loc[(r.perturbation, r.kind, r.key)].nmae), r
    for r in passes[passes.key.isin(bench.key)].itertuples():
        row = rows.loc[(r.perturbation, r.kind, r.key)]
        assert (r.forward, r.backward, r.hvp) == (row.forward, row.backward, row.hvp), r


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
        worst = atp[p].sort_values(ascending=False).iloc[: len(LOCAL_KINDS)]
        key, stated = rec.only(
            "takeaways.worst_are_local", "takeaways.worst_not_local", perturbation=p
        )
        assert [w["kind"] for w in stated["worst"]] == list(worst.index)
        assert all(close(w["nmae"], worst[w["kind"]]) for w in stated["worst"])
        local = set(worst.index) == set(LOCAL_KINDS)
        assert key == ("takeaways.worst_are_local" if local else "takeaways.worst_not_local")


def untied(group: pd.DataFrame) -> pd.DataFrame:
    """The group without the rows whose nmae, spearman and top-k recall (to 10 decimals) repeat
    a row with no more passes: of two ways to compute the same numbers, the cheaper by passes
    stays, whatever the wall clock said."""
    passes = group[["forward", "backward", "hvp"]].sum(axis=1)
    ordered = group.assign(passes=passes).sort_values("passes", kind="stable")
    repeats = ordered[["nmae", "spearman", "topk_recall"]].round(10).duplicated()
    return group.loc[ordered.index[~repeats.to_numpy()]].sort_index()


def picks_of(group: pd.DataFrame, budget: float) -> dict:
    """One (perturbation, kind) group of a benchmark: AtP's row, the most accurate estimate
    within ``budget`` times AtP's time, the most accurate faster than AP, and the fastest row
    that ranks like AP (ties between equal estimates go to the fewer passes)."""
    atp = group[group.estimator == "atp"].iloc[0]
    group = untied(group)
    cheap = estimates(group)
    like = group[(group.spearman >= SPEARMAN_LIKE_AP) & (group.topk_recall >= 1.0)]
    return {
        "atp": atp,
        "at_budget": cheap[cheap.x_AtP_time <= budget].sort_values("nmae").iloc[0],
        "below": cheap[cheap.x_AP_time < 1.0].sort_values("nmae").iloc[0],
        "like": like.sort_values("seconds").iloc[0],
    }


@params("08")
def test_decision_table_follows_from_the_benchmark(path, bench):
    rec = Recorded(path)
    budget = rec.only("takeaways.budget_changes_pick")[1]["budget_x_atp"]
    decision = rec.table("decision").set_index(["perturbation", "kind"])
    assert set(decision.index) == set(bench.groupby(["perturbation", "kind"]).groups)
    for (p, kind), row in decision.iterrows():
        picks = picks_of(bench[(bench.perturbation == p) & (bench.kind == kind)], budget)
        atp, at_budget, below = picks["atp"], picks["at_budget"], picks["below"]
        assert close(row["AtP nmae"], atp.nmae)
        assert row["AtP ranks like AP"] == ranks_like_ap(atp)
        assert row["best at AtP cost"] == at_budget.method
        assert close(row["its nmae"], at_budget.nmae)
        assert row["it ranks like AP"] == ranks_like_ap(at_budget)
        assert row["best below AP cost"] == below.method and close(row["nmae below AP"], below.nmae)
        assert row["cheapest ranking like AP"] == picks["like"].method


def bench_seed() -> int:
    return json.loads((BENCH / "run.json").read_text())["settings"]["seed"]


def other_bench_seeds(rec: Recorded) -> dict[int, pd.DataFrame]:
    """The committed benchmark at seeds other than docs/bench's own, with the page's model,
    prompt count and dtype, by seed."""
    asked = rec.only("takeaways.rerun")[1]
    frames = {}
    for folder in sorted((BENCH / "seeds").glob("seed*")):
        settings = json.loads((folder / "run.json").read_text())["settings"]
        same = all(settings[k] == asked[k] for k in ("model_name", "n_prompts", "dtype"))
        if same and settings["seed"] != bench_seed():
            frames[settings["seed"]] = pd.read_csv(folder / "estimators.csv")
    return frames


@params("08")
def test_the_choices_at_every_seed_are_the_committed_benchmarks(path, bench):
    """Section 2's spread: the three choices per (perturbation, kind) at the page's seed and at
    every other committed seed, recomputed from each seed's estimators.csv, and what the page
    says is settled (the same at every seed) and not."""
    rec = Recorded(path)
    budget = rec.only("takeaways.budget_changes_pick")[1]["budget_x_atp"]
    frames = {bench_seed(): bench, **other_bench_seeds(rec)}
    recorded = rec.table("choices_by_seed").set_index(["seed", "perturbation", "kind"])
    assert sorted(recorded.index.get_level_values("seed").unique()) == sorted(frames)
    for seed, frame in frames.items():
        for (p, kind), group in frame.groupby(["perturbation", "kind"]):
            picks, row = picks_of(group, budget), recorded.loc[(seed, p, kind)]
            assert row["AtP ranks like AP"] == ranks_like_ap(picks["atp"])
            assert row["best at AtP cost"] == picks["at_budget"].method
            assert row["cheapest ranking like AP"] == picks["like"].method
    choices = ["AtP ranks like AP", "best at AtP cost", "cheapest ranking like AP"]
    changes = recorded.groupby(["perturbation", "kind"])[choices].nunique() > 1
    if len(frames) == 1:
        rec.only("takeaways.choice_one_sample")
        return
    _, stated = rec.only("takeaways.choice_spread")
    assert stated["seeds"] == sorted(frames) and stated["n_groups"] == len(changes)
    assert stated["settled"] == {c: int((~changes[c]).sum()) for c in choices}
    p = featured(rec)
    for c in choices:
        moving = changes.loc[p][changes.loc[p][c]].index
        assert {u["kind"] for u in stated["unsettled"][c]} == set(moving)
        for u in stated["unsettled"][c]:
            by_seed = recorded.xs((p, u["kind"]), level=("perturbation", "kind"))[c]
            words = {True: "yes", False: "no"}
            assert u["picks"] == [words.get(v, v) for v in by_seed.sort_index()]


@params("08")
def test_what_the_chart_says(path, bench):
    rec = Recorded(path)
    p = featured(rec)
    decision = rec.table("decision").set_index(["perturbation", "kind"]).loc[p]
    kinds = list(dict.fromkeys(bench.kind))
    assert sorted(kinds) == sorted(decision.index)
    enough = [k for k in kinds if decision.loc[k, "AtP ranks like AP"]]
    key, stated = rec.only("takeaways.atp_enough", "takeaways.atp_enough_nowhere")
    assert stated["n_kinds"] == len(kinds) and stated["perturbation"] == p
    if enough:
        assert key == "takeaways.atp_enough" and stated["kinds"] == enough
    else:
        assert key == "takeaways.atp_enough_nowhere"
    ap = labels(bench, family=hu.Family.AP)
    need_ap = [k for k in kinds if decision.loc[k, "cheapest ranking like AP"] in ap]
    stated = rec.verdicts("takeaways.need_ap")
    assert [v["kinds"] for _, v in stated] == ([need_ap] if need_ap else [])

    rows = bench[(bench.perturbation == p) & (bench.estimator == "atp_local")].set_index("kind")
    assert len(rec.verdicts("takeaways.exact_local")) == len(LOCAL_KINDS)
    for kind in LOCAL_KINDS:
        _, stated = rec.only("takeaways.exact_local", kind=kind)
        atp = bench[(bench.perturbation == p) & (bench.estimator == "atp") & (bench.kind == kind)]
        assert close(stated["atp_nmae"], atp.nmae.iloc[0])
        assert close(stated["local_nmae"], rows.loc[kind, "nmae"])
        assert close(stated["ratio"], rows.loc[kind, "nmae"] / atp.nmae.iloc[0], rel=1e-3)
        assert close(stated["x_atp"], rows.loc[kind, "x_AtP_time"])

    same = [
        k
        for k in kinds
        if decision.loc[k, "best at AtP cost"] == decision.loc[k, "best below AP cost"]
    ]
    _, stated = rec.only("takeaways.budget_changes_pick")
    assert (stated["n_changed"], stated["n_kinds"]) == (len(kinds) - len(same), len(kinds))


@params("08")
def test_accuracy_for_compute(path, bench):
    rec = Recorded(path)
    p = featured(rec)
    per_component = rec.table("per_component")
    expected = bench[
        bench.family.isin(["HVP (one point)", "IG (per component)", "multi-step HVP"])
        & ~bench.method.str.contains("joint|hutchinson")
    ]
    assert len(per_component) == len(expected)
    assert sorted(per_component.method.unique()) == sorted(expected.method.unique())
    fastest = expected.sort_values("x_AP_time").iloc[0]
    key, stated = rec.only("takeaways.per_component_slower", "takeaways.per_component_fastest")
    assert close(stated["x_ap"], fastest.x_AP_time)
    assert (stated["method"], stated["kind"]) == (fastest.method, fastest.kind)
    slower = fastest.x_AP_time > 1.0
    assert key == (
        "takeaways.per_component_slower" if slower else "takeaways.per_component_fastest"
    )

    envelope = rec.table("envelope").set_index("kind")
    for kind, row in envelope.iterrows():
        group = estimates(bench[(bench.perturbation == p) & (bench.kind == kind)])
        assert close(row["best nmae at any cost"], group.nmae.min(), abs_=1e-9)
        assert close(row["best nmae below AP time"], group[group.x_AP_time < 1].nmae.min())
        assert close(row["its x AP time"], group.sort_values("nmae").iloc[0].x_AP_time)
    _, stated = rec.only("takeaways.envelope")
    best, below = envelope["best nmae at any cost"], envelope["best nmae below AP time"]
    assert stated["hardest"] == best.idxmax() and close(stated["max_best"], best.max())
    assert close(stated["below_min"], below.min()) and close(stated["below_max"], below.max())
    assert stated["all_slower"] is bool((envelope["its x AP time"] > 1).all())

    joint = bench[(bench.perturbation == p) & (bench.method == "HVP joint")].set_index("kind")
    atp = bench[(bench.perturbation == p) & (bench.estimator == "atp")].set_index("kind")
    kinds = list(dict.fromkeys(bench.kind))
    worse = [k for k in kinds if joint.loc[k, "nmae"] > atp.loc[k, "nmae"]]
    _, stated = rec.only("takeaways.joint_worse")
    assert stated["kinds"] == worse and (stated["n_worse"], stated["n_kinds"]) == (
        len(worse),
        len(kinds),
    )
    assert close(stated["median_x_atp"], joint.loc[kinds, "x_AtP_time"].median())


@params("08")
def test_neuron_level(path, bench):
    rec = Recorded(path)
    p = featured(rec)
    probes = pd.read_csv(BENCH / "hutchinson.csv")
    probes = probes[probes.perturbation == p].set_index("method")
    sweep = rec.table("sweep").set_index("method")
    for method in probes.index:
        assert close(sweep.loc[method, "nmae"], probes.loc[method, "nmae"])
    _, stated = rec.only("takeaways.diag_neurons")
    assert close(stated["x_atp"], probes.loc["HVP diag", "x_AtP_time"])
    assert close(stated["diag_nmae"], probes.loc["HVP diag", "nmae"])
    assert close(stated["atp_nmae"], probes.loc["AtP", "nmae"])
    hutch = probes[probes.n_probes.notna()].sort_values("n_probes")
    beats = hutch[hutch.nmae < probes.loc["AtP", "nmae"]]
    key, stated = rec.only("takeaways.hutchinson_beats_atp", "takeaways.hutchinson_never_beats")
    assert stated["max_probes"] == int(hutch.n_probes.max())
    if len(beats):
        assert key == "takeaways.hutchinson_beats_atp"
        assert stated["n_probes"] == int(beats.n_probes.iloc[0])
        assert close(stated["nmae"], beats.nmae.iloc[0])
    else:
        assert key == "takeaways.hutchinson_never_beats"
    sff = bench[(bench.perturbation == p) & (bench.family == "SFF")].set_index("kind")
    neuron_kinds = [k for k in ("neuron", "neuron_pre") if k in sff.index]
    assert len(rec.verdicts("takeaways.sff_neurons")) == len(neuron_kinds)
    for kind in neuron_kinds:
        _, stated = rec.only("takeaways.sff_neurons", kind=kind)
        assert close(stated["spearman"], sff.loc[kind, "spearman"])
        assert close(stated["x_ap"], sff.loc[kind, "x_AP_time"])


@params("08")
def test_every_kind_gets_a_rule_of_thumb(path, bench):
    rec = Recorded(path)
    ap, atp = labels(bench, family=hu.Family.AP), labels(bench, key="atp")
    p = featured(rec)
    decision = rec.table("decision").set_index(["perturbation", "kind"]).loc[p]
    assert len(rec.verdicts("takeaways.rule_of_thumb")) == len(decision)
    for kind, row in decision.iterrows():
        _, stated = rec.only("takeaways.rule_of_thumb", kind=kind)
        assert stated["best"] == row["best at AtP cost"]
        assert stated["atp_best"] is (row["best at AtP cost"] in atp)
        if row["AtP ranks like AP"]:
            assert stated["ranking"] == "atp"
        elif row["cheapest ranking like AP"] in ap:
            assert stated["ranking"] == "only_ap"
        else:
            assert stated["ranking"] == "cheapest"
            assert stated["cheapest"] == row["cheapest ranking like AP"]


# --- section 6: the seed paper's claims ------------------------------------------------------

SEEDS = ROOT / "docs" / "seeds"


def page_seed(rec: Recorded) -> int:
    return int(rec.only("takeaways.rerun")[1]["seed"])


def claim_rows(rec: Recorded, claim: str, part: str, seed: int) -> pd.DataFrame:
    measures = rec.table("measures")
    return measures[
        (measures.claim == claim) & (measures.part == part) & (measures.seed == seed)
    ].set_index("perturbation")


@params("08")
def test_the_claims_are_judged_on_the_numbers_of_notebooks_02_to_07(path):
    """The page's own rows are what notebooks 01-07 beside it measured, recomputed here from
    their recorded tables with the test's own arithmetic."""
    rec = Recorded(path)
    seed = page_seed(rec)
    earlier = {n: Recorded(next(path.parent.glob(f"{n}_*.ipynb"))) for n in ("02", "03", "04")}

    diagnosis = earlier["02"].table("diagnosis")
    for p, rows in claim_rows(rec, "downstream", "error", seed).iterrows():
        d = diagnosis[diagnosis.perturbation == p]
        down = (d.AP - d.AtP_out).abs().sum()
        share = down / (down + (d.AtP_out - d.AtP).abs().sum())
        assert close(rows.value, share) and rows.holds == (share > 0.5)

    intervals = earlier["03"].table("intervals")
    for p, rows in claim_rows(rec, "bounds", "coverage", seed).iterrows():
        i = intervals[intervals.perturbation == p]
        inside = ((i.lower <= i.AP) & (i.AP <= i.upper)).mean()
        assert close(rows.value, inside) and rows.holds == (inside >= 0.95)

    detection = earlier["03"].table("detection")
    for p, rows in claim_rows(rec, "reliability score", "detection", seed).iterrows():
        kinds = detection[detection.group.str.startswith(f"{p} /") & (detection.n >= 10)]
        kinds = kinds[kinds.auroc.notna()]
        assert close(rows.value, kinds.auroc.min()) and rows.holds == (kinds.auroc.min() >= 0.75)

    nmae = earlier["04"].table("nmae")
    for part, method in (("error", "HVP diag"), ("one pass", "HVP joint")):
        for p, rows in claim_rows(rec, "HVP", part, seed).iterrows():
            n = nmae[nmae.perturbation == p]
            worst = (n[method] / n.AtP).max()
            assert close(rows.value, worst) and rows.holds == (worst < 1)

    recovery = Recorded(next(path.parent.glob("06_*.ipynb"))).table("recovery")
    auroc = recovery.set_index("method").auroc
    (gain,) = claim_rows(rec, "circuit", "recovery", seed).value
    assert close(gain, auroc["HVP diag"] - auroc["AtP"])

    accuracy = Recorded(next(path.parent.glob("07_*.ipynb"))).table("accuracy")
    finest = accuracy[accuracy.components == accuracy.components.max()]
    for p, rows in claim_rows(rec, "Screen-Flag-Fix", "cost", seed).iterrows():
        f = finest[finest.perturbation == p].set_index("method")
        passes = f[["forward", "backward", "hvp"]].sum(axis=1)
        ratio = passes["SFF (patch)"] / passes["AP everywhere"]
        assert close(rows.value, ratio)
        assert rows.holds == (ratio < 1 and f.spearman["SFF (patch)"] >= 0.99)


@params("08")
def test_multistep_against_ig_at_equal_passes(path):
    """Per kind: some multi-step HVP at least as accurate as every IG with no more passes."""
    rec = Recorded(path)
    seed = page_seed(rec)
    nb05 = Recorded(next(path.parent.glob("05_*.ipynb")))
    frame = nb05.table("timings").merge(
        nb05.table("passes")[["perturbation", "kind", "method", "forward", "backward", "hvp"]]
    )
    frame["passes"] = frame.forward + frame.backward + frame.hvp
    for p, rows in claim_rows(rec, "multi-step HVP", "accuracy per pass", seed).iterrows():
        worst = 0.0
        for _, group in frame[frame.perturbation == p].groupby("kind"):
            ig = group[group.family.str.startswith("IG")]
            ratios = []
            for _, m in group[group.family == "multi-step HVP"].iterrows():
                rivals = ig[ig.passes <= m.passes]
                ratios.append(m.nmae / rivals.nmae.min() if len(rivals) else 0.0)
            worst = max(worst, min(ratios))
        assert close(rows.value, worst) and rows.holds == (worst <= 1)


@params("08")
def test_other_seeds_are_the_committed_measures_and_verdicts_follow(path):
    rec = Recorded(path)
    seed, measures = page_seed(rec), rec.table("measures")
    key, stated = rec.only("paper.seeds_source", "paper.seeds_missing", "paper.seeds_differ")
    others = measures[measures.seed != seed]
    if key == "paper.seeds_source":
        committed = pd.read_csv(SEEDS / "measures.csv", keep_default_na=False)
        committed = committed[committed.seed != seed].reset_index(drop=True)
        assert stated["seeds"] == sorted(committed.seed.unique().tolist())
        pd.testing.assert_frame_equal(
            others.reset_index(drop=True)[committed.columns], committed, check_dtype=False
        )
        run = json.loads((SEEDS / "run.json").read_text())
        assert stated["command"] == run["command"] and close(stated["minutes"], run["seconds"] / 60)
    else:
        assert others.empty
    judged = rec.verdicts("paper.reproduced", "paper.refuted", "paper.not_settled")
    missing = rec.verdicts("paper.not_measured")
    assert len(judged) == measures.groupby(["claim", "part"]).ngroups == 8 - len(missing)
    for key, stated in judged:
        group = measures[
            (measures.claim == stated["claim_key"]) & (measures.part == stated["part"])
        ]
        holds = group.holds.astype(bool)
        expected = "reproduced" if holds.all() else "refuted" if not holds.any() else "not_settled"
        assert key == f"paper.{expected}", f"{stated['claim_key']} / {stated['part']}"
        assert (stated["held"], stated["n"]) == (int(holds.sum()), len(group))
        assert close(stated["low"], group.value.min()) and close(stated["high"], group.value.max())


def mann_whitney(scores: pd.Series, positive: pd.Series) -> float:
    """P(score of a positive > score of a negative), ties 1/2, by counting pairs."""
    pos, neg = scores[positive].to_numpy(), scores[~positive].to_numpy()
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


@params("08")
def test_key_numbers_are_those_of_notebooks_01_04_06_07(path):
    """Seed 0's key numbers recomputed from the component tables of the notebooks beside 08."""
    seed = page_seed(Recorded(path))
    numbers = Recorded(path).table("key_numbers")
    mine = numbers[numbers.seed == seed].set_index(["key", "item", "perturbation"]).value
    notebooks = ("01", "04", "06", "07")
    beside = {n: Recorded(next(path.parent.glob(f"{n}_*.ipynb"))) for n in notebooks}
    nb01, nb04, nb06, nb07 = (beside[n] for n in notebooks)
    for (p, kind), d in nb01.table("component_errors").groupby(["perturbation", "kind"]):
        rho = d.estimate.rank().corr(d.AP.rank())
        nmae = (d.estimate - d.AP).abs().mean() / d.AP.abs().mean()
        assert close(mine["atp_kind_spearman", kind, p], rho, rel=1e-3), (p, kind)
        assert close(mine["atp_kind_nmae", kind, p], nmae, rel=1e-3), (p, kind)
    effects = nb04.table("effects")
    for (p, kind), d in effects.groupby(["perturbation", "kind"]):
        ratio = (d["HVP diag"] - d.AP).abs().mean() / (d.AtP - d.AP).abs().mean()
        # the effects are recorded to 6 digits: small neuron effects move the ratio by ~2e-4
        assert close(mine["hvp_diag", kind, p], ratio, rel=1e-3), (p, kind)
    heads = nb07.table("heads")
    for p, d in heads.groupby("perturbation"):
        rho = d["AtP alone"].rank().corr(d["AP everywhere"].rank())
        assert close(mine["atp_spearman", "heads", p], rho, rel=1e-4), p
    estimates, boundary = nb06.table("head_estimates"), nb06.table("boundary")
    in_circuit = boundary.set_index("head")["in circuit"].astype(bool)
    perturbation = nb06["perturbation"]
    for method in estimates.columns.drop(["head", "AP"]):
        scores = estimates.set_index("head")[method].abs()
        value = mine["circuit_auroc", method, perturbation]
        assert close(value, mann_whitney(scores, in_circuit[scores.index])), method


@params("08")
def test_key_numbers_of_other_seeds_are_the_committed_ones_and_verdicts_follow(path):
    rec = Recorded(path)
    seed, numbers = page_seed(rec), rec.table("key_numbers")
    others = numbers[numbers.seed != seed].reset_index(drop=True)
    if rec.verdicts("paper.seeds_source"):
        committed = pd.read_csv(SEEDS / "key_numbers.csv", keep_default_na=False)
        committed = committed[committed.seed != seed].reset_index(drop=True)
        pd.testing.assert_frame_equal(others[committed.columns], committed, check_dtype=False)
        stated = rec.verdicts("spread.settled", "spread.not_settled")
        assert len(stated) == len(hu.findings.spread.KEY_NUMBERS)
        for key, values in stated:
            rows = numbers[numbers.key.map(quantities()) == values["quantity"]]
            held = rows.groupby(["item", "perturbation"]).holds.agg(["sum", "size"])
            flips = held[(held["sum"] > 0) & (held["sum"] < held["size"])]
            assert len(values["unsettled"]) == len(flips), values["quantity"]
            assert key == ("spread.not_settled" if len(flips) else "spread.settled")
    else:
        assert others.empty and rec.verdicts("spread.one_sample")


def quantities() -> dict[str, str]:
    return {n.key: n.quantity for n in hu.findings.spread.KEY_NUMBERS}


def span(measures: pd.DataFrame, claim: str) -> tuple[str, int, int, float, float]:
    """A claim's verdict, how often its test held, of how many, and the value's range."""
    rows = measures[measures.claim == claim]
    held = int(rows.holds.astype(bool).sum())
    verdict = "reproduced" if held == len(rows) else "refuted" if held == 0 else "not settled"
    return verdict, held, len(rows), rows.value.min(), rows.value.max()


def same_span(stated: dict, expected: tuple) -> bool:
    verdict, held, n, low, high = expected
    return (stated["verdict"], stated["held"], stated["n"]) == (verdict, held, n) and (
        close(stated["low"], low) and close(stated["high"], high)
    )


@params("08")
def test_the_take_home_follows_from_the_tables_and_the_claims(path):
    """The summary's three answers: AtP's worst kinds (relative error, section 1's table), the
    claims of notebooks 02, 03 and 07 over every seed (section 6's measures), and per kind
    what the decision table (section 2) says."""
    rec = Recorded(path)
    p = featured(rec)
    measures = rec.table("measures")
    _, lie = rec.only("takeaways.lie")
    atp = rec.table("atp_nmae").set_index("kind")[p].sort_values(ascending=False)
    worst = atp.iloc[: len(LOCAL_KINDS)]
    assert [w["kind"] for w in lie["worst"]] == list(worst.index) and lie["perturbation"] == p
    assert all(close(w["nmae"], worst[w["kind"]]) for w in lie["worst"])
    assert lie["local"] == [k for k in worst.index if k in LOCAL_KINDS]
    assert same_span(lie["downstream"], span(measures, "downstream"))
    _, tell = rec.only("takeaways.tell")
    assert same_span(tell["detection"], span(measures, "reliability score"))
    assert same_span(tell["coverage"], span(measures, "bounds"))
    _, instead = rec.only("takeaways.instead")
    decision = rec.table("decision").set_index(["perturbation", "kind"]).loc[p]
    picks = rec.table("choices_by_seed")
    picks = picks[picks.perturbation == p]
    n_seeds = picks.seed.nunique()
    assert instead["n_seeds"] == (n_seeds if n_seeds > 1 else None)

    def settled(item: dict, choice: str) -> None:
        same = picks[picks.kind == item["kind"]][choice].nunique() == 1
        assert item["settled"] == (same if n_seeds > 1 else None)

    assert [a["kind"] for a in instead["atp_ranks"]] == list(
        decision.index[decision["AtP ranks like AP"]]
    )
    for a in instead["atp_ranks"]:
        settled(a, "AtP ranks like AP")
    better = decision[decision["best at AtP cost"] != "AtP"]
    assert [c["kind"] for c in instead["cheaper"]] == list(better.index)
    for c in instead["cheaper"]:
        assert c["method"] == better.loc[c["kind"], "best at AtP cost"]
        assert close(c["nmae"], better.loc[c["kind"], "its nmae"])
        assert close(c["atp"], better.loc[c["kind"], "AtP nmae"])
        settled(c, "best at AtP cost")
    only_ap = decision[decision["cheapest ranking like AP"] == "AP"]
    assert [n["kind"] for n in instead["need_ap"]] == list(only_ap.index)
    for n in instead["need_ap"]:
        settled(n, "cheapest ranking like AP")
    assert same_span(instead["sff"], span(measures, "Screen-Flag-Fix"))
