"""How far the course's key numbers move with the prompt sample: the last table of notebook 08.

Notebooks 01, 04, 06 and 07 state verdicts on numbers measured on one prompt sample: whether
AtP ranks each kind like AP and how close its sizes are, whether it ranks like AP at each
granularity, whether its top k holds AP's circuit, whether the HVP correction lowers its
error, which estimators recover the circuit exactly. Each such number is read back here from
the tables the notebooks recorded (:class:`~hvp_utils.analysis.findings.paper.RunRecords`),
with the verdict's test, once per prompt sample (``seed``):

- :func:`key_numbers` reads one run and returns one row per (key number, item, perturbation):
  the ``value`` and whether the test ``holds``;
- :func:`stability` pools several runs into one row per (key number, item, perturbation): the
  value at the featured seed, the range over the seeds, how many seeds the test held at, and
  whether the verdict is **settled** (the same at every seed) or **not settled**.

A verdict that flips between prompt samples is a property of the sample, not of the model:
notebook 08 says so instead of stating it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hvp_utils.analysis.benchmark import LIKE_AP
from hvp_utils.analysis.findings.attribution import NEARLY_EXACT_NMAE, rank_agreement
from hvp_utils.analysis.findings.paper import RunRecords
from hvp_utils.analysis.findings.record import Findings

#: The columns of :func:`key_numbers` (and of a seeds file, with ``seed`` first).
KEY_COLUMNS = ["key", "item", "perturbation", "value", "holds"]


@dataclass(frozen=True)
class KeyNumber:
    """One number a notebook states a verdict on, and the verdict's test.

    Attributes:
        key: short name (the ``key`` column).
        quantity: what is measured, in words.
        test: the verdict's test on the value, in words.
        notebook: the notebook that measures it.
        measure: the rows of one run (``item``, ``perturbation``, ``value``, ``holds``).
    """

    key: str
    quantity: str
    test: str
    notebook: str
    measure: Callable[[RunRecords], list[dict[str, Any]]]


def _accuracy_rows(notebook: str, item: str, column: str, holds: Callable[[float], bool]):
    """AtP's ``column`` against AP in ``notebook``'s accuracy table, one row per ``item``
    (notebook 01: per kind; notebook 07: AtP alone per granularity)."""

    def measure(run: RunRecords) -> list[dict[str, Any]]:
        table = run.table(notebook, "accuracy")
        if "method" in table:
            table = table[table.method == "AtP alone"]
        return [
            dict(item=r[item], perturbation=r.perturbation, value=float(r[column]))
            | dict(holds=bool(holds(float(r[column]))))
            for _, r in table.iterrows()
        ]

    return measure


def _hvp_diag_ratio(run: RunRecords) -> list[dict[str, Any]]:
    """HVP diag's NMAE over AtP's, per kind (notebook 04's nmae table)."""
    table = run.table("04", "nmae")
    return [
        dict(
            item=r.kind,
            perturbation=r.perturbation,
            value=float(r["HVP diag"] / r.AtP),
            holds=bool(r["HVP diag"] < r.AtP),
        )
        for _, r in table.iterrows()
    ]


def _circuit_auroc(run: RunRecords) -> list[dict[str, Any]]:
    """Each estimator's AUROC against AP's circuit (notebook 06, its featured perturbation)."""
    perturbation = run.recorded["06"]["perturbation"]
    return [
        dict(item=r.method, perturbation=perturbation, value=float(r.auroc))
        | dict(holds=bool(r.auroc >= 1.0))
        for _, r in run.table("06", "recovery").iterrows()
    ]


KEY_NUMBERS = [
    KeyNumber(
        "atp_kind_spearman",
        "AtP's Spearman correlation with AP, per kind",
        f">= {LIKE_AP}, ranks like AP",
        "01",
        _accuracy_rows("01", "kind", "spearman", lambda v: rank_agreement(v) == "like_ap"),
    ),
    KeyNumber(
        "atp_kind_nmae",
        "AtP's NMAE, per kind",
        f"< {NEARLY_EXACT_NMAE}, nearly exact",
        "01",
        _accuracy_rows("01", "kind", "nmae", lambda v: v < NEARLY_EXACT_NMAE),
    ),
    KeyNumber(
        "atp_spearman",
        "AtP's Spearman correlation with AP",
        f">= {LIKE_AP}, ranks like AP",
        "07",
        _accuracy_rows("07", "granularity", "spearman", lambda v: v >= LIKE_AP),
    ),
    KeyNumber(
        "atp_topk",
        "AtP's top-k recall of AP's circuit",
        "= 1, its top k holds the circuit",
        "07",
        _accuracy_rows("07", "granularity", "top-k recall", lambda v: v >= 1.0),
    ),
    KeyNumber(
        "hvp_diag",
        "HVP diag's NMAE / AtP's",
        "< 1, the correction helps",
        "04",
        _hvp_diag_ratio,
    ),
    KeyNumber(
        "circuit_auroc",
        "circuit AUROC",
        "= 1, recovers the circuit exactly",
        "06",
        _circuit_auroc,
    ),
]


def key_numbers(directory: str | Path) -> pd.DataFrame:
    """Every key number measured on one run (the executed notebooks 01-07 in ``directory``):
    columns :data:`KEY_COLUMNS`."""
    run = RunRecords(directory)
    rows = [{"key": number.key, **row} for number in KEY_NUMBERS for row in number.measure(run)]
    return pd.DataFrame(rows, columns=KEY_COLUMNS)


def _verdict(held: int, n: int) -> str:
    """holds or fails (at every one of ``n > 1`` seeds), not settled, or one sample."""
    if n == 1:
        return "one sample"
    if held in (0, n):
        return "holds" if held else "fails"
    return "not settled"


def stability(numbers: pd.DataFrame, *, featured_seed: int) -> tuple[pd.DataFrame, Findings]:
    """Per key number, item and perturbation of ``numbers`` (:func:`key_numbers` rows with a
    ``seed`` column): the value at ``featured_seed``, the range over the seeds, the seeds at
    which the test held, and whether its verdict is settled (the same at every seed); as a
    table and as findings (one per key number, naming the items whose verdict flips)."""
    found = Findings("08", "How far the key numbers move with the prompt sample")
    found.table("key_numbers", numbers)
    seeds = sorted(int(s) for s in numbers.seed.unique())
    if len(seeds) == 1:
        found.state("spread.one_sample", seed=seeds[0])
    rows = []
    for number in KEY_NUMBERS:
        mine = numbers[numbers.key == number.key]
        if mine.empty:
            continue
        unsettled = []
        for (item, p), group in mine.groupby(["item", "perturbation"], sort=False):
            held = int(group.holds.sum())
            verdict = _verdict(held, len(group))
            featured = group[group.seed == featured_seed].value
            rows.append(
                {
                    "quantity": number.quantity,
                    "test": number.test,
                    "notebook": number.notebook,
                    "item": item,
                    "perturbation": p,
                    f"seed {featured_seed}": float(featured.iloc[0]) if len(featured) else None,
                    f"over {len(seeds)} seeds": (
                        f"{group.value.min():.3g} to {group.value.max():.3g}"
                    ),
                    "held": f"{held} of {len(group)}",
                    "verdict": verdict,
                }
            )
            if verdict == "not settled":
                unsettled.append(
                    dict(item=item, perturbation=p, held=held, n=len(group))
                    | dict(low=float(group.value.min()), high=float(group.value.max()))
                )
        if len(seeds) == 1:
            continue
        found.state(
            "spread.not_settled" if unsettled else "spread.settled",
            quantity=number.quantity,
            test=number.test,
            notebook=number.notebook,
            seeds=seeds,
            n_items=int(mine.groupby(["item", "perturbation"]).ngroups),
            unsettled=unsettled,
        )
    return pd.DataFrame(rows), found


def by_perturbation(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`stability`'s table with one row per (quantity, item) and one column per
    perturbation, each cell "value at the featured seed (range over the seeds), verdict"."""
    featured = next(c for c in table.columns if c.startswith("seed "))
    over = next(c for c in table.columns if c.startswith("over "))
    cells = table.assign(
        shown=table[featured].map("{:.3g}".format) + " (" + table[over] + "), " + table.verdict
    )
    wide = cells.pivot_table(
        index=["quantity", "item"],
        columns="perturbation",
        values="shown",
        aggfunc="first",
        sort=False,
    )
    wide.columns.name = f"{featured} ({over}), verdict"
    return wide.fillna("")
