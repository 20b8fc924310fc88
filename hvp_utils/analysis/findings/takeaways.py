"""The verdicts of notebook 08: which estimator when, read off the benchmark's tables.

The functions read the tables of ``make bench`` (``estimators.csv``: one row per estimator,
perturbation and component kind, with ``nmae``, ``spearman``, ``topk_recall``, ``x_AP_time``
and ``x_AtP_time``; the probe sweep of ``hutchinson.csv``) and the tables the notebook derives
from them (AtP's NMAE per kind, :func:`hvp_utils.decision_table`, the accuracy-for-compute
envelope). Each decides the verdicts of one notebook section and returns them as
:class:`~hvp_utils.analysis.findings.record.Findings`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hvp_utils.analysis.benchmark import decision_table
from hvp_utils.analysis.findings.paper import verdict
from hvp_utils.analysis.findings.record import Findings
from hvp_utils.core.types import Family

#: The columns of the decision table the verdicts are computed from.
DECISION_COLUMNS = [
    "components",
    "AtP nmae",
    "AtP ranks like AP",
    "best at AtP cost",
    "its nmae",
    "its x AtP time",
    "it ranks like AP",
    "best below AP cost",
    "nmae below AP",
    "x AP time below AP",
    "cheapest ranking like AP",
    "its x AP time",
]
#: The families of per-component corrections (one HVP, IG or multi-step rule per component).
PER_COMPONENT_FAMILIES = [Family.HVP, Family.IG, Family.MULTISTEP]


#: The settings a benchmark records in ``run.json`` that decide its prompts and precision.
RUN_SETTINGS = ("model_name", "n_prompts", "seed", "dtype")
#: Where a benchmark folder keeps the same benchmark at other prompt samples:
#: ``<bench_dir>/seeds/seed<N>/`` (``estimators.csv`` and ``run.json``).
SEEDS_FOLDER = "seeds"
#: The choices of the decision table whose spread over prompt samples the page reports: is AtP
#: alone enough, what is best at AtP's cost, and what is the cheapest that ranks like AP.
CHOICES = ("AtP ranks like AP", "best at AtP cost", "cheapest ranking like AP")


def source(
    run: Mapping[str, Any],
    *,
    perturbation: str,
    model_name: str,
    n_prompts: int,
    seed: int,
    dtype: str,
) -> Findings:
    """Where the tables come from (the benchmark's command, wall time and settings, from its
    ``run.json``); whether those settings are the page's (``model_name``, ``n_prompts``,
    ``seed``, ``dtype``: those of notebooks 01-07 by default), and if not, which differ; and how
    to measure them again with the page's settings."""
    found = Findings("08", "Where the numbers come from")
    settings = run.get("settings")
    found.state("takeaways.source", command=run["command"], minutes=run["seconds"] / 60)
    asked = dict(model_name=model_name, n_prompts=n_prompts, seed=seed, dtype=dtype)
    if settings is None:
        found.state("takeaways.settings_unknown", asked=asked)
    else:
        differ = [k for k in RUN_SETTINGS if settings.get(k) != asked[k]]
        if differ:
            found.state(
                "takeaways.settings_differ",
                differ=[
                    {"name": k, "asked": asked[k], "measured": settings.get(k)} for k in differ
                ],
            )
        else:
            found.state("takeaways.same_settings", **asked)
    found.state("takeaways.rerun", perturbation=perturbation, **asked)
    return found


def worst_kinds(atp_nmae: pd.DataFrame, perturbation: str, n: int) -> list[dict[str, Any]]:
    """The ``n`` kinds with the largest AtP NMAE under ``perturbation``, largest first."""
    worst = atp_nmae[perturbation].sort_values(ascending=False).iloc[:n]
    return [{"kind": k, "nmae": float(v)} for k, v in worst.items()]


def answer(atp_nmae: pd.DataFrame, *, local_kinds: list[str]) -> Findings:
    """Per perturbation (column of ``atp_nmae``, kinds as rows): the ``len(local_kinds)`` kinds
    where AtP's NMAE is largest, and whether they are exactly the kinds with a non-linear local
    map."""
    found = Findings("08", "Answer")
    found.table("atp_nmae", atp_nmae)
    for p in atp_nmae.columns:
        worst = worst_kinds(atp_nmae, p, len(local_kinds))
        values = dict(perturbation=p, worst=worst, local_kinds=list(local_kinds))
        local = {w["kind"] for w in worst} == set(local_kinds)
        found.state("takeaways.worst_are_local" if local else "takeaways.worst_not_local", **values)
    return found


def chart(
    decision: pd.DataFrame,
    frame: pd.DataFrame,
    *,
    perturbation: str,
    budget_x_atp: float,
    local_kinds: list[str],
) -> Findings:
    """Under ``perturbation``: the kinds where AtP already ranks like AP, those where only AP
    does, what AtP (exact local) does to AtP's NMAE on the kinds with a non-linear local map
    (``nmae_local / nmae_AtP``), and on how many kinds spending up to AP's time instead of
    ``budget_x_atp`` times AtP's changes the most accurate pick."""
    found = Findings("08", "What the chart says")
    found.table("decision", decision[DECISION_COLUMNS])
    kinds = list(dict.fromkeys(frame.kind))
    sub = decision.loc[perturbation]
    enough = [k for k in kinds if sub.loc[k, "AtP ranks like AP"]]
    if enough:
        found.state(
            "takeaways.atp_enough", perturbation=perturbation, kinds=enough, n_kinds=len(kinds)
        )
    else:
        found.state("takeaways.atp_enough_nowhere", perturbation=perturbation, n_kinds=len(kinds))
    need_ap = [k for k in kinds if sub.loc[k, "only AP ranks like AP"]]
    if need_ap:
        found.state("takeaways.need_ap", kinds=need_ap)
    local = frame[(frame.perturbation == perturbation) & (frame.estimator == "atp_local")]
    local = local.set_index("kind").loc[local_kinds, ["nmae", "x_AtP_time"]]
    found.table("exact_local", local)
    for k, row in local.iterrows():
        atp = float(sub.loc[k, "AtP nmae"])
        found.state(
            "takeaways.exact_local",
            kind=k,
            atp_nmae=atp,
            local_nmae=float(row.nmae),
            ratio=float(row.nmae / atp),
            x_atp=float(row.x_AtP_time),
        )
    same = [k for k in kinds if sub.loc[k, "best at AtP cost"] == sub.loc[k, "best below AP cost"]]
    found.state(
        "takeaways.budget_changes_pick",
        n_changed=len(kinds) - len(same),
        n_kinds=len(kinds),
        budget_x_atp=budget_x_atp,
    )
    return found


def compute(frame: pd.DataFrame, *, envelope: pd.DataFrame, perturbation: str) -> Findings:
    """Whether any per-component correction (HVP diag, per-component IG, multi-step HVP; no
    joint or Hutchinson variant) is faster than AP; the envelope's largest best NMAE at any cost
    and its range below AP's time; and on how many kinds the joint HVP correction is less
    accurate than AtP."""
    found = Findings("08", "Accuracy for compute")
    per_component = frame[
        frame.family.isin(PER_COMPONENT_FAMILIES) & ~frame.method.str.contains("joint|hutchinson")
    ]
    found.table(
        "per_component", per_component[["perturbation", "kind", "method", "nmae", "x_AP_time"]]
    )
    fastest = per_component.sort_values("x_AP_time").iloc[0]
    found.state(
        "takeaways.per_component_slower"
        if fastest.x_AP_time > 1.0
        else "takeaways.per_component_fastest",
        method=fastest.method,
        kind=fastest.kind,
        perturbation=fastest.perturbation,
        x_ap=float(fastest.x_AP_time),
    )
    found.table("envelope", envelope)
    best, below = envelope["best nmae at any cost"], envelope["best nmae below AP time"]
    found.state(
        "takeaways.envelope",
        perturbation=perturbation,
        max_best=float(best.max()),
        hardest=str(best.idxmax()),
        all_slower=bool((envelope["its x AP time"] > 1.0).all()),
        below_min=float(below.min()),
        below_max=float(below.max()),
    )
    kinds = list(dict.fromkeys(frame.kind))
    featured = frame[frame.perturbation == perturbation]
    joint = featured[featured.method == "HVP joint"].set_index("kind").loc[kinds]
    atp = featured[featured.estimator == "atp"].set_index("kind").loc[kinds]
    found.table(
        "joint",
        pd.DataFrame({"nmae": joint.nmae, "x_AtP_time": joint.x_AtP_time, "AtP nmae": atp.nmae}),
    )
    worse = [k for k in kinds if joint.loc[k, "nmae"] > atp.loc[k, "nmae"]]
    found.state(
        "takeaways.joint_worse",
        median_x_atp=float(joint.x_AtP_time.median()),
        kinds=worse,
        n_worse=len(worse),
        n_kinds=len(kinds),
    )
    return found


def neuron_level(sweep: pd.DataFrame, frame: pd.DataFrame, *, perturbation: str) -> Findings:
    """On the neurons of one layer (the probe sweep, one row per method): what HVP diag costs
    and gains over AtP, the fewest Hutchinson probes whose NMAE beats AtP's, and Screen-Flag-Fix
    on the neuron kinds under ``perturbation``."""
    found = Findings("08", "At the neuron level")
    found.table("sweep", sweep)
    atp, diag = sweep.loc["AtP"], sweep.loc["HVP diag"]
    found.state(
        "takeaways.diag_neurons",
        n_components=int(atp.n_components),
        atp_nmae=float(atp.nmae),
        diag_nmae=float(diag.nmae),
        x_atp=float(diag.x_AtP_time),
        x_ap=float(diag.x_AP_time),
    )
    hutch = sweep[sweep.n_probes.notna()].sort_values("n_probes")
    beats = hutch[hutch.nmae < atp.nmae]
    most = dict(max_probes=int(hutch.n_probes.max()))
    if len(beats):
        first = beats.iloc[0]
        found.state(
            "takeaways.hutchinson_beats_atp",
            **most,
            n_probes=int(first.n_probes),
            nmae=float(first.nmae),
            x_atp=float(first.x_AtP_time),
            max_nmae=float(hutch.nmae.iloc[-1]),
            max_x_ap=float(hutch.x_AP_time.iloc[-1]),
        )
    else:
        found.state("takeaways.hutchinson_never_beats", **most, atp_nmae=float(atp.nmae))
    sff = frame[(frame.perturbation == perturbation) & (frame.family == "SFF")].set_index("kind")
    found.table("sff", sff[["method", "nmae", "spearman", "topk_recall", "x_AP_time"]])
    for k in [k for k in ("neuron", "neuron_pre") if k in sff.index]:
        row = sff.loc[k]
        found.state(
            "takeaways.sff_neurons",
            kind=k,
            spearman=float(row.spearman),
            topk_recall=float(row.topk_recall),
            x_ap=float(row.x_AP_time),
        )
    return found


def rules_of_thumb(
    decision: pd.DataFrame, *, kinds: list[str], perturbation: str, budget_x_atp: float
) -> Findings:
    """Per kind under ``perturbation``: the most accurate estimator within ``budget_x_atp``
    times AtP's wall time, and what ranks like AP (AtP itself, only AP, or the cheapest that
    does)."""
    found = Findings("08", f"Which estimator when ({perturbation})")
    for k in kinds:
        row = decision.loc[(perturbation, k)]
        if row["AtP ranks like AP"]:
            ranking = "atp"
        elif row["only AP ranks like AP"]:
            ranking = "only_ap"
        else:
            ranking = "cheapest"
        found.state(
            "takeaways.rule_of_thumb",
            kind=k,
            atp_best=bool(row["AtP is best at its cost"]),
            best=row["best at AtP cost"],
            best_nmae=float(row["its nmae"]),
            best_x_atp=float(row["its x AtP time"]),
            atp_nmae=float(row["AtP nmae"]),
            budget_x_atp=budget_x_atp,
            ranking=ranking,
            cheapest=row["cheapest ranking like AP"],
            cheapest_x_ap=float(row["its x AP time"]),
        )
    return found


def claim_span(measures: pd.DataFrame, claim: str) -> dict[str, Any]:
    """A claim's measure over every seed and perturbation of ``measures`` (rows of
    :func:`hvp_utils.findings.paper.run_measures` with a ``seed`` column): its verdict
    (:func:`~hvp_utils.analysis.findings.paper.verdict`), how often its test held, the range,
    and the seeds."""
    rows = measures[measures.claim == claim]
    return dict(
        verdict=verdict(rows.holds),
        held=int(rows.holds.sum()),
        n=len(rows),
        low=float(rows.value.min()),
        high=float(rows.value.max()),
        seeds=[int(s) for s in sorted(rows.seed.unique())],
    )


def take_home(
    atp_nmae: pd.DataFrame,
    decision: pd.DataFrame,
    measures: pd.DataFrame,
    *,
    local_kinds: list[str],
    perturbation: str,
    picks: pd.DataFrame | None = None,
) -> Findings:
    """The course's three questions answered from the verdicts of this page.

    - When does AtP lie: the kinds with the largest relative error (AtP's NMAE, section 1)
      under ``perturbation``, those of them with a non-linear local map, and the share of
      AtP's absolute error that is downstream (notebook 02's claim, over every seed).
    - How do I tell: the reliability score's AUROC in its weakest kind and the Lagrange
      interval's coverage (notebook 03's claims, over every seed).
    - What do I use instead: per kind under ``perturbation`` (``decision``, section 2), where
      AtP alone ranks like AP, which estimator lowers the relative error at AtP's cost, where
      only AP ranks like AP; and Screen-Flag-Fix's cost against AP's (notebook 07's claim).
      With ``picks`` (:func:`choices_by_seed`), each of these choices says whether it is the
      same at every seed of the benchmark (``settled``; None without ``picks``).
    """
    found = Findings("08", "Take-home")
    worst = worst_kinds(atp_nmae, perturbation, len(local_kinds))
    found.state(
        "takeaways.lie",
        perturbation=perturbation,
        worst=worst,
        local=[w["kind"] for w in worst if w["kind"] in local_kinds],
        downstream=claim_span(measures, "downstream"),
    )
    found.state(
        "takeaways.tell",
        detection=claim_span(measures, "reliability score"),
        coverage=claim_span(measures, "bounds"),
    )
    sub = decision.loc[perturbation]
    better = sub[sub["best at AtP cost"] != "AtP"]

    if picks is not None and picks.seed.nunique() < 2:
        picks = None  # one sample: nothing can be called settled

    def settled(kind: str, choice: str) -> bool | None:
        if picks is None:
            return None
        group = picks[(picks.perturbation == perturbation) & (picks.kind == kind)]
        return group[choice].nunique() == 1

    found.state(
        "takeaways.instead",
        perturbation=perturbation,
        n_seeds=None if picks is None else int(picks.seed.nunique()),
        atp_ranks=[
            {"kind": k, "settled": settled(k, "AtP ranks like AP")}
            for k in sub.index
            if sub.loc[k, "AtP ranks like AP"]
        ],
        cheaper=[
            {
                "kind": k,
                "method": r["best at AtP cost"],
                "nmae": r["its nmae"],
                "atp": r["AtP nmae"],
                "settled": settled(k, "best at AtP cost"),
            }
            for k, r in better.iterrows()
        ],
        need_ap=[
            {"kind": k, "settled": settled(k, "cheapest ranking like AP")}
            for k in sub.index
            if sub.loc[k, "only AP ranks like AP"]
        ],
        sff=claim_span(measures, "Screen-Flag-Fix"),
    )
    return found


def other_benchmarks(
    bench_dir: str | Path, *, model_name: str, n_prompts: int, dtype: str, seed: int
) -> tuple[dict[int, pd.DataFrame], Findings]:
    """The benchmark at other prompt samples: ``estimators.csv`` of every
    ``<bench_dir>/seeds/seed<N>/`` whose ``run.json`` has the page's model, prompt count and
    dtype and another seed than ``seed`` (the seed of ``bench_dir``'s own tables), by seed; and
    where they come from (commands and minutes), or why there are none."""
    found = Findings("08", "The benchmark at other prompt samples")
    asked = dict(model_name=model_name, n_prompts=n_prompts, dtype=dtype)
    frames, commands, seconds, skipped = {}, [], 0.0, []
    for folder in sorted(Path(bench_dir, SEEDS_FOLDER).glob("seed*")):
        if not (folder / "run.json").exists():
            continue
        run = json.loads((folder / "run.json").read_text())
        settings = run["settings"]
        if any(settings.get(k) != v for k, v in asked.items()) or settings["seed"] == seed:
            skipped.append(folder.name)
            continue
        frames[int(settings["seed"])] = pd.read_csv(folder / "estimators.csv")
        commands.append(run["command"])
        seconds += run["seconds"]
    if frames:
        found.state(
            "takeaways.bench_seeds",
            seeds=sorted(frames),
            commands=commands,
            minutes=seconds / 60,
            **asked,
        )
    else:
        found.state("takeaways.bench_seeds_missing", bench_dir=str(bench_dir), skipped=skipped)
    return dict(sorted(frames.items())), found


def choices_by_seed(
    frames: Mapping[int, pd.DataFrame], *, budget_x_atp: float, spearman: float
) -> pd.DataFrame:
    """The decision table's :data:`CHOICES` at every seed: one row per (seed, perturbation,
    kind) of :func:`hvp_utils.decision_table` on that seed's benchmark."""
    rows = []
    for seed, frame in frames.items():
        decision = decision_table(frame, budget_x_atp=budget_x_atp, spearman=spearman)
        picks = decision[list(CHOICES)].reset_index()
        rows.append(picks.assign(seed=seed))
    return pd.concat(rows, ignore_index=True)[["seed", "perturbation", "kind", *CHOICES]]


def choice_word(value: Any) -> str:
    """A choice as the page shows it: "yes" or "no" for whether AtP ranks like AP, otherwise
    the estimator's label."""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    return str(value)


def _settled(picks: pd.DataFrame) -> pd.DataFrame:
    """Per (perturbation, kind): each choice, once when it is the same at every seed, otherwise
    its value at every seed in seed order ("a | b | c")."""

    def shown(values: list) -> str:
        words = [choice_word(v) for v in values]
        return words[0] if len(set(words)) == 1 else " | ".join(words)

    ordered = picks.sort_values("seed", kind="stable")
    table = ordered.groupby(["perturbation", "kind"], sort=False)[list(CHOICES)].agg(
        lambda column: shown(column.tolist())
    )
    return table.rename(columns={"AtP ranks like AP": "AtP alone ranks like AP"})


def choice_spread(picks: pd.DataFrame, *, perturbation: str) -> tuple[pd.DataFrame, Findings]:
    """How far the decision table's choices move with the prompt sample: for every
    (perturbation, kind), each choice of :data:`CHOICES` at every seed of ``picks``
    (:func:`choices_by_seed`), shown once where it is the same at every seed (**settled**) and
    seed by seed where it is not; stated
    as counts over every group, and by name for the groups of ``perturbation`` whose choice
    changes. With one seed there is no spread to state."""
    found = Findings("08", "How far the choices move with the prompt sample")
    found.table("choices_by_seed", picks)
    table = _settled(picks)
    seeds = sorted(int(s) for s in picks.seed.unique())
    if len(seeds) == 1:
        found.state("takeaways.choice_one_sample", seed=seeds[0])
        return table, found
    ordered = picks.sort_values("seed", kind="stable")
    groups = ordered.groupby(["perturbation", "kind"], sort=False)
    same = groups[list(CHOICES)].nunique() == 1
    featured = ordered[ordered.perturbation == perturbation]
    found.state(
        "takeaways.choice_spread",
        seeds=seeds,
        n_groups=len(same),
        settled={c: int(same[c].sum()) for c in CHOICES},
        perturbation=perturbation,
        unsettled={
            c: [
                {"kind": k, "picks": [choice_word(v) for v in featured[featured.kind == k][c]]}
                for k in same.loc[perturbation].index[~same.loc[perturbation][c]]
            ]
            for c in CHOICES
        },
    )
    return table, found
