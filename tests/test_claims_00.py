"""Notebook 00's findings, recomputed from the tables it recorded (committed run and reruns).

Every number a sentence of notebook 00 states is recomputed here with independent code from
the rows the notebook recorded beside it (every head's AP and AtP, the top head's path g(t),
the second-order table), and each sentence is checked to use the wording the recomputed
number calls for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hvp_utils import count_phrase as count
from tests.claims import Recorded, close, params


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def ranks_correlation(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rank correlation: Pearson's on average ranks."""
    return float(np.corrcoef(a.rank().to_numpy(), b.rank().to_numpy())[0, 1])


def top_row(heads: pd.DataFrame) -> pd.Series:
    return heads.loc[heads.AP.abs().idxmax()]


@params("00")
def test_atp_against_ap(path):
    rec = Recorded(path)
    heads = rec.table("heads")
    assert len(heads) == heads.component.nunique() >= 2
    clear = heads.AP.abs() > 0.05 * heads.AP.abs().max()
    n_clear = int(clear.sum())
    n_sign = int((np.sign(heads.AtP[clear]) == np.sign(heads.AP[clear])).sum())
    assert rec["n_clear"] == n_clear and rec["n_sign_right"] == n_sign
    assert rec.says(f"AtP gives the right sign to {count(n_sign, n_clear, 'head')} whose effect")
    top_ap = top_row(heads).component
    top_atp = heads.loc[heads.AtP.abs().idxmax()].component
    assert rec["top_ap"] == top_ap and rec["top_atp"] == top_atp
    if top_ap == top_atp:
        assert rec.says(f"AP and AtP both rank {top_ap} first.")
    else:
        assert rec.says(f"AP ranks {top_ap} first, AtP ranks {top_atp} first.")
    rho = ranks_correlation(heads.AP, heads.AtP)
    assert close(rec["spearman"], rho, rel=1e-3)
    assert rec.says(f"the Spearman rank correlation of AtP with AP is {rec['spearman']:.2f}.")
    error = (heads.AtP - heads.AP).abs()
    worst = heads.loc[error.idxmax()]
    assert rec["worst"] == worst.component
    rank = int((heads.AP.abs() > abs(worst.AP)).sum()) + 1
    assert rec["worst_ap_rank"] == rank
    which = "the largest effect" if rank == 1 else f"the {ordinal(rank)} largest effect"
    assert rec.says(
        f"The largest error is on {worst.component} (AP {worst.AP:+.3f}, AtP {worst.AtP:+.3f}), "
        f"the head with {which}."
    )


@params("00")
def test_the_path_of_the_top_head(path):
    rec = Recorded(path)
    heads = rec.table("heads")
    curve = rec.table("top_path").sort_values("t")
    top = top_row(heads)
    assert rec["path_head"] == top.component
    t, g = curve.t.to_numpy(), curve.g.to_numpy()
    assert t[0] == 0 and t[-1] == 1
    # the path drawn by patch_path rises by the AP that patch_head measured
    ap = g[-1] - g[0]
    assert close(rec["path_AP"], ap, rel=1e-4, abs_=1e-5)
    assert close(rec["path_AP"], top.AP, rel=1e-4, abs_=1e-5)
    # the autograd slope is AtP; slope and curvature match a cubic fitted near t = 0
    assert close(rec["path_AtP"], top.AtP, rel=1e-4, abs_=1e-5)
    near = t <= 0.2 + 1e-9
    c3, c2, c1, _ = np.polyfit(t[near], g[near], 3)
    scale = max(1.0, abs(ap))
    assert abs(c1 - rec["path_AtP"]) <= 0.02 * scale
    assert abs(2 * c2 - rec["path_g2"]) <= 0.1 * abs(rec["path_g2"]) + 0.05 * scale
    bend = rec["path_AP"] - rec["path_AtP"]
    assert rec.says(
        f"changes the metric by AP = {rec['path_AP']:+.3f} from t = 0 to 1, and its tangent at 0 "
        f"predicts AtP = {rec['path_AtP']:+.3f}: AP - AtP = {bend:+.3f}"
    )
    assert rec.says("the path bends upward" if bend > 0 else "the path bends downward")
    same = (rec["path_g2"] > 0) == (bend > 0)
    assert rec.says(f"g''(0) = {rec['path_g2']:+.3f} has the {'same' if same else 'opposite'} sign")
    assert rec.says("moves the estimate towards AP" if same else "moves the estimate away from AP")


@params("00")
def test_second_order_on_the_top_heads(path):
    rec = Recorded(path)
    heads = rec.table("heads")
    second = rec.table("second_order")
    k = len(second)
    expected = heads.reindex(heads.AP.abs().sort_values(ascending=False).index).head(k)
    assert second.component.tolist() == expected.component.tolist()
    assert np.allclose(second.AP, expected.AP) and np.allclose(second.AtP, expected.AtP)
    first_error = (second.AtP - second.AP).abs()
    second_error = (second.AtP + second.g2 / 2 - second.AP).abs()
    better = second_error < first_error
    assert rec["n_better"] == int(better.sum())
    assert close(rec["mean_error_atp"], first_error.mean(), rel=1e-4, abs_=1e-6)
    assert close(rec["mean_error_second"], second_error.mean(), rel=1e-3, abs_=1e-5)
    phrase = count(int(better.sum()), k, "head")
    assert rec.says(f"Adding g''(0)/2 brings the estimate closer to AP for {phrase} with")
    assert rec.says(
        f"goes from {rec['mean_error_atp']:.3f} (AtP) to {rec['mean_error_second']:.3f}"
    )
    assert rec.says(f"AtP + g''(0)/2, is closer to AP than AtP for {phrase} with")
    if not better.all():
        assert rec.says(f"For {', '.join(second.component[~better])} the curvature at t = 0")
    else:
        assert not rec.says("the curvature at t = 0 does not describe")


@params("00")
def test_summary(path):
    rec = Recorded(path)
    heads = rec.table("heads")
    top = top_row(heads)
    gap = rec["clean_metric"] - rec["corrupted_metric"]
    share = top.AP / gap
    assert close(rec["top_share"], share, rel=1e-4)
    assert rec.says(
        f"The logit difference is {rec['clean_metric']:.2f} on the clean prompts and "
        f"{rec['corrupted_metric']:.2f} on the corrupted ones"
    )
    if share > 1:
        assert rec.says(f"restores more than the whole gap ({rec['top_share']:.0%}).")
    elif share > 0:
        assert rec.says(
            f"{top.component} alone into the corrupted run restores "
            f"{rec['top_share']:.0%} of that gap."
        )
    else:
        assert rec.says(f"moves the metric away from the clean value, by {-rec['top_share']:.0%}")
    # pass counts (hu.activation_patching: the clean and corrupted runs and one patched pass
    # per head; hu.atp: three forwards and one backward whatever the number of heads)
    n = len(heads)
    assert rec["ap_forward"] == n + 2
    assert rec["atp_forward"] == 3 and rec["atp_backward"] == 1
    assert rec.says(
        f"Activation patching of the {n} heads costs {n + 2} forward passes over the prompt "
        f"batch; AtP costs 3 forward and 1 backward pass for all of them"
    )
    assert rec.says(f"with a Spearman correlation of {rec['spearman']:.2f} to AP.")
