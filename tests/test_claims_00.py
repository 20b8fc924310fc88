"""Notebook 00's verdicts, recomputed from the tables it recorded (committed run and reruns).

Every verdict and value notebook 00 states is recomputed here with the test's own code
(numpy ranks, not ``hu.spearman``) from the rows the notebook recorded beside it (every head's
AP and AtP, the top head's path g(t), the second-order table, the pass counts).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.claims import Recorded, close, params


def ranks_correlation(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rank correlation: Pearson's on average ranks."""
    return float(np.corrcoef(a.rank().to_numpy(), b.rank().to_numpy())[0, 1])


def top_row(heads: pd.DataFrame) -> pd.Series:
    return heads.loc[heads.AP.abs().idxmax()]


def closer_with_second_order(second: pd.DataFrame) -> pd.Series:
    return (second.AtP + second.g2 / 2 - second.AP).abs() < (second.AtP - second.AP).abs()


@params("00")
def test_atp_against_ap(path):
    rec = Recorded(path)
    heads = rec.table("heads")
    assert len(heads) == heads.component.nunique() >= 2
    clear = heads.AP.abs() > 0.05 * heads.AP.abs().max()
    _, stated = rec.only("by_hand.sign_agreement")
    assert stated["n_clear"] == int(clear.sum())
    assert stated["n_sign_right"] == int(
        (np.sign(heads.AtP[clear]) == np.sign(heads.AP[clear])).sum()
    )
    top_ap = top_row(heads).component
    top_atp = heads.loc[heads.AtP.abs().idxmax()].component
    key, stated = rec.only("by_hand.same_top", "by_hand.different_top")
    if top_ap == top_atp:
        assert key == "by_hand.same_top" and stated["component"] == top_ap
    else:
        assert key == "by_hand.different_top"
        assert (stated["top_ap"], stated["top_atp"]) == (top_ap, top_atp)
    _, stated = rec.only("by_hand.rank_correlation")
    assert stated["n"] == len(heads)
    assert close(stated["spearman"], ranks_correlation(heads.AP, heads.AtP), rel=1e-3)
    worst = heads.loc[(heads.AtP - heads.AP).abs().idxmax()]
    _, stated = rec.only("by_hand.largest_error")
    assert stated["component"] == worst.component
    assert close(stated["AP"], worst.AP) and close(stated["AtP"], worst.AtP)
    assert stated["ap_rank"] == int((heads.AP.abs() > abs(worst.AP)).sum()) + 1


@params("00")
def test_the_path_of_the_top_head(path):
    rec = Recorded(path)
    heads = rec.table("heads")
    curve = rec.table("top_path").sort_values("t")
    top = top_row(heads)
    _, stated = rec.only("by_hand.path_bend")
    assert stated["component"] == top.component
    t, g = curve.t.to_numpy(), curve.g.to_numpy()
    assert t[0] == 0 and t[-1] == 1
    # the path drawn by patch_path rises by the AP that patch_head measured
    ap = g[-1] - g[0]
    assert close(stated["AP"], ap, rel=1e-4, abs_=1e-5)
    assert close(stated["AP"], top.AP, rel=1e-4, abs_=1e-5)
    # the autograd slope is AtP; slope and curvature match a cubic fitted near t = 0
    assert close(stated["AtP"], top.AtP, rel=1e-4, abs_=1e-5)
    assert close(stated["bend"], ap - top.AtP, rel=1e-3, abs_=1e-5)
    key, curvature = rec.only("by_hand.curvature_same_sign", "by_hand.curvature_opposite_sign")
    g2 = curvature["g2"]
    near = t <= 0.2 + 1e-9
    _, _, c1, _ = np.polyfit(t[near], g[near], 3)
    scale = max(1.0, abs(ap))
    assert abs(c1 - stated["AtP"]) <= 0.02 * scale
    # g''(0) from the drawn path alone: r(t) = 2 (g(t) - g(0) - AtP t) / t^2 = g'' (0) + a t +
    # b t^2 + ..., extrapolated to t = 0 from its first three grid points (3 r1 - 3 r2 + r3)
    r = 2 * (g[1:4] - g[0] - stated["AtP"] * t[1:4]) / t[1:4] ** 2
    assert abs(3 * r[0] - 3 * r[1] + r[2] - g2) <= 0.1 * abs(g2) + 0.02 * scale
    same = (g2 > 0) == (ap - top.AtP > 0)
    assert key == ("by_hand.curvature_same_sign" if same else "by_hand.curvature_opposite_sign")


@params("00")
def test_second_order_on_the_top_heads(path):
    rec = Recorded(path)
    heads = rec.table("heads")
    second = rec.table("second_order")
    k = len(second)
    expected = heads.reindex(heads.AP.abs().sort_values(ascending=False).index).head(k)
    assert second.component.tolist() == expected.component.tolist()
    assert np.allclose(second.AP, expected.AP) and np.allclose(second.AtP, expected.AtP)
    better = closer_with_second_order(second)
    for key in ("by_hand.second_order_closer", "by_hand.hvp_closer"):
        _, stated = rec.only(key)
        assert (stated["n_better"], stated["n"]) == (int(better.sum()), k)
    _, stated = rec.only("by_hand.second_order_mean_error")
    assert close(stated["error_atp"], (second.AtP - second.AP).abs().mean(), abs_=1e-5)
    second_error = (second.AtP + second.g2 / 2 - second.AP).abs().mean()
    assert close(stated["error_second"], second_error, rel=1e-3, abs_=1e-5)
    misses = rec.verdicts("by_hand.second_order_misses")
    if better.all():
        assert not misses
    else:
        assert misses[0][1]["components"] == ", ".join(second.component[~better])


@params("00")
def test_summary(path):
    rec = Recorded(path)
    heads = rec.table("heads")
    top = top_row(heads)
    key, stated = rec.only(
        "by_hand.top_restores_more_than_gap",
        "by_hand.top_restores_part_of_gap",
        "by_hand.top_moves_away",
    )
    share = top.AP / (stated["clean_metric"] - stated["corrupted_metric"])
    assert stated["component"] == top.component
    assert close(stated["share"], share, rel=1e-4)
    expected = (
        "by_hand.top_restores_more_than_gap"
        if share > 1
        else "by_hand.top_restores_part_of_gap"
        if share > 0
        else "by_hand.top_moves_away"
    )
    assert key == expected
    # pass counts (hu.activation_patching: the clean and corrupted runs and one patched pass
    # per head; hu.atp: three forwards and one backward whatever the number of heads)
    passes = rec.table("passes").set_index("method")
    n = len(heads)
    assert passes.loc["AP", "forward"] == n + 2 and passes.loc["AP", "backward"] == 0
    assert (passes.loc["AtP", "forward"], passes.loc["AtP", "backward"]) == (3, 1)
    _, stated = rec.only("by_hand.passes")
    assert (stated["n"], stated["ap_forward"]) == (n, n + 2)
    assert (stated["atp_forward"], stated["atp_backward"]) == (3, 1)
    assert close(stated["spearman"], ranks_correlation(heads.AP, heads.AtP), rel=1e-3)
