"""Accuracy against compute: run many estimators on the same components, measure each against
activation patching, and time them in the same process.

Estimators are records (:class:`~hvp_utils.core.results.Estimator`, e.g.
``ig_estimator(steps=4)``): each returns an :class:`~hvp_utils.core.results.Attribution`
carrying its record (a unique ``key``, a ``label`` and a ``family``), so this module never
special-cases a method and never reads meaning out of a label.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import torch

from hvp_utils.core.components import Component
from hvp_utils.core.metrics import compare
from hvp_utils.core.results import RUNTIME_OPTIONS, Attribution, Estimator
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Family, Model
from hvp_utils.estimators import (
    RULES,
    ap_estimator,
    atp_estimator,
    atp_local_estimator,
    atp_star_estimator,
    hvp_estimator,
    ig_estimator,
    multistep_estimator,
)

#: Pass counts copied into each row of :func:`run_estimators`.
PASS_COLUMNS = ("forward", "backward", "hvp")
#: The families of exact activation patching (ours and a peer's): the ground truth.
GROUND_TRUTH_FAMILIES = (Family.AP.value, Family.AP_PEER.value)


def default_estimators(*, quick: bool = False) -> list[Estimator]:
    """The estimator grid of notebook 05 and ``make bench`` (``quick``: a smaller grid)."""
    grid = [
        atp_estimator(),
        atp_local_estimator(),
        atp_star_estimator(),
        hvp_estimator(mode="diag"),
        hvp_estimator(mode="joint"),
        hvp_estimator(mode="hutchinson", n_probes=16),
        multistep_estimator(steps=1, rule="radau"),
        multistep_estimator(steps=2, rule="radau"),
        multistep_estimator(steps=2, rule="taylor"),
        multistep_estimator(steps=1, rule="trapezoid"),
        ig_estimator(steps=1),
        ig_estimator(steps=2),
        ig_estimator(steps=4),
        ig_estimator(steps=1, rule="gauss"),
        ig_estimator(steps=2, mode="joint"),
        ig_estimator(steps=8, mode="joint"),
    ]
    if not quick:
        grid += [
            multistep_estimator(steps=4, rule="taylor"),
            multistep_estimator(steps=2, rule="trapezoid"),
            ig_estimator(steps=8),
            ig_estimator(steps=2, rule="gauss"),
        ]
    return grid


def record_columns(record: Estimator) -> dict:
    """The record as table columns: ``key``, ``estimator`` (its short name), ``family`` and
    one ``opt_<name>`` column per option (runtime options left out)."""
    options = {f"opt_{k}": v for k, v in record.options.items() if k not in RUNTIME_OPTIONS}
    family = record.family.value
    return {"key": record.key, "estimator": record.name, "family": family, **options}


def run_estimators(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    estimators: list[Estimator] | None = None,
    truth: Attribution | None = None,
    **labels: object,
) -> tuple[pd.DataFrame, dict[str, Attribution]]:
    """Run each estimator once and measure it against activation patching.

    Args:
        model, task, comps: as for every estimator.
        estimators: estimator records (default: :func:`default_estimators`); keys must differ.
        truth: an AP result on ``comps`` (computed here when None, and timed here).
        labels: constant columns added to every row (e.g. ``perturbation=..., kind=...``).

    Returns:
        ``(frame, results)``: one row per estimator (AP first) with the :func:`compare`
        metrics, the record columns of :func:`record_columns`, pass counts, and wall time as
        ratios to AtP (``x_AtP_time``, NaN without an AtP row) and to AP (``x_AP_time``), all
        measured in this process; ``results`` maps each key to its :class:`Attribution`.
    """
    records = [ap_estimator(), *(estimators or default_estimators())]
    keys = [record.key for record in records]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"estimators {repeated} appear twice; give each its own options")
    ap_key, atp_key = records[0].key, atp_estimator().key
    results = {ap_key: truth if truth is not None else records[0](model, task, comps)}
    for record in records[1:]:
        results[record.key] = record(model, task, comps)
    truth = results[ap_key]
    rows = []
    for record in records:
        result = results[record.key]
        row = compare(result, truth).reset_index().iloc[0].to_dict()
        row.update({k: getattr(result.cost, k) for k in PASS_COLUMNS})
        rows.append({**record_columns(record), **row})
    frame = pd.DataFrame(rows)
    atp_seconds = results[atp_key].cost.seconds if atp_key in results else np.nan
    frame["x_AtP_time"] = frame.seconds / atp_seconds
    frame["x_AP_time"] = frame.seconds / truth.cost.seconds
    for key, value in labels.items():
        frame[key] = value
    return frame, results


#: Rounding floor of an error against AP: ``FLOOR_FACTOR * eps * max|AP|``. AP and every
#: estimate are computed in the model's dtype and each carries rounding of order ``eps`` times
#: the effects' size (on toy-ioi in float32 the errors differ from float64's by at most about
#: ``eps * max|AP|``); at ten times that, rounding is at most about a tenth of an error.
FLOOR_FACTOR = 10.0
#: A step to a larger K whose local error order (``log(e_prev / e) / log(K / K_prev)``) is
#: below this has stopped decreasing: a plateau, not the rule's asymptotic order.
PLATEAU_ORDER = 0.5


def convergence(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    steps: tuple[int, ...] = (1, 2, 4, 8),
    truth: Attribution | None = None,
    chunk_size: int | None = None,
) -> pd.DataFrame:
    """Error against AP of every quadrature rule at each K, with the derived error order.

    Returns:
        One row per (rule, K): ``nmae``, ``max_abs_error`` and ``worst`` (the component with
        that error), ``seconds``, ``derived_order``, and the rounding floor of the errors,
        ``floor = FLOOR_FACTOR * eps * max|AP|`` with ``eps`` the model dtype's machine
        epsilon (``eps`` and ``max_abs_ap`` are columns too); ``estimates`` and ``errors``,
        each a tuple with one entry per component of ``comps``: the rule's estimate
        ``I_K`` and ``I_K - AP``.
    """
    if truth is None:
        truth = ap_estimator()(model, task, comps, chunk_size=chunk_size)
    eps = float(torch.finfo(model.cfg.dtype).eps)
    scale = float(truth.values.abs().max())
    rules = {
        "taylor": partial(multistep_estimator, rule="taylor"),
        "trapezoid": partial(multistep_estimator, rule="trapezoid"),
        "radau": partial(multistep_estimator, rule="radau"),
        "midpoint": partial(ig_estimator, rule="midpoint"),
        "gauss": partial(ig_estimator, rule="gauss"),
    }
    rows = []
    for rule, record_of in rules.items():
        for k in steps:
            result = record_of(steps=k)(model, task, comps, chunk_size=chunk_size)
            signed = result.values - truth.values
            error = signed.abs()
            rows.append(
                {
                    "rule": rule,
                    "K": k,
                    "nmae": float(error.mean() / truth.values.abs().mean()),
                    "max_abs_error": float(error.max()),
                    "worst": truth.names[int(error.argmax())],
                    "seconds": result.cost.seconds,
                    "derived_order": RULES[rule].error_order,
                    "eps": eps,
                    "max_abs_ap": scale,
                    "floor": FLOOR_FACTOR * eps * scale,
                    "estimates": tuple(result.values.tolist()),
                    "errors": tuple(signed.tolist()),
                }
            )
    return pd.DataFrame(rows)


def fitted_orders(frame: pd.DataFrame, *, value: str = "max_abs_error") -> pd.DataFrame:
    """Slope of log(error) against log(1/K) per rule: the measured error order, fitted over
    the pre-asymptotic range only.

    Trailing K whose error is at the rounding floor (``frame.floor``, from :func:`convergence`;
    0 when absent) or has stopped decreasing (local order below :data:`PLATEAU_ORDER`) are
    left out of the fit: they measure float rounding or a plateau, not the rule.

    Returns:
        One row per rule (index): ``derived_order``, ``fitted_order`` (NaN with fewer than
        two usable K), ``k_min`` and ``k_max`` of the fit, ``n_fitted``, ``excluded`` (the
        left-out K, e.g. ``"8 (floor)"``; empty when none) and ``floor``.
    """
    rows = []
    for rule, group in frame.groupby("rule", sort=False):
        group = group.sort_values("K")
        ks = group.K.to_numpy(dtype=float)
        errors = group[value].to_numpy(dtype=float)
        floor = float(group.floor.max()) if "floor" in group else 0.0
        keep, excluded = len(ks), []
        while keep > 1:
            i = keep - 1
            local = np.log(errors[i - 1] / errors[i]) / np.log(ks[i] / ks[i - 1])
            if errors[i] <= floor:
                excluded.insert(0, f"{ks[i]:g} (floor)")
            elif local < PLATEAU_ORDER:
                excluded.insert(0, f"{ks[i]:g} (plateau)")
            else:
                break
            keep -= 1
        if keep >= 2:
            logs = np.log(np.clip(errors[:keep], 1e-300, None))
            order = -float(np.polyfit(np.log(ks[:keep]), logs, 1)[0])
        else:
            order = np.nan
        rows.append(
            {
                "rule": rule,
                "derived_order": group.derived_order.iloc[0],
                "fitted_order": order,
                "k_min": int(ks[0]),
                "k_max": int(ks[keep - 1]),
                "n_fitted": keep,
                "excluded": ", ".join(excluded),
                "floor": floor,
            }
        )
    return pd.DataFrame(rows).set_index("rule")


#: Metrics that, when equal to :data:`TIE_DECIMALS` decimals, make two rows one estimate.
TIE_METRICS = ("nmae", "spearman", "topk_recall")
TIE_DECIMALS = 10


def total_passes(rows: pd.DataFrame) -> pd.Series:
    """Each row's passes over the prompt batch: forward + backward + hvp."""
    return rows[list(PASS_COLUMNS)].sum(axis=1)


def without_ties(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` without the rows that tie another (the same :data:`TIE_METRICS` to
    :data:`TIE_DECIMALS` decimals: the same estimate computed another way) at no fewer passes
    (forward + backward + hvp). Of estimators that agree, the one with the fewest passes is
    kept (the first listed when those are equal too): a tie is never settled by wall-clock
    noise. The kept rows stay in their order."""
    order = np.argsort(total_passes(rows).to_numpy(), kind="stable")
    metrics = rows.iloc[order][list(TIE_METRICS)].round(TIE_DECIMALS)
    keep = np.ones(len(rows), dtype=bool)
    keep[order[metrics.duplicated().to_numpy()]] = False
    return rows[keep]


def pareto_frontier(frame: pd.DataFrame) -> pd.DataFrame:
    """Estimators that no other estimator beats on both time and NMAE, fastest first; of
    estimators that tie (:func:`without_ties`), the one with the fewest passes.

    Keep the AP row of :func:`run_estimators` in ``frame``: AP is exact (NMAE 0) at time
    ratio 1, so it ends the frontier and every estimator slower than AP is dominated by it.
    """
    ordered = without_ties(frame).sort_values(["x_AP_time", "nmae"])
    best, keep = np.inf, []
    for index, r in ordered.iterrows():
        if r.nmae < best:
            best = r.nmae
            keep.append(index)
    return ordered.loc[keep]


#: A ranking "ranks like AP" from this Spearman correlation with AP on (and, where top-k recall
#: is measured, the same top-k components): the one threshold of notebooks 01, 07 and 08.
LIKE_AP = 0.99
#: ... and roughly like AP from this Spearman correlation on (notebook 01's middle band).
ROUGHLY_LIKE_AP = 0.7


def ranks_like_ap(rows: pd.DataFrame, *, spearman: float = LIKE_AP) -> pd.Series:
    """Rows whose ranking is AP's: Spearman at least ``spearman`` and the same top-k."""
    return (rows.spearman >= spearman) & (rows.topk_recall >= 1.0)


def cheapest_ranking_like_ap(group: pd.DataFrame, *, spearman: float = LIKE_AP) -> pd.Series:
    """The fastest row of ``group`` that ranks like AP (AP itself when nothing cheaper does)."""
    return group[ranks_like_ap(group, spearman=spearman)].sort_values("seconds").iloc[0]


def most_accurate(group: pd.DataFrame, allowed: pd.Series) -> pd.Series:
    """The lowest-NMAE row of ``group[allowed]``, exact patching (ours or a peer's) excluded."""
    patching = group.family.isin(GROUND_TRUTH_FAMILIES)
    return group[allowed & ~patching].sort_values("nmae").iloc[0]


def frontier_table(
    frame: pd.DataFrame, *, spearman: float = LIKE_AP, max_x_atp_time: float = 2.0
) -> pd.DataFrame:
    """Per (perturbation, kind) of a :func:`run_estimators` frame: the cheapest estimator that
    ranks like AP, and the most accurate one that costs about what AtP costs.

    Args:
        frame: rows of :func:`run_estimators` with ``perturbation`` and ``kind`` columns.
        spearman: the rank correlation with AP that counts as "ranks like AP" (together with
            the same top-k components: ``topk_recall == 1``).
        max_x_atp_time: the wall-time budget, as a multiple of AtP's, of the second choice.

    Returns:
        One row per group: ``cheapest`` (label), its ``cheapest_x_AP_time`` and
        ``cheapest_spearman``; ``best_under_budget`` (the lowest NMAE with
        ``x_AtP_time <= max_x_atp_time``, AP excluded), its ``best_nmae`` and
        ``best_x_AtP_time``. AP itself qualifies as the cheapest when nothing cheaper does.
    """
    rows = []
    for (perturbation, kind), group in frame.groupby(["perturbation", "kind"], sort=False):
        group = without_ties(group)
        cheapest = cheapest_ranking_like_ap(group, spearman=spearman)
        best = most_accurate(group, group.x_AtP_time <= max_x_atp_time)
        rows.append(
            {
                "perturbation": perturbation,
                "kind": kind,
                "cheapest": cheapest.method,
                "cheapest_x_AP_time": cheapest.x_AP_time,
                "cheapest_spearman": cheapest.spearman,
                "best_under_budget": best.method,
                "best_nmae": best.nmae,
                "best_x_AtP_time": best.x_AtP_time,
            }
        )
    return pd.DataFrame(rows)


def decision_table(
    frame: pd.DataFrame, *, budget_x_atp: float = 2.0, spearman: float = LIKE_AP
) -> pd.DataFrame:
    """Which estimator when, per (perturbation, kind) of a :func:`run_estimators` frame: AtP
    alone; the most accurate estimator within ``budget_x_atp`` times AtP's wall time; the most
    accurate one faster than AP; and the cheapest one that ranks like AP (see
    :func:`ranks_like_ap`), each with its NMAE, its time and whether it ranks like AP. Two
    flags for the rules that read the table: "only AP ranks like AP" (that cheapest one is
    activation patching itself, by family) and "AtP is best at its cost" (by key)."""
    rows = []
    for (p, kind), group in frame.groupby(["perturbation", "kind"], sort=False):
        atp = group[group.estimator == "atp"].iloc[0]
        group = without_ties(group)
        budget = most_accurate(group, group.x_AtP_time <= budget_x_atp)
        below = most_accurate(group, group.x_AP_time < 1.0)
        cheapest = cheapest_ranking_like_ap(group, spearman=spearman)
        like = ranks_like_ap(pd.DataFrame([atp, budget, below]), spearman=spearman).tolist()
        rows.append(
            {
                "perturbation": p,
                "kind": kind,
                "components": int(atp.n),
                "AtP nmae": atp.nmae,
                "AtP ranks like AP": like[0],
                "best at AtP cost": budget.method,
                "AtP is best at its cost": budget.key == atp.key,
                "its nmae": budget.nmae,
                "its x AtP time": budget.x_AtP_time,
                "its circuit AUROC": budget.circuit_auroc,
                "it ranks like AP": like[1],
                "best below AP cost": below.method,
                "nmae below AP": below.nmae,
                "x AP time below AP": below.x_AP_time,
                "below-AP pick ranks like AP": like[2],
                "cheapest ranking like AP": cheapest.method,
                "its x AP time": cheapest.x_AP_time,
                "only AP ranks like AP": cheapest.family == Family.AP.value,
            }
        )
    return pd.DataFrame(rows).set_index(["perturbation", "kind"])


def probe_sweep(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    probes: tuple[int, ...] = (4, 8, 16, 32, 64, 128),
    truth: Attribution | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Hutchinson's stochastic second-order term against the per-component one, as the
    number of random-sign probes grows.

    Args:
        model, task, comps: as for every estimator.
        probes: the probe counts ``S``.
        truth: an AP result on ``comps`` (computed when None).
        seed: the probes' seed.

    Returns:
        One row per estimator: AtP, per-component HVP (``hvp[mode=diag]``) and Hutchinson
        with each ``S``: ``n_probes`` (NaN for the first two), ``nmae``, ``spearman``,
        ``seconds``, ``x_AP_time`` and ``x_AtP_time``.
    """
    grid = [atp_estimator(), hvp_estimator(mode="diag")]
    grid += [hvp_estimator(mode="hutchinson", n_probes=s, seed=seed) for s in probes]
    frame, _ = run_estimators(model, task, comps, estimators=grid, truth=truth)
    frame = frame[frame.estimator != "ap"]
    sampled = frame.opt_mode.eq("hutchinson")
    frame = frame.assign(n_probes=frame.opt_n_probes.where(sampled))
    return frame[
        ["method", "n_probes", "nmae", "spearman", "seconds", "x_AP_time", "x_AtP_time"]
    ].reset_index(drop=True)
