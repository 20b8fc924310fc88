"""Notebook 03's findings recomputed from the tables it recorded (see tests/claims.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from claims import Recorded, close, params

from hvp_utils import count_phrase

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


@params("03")
def test_detector_claims(path):
    found = Recorded(path)
    frame = labelled(found)
    for label, sub in groups(frame):
        if not label.endswith("all kinds"):
            continue
        p = label.split(" / ")[0]
        n, bad = len(sub), int(sub.bad.sum())
        assert found[f"bad_{p}"] == bad
        caught, flagged = int((sub.bad & sub["flags"]).sum()), int(sub["flags"].sum())
        assert found[f"caught_{p}"] == caught and found[f"flagged_{p}"] == flagged
        au = auroc(sub.score.to_numpy(), sub.bad.to_numpy())
        au_rel = auroc(sub.score.to_numpy(), sub.bad_relative.to_numpy())
        assert close(found[f"auroc_{p}"], au, rel=0, abs_=2e-3)
        assert close(found[f"auroc_relative_only_{p}"], au_rel, rel=0, abs_=2e-3)
        assert found.says(f"`{p}`, all kinds: {count_phrase(bad, n, 'AtP estimate')} are bad")
        assert found.says(f"probability {found[f'auroc_{p}']:.2f} (AUROC)")
        assert found.says(
            f"the flags catch {caught} of the {bad} and {flagged - caught} of the {flagged}"
        )
        word = "higher" if found[f"auroc_relative_only_{p}"] > found[f"auroc_{p}"] else "no higher"
        assert found.says(f"would be {found[f'auroc_relative_only_{p}']:.2f}, {word}:")
    no_bad = [label for label, sub in groups(frame) if not sub.bad.any()]
    no_flags = [label for label, sub in groups(frame) if not sub["flags"].any()]
    assert found["groups_without_bad"] == no_bad and found["groups_without_flags"] == no_flags
    if no_bad:
        assert found.says(f"Recall is undefined (NaN) for {', '.join(no_bad)}:")
    if no_flags:
        assert found.says(f"Precision is undefined (NaN) for {', '.join(no_flags)}:")


@params("03")
def test_relative_error_examples(path):
    found = Recorded(path)
    frame = labelled(found)
    featured = frame[frame.perturbation == found["featured_perturbation"]]
    rel = featured.error / featured.AP.abs()
    big = featured[(rel <= found["max_rel_error"]) & featured.bad]
    if len(big):
        row = big.loc[big.error.idxmax()]
        assert found["big_error_component"] == row.component
        assert close(found["big_error"], row.error)
        assert found.says(
            f"would call {row.component} good, although AtP misses it by {row.error:.2f} logits"
        )
    else:
        assert "big_error_component" not in found.values
    small = featured[(rel > found["max_rel_error"]) & ~featured.bad]
    if len(small):
        row = small.loc[small.error.idxmin()]
        assert found["small_error_component"] == row.component
        assert close(found["small_error_share"], row.error / row.scale, rel=1e-3, abs_=1e-9)
        assert found.says(f"would call {row.component} bad")


@params("03")
def test_coverage_claims(path):
    found = Recorded(path)
    frame = found.table("intervals")
    for p, sub in frame.groupby("perturbation", sort=False):
        n = len(sub)
        inside = int(((sub.lower <= sub.AP) & (sub.AP <= sub.upper)).sum())
        nodes = int(((sub.lower_nodes <= sub.AP) & (sub.AP <= sub.upper_nodes)).sum())
        assert nodes <= inside, "the refined maximum is never below the node maximum"
        relwidth = (sub.upper - sub.lower) / sub.AP.abs()
        assert found[f"inside_{p}"] == inside and found[f"inside_nodes_{p}"] == nodes
        assert close(found[f"median_rel_width_{p}"], float(relwidth.median()), rel=1e-3)
        assert found.says(
            f"`{p}`: the Lagrange interval holds AP for {count_phrase(inside, n, 'component')}"
        )
        assert found.says(f"(measured coverage {inside / n:.0%})")
        if inside < n:
            assert found.says(f"`{p}`: {n - inside} AP effect")
        if nodes < inside:
            assert found.says(f"alone, {inside - nodes} more would fall outside")
        else:
            assert found.says(
                f"`{p}`: reading the maximum off the nodes alone gives the same coverage"
            )
        widths = relwidth.groupby(sub.kind).median()
        assert found[f"narrowest_kind_{p}"] == widths.idxmin()
        assert found[f"widest_kind_{p}"] == widths.idxmax()
        assert found.says(f"narrowest for {widths.idxmin()} ") and found.says(
            f"widest for {widths.idxmax()} "
        )
        assert found.says(
            f"holds AP for {count_phrase(inside, n, 'component')}; a measured coverage"
        )


@params("03")
def test_summary_claims(path):
    found = Recorded(path)
    passes = found.table("passes")
    per_component = set((passes.hvp / passes.components).tolist())
    if len(per_component) == 1 and not passes.third_order.any():
        k = int(per_component.pop())
        assert found["hvp_passes_per_component"] == k == found["n_nodes"]
        assert found.says(f"together cost {k} second-order pass")
    ap = found.table("ap_passes")
    extra = set((ap.forward - ap.components).tolist())
    if len(extra) == 1:
        k = extra.pop()
        assert found["ap_extra_forward"] == k
        assert found.says(f"AP costs N + {k} forward passes for N components")
    frame = found.table("components")
    p = found["featured_perturbation"]
    sub = frame[frame.perturbation == p]
    counts = {r: int(sub[r].sum()) for r in ("flags", "flag_score", "flag_sign", "flag_threshold")}
    for reason, count in counts.items():
        assert found[f"{reason}_{p}"] == count
    assert found.says(
        f"`{p}`: {count_phrase(counts['flags'], len(sub), 'component')} are flagged: "
        f"{counts['flag_score']} by the score, {counts['flag_sign']} by a sign change and "
        f"{counts['flag_threshold']} because"
    )
    for q in frame.perturbation.unique():
        if found[f"bad_{q}"]:
            au = found[f"auroc_{q}"]
            quality = (
                "a strong"
                if au >= 0.9
                else "a useful"
                if au >= 0.75
                else "a weak"
                if au > 0.6
                else "no better"
            )
            assert found.says(f"`{q}`: the reliability score is {quality} detector")


@params("03")
def test_answer_claims(path):
    """The answer to the prediction: the kind with the most flags, the rarest reason, and
    that a sign flag implies a score flag (a sign flip needs |g''/2| > |g'|, so r > 1/2)."""
    found = Recorded(path)
    frame = found.table("components")
    for p, sub in frame.groupby("perturbation", sort=False):
        counts = sub.groupby("kind", sort=False)["flags"].sum()
        top = counts.idxmax()
        assert found[f"most_flagged_kind_{p}"] == top
        n = int((sub.kind == top).sum())
        assert found.says(f"`{p}`: {top} collects the most flags")
        assert found.says(
            f"{count_phrase(int(counts[top]), n, 'component')} of that kind are flagged"
        )
    totals = frame[["flag_score", "flag_sign", "flag_threshold"]].sum()
    assert found["rarest_reason"] == totals.idxmin()
    assert found.says(
        f"the rarest reason is {totals.idxmin()} ({int(totals.min())} flags, against "
        f"{int(totals.max())} for {totals.idxmax()})"
    )
    sign_only = int((frame.flag_sign & ~frame.flag_score).sum())
    assert found["sign_without_score"] == sign_only
    if found["tau"] < 0.5:
        assert sign_only == 0, "a sign flip needs r > 1/2, above tau"
    assert found.says("Every sign flag is also a score flag") == (
        found["tau"] < 0.5 and sign_only == 0
    )
