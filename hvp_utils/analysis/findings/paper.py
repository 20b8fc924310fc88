"""The seed paper's claims, judged on this model: the closing table of notebook 08.

The abstract of "When Attribution Patching Lies" makes seven claims. Each is decided here from
numbers that notebooks 01-07 recorded beside their findings (read back with
:func:`~hvp_utils.analysis.findings.record.recorded_outputs`), by a stated test, once per
prompt sample (``seed``) and perturbation:

- :func:`run_measures` reads one run of notebooks 01-07 (a folder of executed notebooks) and
  returns one row per (claim, part, perturbation): the measured ``value``, whether the claim's
  test ``holds`` there, and a ``detail`` in words;
- :func:`judge` pools the rows of several runs (column ``seed``) into a verdict per claim part:
  **reproduced** where the test holds at every seed and perturbation, **refuted** where it
  holds at none, **not settled** where it depends on the prompt sample or the perturbation.

The tests and their thresholds are in :data:`CLAIMS`; a threshold is a choice, stated in the
table beside the verdict it decides.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from hvp_utils.analysis.benchmark import LIKE_AP
from hvp_utils.analysis.diagnosis import error_shares, with_error_terms
from hvp_utils.analysis.findings.record import Findings, recorded_outputs

#: The notebooks whose records decide the claims.
CLAIM_NOTEBOOKS = ("01", "02", "03", "04", "05", "06", "07")
#: The columns of :func:`run_measures` (and of a seeds file, with ``seed`` first).
MEASURE_COLUMNS = ["claim", "part", "perturbation", "value", "holds", "detail"]

Verdict = Literal["reproduced", "refuted", "not settled"]


class RunRecords:
    """The tables and findings that notebooks 01-07 of one run recorded."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.tables: dict[str, dict[str, pd.DataFrame]] = {}
        self.findings: dict[str, list[dict[str, Any]]] = {}
        self.recorded: dict[str, dict[str, Any]] = {}  # values recorded beside the findings
        for number in CLAIM_NOTEBOOKS:
            paths = sorted(self.directory.glob(f"{number}_*.ipynb"))
            if len(paths) != 1:
                raise FileNotFoundError(
                    f"expected one executed notebook {number}_*.ipynb in {self.directory}, "
                    f"found {len(paths)}: run notebooks 01-07 there first (python -m "
                    "hvp_utils.cli.rerun writes them under runs/)"
                )
            self.tables[number], self.findings[number], self.recorded[number] = {}, [], {}
            for record, _ in recorded_outputs(paths[0]):
                for key, rows in record["tables"].items():
                    self.tables[number][key] = pd.DataFrame(rows)
                self.findings[number] += record["findings"]
                self.recorded[number].update(record["values"])

    def table(self, number: str, key: str) -> pd.DataFrame:
        """Table ``key`` of notebook ``number``."""
        try:
            return self.tables[number][key]
        except KeyError:
            raise KeyError(
                f"notebook {number} in {self.directory} recorded no table {key!r}: it was "
                "executed by another version of the course; run it again"
            ) from None

    def values(self, number: str, key: str) -> list[dict[str, Any]]:
        """The values of every finding ``key`` that notebook ``number`` stated."""
        return [f["values"] for f in self.findings[number] if f["key"] == key]


Measure = Callable[[RunRecords], list[dict[str, Any]]]


@dataclass(frozen=True)
class Claim:
    """One claim of the abstract and how it is tested.

    Attributes:
        key: short name (the ``claim`` column).
        text: the claim, as the abstract makes it.
        parts: ``{part: (measure, test in words, notebook)}``; a claim with two parts (e.g. a
            result and its cost) is judged part by part.
        measure: the rows of every part from one run (:data:`MEASURE_COLUMNS` but ``claim``).
    """

    key: str
    text: str
    parts: Mapping[str, tuple[str, str, str]]
    measure: Measure


def _downstream(run: RunRecords) -> list[dict[str, Any]]:
    """Share of AtP's absolute error that is downstream, pooled over every component (02)."""
    diagnosis = with_error_terms(run.table("02", "diagnosis"))
    pooled = error_shares(diagnosis, by=["perturbation"])
    by_kind = error_shares(diagnosis, by=["perturbation", "kind"])
    rows = []
    for p, share in pooled.down_share.items():
        curved = by_kind.loc[p]
        curved = curved[curved.mean_abs_E_local > 0].down_share
        rows.append(
            dict(
                part="error",
                perturbation=p,
                value=float(share),
                holds=bool(share > 0.5),
                detail=(
                    f"within the kinds with a local map {curved.min():.0%}-{curved.max():.0%} "
                    "downstream"
                    if len(curved)
                    else "no kind has a local map"
                ),
            )
        )
    return rows


def _detects(run: RunRecords) -> list[dict[str, Any]]:
    """Lowest per-kind AUROC of the reliability score (kinds of at least 10 components, 03)."""
    detection = run.table("03", "detection")
    detection = detection.assign(
        perturbation=detection.group.str.split(" / ").str[0],
        kind=detection.group.str.split(" / ").str[1],
    )
    pooled = {v["perturbation"]: v["auroc"] for v in run.values("03", "reliability.detector")}
    rows = []
    # a kind without both good and bad estimates has no AUROC (NaN): it cannot decide
    measured = detection[(detection.n >= MIN_KIND_SIZE) & detection.auroc.notna()]
    for p, group in measured.groupby("perturbation", sort=False):
        weakest = group.loc[group.auroc.idxmin()]
        rows.append(
            dict(
                part="detection",
                perturbation=p,
                value=float(weakest.auroc),
                holds=bool(weakest.auroc >= USEFUL_AUROC),
                detail=f"weakest {weakest.kind}; pooled over kinds {pooled[p]:.2f}",
            )
        )
    return rows


def _bounds(run: RunRecords) -> list[dict[str, Any]]:
    """Share of components whose AP lies in their Lagrange interval (03)."""
    intervals = run.table("03", "intervals")
    rows = []
    for p, group in intervals.groupby("perturbation", sort=False):
        inside = (group.lower <= group.AP) & (group.AP <= group.upper)
        width = ((group.upper - group.lower) / group.AP.abs()).median()
        rows.append(
            dict(
                part="coverage",
                perturbation=p,
                value=float(inside.mean()),
                holds=bool(inside.mean() >= MIN_COVERAGE),
                detail=(
                    f"{int(inside.sum())} of {len(group)} inside; median width {width:.2f} x |AP|"
                ),
            )
        )
    return rows


def _second_order(run: RunRecords) -> list[dict[str, Any]]:
    """Largest ratio over kinds of a second-order estimator's NMAE to AtP's (04): HVP diag
    (the exact second-order term, one HVP per component) and HVP joint (one HVP in all)."""
    nmae = run.table("04", "nmae")
    passes = run.table("04", "hvp_passes").set_index(["perturbation", "kind"])
    rows = []
    for part, method in (("error", "HVP diag"), ("one pass", "HVP joint")):
        for p, group in nmae.groupby("perturbation", sort=False):
            ratio = (group[method] / group.AtP).set_axis(group.kind)
            worst = ratio.idxmax()
            hvps = passes.loc[(p, worst), method]
            rows.append(
                dict(
                    part=part,
                    perturbation=p,
                    value=float(ratio.max()),
                    holds=bool(ratio.max() < 1),
                    detail=(
                        f"worst {worst} ({hvps:.0f} HVP pass{'es' if hvps != 1 else ''}); "
                        f"lowers AtP's NMAE on {int((ratio < 1).sum())} of {len(ratio)} kinds"
                    ),
                )
            )
    return rows


def _multistep(run: RunRecords) -> list[dict[str, Any]]:
    """Per kind, the best ratio of a multi-step HVP's NMAE to that of the most accurate IG
    with at most its passes (05); the largest ratio over kinds."""
    timings = run.table("05", "timings").set_index(["perturbation", "kind", "method"])
    passes = run.table("05", "passes").set_index(["perturbation", "kind", "method"])
    frame = timings.join(passes[["forward", "backward", "hvp"]]).reset_index()
    frame["passes"] = frame[["forward", "backward", "hvp"]].sum(axis=1)
    rows = []
    for p, by_p in frame.groupby("perturbation", sort=False):
        ratios = {}
        for kind, group in by_p.groupby("kind", sort=False):
            ig = group[group.family.str.startswith("IG")]
            best = np.inf
            for _, m in group[group.family == "multi-step HVP"].iterrows():
                rivals = ig[ig.passes <= m.passes]
                if rivals.empty:  # no IG as cheap: multi-step wins on compute alone
                    best = min(best, 0.0)
                else:
                    best = min(best, m.nmae / rivals.nmae.min())
            ratios[kind] = best
        worst = max(ratios, key=ratios.get)
        rows.append(
            dict(
                part="accuracy per pass",
                perturbation=p,
                value=float(ratios[worst]),
                holds=bool(ratios[worst] <= 1),
                detail=f"worst {worst}; " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()),
            )
        )
    return rows


def _circuit(run: RunRecords) -> list[dict[str, Any]]:
    """Circuit AUROC of HVP diag minus that of AtP (06, its featured perturbation)."""
    recovery = run.table("06", "recovery").set_index("method").auroc
    perturbation = run.recorded["06"]["perturbation"]
    gain = recovery["HVP diag"] - recovery["AtP"]
    return [
        dict(
            part="recovery",
            perturbation=perturbation,
            value=float(gain),
            holds=bool(gain > 0),
            detail=f"AUROC {recovery['AtP']:.3f} (AtP) -> {recovery['HVP diag']:.3f} (HVP diag)",
        )
    ]


def _screen_flag_fix(run: RunRecords) -> list[dict[str, Any]]:
    """At the finest granularity of 07: SFF (patch)'s passes over AP's, where it ranks like
    AP (Spearman at least 0.99)."""
    accuracy = run.table("07", "accuracy")
    accuracy = accuracy.assign(passes=accuracy[["forward", "backward", "hvp"]].sum(axis=1))
    finest = accuracy.loc[accuracy.components.idxmax(), "granularity"]
    rows = []
    for p, group in accuracy[accuracy.granularity == finest].groupby("perturbation", sort=False):
        by = group.set_index("method")
        sff, ap, atp = by.loc["SFF (patch)"], by.loc["AP everywhere"], by.loc["AtP alone"]
        ratio = sff.passes / ap.passes
        rows.append(
            dict(
                part="cost",
                perturbation=p,
                value=float(ratio),
                holds=bool(sff.spearman >= LIKE_AP and ratio < 1),
                detail=(
                    f"{finest}: {sff.flagged:.0f} of {sff.components:.0f} flagged; Spearman "
                    f"{atp.spearman:.3f} (AtP) -> {sff.spearman:.4f}"
                ),
            )
        )
    return rows


#: Thresholds of the tests (stated in the table).
MIN_KIND_SIZE = 10
USEFUL_AUROC = 0.75
MIN_COVERAGE = 0.95

#: The abstract's claims, the measure and test of each part, and the notebook that measures it.
CLAIMS: list[Claim] = [
    Claim(
        "downstream",
        "The dominant error is downstream non-linearity, not local curvature.",
        {
            "error": (
                "share of AtP's absolute error that is downstream, over all components",
                "> 0.5",
                "02",
            )
        },
        _downstream,
    ),
    Claim(
        "reliability score",
        "The reliability score detects untrustworthy estimates.",
        {
            "detection": (
                f"AUROC of the score for error > the threshold, lowest kind (n >= {MIN_KIND_SIZE})",
                f">= {USEFUL_AUROC}",
                "03",
            )
        },
        _detects,
    ),
    Claim(
        "bounds",
        "The error bounds quantify mis-specification.",
        {
            "coverage": (
                "share of components whose AP lies in the Lagrange interval",
                f">= {MIN_COVERAGE}",
                "03",
            )
        },
        _bounds,
    ),
    Claim(
        "HVP",
        "The HVP correction removes the leading-order error with one extra backward pass.",
        {
            "error": ("HVP diag NMAE / AtP NMAE, largest over kinds", "< 1", "04"),
            "one pass": ("HVP joint NMAE / AtP NMAE, largest over kinds", "< 1", "04"),
        },
        _second_order,
    ),
    Claim(
        "multi-step HVP",
        "Multi-step HVP matches or beats Integrated Gradients at lower compute.",
        {
            "accuracy per pass": (
                "best multi-step NMAE / NMAE of the best IG with no more passes, "
                "largest over kinds",
                "<= 1",
                "05",
            )
        },
        _multistep,
    ),
    Claim(
        "circuit",
        "Second order recovers circuits with higher fidelity.",
        {"recovery": ("circuit AUROC of HVP diag minus AtP's", "> 0", "06")},
        _circuit,
    ),
    Claim(
        "Screen-Flag-Fix",
        "Screen-Flag-Fix targets effort where it is needed.",
        {
            "cost": (
                "SFF (patch) passes / AP's, finest granularity",
                f"< 1 with Spearman >= {LIKE_AP}",
                "07",
            )
        },
        _screen_flag_fix,
    ),
]


def run_measures(directory: str | Path) -> pd.DataFrame:
    """Every claim part measured on one run of notebooks 01-07 (the executed notebooks in
    ``directory``): columns :data:`MEASURE_COLUMNS`."""
    run = RunRecords(directory)
    rows = [{"claim": claim.key, **row} for claim in CLAIMS for row in claim.measure(run)]
    return pd.DataFrame(rows, columns=MEASURE_COLUMNS)


def other_seeds(
    seeds_dir: str | Path,
    *,
    model_name: str,
    n_prompts: int,
    dtype: str,
    seed: int,
    file: Literal["measures.csv", "key_numbers.csv"] = "measures.csv",
) -> tuple[pd.DataFrame, Findings]:
    """The claims (``file="measures.csv"``) or the key numbers (``"key_numbers.csv"``)
    measured at other seeds by :mod:`hvp_utils.cli.seeds` (with its ``run.json``), without
    ``seed`` (the page's own run), and where they come from; no rows when the folder is
    missing or was measured with other settings."""
    found = Findings("08", "Other prompt samples")
    folder = Path(seeds_dir)
    empty = pd.DataFrame(columns=["seed", *MEASURE_COLUMNS])
    if not (folder / "run.json").exists():
        found.state("paper.seeds_missing", seeds_dir=str(folder))
        return empty, found
    run = json.loads((folder / "run.json").read_text())
    asked = dict(model_name=model_name, n_prompts=n_prompts, dtype=dtype)
    differ = [k for k in asked if run["settings"].get(k) != asked[k]]
    if differ:
        found.state(
            "paper.seeds_differ",
            differ=[{"name": k, "asked": asked[k], "measured": run["settings"][k]} for k in differ],
        )
        return empty, found
    measures = pd.read_csv(folder / file, keep_default_na=False)
    measures = measures[measures.seed != seed]
    found.state(
        "paper.seeds_source",
        command=run["command"],
        minutes=run["seconds"] / 60,
        seeds=sorted(int(s) for s in measures.seed.unique()),
        **asked,
    )
    return measures, found


def verdict(holds: pd.Series) -> Verdict:
    """reproduced (the test holds everywhere), refuted (nowhere) or not settled."""
    if holds.all():
        return "reproduced"
    if not holds.any():
        return "refuted"
    return "not settled"


def judge(
    measures: pd.DataFrame, *, featured_seed: int, perturbation: str
) -> tuple[pd.DataFrame, Findings]:
    """The verdict of each claim part over every seed and perturbation of ``measures``
    (:func:`run_measures` rows with a ``seed`` column), as a table (the values at
    ``featured_seed``, the range over every row) and as findings, whose detail is that of
    ``featured_seed`` and ``perturbation`` (or the one perturbation measured)."""
    found = Findings("08", "The seed paper's claims, judged on this model")
    found.table("measures", measures)
    seeds = sorted(measures.seed.unique())
    rows = []
    for claim in CLAIMS:
        for part, (measure, test, notebook) in claim.parts.items():
            group = measures[(measures.claim == claim.key) & (measures.part == part)]
            if group.empty:
                found.state("paper.not_measured", claim=claim.text, part=part)
                continue
            featured = group[group.seed == featured_seed]
            shown = featured[featured.perturbation == perturbation]
            shown = shown if len(shown) else featured
            held = int(group.holds.sum())
            row = dict(
                claim=claim.text if part == next(iter(claim.parts)) else "",
                measure=measure,
                test=test,
                notebook=notebook,
                value=", ".join(
                    f"{v:.3g} ({p})"
                    for p, v in zip(featured.perturbation, featured.value, strict=True)
                ),
                range=f"{group.value.min():.3g} to {group.value.max():.3g}",
                held=f"{held} of {len(group)}",
                verdict=verdict(group.holds),
            )
            rows.append(row)
            found.state(
                f"paper.{row['verdict'].replace(' ', '_')}",
                claim_key=claim.key,
                claim=claim.text,
                part=part,
                measure=measure,
                test=test,
                notebook=notebook,
                seeds=[int(s) for s in seeds],
                held=held,
                n=len(group),
                low=float(group.value.min()),
                high=float(group.value.max()),
                shown=shown.perturbation.iloc[0],
                detail=shown.detail.iloc[0],
            )
    table = pd.DataFrame(rows).rename(
        columns={"value": f"seed {featured_seed}", "range": f"over {len(seeds)} seeds"}
    )
    return table, found
