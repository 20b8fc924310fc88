"""Notebook 03's verdicts, recomputed from the tables it recorded (committed run and reruns).

The notebook records every component's AP, AtP, |AtP - AP|, score, flags and Lagrange interval;
the detector's target, its AUROC (by counting pairs), the coverage and the flag counts are
recomputed here with the test's own code and compared with the verdict keys and values the
notebook states (see tests/claims.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from claims import Recorded, close, params

GROUP = ["perturbation", "kind"]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a bad one > score of a good one), ties 1/2, by counting every pair."""
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def labelled(found: Recorded) -> pd.DataFrame:
    """The components table with the detector's target recomputed from AP and AtP."""
    frame = found.table("components").copy()
    scale = frame.AP.abs().groupby([frame.perturbation, frame.kind]).transform("max")
    # |AtP - AP| is recorded itself: the difference of two rounded values loses the small errors
    error = frame.abs_error
    assert np.allclose(error, (frame.AtP - frame.AP).abs(), rtol=0, atol=1e-5 * scale.max())
    frame["error"], frame["scale"] = error, scale
    large = error > found["max_rel_error"] * frame.AP.abs()
    frame["bad"] = (large & (error > found["negligible_share"] * scale)) | (
        error > found["selection_share"] * scale
    )
    frame["bad_relative"] = large
    return frame


def groups(frame: pd.DataFrame):
    """(label, rows) for every (perturbation, kind) and every perturbation's pool."""
    for (p, kind), sub in frame.groupby(GROUP, sort=False):
        yield f"{p} / {kind}", sub
    for p, sub in frame.groupby("perturbation", sort=False):
        yield f"{p} / all kinds", sub


@params("03")
def test_flags_follow_from_the_recorded_derivatives(path):
    found = Recorded(path)
    frame = found.table("components")
    intervals = found.table("intervals").set_index(["perturbation", "component"])
    half = frame.second_order - frame.AtP  # g''(0) / 2
    score = half.abs() / (frame.AtP.abs() + half.abs() + 1e-12)
    assert np.allclose(score, frame.score, rtol=1e-4, atol=1e-5)  # from rounded values
    assert ((frame.score > found["tau"]) == frame.flag_score).all()
    sign = frame.AtP * frame.second_order < 0
    assert (sign == frame.flag_sign).all()
    theta = found["selection_share"] * frame.AtP.abs().groupby(
        [frame.perturbation, frame.kind]
    ).transform("max")
    box = intervals.loc[list(zip(frame.perturbation, frame.component, strict=True))]
    lower, upper = box.lower.to_numpy(), box.upper.to_numpy()
    # the Lagrange interval is AtP -+ M2/2: centred on AtP
    assert np.allclose((lower + upper) / 2, frame.AtP, rtol=1e-4, atol=1e-6)
    crosses = ((lower < theta) & (upper > theta)) | ((lower < -theta) & (upper > -theta))
    margin = np.minimum.reduce(
        [abs(lower - theta), abs(upper - theta), abs(lower + theta), abs(upper + theta)]
    )
    clear = margin > 1e-5 * np.maximum(theta, 1e-12)  # rounding of the table cannot decide the rest
    assert (crosses[clear] == frame.flag_threshold[clear]).all()
    assert (frame["flags"] == (frame.flag_score | frame.flag_sign | frame.flag_threshold)).all()


def quality(auroc: float) -> str:
    for edge, band in ((0.9, "strong"), (0.75, "useful")):
        if auroc >= edge:
            return band
    return "weak" if auroc > 0.6 else "chance"


def inside(sub: pd.DataFrame, lower: str = "lower", upper: str = "upper") -> int:
    return int(((sub[lower] <= sub.AP) & (sub.AP <= sub[upper])).sum())


@params("03")
def test_detector_claims(path):
    found = Recorded(path)
    frame = labelled(found)
    for label, sub in groups(frame):
        if not label.endswith("all kinds"):
            continue
        p = label.split(" / ")[0]
        n, bad = len(sub), int(sub.bad.sum())
        caught, flagged = int((sub.bad & sub["flags"]).sum()), int(sub["flags"].sum())
        au = auroc(sub.score.to_numpy(), sub.bad.to_numpy())
        au_rel = auroc(sub.score.to_numpy(), sub.bad_relative.to_numpy())
        key, stated = found.only("reliability.detector", "reliability.nothing_bad", perturbation=p)
        assert (stated["n"], stated["flagged"]) == (n, flagged)
        if bad:
            assert key == "reliability.detector"
            assert (stated["bad"], stated["caught"]) == (bad, caught)
            assert close(stated["auroc"], au, rel=0, abs_=2e-3)
        else:
            assert key == "reliability.nothing_bad"
        relative = found.verdicts(
            "reliability.relative_auroc_higher",
            "reliability.relative_auroc_no_higher",
            perturbation=p,
        )
        if np.isnan(au) or np.isnan(au_rel):
            assert not relative
            continue
        ((key, stated),) = relative
        assert close(stated["auroc"], au, rel=0, abs_=2e-3)
        assert close(stated["auroc_relative"], au_rel, rel=0, abs_=2e-3)
        higher = stated["auroc_relative"] > stated["auroc"]
        assert key == (
            "reliability.relative_auroc_higher"
            if higher
            else "reliability.relative_auroc_no_higher"
        )
    no_bad = [label for label, sub in groups(frame) if not sub.bad.any()]
    no_flags = [label for label, sub in groups(frame) if not sub["flags"].any()]
    for key, labels in (
        ("reliability.recall_undefined", no_bad),
        ("reliability.precision_undefined", no_flags),
    ):
        stated = found.verdicts(key)
        assert [v["groups"] for _, v in stated] == ([labels] if labels else [])


@params("03")
def test_relative_error_examples(path):
    found = Recorded(path)
    frame = labelled(found)
    p = found["featured_perturbation"]
    featured = frame[frame.perturbation == p]
    rel = featured.error / featured.AP.abs()
    big = featured[(rel <= found["max_rel_error"]) & featured.bad]
    stated = found.verdicts("reliability.relative_calls_good", perturbation=p)
    if len(big):
        row = big.loc[big.error.idxmax()]
        ((_, values),) = stated
        assert values["component"] == row.component
        assert close(values["error"], row.error) and close(values["AP"], row.AP)
        assert close(values["rel_error"], row.error / abs(row.AP), rel=1e-3)
    else:
        assert not stated
    small = featured[(rel > found["max_rel_error"]) & ~featured.bad]
    stated = found.verdicts("reliability.relative_calls_bad", perturbation=p)
    if len(small):
        row = small.loc[small.error.idxmin()]
        ((_, values),) = stated
        assert values["component"] == row.component
        assert close(values["share"], row.error / row.scale, rel=1e-3, abs_=1e-9)
    else:
        assert not stated


@params("03")
def test_coverage_claims(path):
    found = Recorded(path)
    frame = found.table("intervals")
    for p, sub in frame.groupby("perturbation", sort=False):
        n, held = len(sub), inside(sub)
        nodes = inside(sub, "lower_nodes", "upper_nodes")
        assert nodes <= held, "the refined maximum is never below the node maximum"
        relwidth = (sub.upper - sub.lower) / sub.AP.abs()
        for key in ("reliability.coverage", "reliability.coverage_measured"):
            _, stated = found.only(key, perturbation=p)
            assert (stated["inside"], stated["n"]) == (held, n)
        _, stated = found.only("reliability.coverage", perturbation=p)
        assert close(stated["median_width"], float(relwidth.median()), rel=1e-3)
        assert (
            found.only("reliability.coverage_measured", perturbation=p)[1]["n_nodes"]
            == found["n_nodes"]
        )
        outside = found.verdicts("reliability.outside", perturbation=p)
        assert [v["n_outside"] for _, v in outside] == ([n - held] if held < n else [])
        node_verdicts = found.verdicts(
            "reliability.nodes_miss", "reliability.nodes_same", perturbation=p
        )
        if nodes < held:
            assert node_verdicts == [
                ("reliability.nodes_miss", {"perturbation": p, "n_more": held - nodes})
            ]
        else:
            assert node_verdicts == [("reliability.nodes_same", {"perturbation": p})]
        widths = relwidth.groupby(sub.kind).median()
        _, stated = found.only("reliability.width_by_kind", perturbation=p)
        assert (stated["narrowest"], stated["widest"]) == (widths.idxmin(), widths.idxmax())
        assert close(stated["narrowest_width"], widths.min(), rel=1e-3)
        assert close(stated["widest_width"], widths.max(), rel=1e-3)


@params("03")
def test_summary_claims(path):
    found = Recorded(path)
    passes = found.table("passes")
    per_component = set((passes.hvp / passes.components).tolist())
    ap = found.table("ap_passes")
    extra = set((ap.forward - ap.components).tolist())
    stated = found.verdicts("reliability.cost")
    if len(per_component) == 1 and not passes.third_order.any():
        ((_, values),) = stated
        k = int(per_component.pop())
        assert values["hvp_per_component"] == k == found["n_nodes"] == values["n_nodes"]
        assert values["ap_extra_forward"] == (extra.pop() if len(extra) == 1 else None)
    else:
        assert not stated
    frame = labelled(found)
    p = found["featured_perturbation"]
    sub = frame[frame.perturbation == p]
    _, stated = found.only("reliability.flag_counts", perturbation=p)
    assert stated["n"] == len(sub)
    for reason in ("flags", "flag_score", "flag_sign", "flag_threshold"):
        assert stated[reason] == int(sub[reason].sum())
    for q, rows in frame.groupby("perturbation", sort=False):
        key, stated = found.only(
            "reliability.detector_quality", "reliability.detector_undefined", perturbation=q
        )
        if not rows.bad.any():
            assert key == "reliability.detector_undefined"
            continue
        au = auroc(rows.score.to_numpy(), rows.bad.to_numpy())
        assert key == "reliability.detector_quality"
        assert close(stated["auroc"], au, rel=0, abs_=2e-3)
        assert stated["quality"] == quality(stated["auroc"])
        assert (stated["bad"], stated["caught"]) == (
            int(rows.bad.sum()),
            int((rows.bad & rows["flags"]).sum()),
        )


@params("03")
def test_answer_claims(path):
    """The answer to the prediction: the kind with the most flags, the rarest reason, and
    that a sign flag implies a score flag (a sign flip needs |g''/2| > |g'|, so r > 1/2)."""
    found = Recorded(path)
    frame = found.table("components")
    for p, sub in frame.groupby("perturbation", sort=False):
        counts = sub.groupby("kind", sort=False)["flags"].sum()
        top = counts.idxmax()
        _, stated = found.only("reliability.most_flagged_kind", perturbation=p)
        assert stated["kind"] == top
        assert (stated["n_flagged"], stated["n"]) == (
            int(counts[top]),
            int((sub.kind == top).sum()),
        )
    totals = frame[["flag_score", "flag_sign", "flag_threshold"]].sum()
    _, stated = found.only("reliability.rarest_reason")
    assert (stated["reason"], stated["n"]) == (totals.idxmin(), int(totals.min()))
    assert (stated["commonest"], stated["n_commonest"]) == (totals.idxmax(), int(totals.max()))
    sign_only = int((frame.flag_sign & ~frame.flag_score).sum())
    if found["tau"] < 0.5:
        assert sign_only == 0, "a sign flip needs r > 1/2, above tau"
    implied = found.verdicts("reliability.sign_implies_score")
    assert bool(implied) == (found["tau"] < 0.5 and sign_only == 0)
