"""The exercise of notebook 08, *Which estimator when*: choosing an estimator from a budget of
passes, as one (perturbation, kind) group of the benchmark lists them.

The rule: of the rows whose passes (forward + backward + HVP, over the prompt batch) fit the
budget, the one with the lowest NMAE, activation patching included (it is exact); of rows that
give the same estimate, the one with the fewest passes, never the one that happened to run
faster; ``"none"`` when nothing fits. The reference is built from the package's
:func:`hvp_utils.analysis.benchmark.without_ties`; constructed groups expose each slip (a tie
whose slower twin ran faster, a second-order row that is cheap in forward passes only, a budget
exactly at AtP's passes, AP within the budget, nothing within it).
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from hvp_course.exercise import Case, Context, Exercise, Mistake, Result
from hvp_course.explain import ExerciseFailed
from hvp_utils.analysis.benchmark import total_passes, without_ties

NOTHING_FITS = "none"
COLUMNS = ("method", "nmae", "spearman", "topk_recall", "forward", "backward", "hvp", "seconds")
#: One benchmark group, constructed: AtP and its exact-local twin give the same estimate (the
#: twin spends a pass more but ran faster), HVP diag is cheap in forward passes only.
GROUP = pd.DataFrame(
    [
        ("AP", 0.0, 1.0, 1.0, 50, 0, 0, 4.0),
        ("AtP", 0.40, 0.93, 0.75, 3, 1, 0, 0.30),
        ("AtP (exact local)", 0.40, 0.93, 0.75, 4, 1, 0, 0.28),
        ("HVP joint", 0.20, 0.97, 0.75, 3, 2, 1, 0.45),
        ("HVP diag", 0.10, 0.99, 1.0, 3, 48, 48, 6.0),
        ("IG K=4", 0.06, 0.99, 1.0, 10, 8, 0, 1.9),
    ],
    columns=list(COLUMNS),
)
#: (label, budget in passes) of each case and what it exposes.
BUDGETS = (
    ("4 passes: exactly AtP's", 4),
    ("5 passes: AtP or its exact-local twin", 5),
    ("6 passes: HVP joint", 6),
    ("30 passes", 30),
    ("60 passes: AP fits", 60),
    ("2 passes: nothing fits", 2),
)


def _pick(rows: pd.DataFrame, fits: pd.Series, by: str | list[str]) -> str:
    """The ``method`` of the first row of ``rows[fits]`` in ``by`` order, or ``"none"``."""
    kept = rows[fits]
    return NOTHING_FITS if kept.empty else str(kept.sort_values(by, kind="stable").iloc[0].method)


def choose_reference(rows: pd.DataFrame, max_passes: int) -> str:
    """The ``method`` of the lowest-NMAE row whose forward + backward + hvp passes are at most
    ``max_passes`` (ties: the fewest passes), or ``"none"``."""
    rows = without_ties(rows)
    return _pick(rows, total_passes(rows) <= max_passes, "nmae")


def _choose_tie_by_seconds(rows, max_passes):
    return _pick(rows, total_passes(rows) <= max_passes, ["nmae", "seconds"])


def _choose_forward_only(rows, max_passes):
    rows = without_ties(rows)
    return _pick(rows, rows.forward <= max_passes, "nmae")


def _choose_strict(rows, max_passes):
    return choose_reference(rows, max_passes - 1)


def _choose_without_ap(rows, max_passes):
    return choose_reference(rows[rows.method != "AP"], max_passes)


def _choose_cheapest(rows, max_passes):
    rows = without_ties(rows).assign(passes=total_passes)
    return _pick(rows, rows.passes <= max_passes, "passes")


def _choose_cases(ctx: Context) -> list[Case]:
    return [
        Case(label, (GROUP.copy(), budget), labels=(f"the choice at {label}",))
        for label, budget in BUDGETS
    ]


def _read_choice(output, case: Case) -> Tensor:
    """The learner's choice as its row number in the group (-1 for ``"none"``)."""
    __tracebackhide__ = True
    methods = list(case.args[0].method)
    if not isinstance(output, str) or output not in [*methods, NOTHING_FITS]:
        raise ExerciseFailed(
            f"{case.label}: return one of rows.method ({', '.join(methods)}) or {NOTHING_FITS!r}; "
            f"got {output!r}"
        )
    return torch.tensor([methods.index(output) if output in methods else -1.0]).double()


def _choose_passed(r: Result) -> str:
    chosen = [choose_reference(*c.args) for c in r.cases]
    return "; ".join(f"{c.label} -> {m}" for c, m in zip(r.cases, chosen, strict=True))


CHOOSE = Exercise(
    name="choose",
    notebook="08",
    summary="The most accurate estimator within a budget of passes, AP included, ties to the "
    "fewest passes, on a constructed benchmark group at six budgets.",
    reference=choose_reference,
    uses="the lowest NMAE among the rows that fit, ties removed by hvp_utils' without_ties",
    what="the choice",
    cases=_choose_cases,
    read=_read_choice,
    mistakes=(
        Mistake(
            "AtP and its exact-local twin give the same estimate: take the one with fewer "
            "passes, not the one whose wall time happened to be shorter",
            wrong=_choose_tie_by_seconds,
        ),
        Mistake(
            "a backward pass and an HVP cost a pass each too: count forward + backward + hvp "
            "(HVP diag spends 48 HVPs beside its 3 forward passes)",
            wrong=_choose_forward_only,
        ),
        Mistake(
            "a budget of B passes allows exactly B: keep the rows with passes <= B",
            wrong=_choose_strict,
        ),
        Mistake(
            "activation patching is exact: when the budget affords it, it is the answer",
            wrong=_choose_without_ap,
        ),
        Mistake(
            "that is the cheapest row that fits; the budget is what you may spend, so take "
            "the most accurate row within it",
            wrong=_choose_cheapest,
        ),
    ),
    passed=_choose_passed,
)

EXERCISES = (CHOOSE,)
