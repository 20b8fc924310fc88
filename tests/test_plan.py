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
    setting = notebook_setting(tiny64, task, NB01, n_neurons=5, n_heads=3, sampling="stratified")
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
    heads = hu.sample_heads(tiny64, k=3, seed=0)  # what the notebook takes (its seed is 0)
    assert setting.comps("head_out") == hu.components(tiny64, "head_out", heads=heads)


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
    """As many heads as neurons (each at most the notebook's own), the most that fit."""
    setting = notebook_setting(tiny64, tasks["name_swap"], NB03, n_neurons=None, n_heads=None)
    limits = plan.sample_limits(setting)
    cfg = tiny64.cfg
    assert limits == {"n_heads": cfg.n_layers * cfg.n_heads, "n_neurons": cfg.d_mlp}
    full = plan.plan_notebook(NB03, setting, UNIT)
    budget = full.seconds - 40  # the full model does not fit
    fitted = plan.fit_budget(NB03, setting, UNIT, budget_seconds=budget)
    k = fitted.sample["n_neurons"]
    assert fitted.sample == {"n_heads": min(k, limits["n_heads"]), "n_neurons": k}
    assert fitted.seconds <= budget < full.seconds
    assert fitted.parameters["sampling"] == "stratified"
    one_more = plan._sampled_plan(NB03, setting, UNIT, plan.equal_sample(limits, k + 1))
    assert one_more.seconds > budget
    assert plan.fit_budget(NB03, setting, UNIT, budget_seconds=full.seconds).sample is None
    report = plan.RerunPlan([fitted], {}, budget)
    declared = ["n_heads", "n_neurons", "sampling", "seed"]
    chosen = {**fitted.sample, "sampling": "stratified"}
    assert report.sampled(NB03, declared) == chosen
    assert report.sampled(NB03, ["n_neurons"]) == {"n_neurons": k}
    # an earlier run's sample that still fits is kept (a noisy calibration changes nothing)
    smaller = {knob: n - 1 for knob, n in fitted.sample.items()}
    assert report.sampled(NB03, declared, previous=smaller) == {**smaller, "sampling": "stratified"}
    larger = {knob: n + 1 for knob, n in fitted.sample.items()}
    assert report.sampled(NB03, declared, previous=larger) == chosen


def test_the_budget_halves_the_prompts_when_not_a_head_per_layer_fits(tiny64, monkeypatch):
    """Seconds per pass proportional to the prompt pairs: a budget that fits fewer heads than
    layers at 8 prompts is met with fewer prompts and at least a head per layer."""
    monkeypatch.setattr(
        plan, "calibrate", lambda model, task: plan.Calibration(*[task.n_prompts / 8] * 3)
    )
    params = {**plan.notebook_defaults(rerun.NOTEBOOK_DIR / f"{NB03}.ipynb"), "n_prompts": 8}
    lab = plan._Lab()
    lab.models[("toy-ioi", "cpu", "float64", 1)] = tiny64
    setting, calibration = lab.setting(params)
    one_per_layer = plan._sampled_plan(
        NB03, setting, calibration, {"n_heads": tiny64.cfg.n_layers, "n_neurons": 1}
    )
    budget = 0.9 * one_per_layer.seconds  # not even a head per layer at 8 prompts
    fitted = plan.fit_with_fewer_prompts(NB03, params, lab, budget_seconds=budget)
    assert fitted.sample["n_prompts"] in (4, 2) and fitted.seconds <= budget
    assert fitted.sample["n_heads"] >= tiny64.cfg.n_layers
    assert fitted.parameters["n_prompts"] == fitted.sample["n_prompts"]


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


def test_a_head_sample_is_stratified_by_layer_and_named(tiny64):
    cfg = tiny64.cfg
    every = cfg.n_layers * cfg.n_heads
    assert hu.sample_heads(tiny64, k=None) is None and hu.sample_heads(tiny64, k=every) is None
    for k in range(1, every):
        heads = hu.sample_heads(tiny64, k=k, seed=1)
        counts = Counter(layer for layer, _ in heads)
        assert len(set(heads)) == k and all(0 <= h < cfg.n_heads for _, h in heads)
        assert max(counts.values()) - min(counts.get(n, 0) for n in range(cfg.n_layers)) <= 1
    heads = hu.sample_heads(tiny64, k=3, seed=1)
    assert heads == hu.sample_heads(tiny64, k=3, seed=1) != hu.sample_heads(tiny64, k=3, seed=2)
    described = hu.describe_heads(tiny64, heads, how="stratified", seed=1)
    layers = f"layers 0-{cfg.n_layers - 1}"
    assert described == f"3 of {every} heads ({layers}), stratified by layer, seed 1"


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


def test_a_rerun_has_a_budget_unless_lifted(no_execution, monkeypatch, capsys, tmp_path):
    """Without --budget the default applies (here every pass takes a minute: 03 is sampled);
    --budget none plans the notebook's own parameters."""
    minute = plan.Calibration(forward=60.0, backward=60.0, hvp=60.0)
    monkeypatch.setattr(plan, "calibrate", lambda model, task: minute)
    argv = ["--model", "toy-ioi", "--notebooks", "03", "--plan", "--out", str(tmp_path)]
    assert rerun.main(argv) == 0  # one pass is over the budget: nothing fits, the fix named
    out = capsys.readouterr().out
    assert (
        f"over the budget of {rerun.DEFAULT_BUDGET_MINUTES:g} min" in out and "--budget none" in out
    )
    assert rerun.main([*argv, "--budget", "none"]) == 0
    out = capsys.readouterr().out
    assert "n_heads=" not in out and " total " in out
    with pytest.raises(SystemExit):
        rerun.main([*argv, "--budget", "soon"])
    assert "minutes per notebook or 'none'" in capsys.readouterr().err


@pytest.mark.slow
def test_budget_sets_the_sample_or_names_the_fix(no_execution, capsys, tmp_path):
    argv = ["--model", "toy-ioi", "--notebooks", "01", "--out", str(tmp_path)]
    code = rerun.main([*argv, "--plan", "--budget", "4"])  # 240 passes per notebook
    out = capsys.readouterr().out
    assert code == 0 and "n_heads=" in out and "n_neurons=" in out and "stratified" in out
    code = rerun.main([*argv, "--budget", "0.5"])  # 30 passes: no sample fits
    err = capsys.readouterr().err
    assert code == 2 and "Raise --budget" in err and "01 about" in err
    assert list(tmp_path.iterdir()) == []


#: Seconds per pass measured on the GPT-2-small shape (float64, 2 CPU cores, docs/rerun.md),
#: by prompt pairs: forward, backward, HVP.
GPT2_SHAPE_SECONDS = {8: (0.237, 0.237, 0.904), 4: (0.0911, 0.13, 0.263), 2: (0.0556, 0.105, 0.22)}


@pytest.mark.slow
def test_the_default_budget_fits_every_notebook_on_the_gpt2_small_shape(monkeypatch, tmp_path):
    """A random GPT-2-small-shaped model (12 x 12 heads, d_mlp 3072, 124M parameters) with the
    calibration measured on it: at the default budget every notebook's plan fits, with a head per
    layer unless the prompt pairs are already down to the fewest."""
    from hvp_utils.cli.scaling import shape_model

    model = hu.from_hf_model(*shape_model("GPT-2-small shape"))
    monkeypatch.setattr(hu, "load_model", lambda name, **options: model)
    monkeypatch.setattr(
        plan, "calibrate", lambda m, task: plan.Calibration(*GPT2_SHAPE_SECONDS[task.n_prompts])
    )
    budget = rerun.DEFAULT_BUDGET_MINUTES
    notebooks = rerun.available_notebooks()
    jobs = [(path.stem, path, {"model_name": "gpt2-small-shape"}) for path in notebooks.values()]
    report = plan.plan_rerun(jobs, budget_minutes=budget)
    assert report.budget_error() is None
    planned = {p.key[:2]: p for p in report.plans}
    assert all(p.seconds <= 60 * budget for p in planned.values())
    for key in ("02", "03", "04", "05", "06", "07"):  # sampled: heads, neurons or prompts
        sample = planned[key].sample
        assert sample is not None and sample["n_heads"] >= 1, key
        if sample["n_heads"] < 12:  # not a head per layer only at the fewest prompt pairs
            assert sample["n_prompts"] == plan.MIN_PROMPTS, key
    assert planned["01"].sample["n_heads"] == planned["01"].sample["n_neurons"]  # as many
    assert 60 * budget * 7 >= sum(p.seconds for p in planned.values()) > 60 * budget * 5


def test_a_pass_runs_the_layers_from_its_component_on_and_the_unembedding():
    """(L - layer + U) / (L + U), averaged: the unembedding is part of every pass."""
    from types import SimpleNamespace

    comps = [hu.Component(f"L{layer}H0", "head_out", "h", layer, ()) for layer in (0, 3)]
    assert plan.depth_share(comps, 4) == pytest.approx((4 / 4 + 1 / 4) / 2)
    assert plan.depth_share(comps, 4, unembed=2.0) == pytest.approx((6 / 6 + 3 / 6) / 2)
    gpt2 = SimpleNamespace(cfg=SimpleNamespace(d_vocab=50257, d_model=768, d_mlp=3072))
    assert plan.unembed_layers(gpt2) == pytest.approx(50257 / (4 * 768 + 2 * 3072))
