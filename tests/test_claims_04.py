"""Notebook 04's findings recomputed from the tables it recorded (see tests/claims.py)."""

from __future__ import annotations

import numpy as np
from claims import Recorded, close, params

from hvp_utils import count_phrase


def overshoots(found: Recorded):
    """The effects table with the clear filter and the overshoot cases recomputed."""
    frame = found.table("effects").copy()
    scale = frame.AP.abs().groupby([frame.perturbation, frame.kind]).transform("max")
    frame = frame[frame.AP.abs() > found["clear_share"] * scale].copy()
    # e1 = AP - AtP and c = g''(0)/2 are recorded themselves: differences of rounded values
    # would lose the neurons' errors of 1e-6
    e1, c = frame.e1, frame.c
    size = frame.AP.abs().max()
    assert np.allclose(e1, frame.AP - frame.AtP, rtol=0, atol=1e-5 * size)
    assert np.allclose(c, frame["HVP diag"] - frame.AtP, rtol=0, atol=1e-5 * size)
    frame["atp_error"], frame["hvp_error"] = e1.abs(), (e1 - c).abs()
    frame["overshot"] = frame.hvp_error > frame.atp_error
    # the exact condition derived in the notebook: c (c - 2 e1) > 0
    derived = c * (c - 2 * e1) > 0
    decided = (frame.hvp_error - frame.atp_error).abs() > 1e-5 * frame.atp_error.clip(lower=1e-9)
    assert (derived[decided] == frame.overshot[decided]).all()
    frame["away"] = frame.overshot & (c * e1 < 0)
    frame["far"] = frame.overshot & (c * e1 >= 0)
    # pointing the right way, the correction overshoots only by going more than twice as far
    assert (c.abs() > 2 * e1.abs())[frame.far].all()
    return frame


@params("04")
def test_check_claim(path):
    found = Recorded(path)
    table = found.table("check")
    pairs = [
        ("g1 (ours)", "g1 (autograd)"),
        ("g2 (ours)", "g2 (autograd.functional.hvp)"),
        ("g2 (ours)", "g2 (finite differences)"),
    ]
    # the recorded table is rounded to 6 digits: it can confirm the agreement only to 1e-5
    worst = max(float(((table[a] - table[b]).abs() / table[b].abs()).max()) for a, b in pairs)
    assert worst < 1e-5 and found["max_relative_disagreement"] < 1e-6
    assert found.says(f"to within {max(found['max_relative_disagreement'], 1e-16):.0e} (relative)")


@params("04")
def test_overshoot_claims(path):
    found = Recorded(path)
    clear = overshoots(found)
    for p, sub in clear.groupby("perturbation", sort=False):
        worse, away, far = int(sub.overshot.sum()), int(sub.away.sum()), int(sub.far.sum())
        assert (found[f"overshot_{p}"], found[f"points_away_{p}"], found[f"goes_too_far_{p}"]) == (
            worse,
            away,
            far,
        )
        assert found.says(
            f"`{p}`: the correction overshoots {count_phrase(worse, len(sub), 'clear effect')}"
        )
        if worse:
            assert found.says(f"({away} because it points away from AP, {far} because it goes")
        kinds = sub.groupby("kind", sort=False).overshot.agg(["sum", "count"])
        every = [k for k, r in kinds.iterrows() if r["sum"] == r["count"] and r["sum"] > 0]
        never = [k for k, r in kinds.iterrows() if r["sum"] == 0]
        assert found[f"kinds_all_overshot_{p}"] == every
        assert found[f"kinds_never_overshot_{p}"] == never
        if every:
            assert found.says(f"`{p}`: for {', '.join(every)} every clear effect is overshot.")
        if never:
            assert found.says(f"`{p}`: for {', '.join(never)} no clear effect is overshot.")
    if clear.overshot.any():
        bad = clear[clear.overshot]
        row = bad.loc[(bad.hvp_error - bad.atp_error).idxmax()]
        assert found["worst_overshoot"] == f"{row.perturbation} {row.component}"
        assert close(found["worst_overshoot_loss"], row.hvp_error - row.atp_error, rel=1e-3)
        how = "points away from AP" if row.away else "goes more than twice AtP's error"
        assert found.says(f"The worst is {row.component} under `{row.perturbation}`")
        assert found.says(
            f"the correction {how}, and the error grows from {row.atp_error:.2f} "
            f"to {row.hvp_error:.2f}"
        )


@params("04")
def test_cross_term_claims(path):
    found = Recorded(path)
    cross = found.table("cross_terms")
    joint = cross[[c for c in cross.columns if c.startswith("joint:")][0]]
    hutch = cross[[c for c in cross.columns if c.startswith("Hutchinson")][0]]
    larger, half, beats = (
        int((joint > 1).sum()),
        int((joint > 0.5).sum()),
        int((hutch < joint).sum()),
    )
    assert (
        found["joint_cross_larger"],
        found["joint_cross_over_half"],
        found["hutchinson_better"],
    ) == (
        larger,
        half,
        beats,
    )
    n = len(cross)
    groups = count_phrase(larger, n, "(perturbation, kind) group")
    assert found.says(f"larger than the curvature it is after in {groups}")
    assert found.says(f"and above half of it in {half}.")
    assert found.says(f"than the joint mode in {count_phrase(beats, n, 'group')}")
    assert found.says(f"exceed the curvature it is after in {larger} of {n} groups")


@params("04")
def test_verdict_and_summary_claims(path):
    found = Recorded(path)
    nmae = found.table("nmae")
    methods = [c for c in nmae.columns if c not in ("perturbation", "kind")]
    for _, row in nmae.iterrows():
        p, kind = row.perturbation, row.kind
        atp, diag = row["AtP"], row["HVP diag"]
        best = min(methods, key=lambda m: row[m])
        assert close(found[f"nmae_atp_{p}_{kind}"], atp) and close(
            found[f"nmae_diag_{p}_{kind}"], diag
        )
        assert found[f"best_{p}_{kind}"] == best
        change = "cuts" if diag < atp else "raises"
        assert found.says(
            f"`{p}` {kind}: the per-component correction {change} AtP's NMAE from {atp:.3f}"
        )
        assert found.says(f"the most accurate here is {best}.")
    for p, sub in nmae.groupby("perturbation", sort=False):
        helped = sub.kind[sub["HVP diag"] < sub["AtP"]].tolist()
        hurt = sub.kind[sub["HVP diag"] >= sub["AtP"]].tolist()
        assert found[f"diag_helps_{p}"] == helped and found[f"diag_hurts_{p}"] == hurt
        if not hurt:
            assert found.says(
                f"`{p}`: the per-component correction lowers AtP's NMAE for every kind."
            )
        elif not helped:
            assert found.says(
                f"`{p}`: the per-component correction raises AtP's NMAE for every kind."
            )
        else:
            assert found.says(
                f"lowers AtP's NMAE for {', '.join(helped)} and raises it for {', '.join(hurt)}."
            )
    passes = found.table("hvp_passes")
    diag = [c for c in passes.columns if c.startswith("HVP diag")][0]
    joint = [c for c in passes.columns if c.startswith("HVP joint")][0]
    assert found["diag_passes_equal_components"] == bool((passes[diag] == passes.n).all())
    assert found["joint_passes_one"] == bool((passes[joint] == 1).all())
    if found["diag_passes_equal_components"] and found["joint_passes_one"]:
        assert found.says(
            "`diag` needs one HVP pass per component, `joint` one pass for any number"
        )
    seconds = found.table("seconds")
    ratio = seconds["HVP diag"] / seconds["AP"]
    assert close(found["diag_over_ap_min"], float(ratio.min()), rel=1e-3)
    assert close(found["diag_over_ap_max"], float(ratio.max()), rel=1e-3)
    assert np.isfinite(ratio).all()


@params("04")
def test_answer_claims(path):
    """The answer to the prediction: where the correction lowers the NMAE, where it gains
    most and where it raises it, from the recorded NMAE table."""
    found = Recorded(path)
    nmae = found.table("nmae")
    any_raised = False
    for p, sub in nmae.groupby("perturbation", sort=False):
        ratio = sub["HVP diag"] / sub["AtP"]
        lowered = sub.kind[sub["HVP diag"] < sub["AtP"]].tolist()
        raised = [k for k in sub.kind if k not in lowered]
        best = sub.kind.loc[ratio.idxmin()]
        assert found[f"answer_raised_{p}"] == raised
        assert found[f"answer_largest_gain_{p}"] == best
        assert close(found[f"answer_largest_gain_ratio_{p}"], float(ratio.min()), rel=1e-3)
        if not lowered:
            assert found.says(f"`{p}`: the correction raises the NMAE for every kind, the least")
        elif len(lowered) == 1:
            assert found.says(f"`{p}`: the correction lowers the NMAE only for {best} (to")
        else:
            assert found.says(
                f"`{p}`: the correction lowers the NMAE for "
                f"{count_phrase(len(lowered), len(sub), 'kind')}, most for {best} "
            )
        if raised and lowered:
            assert found.says(f"; it raises it for {', '.join(raised)}.")
        any_raised = any_raised or bool(raised)
    assert found.says("So the correction is no free improvement") == any_raised
