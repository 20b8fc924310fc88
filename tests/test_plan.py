"""``rerun --plan`` and ``--budget``: predicted passes against the meters, the budget's sample."""

from __future__ import annotations

from collections import Counter

import pytest
from reference import BAD_OPTION_ERRORS

import hvp_utils as hu
from hvp_utils.analysis.reliability import layer_quotas
from hvp_utils.cli import plan, rerun
from hvp_utils.core.results import Cost

NB01 = "01_activation_vs_attribution_patching"
NB03 = "03_reliability_and_error_bounds"
#: One second per pass: plans in seconds are pass counts.
UNIT = plan.Calibration(forward=1.0, backward=1.0, hvp=1.0)


def counted(costs: list[Cost]) -> tuple[int, int, int]:
    """Forward, backward and HVP passes the meters counted."""
    return tuple(sum(getattr(c, k) for c in costs) for k in ("forward", "backward", "hvp"))


def predicted(cost: Cost) -> tuple[int, int, int]:
    return cost.forward, cost.backward, cost.hvp


@pytest.fixture(scope="module")
def tasks(tiny64):
    return {
        p: hu.ioi_dataset(tiny64, n_prompts=3, perturbation=p, seed=0) for p in plan.PERTURBATIONS
    }


def notebook_setting(model, task, key: str, **params) -> plan.Setting:
    """The notebook's parameters cell, updated with ``params``, on ``model``."""
    defaults = plan.notebook_defaults(rerun.NOTEBOOK_DIR / f"{key}.ipynb")
    return plan.Setting({**defaults, **params}, model, task.n_positions)


def test_notebook_01_heavy_steps_count_what_the_meters_count(tiny64, tasks):
    """Notebook 01's loop (AP and AtP per kind and perturbation, a neuron sample) predicted
    and run on a tiny model: the same forward, backward and HVP counts, step by step."""
    task = tasks["name_swap"]
    setting = notebook_setting(tiny64, task, NB01, n_neurons=5, sampling="stratified")
    steps = plan.steps_01(setting)
    for kind in setting["kinds"]:
        comps = setting.comps(kind)
        costs = [
            f(tiny64, t, comps).cost
            for t in tasks.values()
            for f in (hu.activation_patching, hu.atp)
        ]
        step = plan.total([w.cost for w in steps[f"AP + AtP, {kind}"]])
        assert predicted(step) == counted(costs), kind
    assert len(setting.comps("neuron")) == 5


def test_notebook_03_bounds_step_counts_what_the_meters_count(tiny64, tasks):
    task = tasks["random_token"]
    setting = notebook_setting(tiny64, task, NB03, n_neurons=4, n_nodes=3)
    comps = setting.comps("neuron")
    costs = [
        c
        for t in tasks.values()
        for c in (
            hu.activation_patching(tiny64, t, comps).cost,
            hu.error_bounds(tiny64, t, comps, n_nodes=3).cost,
        )
    ]
    step = plan.total([w.cost for w in plan.steps_03(setting)["AP + bounds, neuron"]])
    assert predicted(step) == counted(costs)


GRID = [
    hu.atp_star_estimator(),
    hu.hvp_estimator(mode="diag"),
    hu.hvp_estimator(mode="joint"),
    hu.hvp_estimator(mode="hutchinson", n_probes=3),
    hu.multistep_estimator(steps=2, rule="taylor"),
    hu.multistep_estimator(steps=1, rule="radau"),
    hu.multistep_estimator(steps=2, rule="trapezoid"),
    hu.ig_estimator(steps=2),
    hu.ig_estimator(steps=1, rule="gauss"),
    hu.ig_estimator(steps=2, mode="joint"),
]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["head_out", "head_q", "neuron"])
def test_every_planned_estimator_counts_what_its_meter_counts(tiny64, tasks, kind):
    """Each estimator of notebooks 04-07's grids, Screen-Flag-Fix with every component
    flagged and diagnose: predicted passes equal the counted ones."""
    task = tasks["name_swap"]
    comps = hu.components(tiny64, kind)[1:4]
    n_layers = tiny64.cfg.n_layers
    for estimator in GRID:
        got = estimator(tiny64, task, comps).cost
        expected = plan.estimator_passes(estimator, comps, n_layers=n_layers)
        assert predicted(expected) == counted([got]), estimator.key
    for fix in ("patch", "hvp", "multistep"):
        sff = hu.sff_estimator(fix=fix, n_probes=3, tau=-1.0)  # tau < 0: every one flagged
        got = sff(tiny64, task, comps)
        assert bool(got.fixed.all())
        expected = plan.estimator_passes(sff, comps, n_layers=n_layers)
        assert predicted(expected) == counted([got.cost]), fix
    cost = hu.diagnose(tiny64, task, comps).attrs["cost"]
    assert predicted(plan.diagnose_passes(comps)) == counted([Cost(**cost)])


def test_the_budget_picks_the_largest_sample_that_fits(tiny64, tasks):
    setting = notebook_setting(tiny64, tasks["name_swap"], NB03, n_neurons=None)
    full = plan.plan_notebook(NB03, setting, UNIT)
    budget = full.seconds - 40  # the full layer does not fit
    fitted = plan.fit_budget(NB03, setting, UNIT, budget_seconds=budget)
    assert fitted.sample is not None and fitted.seconds <= budget < full.seconds
    assert fitted.parameters["sampling"] == "stratified"
    one_more = plan._sampled_plan(NB03, setting, UNIT, fitted.sample + 1)
    assert one_more.seconds > budget
    assert plan.fit_budget(NB03, setting, UNIT, budget_seconds=full.seconds).sample is None
    report = plan.RerunPlan([fitted], {}, budget)
    k = fitted.sample
    declared = ["n_neurons", "sampling", "seed"]
    assert report.sampled(NB03, declared) == {"n_neurons": k, "sampling": "stratified"}
    assert report.sampled(NB03, ["n_neurons"]) == {"n_neurons": k}
    # an earlier run's sample that still fits is kept (a noisy calibration changes nothing)
    assert report.sampled(NB03, declared, previous={"n_neurons": k - 1})["n_neurons"] == k - 1
    assert report.sampled(NB03, declared, previous={"n_neurons": k + 1})["n_neurons"] == k


def test_stratified_samples_keep_each_layer_in_proportion(tiny64):
    heads = hu.components(tiny64, "head_out_pos", n_positions=5)  # the same count per layer
    per_layer = Counter(c.layer for c in heads)
    for k in (2, 7, 10):
        kept = hu.sample_components(heads, k=k, seed=3, how="stratified")
        counts = Counter(c.layer for c in kept)
        assert len(kept) == k and len(set(kept)) == k
        assert max(counts.values()) - min(counts.get(layer, 0) for layer in per_layer) <= 1
    again = hu.sample_components(heads, k=7, seed=3, how="stratified")
    assert again == hu.sample_components(heads, k=7, seed=3, how="stratified")
    assert layer_quotas({0: 30, 1: 10}, 8) == {0: 6, 1: 2}
    assert layer_quotas({0: 1, 1: 100}, 5) == {0: 1, 1: 4}


def test_spaced_and_random_samples():
    comps = [hu.Component(f"L0N{i}", "neuron", "h", 0, ()) for i in range(10)]
    spaced = hu.sample_components(comps, k=4, how="spaced")
    assert [c.name for c in spaced] == ["L0N0", "L0N2", "L0N5", "L0N7"]
    assert hu.sample_components(comps, k=None) == comps
    with pytest.raises(BAD_OPTION_ERRORS, match="unknown sampling|'even'"):
        hu.sample_components(comps, k=3, how="even")
    line = hu.describe_sample(comps, spaced, how="spaced", seed=0)
    assert line == "4 of 10 neuron components (layer 0), evenly spaced, seed 0"


@pytest.fixture
def no_execution(monkeypatch):
    """A fixed calibration (no timing) and an ``execute`` that fails the test if called."""
    monkeypatch.setattr(plan, "calibrate", lambda model, task: UNIT)

    def execute(job):
        raise AssertionError(f"--plan executed {job.source.name}")

    monkeypatch.setattr(rerun, "execute", execute)


def test_plan_prints_the_table_and_runs_nothing(no_execution, capsys, tmp_path):
    code = rerun.main(
        ["--model", "toy-ioi", "--notebooks", "01,08", "--plan", "--out", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "AP + AtP, neuron" in out and "AP, mlp_out x position" in out
    assert " total " in out and "heavy steps in all" in out and "calibration" in out
    assert list(tmp_path.iterdir()) == []  # no run folder, no manifest


@pytest.mark.slow
def test_budget_sets_the_sample_or_names_the_fix(no_execution, capsys, tmp_path):
    argv = ["--model", "toy-ioi", "--notebooks", "01", "--out", str(tmp_path)]
    code = rerun.main([*argv, "--plan", "--budget", "4"])  # 240 passes per notebook
    out = capsys.readouterr().out
    assert code == 0 and "n_neurons=" in out and "stratified" in out
    code = rerun.main([*argv, "--budget", "0.5"])  # 30 passes: no sample fits
    err = capsys.readouterr().err
    assert code == 2 and "Raise --budget" in err and "01 about" in err
    assert list(tmp_path.iterdir()) == []
