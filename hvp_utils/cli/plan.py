"""What a rerun will cost before it starts: passes per heavy step and seconds, per notebook.

``python -m hvp_utils.cli.rerun --model gpt2-small --plan`` prints, for every selected notebook,
its heavy steps (the cells that loop an estimator over a component kind), the passes each makes
over the prompt batch (forward, backward, Hessian-vector product), and an estimate of the seconds
they take; every normal rerun prints the same table before it runs.

- **Pass counts** (:func:`estimator_passes`, :func:`diagnose_passes`, :func:`bounds_passes`) are
  exact functions of the components (their number, hooks and layers) and the estimator's record
  (the same ``hu.*_estimator(...)`` the notebooks call; the quadrature nodes from
  :func:`~hvp_utils.estimators.quadrature.composite_rule`), as the estimators' meters count them
  (``tests/test_plan.py`` checks them against :class:`~hvp_utils.core.results.CostMeter` counts).
  Screen-Flag-Fix is counted as if every component were flagged: an upper bound.
- **Seconds** come from :func:`calibrate`: the model, loaded as the notebook loads it, times AP on
  one and on five heads (seconds per forward), IG at one node and the diagonal HVP correction on
  one head (one backward, one HVP), at the notebook's prompt batch: about 25 forward passes.
  Each call's passes are weighted by the share of a whole pass they run (the layers from the
  component's on, and the unembedding: :func:`depth_share`), plus a fixed cost per call.
- **Budget** (:func:`fit_budget`): a notebook that declares ``n_heads`` or ``n_neurons`` and
  would exceed the budget gets the largest ``k`` heads and ``k`` neurons whose plan fits,
  sampled ``"stratified"`` by layer (:func:`hvp_utils.sample_heads`,
  :func:`hvp_utils.sample_components`); where that is not even a head per layer, half the
  prompt pairs, down to :data:`MIN_PROMPTS` (:func:`fit_with_fewer_prompts`).

The notebooks' loops are mirrored here, one function per notebook (:data:`NOTEBOOK_STEPS`); a
notebook without one is planned as light (no heavy step).
"""

from __future__ import annotations

import ast
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hvp_utils.core.components import Component, group_by_hook
from hvp_utils.core.local_maps import LOCAL_MAPS
from hvp_utils.core.results import Cost, Estimator

#: Both perturbations, as every notebook's loop runs them.
PERTURBATIONS = ("name_swap", "random_token")
#: The sampling a budget asks for (a notebook parameter ``sampling``).
BUDGET_SAMPLING = "stratified"
#: Extra heads (replicates of one pass) timed for the seconds per forward pass.
CALIBRATION_REPLICATES = 4


class PlanError(ValueError):
    """A plan that cannot be made or met (the message names the fix)."""


# --- pass counts ---------------------------------------------------------------------------


def passes(forward: int = 0, backward: int = 0, hvp: int = 0) -> Cost:
    """Pass counts as a :class:`Cost` without seconds."""
    return Cost(forward=forward, backward=backward, hvp=hvp)


def total(costs: list[Cost]) -> Cost:
    """The sum of ``costs`` (pass counts; no seconds)."""
    out = Cost()
    for cost in costs:
        out = out + cost
    return out


def estimator_passes(estimator: Estimator, comps: list[Component], *, n_layers: int) -> Cost:
    """Passes ``estimator`` makes on ``comps`` with its own context (two caching forwards).

    AP: one forward per component; AtP: one forward and one backward; AtP*: one forward per
    query/key hook and, with GradDrop, one backward replicate per layer after the first one
    of ``comps``; HVP: one forward, backward and HVP per component (``diag``), one in all
    (``joint``) or per probe (``hutchinson``); multi-step and IG: per component and node of
    the rule (IG ``joint``: per hook and node); SFF: :func:`sff_passes`.
    """
    n, opts = len(comps), estimator.options
    counters: dict[str, Callable[[], Cost]] = {
        "ap": lambda: passes(2 + n),
        "atp": lambda: passes(3, 1),
        "atp_star": lambda: _atp_star_passes(comps, n_layers, opts["graddrop"]),
        "hvp": lambda: _hvp_passes(n, opts["mode"], opts["n_probes"]),
        "multistep": lambda: _rule_passes(opts["rule"], opts["steps"], n, second=True),
        "ig": lambda: _ig_passes(comps, opts),
        "sff": lambda: sff_passes(comps, fix=opts["fix"], n_probes=opts["n_probes"]),
    }
    if estimator.name not in counters:
        raise PlanError(f"no pass count for estimator {estimator.key!r}; known: {list(counters)}")
    return counters[estimator.name]()


def _atp_star_passes(comps: list[Component], n_layers: int, graddrop: bool) -> Cost:
    qk_hooks = {c.hook for c in comps if c.kind in ("head_q", "head_k")}
    drops = n_layers - 1 - min(c.layer for c in comps) if graddrop else 0
    return passes(3 + len(qk_hooks) + drops, 1 + drops)


def _hvp_passes(n: int, mode: str, n_probes: int) -> Cost:
    directions = {"diag": n, "joint": 1, "hutchinson": n_probes}[mode]
    return passes(2 + directions, directions, directions)


def _rule_passes(rule: str, steps: int, n: int, *, second: bool) -> Cost:
    """Per component, a gradient at every node of the rule, an HVP where it has a ``g''`` term."""
    from hvp_utils.estimators.quadrature import composite_rule

    nodes = composite_rule(rule, steps)
    hvps = sum(abs(b) > 1e-12 for _, _, b in nodes) if second else 0
    return passes(2 + n * len(nodes), n * len(nodes), n * hvps)


def _ig_passes(comps: list[Component], opts: Any) -> Cost:
    if opts["mode"] == "joint":
        return _rule_passes(opts["rule"], opts["steps"], len(group_by_hook(comps)), second=False)
    return _rule_passes(opts["rule"], opts["steps"], len(comps), second=False)


def sff_passes(comps: list[Component], *, fix: str, n_probes: int) -> Cost:
    """Screen-Flag-Fix with every component flagged (an upper bound): the Hutchinson screen,
    then the fix (AP, diagonal HVP or one Radau step, as ``FIX_ESTIMATORS`` of
    :mod:`hvp_utils.analysis.screen_flag_fix`) on all components, context shared."""
    from hvp_utils import ap_estimator, hvp_estimator, multistep_estimator

    fixer = {
        "patch": ap_estimator(),
        "hvp": hvp_estimator(mode="diag"),
        "multistep": multistep_estimator(steps=1, rule="radau"),
    }[fix]
    screen = _hvp_passes(len(comps), "hutchinson", n_probes)
    fixed = estimator_passes(fixer, comps, n_layers=0)
    return screen + fixed + passes(-2)  # the fix shares the screen's two caching forwards


def diagnose_passes(comps: list[Component]) -> Cost:
    """:func:`hvp_utils.diagnose`: AP, one gradient pass, then per component a second-order
    pass (identity kinds) or a local expansion (two partial forwards per local hook plus one
    forward, backward and HVP per component)."""
    local_hooks = {c.hook for c in comps if c.kind in LOCAL_MAPS}
    n = len(comps)
    return passes(3 + 2 * n + 2 * len(local_hooks), 1 + n, n)


def bounds_passes(comps: list[Component], *, n_nodes: int) -> Cost:
    """:func:`hvp_utils.error_bounds` (order 1): a second-order pass per component and node."""
    k = len(comps) * n_nodes
    return passes(2 + k, k, k)


# --- the notebooks' heavy steps ------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """What a notebook's steps depend on: its parameters, the model and the task's length."""

    params: dict[str, Any]
    model: Any
    n_positions: int

    def __getitem__(self, name: str) -> Any:
        return self.params[name]

    @property
    def n_layers(self) -> int:
        return self.model.cfg.n_layers

    def neuron_layer(self) -> int:
        """The layer whose neurons are counted: the notebook's ``neuron_layer``, or for None
        (where the notebook finds the layer whose MLP carries the most of the gap,
        :func:`hvp_utils.mlp_gap_shares`) the middle one in its place. Every MLP has ``d_mlp``
        neurons, so the pass counts are the same whichever layer the notebook finds; only
        the depth weighting of their seconds (:func:`depth_share`) can differ."""
        layer = self.params.get("neuron_layer")
        return self.n_layers // 2 if layer is None else layer

    def comps(self, kind: str, *, first: bool = False) -> list[Component]:
        """Every component of ``kind`` the notebook takes: for the per-head kinds, the heads of
        its ``n_heads`` sample when it declares one (:func:`hvp_utils.sample_heads`); neurons of
        its neuron layer, ``n_neurons`` of them when it declares that (sampled as its
        ``sampling`` says, or the first ones with ``first``)."""
        from hvp_utils import components, sample_components, sample_heads

        if not kind.startswith("neuron"):
            heads = sample_heads(self.model, k=self.params.get("n_heads"), how=BUDGET_SAMPLING)
            return components(self.model, kind, n_positions=self.n_positions, heads=heads)
        every = components(self.model, kind, layers=[self.neuron_layer()])
        k = self.params.get("n_neurons")
        if first:
            return every[:k]
        return sample_components(every, k=k, how=self.params.get("sampling", "random"))

    def run(self, estimator: Estimator, kind: str, *, first: bool = False) -> Work:
        """Passes of ``estimator`` on the components of ``kind`` (see :meth:`comps`)."""
        comps = self.comps(kind, first=first)
        return self.work(estimator_passes(estimator, comps, n_layers=self.n_layers), comps)

    def work(self, cost: Cost, comps: list[Component]) -> Work:
        """``cost`` on ``comps``, with the share of a whole pass that their passes run."""
        return Work(cost, depth_share(comps, self.n_layers, unembed=unembed_layers(self.model)))


@dataclass(frozen=True)
class Work:
    """Passes of one estimator call; ``depth``: the share of the model's layers they run
    through (a replicated pass starts at its component's layer)."""

    cost: Cost
    depth: float = 1.0


def unembed_layers(model: Any) -> float:
    """The unembedding's work in layers' worth: ``d_vocab d_model`` multiply-adds per token
    against a layer's ``4 d_model^2 + 2 d_model d_mlp`` (attention's four projections and the
    MLP), i.e. ``d_vocab / (4 d_model + 2 d_mlp)``: 0.3 for toy-ioi, 5.4 for GPT-2 small's
    vocabulary of 50,257."""
    cfg = model.cfg
    return cfg.d_vocab / (4 * cfg.d_model + 2 * cfg.d_mlp)


def depth_share(comps: list[Component], n_layers: int, *, unembed: float = 0.0) -> float:
    """Mean share of a whole pass that a pass patched at each component runs: the layers from
    its own on plus the unembedding, which every pass runs, ``(L - layer + U) / (L + U)``
    (``U``: :func:`unembed_layers`)."""
    if not comps or n_layers < 1:
        return 1.0
    whole = n_layers + unembed
    return sum((n_layers - c.layer + unembed) / whole for c in comps) / len(comps)


#: A notebook's heavy steps: the estimator calls of each (a list repeated per perturbation).
Steps = dict[str, list[Work]]


def steps_01(s: Setting) -> Steps:
    """Notebook 01: AP and AtP of heads and MLPs (featured perturbation), then per kind and
    perturbation; the Taylor remainder of one MLP's path (a forward, a backward and an HVP per
    node; the middle MLP counted in place of the largest); AP of every MLP at every position."""
    from hvp_utils import ap_estimator as ap
    from hvp_utils import atp_estimator as atp

    out = {f"AP + AtP, {kind}": [s.run(ap(), kind), s.run(atp(), kind)] * 2 for kind in s["kinds"]}
    featured = [s.run(f(), kind) for kind in ("head_out", "mlp_out") for f in (ap, atp)]
    out = {"AP + AtP, heads + MLPs (featured)": featured, **out}
    nodes = s["remainder_nodes"]  # g'' at each node on the path of the largest MLP, found
    mlp = [c for c in s.comps("mlp_out") if c.layer == s.neuron_layer()]  # when 01 runs
    out["Taylor remainder, one MLP"] = [s.work(passes(nodes, nodes, nodes), mlp)]
    mlp_pos = [c for c in s.comps("mlp_out") for _ in range(s.n_positions)]
    ap_pos = estimator_passes(ap(), mlp_pos, n_layers=s.n_layers)
    out["AP, mlp_out x position"] = [s.work(ap_pos, mlp_pos)] * 2
    return out


def steps_02(s: Setting) -> Steps:
    """Notebook 02: :func:`hvp_utils.diagnose` per kind and perturbation; AP and HVP on queries."""
    from hvp_utils import ap_estimator, hvp_estimator

    out = {
        f"diagnose, {kind}": [s.work(diagnose_passes(s.comps(kind)), s.comps(kind))] * 2
        for kind in s["kinds"]
    }
    check = [s.run(ap_estimator(), "head_q"), s.run(hvp_estimator(mode="diag"), "head_q")]
    out["AP + HVP check, head_q"] = check * 2
    return out


def steps_03(s: Setting) -> Steps:
    """Notebook 03: AP and :func:`hvp_utils.error_bounds` per kind and perturbation."""
    from hvp_utils import ap_estimator

    out = {}
    for kind in s["kinds"]:
        bounds = s.work(bounds_passes(s.comps(kind), n_nodes=s["n_nodes"]), s.comps(kind))
        out[f"AP + bounds, {kind}"] = [s.run(ap_estimator(), kind), bounds] * 2
    return out


def steps_04(s: Setting) -> Steps:
    """Notebook 04: AP, AtP and three HVP corrections per kind and perturbation."""
    from hvp_utils import ap_estimator, atp_estimator, hvp_estimator

    grid = [
        ap_estimator(),
        atp_estimator(),
        hvp_estimator(mode="diag"),
        hvp_estimator(mode="joint"),
        hvp_estimator(mode="hutchinson", n_probes=s["n_probes"]),
    ]
    return {  # notebook 04 takes the first n_neurons neurons
        f"AP + AtP + HVP x3, {kind}": [s.run(e, kind, first=True) for e in grid] * 2
        for kind in s["kinds"]
    }


def steps_05(s: Setting) -> Steps:
    """Notebook 05: AP and the twelve-estimator grid per kind and perturbation."""
    import hvp_utils as hu

    grid = [
        hu.ap_estimator(),
        hu.atp_estimator(),
        hu.atp_star_estimator(),
        hu.hvp_estimator(mode="diag"),
        hu.hvp_estimator(mode="joint"),
        hu.multistep_estimator(steps=2, rule="taylor"),
        hu.multistep_estimator(steps=1, rule="radau"),
        *(hu.ig_estimator(steps=k) for k in (1, 2, 4)),
        hu.ig_estimator(steps=1, rule="gauss"),
        *(hu.ig_estimator(steps=k, mode="joint") for k in (2, 4)),
    ]
    return {
        f"AP + 12 estimators, {kind}": [s.run(e, kind) for e in grid] * 2 for kind in s["kinds"]
    }


def steps_06(s: Setting) -> Steps:
    """Notebook 06: AP and eight estimators on heads, AP and five on heads x positions."""
    import hvp_utils as hu

    cheap = [
        hu.ap_estimator(),
        hu.atp_estimator(),
        hu.atp_star_estimator(),
        hu.hvp_estimator(mode="joint"),
        hu.hvp_estimator(mode="hutchinson", n_probes=16),
        hu.ig_estimator(steps=4, mode="joint"),
    ]
    heads = [
        *cheap,
        hu.hvp_estimator(mode="diag"),
        hu.multistep_estimator(steps=1, rule="radau"),
        hu.ig_estimator(steps=2),
    ]
    return {
        "AP + 8 estimators, head_out": [s.run(e, "head_out") for e in heads],
        "AP + 5 estimators, head_out_pos": [s.run(e, "head_out_pos") for e in cheap],
    }


def steps_07(s: Setting) -> Steps:
    """Notebook 07: AP, AtP and Screen-Flag-Fix (every component flagged: an upper bound) on
    heads, heads x positions and the neuron layer, per perturbation."""
    from hvp_utils import ap_estimator, atp_estimator, hvp_estimator, sff_estimator

    sff = {f: sff_estimator(fix=f, n_probes=s["n_probes"]) for f in ("patch", "hvp", "multistep")}
    base = [ap_estimator(), atp_estimator()]
    granularities = {
        "head_out": [*base, *sff.values(), hvp_estimator(mode="diag")],
        "head_out_pos": [*base, sff["patch"]],
        "neuron": [*base, *sff.values()],
    }
    return {
        f"AP + AtP + SFF (all flagged: a bound), {kind}": [s.run(e, kind) for e in grid] * 2
        for kind, grid in granularities.items()
    }


#: The heavy steps of each notebook, by its name (stem).
NOTEBOOK_STEPS: dict[str, Callable[[Setting], Steps]] = {
    "01_activation_vs_attribution_patching": steps_01,
    "02_diagnosis_downstream_vs_local": steps_02,
    "03_reliability_and_error_bounds": steps_03,
    "04_hvp_correction": steps_04,
    "05_multistep_hvp_vs_integrated_gradients": steps_05,
    "06_ioi_circuit_recovery": steps_06,
    "07_screen_flag_fix": steps_07,
}


# --- seconds -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Seconds per pass over one prompt batch, measured on this machine (:func:`calibrate`)."""

    forward: float
    backward: float
    hvp: float
    call: float = 0.0  # fixed seconds of one estimator call beyond its passes
    seconds: float = 0.0  # what the calibration itself took

    def seconds_of(self, cost: Cost) -> float:
        """Estimated seconds of ``cost``'s passes (a third-order pass as two HVPs)."""
        hvp = cost.hvp + 2 * cost.third_order
        return cost.forward * self.forward + cost.backward * self.backward + hvp * self.hvp


def calibrate(model, task) -> Calibration:
    """Seconds per pass over ``task``'s prompt batch, from a few calls on layer-0 heads (their
    passes run through every layer), after a warm-up call:

    - forward: AP on ``1 + CALIBRATION_REPLICATES`` heads minus AP on one, per extra head
      (the marginal cost of a replicated forward);
    - backward: IG at one node on one head (3 forwards, 1 backward) minus AP on one head
      (3 forwards);
    - HVP: the diagonal HVP correction on one head (3 forwards, 1 backward, 1 HVP) minus that
      IG call;
    - call: AP on one head minus its three forwards (context preparation, Python).

    Each is the fastest of up to three calls while they take under a second (on a shared
    machine the fastest is the least disturbed).
    """
    from hvp_utils import activation_patching, components, hvp_correction, integrated_gradients

    start = time.perf_counter()
    heads = [c for c in components(model, "head_out") if c.layer == 0]
    more = heads[: 1 + CALIBRATION_REPLICATES]

    def seconds(estimate: Callable, comps: list[Component], **options: Any) -> float:
        """The fastest of up to three calls (repeated while they take under a second)."""
        times = [estimate(model, task, comps, **options).cost.seconds]
        while len(times) < 3 and sum(times) < 1.0:
            times.append(estimate(model, task, comps, **options).cost.seconds)
        return min(times)

    seconds(activation_patching, heads[:1])  # warm-up: first-call overheads
    one = seconds(activation_patching, heads[:1])
    forward = max(seconds(activation_patching, more) - one, 1e-9) / max(len(more) - 1, 1)
    ig = seconds(integrated_gradients, heads[:1], steps=1)
    diag = seconds(hvp_correction, heads[:1], mode="diag")
    backward = max(ig - one, forward)
    hvp = max(diag - ig, forward)
    call = max(one - 3 * forward, 0.0)
    return Calibration(forward, backward, hvp, call, time.perf_counter() - start)


# --- plans ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepPlan:
    """One heavy step: its passes and estimated seconds."""

    name: str
    cost: Cost
    seconds: float


@dataclass(frozen=True)
class NotebookPlan:
    """A notebook's heavy steps, their passes and seconds, and the parameters planned with
    (``sample``: the ``n_heads`` and ``n_neurons`` a budget chose, else None)."""

    key: str
    steps: tuple[StepPlan, ...]
    parameters: dict[str, Any] = field(default_factory=dict)
    sample: dict[str, int] | None = None

    @property
    def seconds(self) -> float:
        """Estimated seconds of every heavy step."""
        return sum((step.seconds for step in self.steps), 0.0)

    @property
    def cost(self) -> Cost:
        """Passes of every heavy step."""
        return total([step.cost for step in self.steps])

    def to_frame(self) -> pd.DataFrame:
        """One row per step (notebook, step, forward, backward, hvp, seconds)."""
        rows = [
            {"notebook": self.key[:2], "step": s.name, **_pass_row(s.cost), "seconds": s.seconds}
            for s in self.steps
        ]
        return pd.DataFrame(
            rows, columns=["notebook", "step", "forward", "backward", "hvp", "seconds"]
        )


def _pass_row(cost: Cost) -> dict[str, int]:
    return {"forward": cost.forward, "backward": cost.backward, "hvp": cost.hvp}


def plan_notebook(key: str, setting: Setting, calibration: Calibration) -> NotebookPlan:
    """The heavy steps of notebook ``key`` (its stem) under ``setting``, with seconds from
    ``calibration``; a notebook without an entry in :data:`NOTEBOOK_STEPS` has none."""
    steps_of = NOTEBOOK_STEPS.get(key, lambda _: {})
    steps = tuple(step_plan(name, work, calibration) for name, work in steps_of(setting).items())
    return NotebookPlan(key, steps, setting.params)


def step_plan(name: str, work: list[Work], calibration: Calibration) -> StepPlan:
    """A step's passes added up and its seconds (each call's passes at its depth, plus the
    fixed seconds of a call)."""
    seconds = sum(calibration.seconds_of(w.cost) * w.depth + calibration.call for w in work)
    return StepPlan(name, total([w.cost for w in work]), seconds)


#: The sample sizes a budget can lower, where a notebook declares them.
SAMPLE_SIZES = ("n_heads", "n_neurons")


def sample_limits(setting: Setting) -> dict[str, int]:
    """The largest value of each :data:`SAMPLE_SIZES` knob the notebook declares: its own
    value, or every head (``n_layers x n_heads``) or neuron (``d_mlp``) for None."""
    cfg = setting.model.cfg
    every = {"n_heads": cfg.n_layers * cfg.n_heads, "n_neurons": cfg.d_mlp}
    return {
        knob: min(setting.params[knob] or every[knob], every[knob])
        for knob in SAMPLE_SIZES
        if knob in setting.params
    }


def equal_sample(limits: dict[str, int], k: int) -> dict[str, int]:
    """``k`` of each knob's components, at most its limit: as many heads as neurons."""
    return {knob: min(k, limit) for knob, limit in limits.items()}


def fit_budget(
    key: str, setting: Setting, calibration: Calibration, *, budget_seconds: float
) -> NotebookPlan:
    """The plan of notebook ``key`` within ``budget_seconds``: the full plan when it fits or
    the notebook declares neither ``n_heads`` nor ``n_neurons``; else the largest ``k`` heads
    and ``k`` neurons (each at most the notebook's own) whose plan fits, sampled
    ``"stratified"`` by layer (heads: :func:`hvp_utils.sample_heads`, neurons:
    :func:`hvp_utils.sample_components`), found by bisection (plans grow with ``k``). Check
    ``.seconds`` against the budget: a notebook over it with one head and one neuron stays
    over (:func:`plan_rerun` then lowers ``n_prompts``)."""
    full = plan_notebook(key, setting, calibration)
    limits = sample_limits(setting)
    if full.seconds <= budget_seconds or not limits:
        return full
    low, high = 1, max(limits.values())
    best = _sampled_plan(key, setting, calibration, equal_sample(limits, 1))
    while low < high:
        mid = (low + high + 1) // 2
        candidate = _sampled_plan(key, setting, calibration, equal_sample(limits, mid))
        if candidate.seconds <= budget_seconds:
            best, low = candidate, mid
        else:
            high = mid - 1
    return best


def _sampled_plan(
    key: str, setting: Setting, calibration: Calibration, sample: dict[str, int]
) -> NotebookPlan:
    params = {**setting.params, **sample, "sampling": BUDGET_SAMPLING}
    plan = plan_notebook(key, Setting(params, setting.model, setting.n_positions), calibration)
    return NotebookPlan(plan.key, plan.steps, params, sample=sample)


def notebook_defaults(notebook: Path) -> dict[str, Any]:
    """The values of a notebook's ``parameters`` cell (Python literals; others as text)."""
    import papermill

    out = {}
    for name, spec in papermill.inspect_notebook(str(notebook)).items():
        try:
            out[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):
            out[name] = spec["default"]
    return out


def plan_frame(plans: list[NotebookPlan], *, budget_seconds: float | None = None) -> pd.DataFrame:
    """Every notebook's steps, then a total row per notebook (``fits``: within the budget)."""
    frames = []
    for plan in plans:
        frame = plan.to_frame()
        sample = plan.sample or {}
        sizes = [f"{k}={v}" for k, v in sample.items()]
        sizes += [BUDGET_SAMPLING] if any(k in sample for k in SAMPLE_SIZES) else []
        note = f"total ({', '.join(sizes)})" if sample else "total"
        row = {
            "notebook": plan.key[:2],
            "step": note,
            **_pass_row(plan.cost),
            "seconds": plan.seconds,
        }
        frames.append(pd.concat([frame, pd.DataFrame([row])], ignore_index=True))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if budget_seconds is not None and len(table):
        totals = table.step.str.startswith("total")
        table["fits"] = (table.seconds <= budget_seconds).where(totals, "")
    return table


def format_plan(
    plans: list[NotebookPlan], calibration: dict[str, Calibration], *, budget_seconds=None
) -> str:
    """The plan as text: the calibration, one row per step and notebook total, the sum."""
    lines = [
        f"calibration ({name}): forward {c.forward:.3g} s, backward {c.backward:.3g} s, "
        f"hvp {c.hvp:.3g} s per pass over the prompt batch (measured in {c.seconds:.1f} s)"
        for name, c in calibration.items()
    ]
    table = plan_frame(plans, budget_seconds=budget_seconds)
    if len(table):
        shown = table.assign(seconds=table.seconds.map(lambda x: f"{x:,.0f}"))
        lines.append(shown.to_string(index=False))
    seconds = sum((p.seconds for p in plans), 0.0)  # a float when every notebook is skipped
    lines.append(f"heavy steps in all: about {duration(seconds)} (light cells not counted)")
    return "\n".join(lines)


# --- planning a rerun ----------------------------------------------------------------------


@dataclass
class RerunPlan:
    """The plans of a rerun's notebooks and the calibrations behind their seconds."""

    plans: list[NotebookPlan]
    calibrations: dict[str, Calibration]
    budget_seconds: float | None = None

    def text(self, *, note: bool = True) -> str:
        """The printed plan (:func:`format_plan`), with :meth:`budget_error` as a note."""
        text = format_plan(self.plans, self.calibrations, budget_seconds=self.budget_seconds)
        error = self.budget_error() if note else None
        return text + (f"\nnote: {error}" if error else "")

    def over_budget(self) -> list[NotebookPlan]:
        """Plans that exceed the budget even after sampling (none without a budget)."""
        if self.budget_seconds is None:
            return []
        return [p for p in self.plans if p.seconds > self.budget_seconds]

    def to_frame(self) -> pd.DataFrame:
        """:func:`plan_frame` of every notebook."""
        return plan_frame(self.plans, budget_seconds=self.budget_seconds)

    def sampled(
        self, key: str, declared: list[str], *, previous: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The parameters a budget sets for notebook ``key`` (``n_heads``, ``n_neurons``,
        ``sampling``, ``n_prompts``), those it declares; empty when it needs no sample. A
        ``previous`` run's sample that still fits (no knob larger) is kept, so a noisy
        calibration does not change the parameters of a finished run."""
        plan = next(p for p in self.plans if p.key == key)
        if plan.sample is None:
            return {}
        chosen = dict(plan.sample)
        if any(knob in plan.sample for knob in SAMPLE_SIZES):
            chosen["sampling"] = BUDGET_SAMPLING
        if previous and previous.get("sampling", BUDGET_SAMPLING) == BUDGET_SAMPLING:
            kept = {k: previous.get(k) for k in plan.sample}
            if all(isinstance(v, int) and v <= plan.sample[k] for k, v in kept.items()):
                chosen.update(kept)
        return {k: v for k, v in chosen.items() if k in declared}

    def budget_error(self) -> str | None:
        """Why the budget cannot be met (naming the fix), or None."""
        over = self.over_budget()
        if not over:
            return None
        needs = ", ".join(f"{p.key[:2]} about {p.seconds / 60:.1f} min" for p in over)
        return (
            f"over the budget of {self.budget_seconds / 60:g} min per notebook even with the "
            f"smallest head and neuron sample and {MIN_PROMPTS} prompt pairs (or nothing to "
            f"sample): {needs}. Raise --budget (or lift it: --budget none), or leave those "
            "notebooks out with --notebooks."
        )


def plan_rerun(
    jobs: list[tuple[str, Path, dict[str, Any]]], *, budget_minutes: float | None = None
) -> RerunPlan:
    """Plan every ``(key, notebook, parameters)`` job: its defaults updated with the job's
    parameters, the model loaded and calibrated once per setting, a budget fitted per notebook
    (:func:`fit_budget`; ``budget_minutes`` per notebook)."""
    if budget_minutes is not None and budget_minutes <= 0:
        raise PlanError(f"--budget must be a positive number of minutes (got {budget_minutes})")
    budget = None if budget_minutes is None else 60.0 * budget_minutes
    lab = _Lab()
    plans = []
    for key, notebook, parameters in jobs:
        if key not in NOTEBOOK_STEPS:  # light: nothing to load or time
            plans.append(NotebookPlan(key, (), parameters))
            continue
        params = {**notebook_defaults(notebook), **parameters}
        setting, calibration = lab.setting(params)
        if budget is None:
            plans.append(plan_notebook(key, setting, calibration))
        else:
            plans.append(fit_with_fewer_prompts(key, params, lab, budget_seconds=budget))
    return RerunPlan(plans, lab.calibrations, budget)


#: The fewest prompt pairs a budget lowers ``n_prompts`` to.
MIN_PROMPTS = 2


def fit_with_fewer_prompts(
    key: str, params: dict[str, Any], lab: _Lab, *, budget_seconds: float
) -> NotebookPlan:
    """:func:`fit_budget` at the notebook's ``n_prompts``; while that plan is over the budget
    or samples fewer heads than the model has layers (not one per layer), again at half the
    prompt pairs (a pass over a smaller batch is faster; calibrated anew), down to
    :data:`MIN_PROMPTS`. The last plan is returned, the lowered ``n_prompts`` in its sample."""
    asked = n_prompts = params.get("n_prompts", 16)
    while True:
        setting, calibration = lab.setting({**params, "n_prompts": n_prompts})
        fitted = fit_budget(key, setting, calibration, budget_seconds=budget_seconds)
        heads = (fitted.sample or {}).get("n_heads", setting.n_layers)
        adequate = fitted.seconds <= budget_seconds and heads >= setting.n_layers
        if adequate or n_prompts // 2 < MIN_PROMPTS:
            break
        n_prompts //= 2
    if n_prompts == asked:
        return fitted
    sample = {**(fitted.sample or {}), "n_prompts": n_prompts}
    return NotebookPlan(fitted.key, fitted.steps, {**fitted.parameters, **sample}, sample)


class _Lab:
    """Models, tasks and calibrations, made once per distinct setting."""

    def __init__(self) -> None:
        self.models: dict[tuple, Any] = {}
        self.calibrations: dict[str, Calibration] = {}
        self.lengths: dict[str, int] = {}

    def setting(self, params: dict[str, Any]) -> tuple[Setting, Calibration]:
        from hvp_utils import ioi_dataset, load_model

        load = {k: params.get(k, d) for k, d in (("device", "cpu"), ("dtype", "float64"))}
        load["n_devices"] = params.get("n_devices", 1)
        model_key = (params["model_name"], *load.values())
        if model_key not in self.models:
            self.models[model_key] = load_model(params["model_name"], **load)
        model = self.models[model_key]
        n_prompts, seed = params.get("n_prompts", 16), params.get("seed", 0)
        name = f"{Path(str(params['model_name'])).name}, {load['dtype']}, {n_prompts} prompts"
        if name not in self.calibrations:
            perturbation = params.get("perturbation", PERTURBATIONS[0])
            task = ioi_dataset(model, n_prompts=n_prompts, perturbation=perturbation, seed=seed)
            self.calibrations[name] = calibrate(model, task)
            self.lengths[name] = task.n_positions
        return Setting(params, model, self.lengths[name]), self.calibrations[name]


def duration(seconds: float) -> str:
    """``"40 s"``, ``"12.5 min"`` or ``"3.2 h"``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
