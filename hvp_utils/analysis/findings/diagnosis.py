"""The verdicts of notebook 02: which term of AtP's error dominates, and where.

Each function reads the table of :func:`hvp_utils.diagnose` (one row per component with
``AP``, ``AtP``, ``AtP_out``, ``E_down = AP - AtP_out``, ``E_local = AtP_out - AtP``,
``second_local``, ``second_down`` and a ``perturbation`` column), decides the verdicts of one
notebook section and returns them as :class:`~hvp_utils.analysis.findings.record.Findings`.
"""

from __future__ import annotations

import math
from typing import Literal

import pandas as pd

from hvp_utils.analysis.diagnosis import error_shares
from hvp_utils.analysis.findings.record import Findings
from hvp_utils.core.local_maps import CURVED_LOCAL_KINDS

#: The columns of the diagnosis table the verdicts are computed from (the terms follow).
RECORDED_COLUMNS = [
    "perturbation",
    "kind",
    "component",
    "AP",
    "AtP",
    "AtP_out",
    "second_local",
    "second_down",
]

ShareBand = Literal[
    "almost_all_downstream", "mostly_downstream", "about_even", "mostly_local", "almost_all_local"
]


def share_band(down_share: float) -> ShareBand:
    """The band of a downstream share: >= 0.9, > 0.6, >= 0.4, > 0.1, the rest."""
    if down_share >= 0.9:
        return "almost_all_downstream"
    if down_share > 0.6:
        return "mostly_downstream"
    if down_share >= 0.4:
        return "about_even"
    if down_share > 0.1:
        return "mostly_local"
    return "almost_all_local"


def shares_by_perturbation(diagnosis: pd.DataFrame) -> pd.DataFrame:
    """:func:`~hvp_utils.analysis.diagnosis.error_shares` per (perturbation, kind)."""
    return error_shares(diagnosis, by=["perturbation", "kind"])


def checks_hold(checks: pd.DataFrame, *, threshold: float = 1e-9) -> Findings:
    """Whether every exactness check (one row per perturbation, maxima of absolute
    differences) stays below ``threshold``."""
    found = Findings("02", "The split is exact")
    found.table("checks", checks)
    passed = checks < threshold
    found.state(
        "diagnosis.checks_hold",
        n_passed=int(passed.all(axis=1).sum()),
        n_perturbations=len(checks),
        exponent=round(math.log10(threshold)),
        all_pass=bool(passed.to_numpy().all()),
    )
    return found


def dominance(diagnosis: pd.DataFrame, *, perturbations: list[str]) -> Findings:
    """Per perturbation and kind with a curved local map: the band of the downstream share of
    the AtP error, ``sum|E_down| / (sum|E_down| + sum|E_local|)``, and of ``|g''(0)|``."""
    found = Findings("02", "Which term dominates")
    found.table("diagnosis", diagnosis[RECORDED_COLUMNS])
    shares = shares_by_perturbation(diagnosis)
    for p in perturbations:
        for kind in _curved_kinds(diagnosis):
            row = shares.loc[(p, kind)]
            found.state(
                "diagnosis.dominance",
                perturbation=p,
                kind=kind,
                down_share=float(row.down_share),
                band=share_band(row.down_share),
                second_down_share=float(row.second_down_share),
                second_band=share_band(row.second_down_share),
            )
    return found


def largest_errors(worst: pd.DataFrame, *, perturbation: str) -> Findings:
    """Of the components with the largest AtP error, how many have no curved local map, and
    the local term's share of their ``sum|E_down| + sum|E_local|``."""
    found = Findings("02", "Where the largest errors come from")
    n_without = int((~worst.kind.isin(CURVED_LOCAL_KINDS)).sum())
    local = worst.E_local.abs().sum()
    kinds = ", ".join(dict.fromkeys(worst.kind))
    values = dict(n=len(worst), perturbation=perturbation, kinds=kinds)
    if n_without == len(worst):
        found.state("diagnosis.worst_all_downstream", **values)
    else:
        share = float(local / (worst.E_down.abs().sum() + local))
        found.state(
            "diagnosis.worst_mixed", **values, n_without_local_map=n_without, local_share=share
        )
    return found


def summary(
    diagnosis: pd.DataFrame,
    *,
    perturbations: list[str],
    checks: pd.DataFrame,
    threshold: float = 1e-9,
) -> Findings:
    """The section verdicts together: exactness (every check below ``threshold``), the band
    of each curved kind per perturbation, where the local term carries most (share < 0.4),
    and which kind has the largest mean |AP - AtP| in absolute terms."""
    found = Findings("02", "Summary")
    if bool((checks < threshold).to_numpy().all()):
        found.state("diagnosis.split_exact", exponent=round(math.log10(threshold)))
    found.state("diagnosis.identity_kinds")
    shares = shares_by_perturbation(diagnosis)
    kinds = _curved_kinds(diagnosis)
    for kind in kinds:
        bands = {p: share_band(shares.loc[(p, kind)].down_share) for p in perturbations}
        found.state("diagnosis.kind_bands", kind=kind, bands=bands)
    local_wins = sum(shares.loc[(p, k)].down_share < 0.4 for k in kinds for p in perturbations)
    total = len(kinds) * len(perturbations)
    if local_wins == total:
        found.state("diagnosis.local_everywhere", n_local=local_wins, total=total)
    elif local_wins:
        found.state("diagnosis.local_in_some", n_local=local_wins, total=total)
    else:
        found.state("diagnosis.local_nowhere", n_local=0, total=total)
    key, values = _largest_mean_error(shares.mean_abs_error, kinds)
    found.state(key, **values)
    return found


def _curved_kinds(diagnosis: pd.DataFrame) -> list[str]:
    present = dict.fromkeys(diagnosis.kind)
    return [k for k in present if k in CURVED_LOCAL_KINDS]


def _largest_mean_error(mean_error: pd.Series, curved_kinds: list[str]) -> tuple[str, dict]:
    """The verdict on the (perturbation, kind) with the largest mean |AP - AtP|."""
    perturbation, kind = mean_error.idxmax()
    values = dict(kind=kind, perturbation=perturbation, mean_error=float(mean_error.max()))
    if kind in curved_kinds:
        return "diagnosis.largest_local", values
    local = mean_error[mean_error.index.get_level_values("kind").isin(curved_kinds)]
    local_perturbation, local_kind = local.idxmax()
    return "diagnosis.largest_downstream", {
        **values,
        "ratio": float(mean_error.max() / local.max()),
        "local_kind": local_kind,
        "local_perturbation": local_perturbation,
        "local_mean_error": float(local.max()),
    }
