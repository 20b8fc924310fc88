"""Accuracy against compute (``run_estimators``) and the benchmark's target report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hvp_utils as hu
from hvp_utils.analysis.benchmark import frontier_table
from hvp_utils.cli.bench import targets, with_circuit_columns


@pytest.fixture(scope="module")
def heads(small64):
    return hu.components(small64, "head_out", layers=[0, 1])


@pytest.fixture(scope="module")
def run(small64, small_task, heads):
    grid = [
        hu.atp_estimator(),
        hu.hvp_estimator(),
        hu.hvp_estimator(mode="joint"),
        hu.hvp_estimator(mode="hutchinson", n_probes=4, seed=0),
        hu.hvp_estimator(mode="hutchinson", n_probes=4, seed=1),
        hu.multistep_estimator(steps=1, rule="radau"),
        hu.ig_estimator(steps=2),
        hu.sff_estimator(fix="patch"),
    ]
    return hu.run_estimators(
        small64, small_task, heads, estimators=grid, perturbation="name_swap", kind="head"
    )


@pytest.mark.slow
def test_one_row_per_estimator_keyed_without_collisions(run):
    frame, results = run
    assert list(frame.key) == list(results)
    assert len(frame) == 9 and frame.key.is_unique
    seeds = frame[frame.key.str.startswith("hvp[mode=hutchinson")]
    assert sorted(seeds.opt_seed) == [0, 1], "two Hutchinson seeds must both be kept"
    assert not np.allclose(*(results[k].values for k in seeds.key))


@pytest.mark.slow
def test_rows_are_compare_of_each_result_against_ap(run):
    frame, results = run
    truth = results["ap"]
    for _, row in frame.iterrows():
        expected = hu.compare(results[row.key], truth).iloc[0]
        for column in ("pearson", "spearman", "nmae", "topk_recall"):
            assert row[column] == pytest.approx(expected[column], nan_ok=True)
        assert row.forward == results[row.key].cost.forward
    ap = frame.set_index("key").loc["ap"]
    assert ap.nmae == 0 and ap.x_AP_time == pytest.approx(1.0)
    assert frame.set_index("key").loc["atp"].x_AtP_time == pytest.approx(1.0)
    assert set(frame.family) >= {"AP", "AtP", "HVP (one point)", "SFF", "IG (per component)"}


def test_duplicate_estimators_are_refused(small64, small_task, heads):
    with pytest.raises(ValueError, match="twice"):
        twice = [hu.atp_estimator(), hu.atp_estimator()]
        hu.run_estimators(small64, small_task, heads, estimators=twice)


@pytest.mark.slow
def test_targets_report_reads_keys_not_labels(run):
    frame, results = run
    frame = with_circuit_columns(frame.copy(), results)
    report = targets(frame)
    by_key = frame.set_index("key")
    ratio = by_key.loc["hvp"].nmae / by_key.loc["atp"].nmae
    assert f"ratio {ratio:.2f}" in report
    assert ("met" if ratio <= 0.5 else "missed") in report.split("ratio")[1].split("\n")[0]
    joint = by_key.loc["hvp[mode=joint]"].x_AtP_time
    assert f"median {joint:.2f}" in report
    assert "SFF (patch), name_swap/head" in report
    relabelled = frame.assign(method=[f"m{i}" for i in range(len(frame))])
    assert targets(relabelled).count("- ") == report.count("- "), "labels must not matter"


def test_targets_verdicts_on_a_constructed_frame():
    rows = [
        dict(key="ap", estimator="ap", method="AP", nmae=0.0, seconds=1.0),
        dict(key="atp", estimator="atp", method="AtP", nmae=0.4, seconds=0.1),
        dict(key="hvp", estimator="hvp", method="HVP diag", nmae=0.1, seconds=2.0),
        dict(key="hvp[mode=joint]", estimator="hvp", method="HVP joint", nmae=1.0, seconds=0.3),
        dict(key="ig", estimator="ig", method="IG K=2", nmae=0.01, seconds=1.0),
        dict(key="multistep", estimator="multistep", method="Radau", nmae=0.005, seconds=0.4),
    ]
    frame = pd.DataFrame(rows).assign(
        perturbation="p",
        kind="k",
        family="f",
        opt_mode=["", "", "diag", "joint", "per_component", ""],
        opt_rule=["", "", "", "", "midpoint", "radau"],
        x_AtP_time=lambda f: f.seconds / 0.1,
    )
    report = targets(frame)
    assert "ratio 0.25 -> met" in report
    assert "median 3.00" in report
    assert "Radau reaches IG K=2 (NMAE 0.0050 <= 0.0100) at 0.40x" in report


def test_frontier_picks_the_cheapest_that_ranks_like_ap_and_the_best_under_budget():
    rows = [
        dict(estimator="ap", method="AP", nmae=0.0, spearman=1.0, topk_recall=1.0, seconds=1.0),
        dict(estimator="atp", method="AtP", nmae=0.3, spearman=0.95, topk_recall=1.0, seconds=0.1),
        dict(estimator="x", method="X", nmae=0.05, spearman=0.995, topk_recall=1.0, seconds=0.15),
        dict(estimator="y", method="Y", nmae=0.01, spearman=0.999, topk_recall=1.0, seconds=0.5),
        dict(estimator="z", method="Z", nmae=0.2, spearman=0.999, topk_recall=0.5, seconds=0.12),
    ]
    frame = pd.DataFrame(rows).assign(
        perturbation="p",
        kind="k",
        family=["AP", "AtP", "f", "f", "f"],
        x_AtP_time=lambda f: f.seconds / 0.1,
        x_AP_time=lambda f: f.seconds,
        forward=[8, 2, 2, 4, 2],
        backward=[0, 1, 1, 2, 1],
        hvp=[0, 0, 1, 0, 0],
    )
    front = frontier_table(frame).iloc[0]
    assert front.cheapest == "X"  # Z is cheaper but misses AP's top-k
    assert front.best_under_budget == "X" and front.best_x_AtP_time == pytest.approx(1.5)
    slow = frame.assign(spearman=frame.spearman.where(frame.estimator == "ap", 0.5))
    assert frontier_table(slow).iloc[0].cheapest == "AP"


def test_a_tie_goes_to_the_estimator_with_fewer_passes_not_the_faster_clock():
    """Two estimators with identical values (AtP and a variant computing the same numbers with
    one more forward pass): the variant's wall time came out lower by noise, yet the tie goes to
    AtP, in the frontier, the frontier table and the decision table alike."""
    same = dict(nmae=0.3, spearman=0.995, topk_recall=1.0, backward=1, hvp=0)
    rows = [
        dict(
            estimator="ap",
            method="AP",
            key="ap",
            nmae=0.0,
            spearman=1.0,
            topk_recall=1.0,
            seconds=1.0,
            forward=8,
            backward=0,
            hvp=0,
        ),
        dict(estimator="atp", method="AtP", key="atp", seconds=0.11, forward=2, **same),
        dict(
            estimator="atp_local",
            method="AtP local",
            key="atp_local",
            seconds=0.10,
            forward=3,
            **same,
        ),
    ]
    frame = pd.DataFrame(rows).assign(
        perturbation="p",
        kind="k",
        family=["AP", "AtP", "AtP"],
        circuit_auroc=1.0,
        n=12,
        x_AtP_time=lambda f: f.seconds / 0.11,
        x_AP_time=lambda f: f.seconds,
    )
    assert hu.pareto_frontier(frame).method.tolist() == ["AtP", "AP"]
    front = frontier_table(frame).iloc[0]
    assert (front.cheapest, front.best_under_budget) == ("AtP", "AtP")
    decision = hu.decision_table(frame).iloc[0]
    assert decision["best at AtP cost"] == "AtP" and decision["AtP is best at its cost"]


@pytest.mark.slow
def test_a_tiny_bench_writes_every_result(tmp_path):
    from hvp_utils.cli import bench

    out = tmp_path / "bench"
    argv = ["--kinds", "head_out", "--n-prompts", "3", "--quick", "--probes", "2,4"]
    bench.main([*argv, "--out", str(out)])
    frame = pd.read_csv(out / "estimators.csv")
    assert set(frame.perturbation) == {"name_swap", "random_token"}
    assert {"ap", "atp", "atp_star", "tl_patching", "captum_ig"} <= set(frame.key)
    peer = frame[frame.key == "tl_patching"]
    assert (peer.nmae < 1e-9).all()  # TransformerLens's AP is ours
    captum = frame[frame.key == "captum_ig"].set_index("perturbation").nmae
    joint = hu.ig_estimator(steps=2, mode="joint").key
    ours = frame[frame.key == joint].set_index("perturbation").nmae
    pd.testing.assert_series_equal(captum, ours, check_names=False, atol=1e-9)
    probes = pd.read_csv(out / "hutchinson.csv")
    assert sorted(probes.n_probes.dropna().unique()) == [2, 4]
    assert (probes.n_components == bench.N_NEURONS).all()  # --quick: a sample of the layer
    readme = (out / "README.md").read_text()
    assert "python -m hvp_utils.cli.bench --kinds head_out" in readme
    assert all(method in readme for method in pd.read_csv(out / "frontier.csv").cheapest)
    assert (out / "pareto.png").stat().st_size > 0
    assert "AP vs transformer_lens.patching, name_swap/head_out" in (out / "targets.md").read_text()
    assert "IG joint K=2 vs Captum, name_swap/head_out: NMAE gap" in readme
    bench.main(["--out", str(out), "--report-only"])  # the reports rebuild from the CSVs
    assert (out / "README.md").read_text() == readme


@pytest.mark.slow
def test_the_bench_at_another_seed_is_read_beside_the_first(tmp_path):
    """``--tables-only`` at another seed writes the tables and run.json under
    ``<bench>/seeds/seed<N>/``, where notebook 08 finds them (and only with its settings)."""
    from hvp_utils.cli import bench

    argv = ["--kinds", "head_out", "--n-prompts", "3", "--quick", "--probes", "2"]
    other = tmp_path / "bench" / "seeds" / "seed1"
    bench.main([*argv, "--seed", "1", "--tables-only", "--out", str(other)])
    assert sorted(p.name for p in other.iterdir()) == [
        "estimators.csv",
        "frontier.csv",
        "hutchinson.csv",
        "run.json",
    ]
    settings = dict(model_name="toy-ioi", n_prompts=3, dtype="float64")
    frames, found = hu.findings.takeaways.other_benchmarks(tmp_path / "bench", seed=0, **settings)
    assert list(frames) == [1] and set(frames[1].kind) == {"head_out"}
    assert found.findings[0].key == "takeaways.bench_seeds"
    _, skipped = hu.findings.takeaways.other_benchmarks(
        tmp_path / "bench", seed=1, **settings
    )  # the page's own seed is not another sample
    assert skipped.findings[0].key == "takeaways.bench_seeds_missing"
    picks = hu.findings.takeaways.choices_by_seed(
        {0: frames[1], 1: frames[1]}, budget_x_atp=2.0, spearman=0.99
    )
    table, spread = hu.findings.takeaways.choice_spread(picks, perturbation="name_swap")
    assert spread.findings[0].values["settled"] == {
        "AtP ranks like AP": 2,
        "best at AtP cost": 2,
        "cheapest ranking like AP": 2,
    }  # the same frame at two seeds: every choice settled
