"""The verdicts of notebook 00: activation and attribution patching of every head, by hand.

The functions read the notebook's tables: ``heads`` (one row per head with ``component``,
``AP`` and ``AtP``), the top head's patch path (``t``, ``g``) and the second-order table
(``component``, ``AP``, ``AtP``, ``g2`` for the heads with the largest |AP|). Each decides the
verdicts of one notebook section and returns them as
:class:`~hvp_utils.analysis.findings.record.Findings`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from hvp_utils.analysis.findings.attribution import CLEAR_SHARE
from hvp_utils.analysis.findings.record import Findings
from hvp_utils.core.metrics import spearman


def atp_against_ap(heads: pd.DataFrame) -> Findings:
    """AtP against AP over every head: the sign agreement on the clear effects
    (|AP| > 5% of max |AP|), the head each ranks first (by |value|), Spearman's rank
    correlation, and the head with the largest |AtP - AP| with the rank of its |AP|
    (1 + the number of heads with a larger |AP|)."""
    found = Findings("00", "Answer")
    found.table("heads", heads[["component", "AP", "AtP"]])
    clear = heads.AP.abs() > CLEAR_SHARE * heads.AP.abs().max()
    n_sign = int((np.sign(heads.AtP[clear]) == np.sign(heads.AP[clear])).sum())
    found.state("by_hand.sign_agreement", n_sign_right=n_sign, n_clear=int(clear.sum()))
    top_ap = heads.component[heads.AP.abs().idxmax()]
    top_atp = heads.component[heads.AtP.abs().idxmax()]
    if top_ap == top_atp:
        found.state("by_hand.same_top", component=top_ap)
    else:
        found.state("by_hand.different_top", top_ap=top_ap, top_atp=top_atp)
    found.state("by_hand.rank_correlation", n=len(heads), spearman=_spearman(heads))
    worst = heads.loc[(heads.AtP - heads.AP).abs().idxmax()]
    found.state(
        "by_hand.largest_error",
        component=worst.component,
        AP=float(worst.AP),
        AtP=float(worst.AtP),
        ap_rank=int((heads.AP.abs() > abs(worst.AP)).sum()) + 1,
    )
    return found


def top_path(path: pd.DataFrame, *, component: str, atp: float, g2: float) -> Findings:
    """The patch path ``g(t)`` of the top head against its tangent at 0: AP = g(1) - g(0),
    the bend AP - AtP (upward when positive), and whether ``g''(0)`` has the bend's sign (the
    second-order term then moves the estimate towards AP)."""
    found = Findings("00", "Answer")
    found.table("top_path", path[["t", "g"]])
    g = path.sort_values("t").g
    ap = float(g.iloc[-1] - g.iloc[0])
    bend = ap - atp
    found.state("by_hand.path_bend", component=component, AP=ap, AtP=atp, bend=bend)
    same_sign = (g2 > 0) == (bend > 0)
    key = "by_hand.curvature_same_sign" if same_sign else "by_hand.curvature_opposite_sign"
    found.state(key, g2=g2)
    return found


def second_order(second: pd.DataFrame) -> Findings:
    """AtP + g''(0)/2 against AtP on the heads with the largest effects: how many are closer
    to AP, the mean absolute errors of both, and which heads the correction misses."""
    found = Findings("00", "Answer")
    found.table("second_order", second[["component", "AP", "AtP", "g2"]])
    better = _second_order_better(second)
    found.state("by_hand.second_order_closer", n_better=int(better.sum()), n=len(second))
    found.state(
        "by_hand.second_order_mean_error",
        error_atp=float((second.AtP - second.AP).abs().mean()),
        error_second=float((second.AtP + second.g2 / 2 - second.AP).abs().mean()),
    )
    if not better.all():
        found.state("by_hand.second_order_misses", components=", ".join(second.component[~better]))
    return found


def summary(
    heads: pd.DataFrame,
    *,
    second: pd.DataFrame,
    passes: pd.DataFrame,
    clean_metric: float,
    corrupted_metric: float,
) -> Findings:
    """The section verdicts together: the share of the gap ``m(x_c) - m(x_r)`` the head with
    the largest |AP| restores (more than all of it, part of it, or away from the clean value),
    the pass counts of AP and AtP (``passes``: rows ``AP`` and ``AtP``, columns ``forward`` and
    ``backward``) with Spearman's correlation, and how many heads the HVP brings closer."""
    found = Findings("00", "Summary")
    found.table("passes", passes[["forward", "backward"]].rename_axis("method"))
    top = heads.loc[heads.AP.abs().idxmax()]
    share = float(top.AP / (clean_metric - corrupted_metric))
    key = (
        "by_hand.top_restores_more_than_gap"
        if share > 1
        else "by_hand.top_restores_part_of_gap"
        if share > 0
        else "by_hand.top_moves_away"
    )
    found.state(
        key,
        clean_metric=clean_metric,
        corrupted_metric=corrupted_metric,
        component=top.component,
        share=share,
    )
    found.state(
        "by_hand.passes",
        n=len(heads),
        ap_forward=int(passes.loc["AP", "forward"]),
        atp_forward=int(passes.loc["AtP", "forward"]),
        atp_backward=int(passes.loc["AtP", "backward"]),
        spearman=_spearman(heads),
    )
    better = _second_order_better(second)
    found.state("by_hand.hvp_closer", n_better=int(better.sum()), n=len(second))
    return found


def _spearman(heads: pd.DataFrame) -> float:
    return spearman(torch.tensor(heads.AP.values), torch.tensor(heads.AtP.values))


def _second_order_better(second: pd.DataFrame) -> pd.Series:
    """Whether |AtP + g2/2 - AP| < |AtP - AP|, per head."""
    return (second.AtP + second.g2 / 2 - second.AP).abs() < (second.AtP - second.AP).abs()
