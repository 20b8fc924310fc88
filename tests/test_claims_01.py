"""Notebook 01's findings, recomputed from the tables it recorded (committed run and reruns).

Every verdict and value notebook 01 states is recomputed here with the test's own code
(pandas and numpy) from the component-level rows the notebook recorded beside it, and compared
with the verdict keys and values the notebook states.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hvp_utils.analysis.findings.attribution import OVERLAP_MARGIN
from tests.claims import Recorded, close, params


def errors(rec: Recorded) -> pd.DataFrame:
    """The recorded AP and AtP per component, with the error AtP - AP and how far that
    difference of two 6-digit numbers can be off (``slack``)."""
    frame = rec.table("component_errors")
    scale = np.maximum(frame.AP.abs(), frame.estimate.abs())
    return frame.assign(error=frame.estimate - frame.AP, slack=1e-5 * scale + 1e-15)


def sign_verdict(all_below: bool, clear_all_below: bool) -> str:
    return "all_below" if all_below else "clear_below" if clear_all_below else "both_sides"


@params("01")
def test_sign_counts(path):
    rec = Recorded(path)
    frame = errors(rec)
    tol = rec["rounding_tolerance"]
    assert 0 < tol < 1e-6 * max(1.0, frame.AP.abs().max())
    mixed, all_below, clear_all_below = [], True, True
    for (p, kind), d in frame.groupby(["perturbation", "kind"], sort=False):
        # surely below / above: beyond the tolerance even after the recording's rounding
        sure_below = d.error < -(tol + d.slack)
        sure_above = d.error > tol + d.slack
        maybe_below = d.error < -tol + d.slack
        maybe_above = d.error > tol - d.slack
        _, stated = rec.only("attribution.error_sides", perturbation=p, kind=kind)
        below, above = stated["below"], stated["above"]
        assert stated["n"] == len(d)
        assert sure_below.sum() <= below <= maybe_below.sum(), (p, kind)
        assert sure_above.sum() <= above <= maybe_above.sum(), (p, kind)
        assert below + above <= len(d)
        clear = d.AP.abs() > 0.05 * d.AP.abs().max()
        clear_below = stated["clear_below"]
        assert stated["clear"] == int(clear.sum())
        assert (sure_below & clear).sum() <= clear_below <= (maybe_below & clear).sum()
        weight = d.error.abs()
        share = weight[sure_below].sum() / weight.sum()
        assert close(stated["below_share"], share, rel=1e-3, abs_=1e-3)
        all_below &= below == len(d)
        clear_all_below &= clear_below == int(clear.sum())
        if below and above:
            mixed.append([p, kind])
    key, stated = rec.only(
        "attribution.every_error_below",
        "attribution.every_clear_error_below",
        "attribution.error_both_sides",
    )
    sides = sign_verdict(all_below, clear_all_below)
    assert (
        key
        == {
            "all_below": "attribution.every_error_below",
            "clear_below": "attribution.every_clear_error_below",
            "both_sides": "attribution.error_both_sides",
        }[sides]
    )
    if sides == "both_sides":
        assert stated["groups"] == mixed
    assert rec.only("attribution.error_sides_summary")[1] == {"sides": sides}


@params("01")
def test_largest_relative_errors(path):
    rec = Recorded(path)
    frame = errors(rec)
    featured = frame[frame.perturbation == rec["featured_perturbation"]]
    for kind, d in featured.groupby("kind"):
        big = d[d.AP.abs() > 0.05 * d.AP.abs().max()]
        rel = (big.error.abs() / big.AP.abs()).sort_values(ascending=False)
        row = big.loc[rel.index[0]]
        _, stated = rec.only("attribution.worst_relative", kind=kind)
        assert stated["component"] == row.component
        assert close(stated["rel_error"], rel.iloc[0], rel=1e-3)
        assert close(stated["AP"], row.AP) and close(stated["AtP"], row.estimate)


@params("01")
def test_mlp_share_of_the_gap(path):
    rec = Recorded(path)
    effects = rec.table("mlp_effects")
    positions = rec.table("mlp_positions")
    # whether some prompt's final token differs between the clean and corrupted runs
    differs = {
        p: bool(d[d.final].token_changed.any())
        for p, d in positions.groupby("perturbation", sort=False)
    }
    for p, e in effects.groupby("perturbation", sort=False):
        gap = e.gap.iloc[0]
        e = e.assign(share=e.AP / gap).sort_values("share", ascending=False)
        top = e.component.iloc[:2].tolist()
        pos = positions[positions.perturbation == p]
        finals, names = [], []
        for name in top:
            ap = e.set_index("component").loc[name, "AP"]
            mine = pos[pos.component == name]
            finals.append(mine[mine.final].AP.sum() / ap)
            names.append(mine[mine.token_changed & ~mine.final].AP.sum() / ap)
        shares = [e.share.iloc[0], e.share.iloc[1]]
        pair = dict(perturbation=p, first=top[0], second=top[1])
        _, stated = rec.only("attribution.gap_top_two", **pair)
        assert close(stated["gap"], gap)
        assert all(close(a, b, rel=1e-3) for a, b in zip(stated["shares"], shares, strict=True))
        _, stated = rec.only("attribution.gap_positions", **pair)
        for recorded, recomputed in (
            (stated["final_shares"], finals),
            (stated["name_shares"], names),
        ):
            assert all(
                close(a, b, rel=1e-3, abs_=1e-4) for a, b in zip(recorded, recomputed, strict=True)
            )
        summed = sum(shares)
        joint = rec.table("mlp_pairs").set_index("perturbation").joint_share[p]
        key, stated = rec.only("attribution.together", "attribution.together_overlap", **pair)
        assert close(stated["summed"], summed, rel=1e-3) and close(stated["joint"], joint)
        overlap = summed - joint > OVERLAP_MARGIN
        assert key == ("attribution.together_overlap" if overlap else "attribution.together")
        # the table records whether a position's token changed in some prompt, not in how many
        key, stated = rec.only(
            "attribution.through_final_position",
            "attribution.not_through_final_position",
            "attribution.final_token_differs",
            perturbation=p,
        )
        concentrated = min(finals) >= 0.8 and max(abs(x) for x in names) < 0.1
        if differs[p]:
            assert key == "attribution.final_token_differs" and stated["n_prompts"] > 0
        else:
            expected = "through_final_position" if concentrated else "not_through_final_position"
            assert key == f"attribution.{expected}"
        # the summary's verdict on the largest MLP
        _, stated = rec.only("attribution.top_mlp", perturbation=p)
        assert stated["component"] == top[0] and close(stated["share"], shares[0], rel=1e-3)
        assert stated["through_final"] is bool(finals[0] >= 0.8 and not differs[p])


@params("01")
def test_pass_counts(path):
    rec = Recorded(path)
    cost = rec.table("pass_counts")
    atp = cost[cost.method == "AtP"]
    ap = cost[cost.method == "AP"]
    # AtP: one pass on each input to cache, one forward with the graph, one backward
    assert (atp.forward == 3).all() and (atp.backward == 1).all()
    _, stated = rec.only("attribution.atp_cost")
    assert (stated["forward"], stated["backward"]) == (3, 1)
    assert (stated["min_components"], stated["max_components"]) == (
        atp.components.min(),
        atp.components.max(),
    )
    # AP: the two caching runs plus one patched run per component, never a backward pass
    assert (ap.forward == ap.components + 2).all() and (ap.backward == 0).all()
    _, stated = rec.only("attribution.ap_cost")
    assert stated["extra"] == 2
    first = ap.drop_duplicates("kind")
    assert stated["kinds"] == first.kind.tolist()
    assert stated["forward"] == first.forward.tolist()
    assert stated["components"] == first.components.tolist()
    _, stated = rec.only("attribution.cost_summary")
    assert stated == {"atp_forward": 3, "atp_backward": 1, "ap_extra": 2}


@params("01")
def test_accuracy_summary(path):
    rec = Recorded(path)
    acc = rec.table("accuracy")
    for kind, d in acc.groupby("kind"):
        low = d.spearman.min()
        _, stated = rec.only("attribution.kind_accuracy", kind=kind)
        assert stated["n"] == d.n.iloc[0]
        assert close(stated["spearman_min"], low) and close(
            stated["spearman_max"], d.spearman.max()
        )
        assert close(stated["nmae_min"], d.nmae.min()) and close(stated["nmae_max"], d.nmae.max())
        ranks = "like_ap" if low >= 0.99 else "roughly_like_ap" if low >= 0.7 else "differently"
        assert stated["ranks"] == ranks
        assert stated["nearly_exact"] is bool(d.nmae.max() < 0.05)


@params("01")
def test_taylor_remainder_answer(path):
    rec = Recorded(path)
    nodes = rec.table("remainder_curvature")
    n = len(nodes)
    assert np.allclose(nodes.t, (np.arange(n) + 0.5) / n)  # the midpoint rule's nodes
    integral = float(((1 - nodes.t) * nodes.g2).sum() / n)
    _, midpoint = rec.only("attribution.remainder_midpoint")
    assert midpoint["n_nodes"] == n
    assert close(midpoint["integral"], integral, rel=1e-4, abs_=1e-5)
    ap, atp = midpoint["AP"], midpoint["AtP"]
    key, stated = rec.only(
        "attribution.remainder_convex",
        "attribution.remainder_concave",
        "attribution.remainder_mixed",
    )
    # the path is that of the MLP with the largest |AP| under the featured perturbation
    p, name = rec["featured_perturbation"], stated["component"]
    assert stated["perturbation"] == p and stated["n_nodes"] == n
    effects = rec.table("mlp_effects")
    featured = effects[effects.perturbation == p].set_index("component")
    assert featured.AP.abs().idxmax() == name
    assert close(featured.loc[name, "AP"], ap)
    row = rec.table("component_errors").query("perturbation == @p and component == @name")
    assert len(row) == 1 and close(row.AP.iloc[0], ap) and close(row.estimate.iloc[0], atp)
    # the exact integral is AP - AtP; the midpoint rule's error (O(1/n^2)) stays small
    assert abs(integral - (ap - atp)) <= 0.1 * abs(ap - atp) + 1e-3
    assert stated["side"] == ("below" if ap - atp > 0 else "above")
    up = int((nodes.g2 > 0).sum())
    if up in (0, n):
        assert key == ("attribution.remainder_convex" if up else "attribution.remainder_concave")
        return
    assert key == "attribution.remainder_mixed" and stated["n_up"] == up
    first_up, last_up = nodes.g2.iloc[0] > 0, nodes.g2.iloc[-1] > 0
    bend = (
        "up_then_down"
        if first_up and not last_up
        else "down_then_up"
        if last_up and not first_up
        else "both_ways"
    )
    assert stated["bend"] == bend


@params("01")
def test_most_accurate_kind_answer(path):
    rec = Recorded(path)
    frame = errors(rec)
    recorded = rec.table("nmae_by_kind").set_index(["perturbation", "kind"]).nmae
    accuracy = rec.table("accuracy").set_index(["perturbation", "kind"]).nmae
    for (p, kind), d in frame.groupby(["perturbation", "kind"]):
        value = d.error.abs().mean() / d.AP.abs().mean()
        assert close(recorded[p, kind], value, rel=1e-3, abs_=1e-6), (p, kind)
        assert close(recorded[p, kind], accuracy[p, kind]), (p, kind)  # hu.compare's column
    best = {}
    for p, d in rec.table("nmae_by_kind").groupby("perturbation", sort=False):
        d = d.sort_values("nmae")
        best[p] = d.kind.iloc[0]
        _, stated = rec.only("attribution.accuracy_ranking", perturbation=p)
        assert stated["kinds"] == d.kind.tolist()
        assert all(close(a, b) for a, b in zip(stated["nmae"], d.nmae, strict=True))
    assert bool(rec.verdicts("attribution.neuron_most_accurate")) == (
        set(best.values()) == {"neuron"}
    )
