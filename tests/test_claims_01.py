"""Notebook 01's findings, recomputed from the tables it recorded (committed run and reruns).

Every number a sentence of notebook 01 states is recomputed here with independent code from
the component-level rows the notebook recorded beside it, and the sentence is checked to use
the wording the recomputed number calls for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hvp_utils import count_phrase as count
from tests.claims import Recorded, close, params

NOUNS = {"head_out": "head", "mlp_out": "MLP", "neuron": "neuron"}


def errors(rec: Recorded) -> pd.DataFrame:
    """The recorded AP and AtP per component, with the error AtP - AP and how far that
    difference of two 6-digit numbers can be off (``slack``)."""
    frame = rec.table("component_errors")
    scale = np.maximum(frame.AP.abs(), frame.estimate.abs())
    return frame.assign(error=frame.estimate - frame.AP, slack=1e-5 * scale + 1e-15)


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
        below, above = rec[f"below_{p}_{kind}"], rec[f"above_{p}_{kind}"]
        assert sure_below.sum() <= below <= maybe_below.sum(), (p, kind)
        assert sure_above.sum() <= above <= maybe_above.sum(), (p, kind)
        assert below + above <= len(d)
        clear = d.AP.abs() > 0.05 * d.AP.abs().max()
        clear_below = rec[f"clear_below_{p}_{kind}"]
        assert rec[f"clear_{p}_{kind}"] == int(clear.sum())
        assert (sure_below & clear).sum() <= clear_below <= (maybe_below & clear).sum()
        weight = d.error.abs()
        share = weight[sure_below].sum() / weight.sum()
        assert close(rec[f"below_error_share_{p}_{kind}"], share, rel=1e-3, abs_=1e-3)
        noun = NOUNS[kind]
        share = rec[f"below_error_share_{p}_{kind}"]
        assert rec.says(
            f"`{p}`, {kind}: AtP lies below AP for {count(below, len(d), noun)} and above it "
            f"for {above}; among the clear effects, below for "
            f"{count(clear_below, int(clear.sum()), noun)}; the ones below AP carry {share:.0%}"
        ), (p, kind)
        all_below &= below == len(d)
        clear_all_below &= clear_below == int(clear.sum())
        if below and above:
            mixed.append(f"`{p}` {kind}")
    assert rec["every_error_below"] is all_below
    assert rec["every_clear_error_below"] is clear_all_below
    if all_below:
        assert rec.says("Every AtP error is negative")
        assert not rec.says("The sign of the error is not fixed")
    elif clear_all_below:
        assert rec.says("Every clear effect is underestimated")
    else:
        assert rec.says(f"AtP falls on both sides of AP for {', '.join(mixed)}")
        assert rec.says("AtP falls on both sides of AP: some paths bend upward")
        assert not rec.says("Every AtP error is negative")


@params("01")
def test_largest_relative_errors(path):
    rec = Recorded(path)
    frame = errors(rec)
    featured = frame[frame.perturbation == rec["featured_perturbation"]]
    for kind, d in featured.groupby("kind"):
        big = d[d.AP.abs() > 0.05 * d.AP.abs().max()]
        rel = (big.error.abs() / big.AP.abs()).sort_values(ascending=False)
        name = big.loc[rel.index[0], "component"]
        assert rec[f"worst_relative_{kind}"] == name
        assert close(rec[f"worst_relative_error_{kind}"], rel.iloc[0], rel=1e-3)
        assert rec.says(f"{kind}: {name} (AP {big.loc[rel.index[0], 'AP']:+.3f}")
        assert rec.says(f"{100 * rel.iloc[0]:.0f}% off")


def pct(x: float) -> str:
    return f"{0 if round(100 * x) == 0 else x:.0%}"


def words(share: float) -> str:
    if share > 1:
        return f"more than the whole gap ({share:.0%})"
    if share >= 0.9:
        return f"almost the whole gap ({share:.0%})"
    return f"{share:.0%} of the gap"


@params("01")
def test_mlp_share_of_the_gap(path):
    rec = Recorded(path)
    effects = rec.table("mlp_effects")
    positions = rec.table("mlp_positions")
    for p, e in effects.groupby("perturbation", sort=False):
        gap = e.gap.iloc[0]
        assert close(rec[f"gap_{p}"], gap)
        e = e.assign(share=e.AP / gap).sort_values("share", ascending=False)
        top = e.component.iloc[:2].tolist()
        pos = positions[positions.perturbation == p]
        finals, names = [], []
        for name in top:
            ap = e.set_index("component").loc[name, "AP"]
            assert close(rec[f"share_of_gap_{p}_{name}"], ap / gap, rel=1e-3)
            mine = pos[pos.component == name]
            at_final = mine[mine.final].AP.sum() / ap
            at_names = mine[mine.token_changed & ~mine.final].AP.sum() / ap
            assert close(rec[f"final_share_{p}_{name}"], at_final, rel=1e-3, abs_=1e-4)
            assert close(rec[f"name_positions_share_{p}_{name}"], at_names, rel=1e-3, abs_=1e-4)
            finals.append(at_final)
            names.append(at_names)
        shares = [e.share.iloc[0], e.share.iloc[1]]
        assert rec.says(
            f"`{p}` (gap {gap:.2f} logits): patching {top[0]} alone restores {words(shares[0])}, "
            f"{top[1]} alone {words(shares[1])}."
        )
        assert rec.says(
            f"keep {pct(finals[0])} and {pct(finals[1])} of their all-position effect"
        ) and rec.says(f"token embeddings enter, {pct(names[0])} and {pct(names[1])}.")
        together = sum(shares)
        assert close(rec[f"top_two_share_{p}"], together, rel=1e-3)
        if together > 1:
            assert rec.says(f"together restore {together:.0%} of the gap, more than all of it")
        else:
            assert rec.says(f"together restore {together:.0%} of the gap.")
        concentrated = min(finals) >= 0.8 and max(abs(x) for x in names) < 0.1
        claim = f"`{p}`: so these MLPs matter through the final position"
        assert rec.says(claim) == (concentrated and rec[f"final_token_differs_{p}"] == 0)
        # the summary's sentence about the largest MLP
        tail = ", nearly all of it at the final position"
        through = finals[0] >= 0.8 and rec[f"final_token_differs_{p}"] == 0
        assert rec.says(
            f"`{p}`: {top[0]} alone restores {words(shares[0])}" + (tail if through else ".")
        )


@params("01")
def test_pass_counts(path):
    rec = Recorded(path)
    cost = rec.table("pass_counts")
    atp = cost[cost.method == "AtP"]
    ap = cost[cost.method == "AP"]
    # AtP: one pass on each input to cache, one forward with the graph, one backward
    assert (atp.forward == 3).all() and (atp.backward == 1).all()
    assert rec["atp_forward"] == 3 and rec["atp_backward"] == 1
    assert rec.says(
        f"AtP costs 3 forward and 1 backward pass for every kind, from {atp.components.min()} "
        f"to {atp.components.max()} components (the clean run, the corrupted run"
    )
    # AP: the two caching runs plus one patched run per component, never a backward pass
    assert (ap.forward == ap.components + 2).all() and (ap.backward == 0).all()
    assert rec["ap_extra_forward"] == 2
    for _, row in ap.drop_duplicates("kind").iterrows():
        assert rec.says(f"{row.forward} for {row.components} {NOUNS[row.kind]}s")
    assert rec.says(
        "AtP costs 3 forward and 1 backward pass for any number of components; AP costs one "
        "forward pass per component plus 2."
    )


@params("01")
def test_accuracy_summary(path):
    rec = Recorded(path)
    acc = rec.table("accuracy")
    for kind, d in acc.groupby("kind"):
        low = d.spearman.min()
        assert close(rec[f"spearman_min_{kind}"], low)
        assert close(rec[f"nmae_max_{kind}"], d.nmae.max())
        ranks = (
            "as AP does" if low >= 0.9 else "roughly as AP does" if low >= 0.7 else "differently"
        )
        assert rec.says(f"{kind}: AtP ranks the {d.n.iloc[0]} {NOUNS[kind]}s {ranks}")
        if d.nmae.max() < 0.05:
            assert rec.says(f"nearly exact (NMAE at most {d.nmae.max():.1%})")
        else:
            assert rec.says(f"by {d.nmae.min():.0%} to {d.nmae.max():.0%} on average (NMAE)")


@params("01")
def test_taylor_remainder_answer(path):
    rec = Recorded(path)
    nodes = rec.table("remainder_curvature")
    n = len(nodes)
    assert np.allclose(nodes.t, (np.arange(n) + 0.5) / n)  # the midpoint rule's nodes
    integral = float(((1 - nodes.t) * nodes.g2).sum() / n)
    assert close(rec["remainder_integral"], integral, rel=1e-4, abs_=1e-5)
    up = int((nodes.g2 > 0).sum())
    assert rec["remainder_convex_nodes"] == up
    # the path is that of the MLP with the largest |AP| under the featured perturbation
    p = rec["featured_perturbation"]
    name, ap, atp = rec["remainder_component"], rec["remainder_AP"], rec["remainder_AtP"]
    effects = rec.table("mlp_effects")
    featured = effects[effects.perturbation == p].set_index("component")
    assert featured.AP.abs().idxmax() == name
    assert close(featured.loc[name, "AP"], ap)
    row = rec.table("component_errors").query("perturbation == @p and component == @name")
    assert len(row) == 1 and close(row.AP.iloc[0], ap) and close(row.estimate.iloc[0], atp)
    # the exact integral is AP - AtP; the midpoint rule's error (O(1/n^2)) stays small
    assert abs(integral - (ap - atp)) <= 0.1 * abs(ap - atp) + 1e-3
    side = "below" if ap - atp > 0 else "above"
    if up == n:
        assert rec.says(f"g''(t) is positive at all {n} nodes: the path is convex there")
    elif up == 0:
        assert rec.says(f"g''(t) is negative at all {n} nodes: the path is concave there")
    else:
        assert rec.says(f"g''(t) is positive at {up} of the {n} nodes")
        first_up, last_up = nodes.g2.iloc[0] > 0, nodes.g2.iloc[-1] > 0
        if first_up and not last_up:
            assert rec.says("bends upward near the corrupted end and downward near the clean end")
    assert rec.says(f"AtP lies {side} AP")
    assert rec.says(
        f"The midpoint rule with {n} nodes gives int (1 - t) g''(t) dt = "
        f"{rec['remainder_integral']:+.3f}, against AP - AtP = {ap:+.3f} - ({atp:+.3f}) = "
        f"{ap - atp:+.3f}: the exact integral is AP - AtP, so the difference, "
        f"{rec['remainder_integral'] - (ap - atp):+.3f}, is the error of the rule"
    )


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
        best[p], worst = d.kind.iloc[0], d.kind.iloc[-1]
        assert rec[f"most_accurate_kind_{p}"] == best[p]
        assert rec[f"least_accurate_kind_{p}"] == worst
        ranking = ", then ".join(f"{k} ({v:.1%})" for k, v in zip(d.kind, d.nmae, strict=True))
        assert rec.says(
            f"`{p}`: AtP is most accurate on {best[p]} and least on {worst}; by NMAE: {ranking}."
        )
    assert rec.says("A single neuron is the smallest patch here") == (
        set(best.values()) == {"neuron"}
    )
