"""The verdicts of notebook 04: what the second-order (HVP) correction buys, and where it
overshoots.

The tables come from the notebook: the check of :func:`hvp_utils.check_second_order`
(``g1``/``g2`` columns, ours against autograd and finite differences), the long accuracy table
of :func:`hvp_utils.compare` rows (``perturbation``, ``kind``, ``method``, ``nmae``, ``n``,
``hvp_passes``), its NMAE pivot (index ``(perturbation, kind)``, one column per method), the
per-component effects (``AP``, ``AtP``, ``HVP diag``, ``e1 = AP - AtP``, ``c = HVP diag - AtP =
g''(0)/2``), the cross-term ratios per group and the wall-time pivot.
"""

from __future__ import annotations

import pandas as pd

from hvp_utils.analysis.findings.record import Findings

#: (ours, reference) columns of the check table compared by :func:`check`.
CHECKED_PAIRS = (
    ("g1 (ours)", "g1 (autograd)"),
    ("g2 (ours)", "g2 (autograd.functional.hvp)"),
    ("g2 (ours)", "g2 (finite differences)"),
)
#: The columns of the effects table the overshoot verdicts are computed from.
EFFECT_COLUMNS = ["perturbation", "kind", "component", "AP", "AtP", "HVP diag", "e1", "c"]
JOINT_COLUMN = "joint: mean |cross terms| / mean |g''|"


def hutchinson_column(n_probes: int) -> str:
    """The cross-term table's column of the Hutchinson estimate with ``n_probes`` probes."""
    return f"Hutchinson S={n_probes}: mean |error| / mean |g''|"


def max_relative_disagreement(check_table: pd.DataFrame) -> float:
    """``max |ours - reference| / |reference|`` over the components and :data:`CHECKED_PAIRS`."""
    gaps = (
        ((check_table[ours] - check_table[ref]).abs() / check_table[ref].abs()).max()
        for ours, ref in CHECKED_PAIRS
    )
    return max(0.0, *(float(g) for g in gaps))


def check(check_table: pd.DataFrame) -> Findings:
    """How closely g'(0) and g''(0) agree with autograd, ``torch.autograd.functional.hvp`` and
    finite differences: :func:`max_relative_disagreement` of the check table."""
    found = Findings("04", "The check")
    found.table("check", check_table)
    found.state(
        "second_order.check_agrees",
        n_components=len(check_table),
        max_relative_disagreement=max_relative_disagreement(check_table),
    )
    return found


def answer(nmae: pd.DataFrame) -> Findings:
    """Per perturbation: the kinds whose NMAE the per-component correction lowers
    (``HVP diag < AtP``) and raises, and the kind with the smallest ratio
    ``NMAE(HVP diag) / NMAE(AtP)`` (the largest gain); whether it raises any at all."""
    found = Findings("04", "Answer")
    any_raised = False
    for p in dict.fromkeys(nmae.index.get_level_values("perturbation")):
        rows = nmae.loc[p]
        ratio = rows["HVP diag"] / rows["AtP"]
        lowered = [k for k in rows.index if rows.loc[k, "HVP diag"] < rows.loc[k, "AtP"]]
        raised = [k for k in rows.index if k not in lowered]
        values = dict(perturbation=p, best=str(ratio.idxmin()), gain=float(ratio.min()))
        if lowered:
            found.state(
                "second_order.answer_lowers",
                **values,
                n_lowered=len(lowered),
                n_kinds=len(rows),
                raised=raised,
            )
        else:
            found.state("second_order.answer_raises_all", **values)
        any_raised = any_raised or bool(raised)
    if any_raised:
        found.state("second_order.no_free_improvement")
    return found


def wall_time(seconds: pd.DataFrame) -> Findings:
    """The range of ``seconds[HVP diag] / seconds[AP]`` over (perturbation, kind) groups, and
    whether the per-component correction is slower than AP in every group (ratio above 1).

    Wall time varies between runs: the verdict is that of this run's measurement."""
    found = Findings("04", "Wall time (varies between runs)")
    found.table("seconds", seconds)
    ratio = seconds["HVP diag"] / seconds["AP"]
    low, high = float(ratio.min()), float(ratio.max())
    key = "second_order.diag_slower_than_ap" if low > 1 else "second_order.diag_time_range"
    found.state(key, low=low, high=high)
    return found


def overshoot_cases(effects: pd.DataFrame, *, clear_share: float) -> pd.DataFrame:
    """The clear effects (``|AP| > clear_share * max|AP|`` of their (perturbation, kind)), with
    ``overshot`` (``c (c - 2 e1) > 0``, i.e. ``|e1 - c| > |e1|``), ``points_away``
    (overshot with ``c e1 < 0``), ``goes_too_far`` (overshot with ``c e1 >= 0``),
    ``atp_error = |e1|`` and ``hvp_error = |e1 - c|``."""
    scale = effects.groupby(["perturbation", "kind"]).AP.transform(lambda a: a.abs().max())
    clear = effects[effects.AP.abs() > clear_share * scale]
    e1, c = clear.e1, clear.c
    overshot = c * (c - 2 * e1) > 0
    return clear.assign(
        overshot=overshot,
        points_away=overshot & (c * e1 < 0),
        goes_too_far=overshot & (c * e1 >= 0),
        atp_error=e1.abs(),
        hvp_error=(e1 - c).abs(),
    )


def overshoot_counts(cases: pd.DataFrame, perturbation: str) -> dict[str, int]:
    """Clear effects of ``perturbation`` and how many are overshot, by which way."""
    sub = cases[cases.perturbation == perturbation]
    return dict(
        n_clear=len(sub),
        n_overshot=int(sub.overshot.sum()),
        n_points_away=int(sub.points_away.sum()),
        n_goes_too_far=int(sub.goes_too_far.sum()),
    )


def overshoots(effects: pd.DataFrame, *, clear_share: float) -> Findings:
    """Per perturbation, of the clear effects (:func:`overshoot_cases`): how many the
    correction overshoots and which way, the kinds where it overshoots every clear effect and
    those where it overshoots none; then the overshoot with the largest error increase
    ``|e1 - c| - |e1|``."""
    found = Findings("04", "Where second order makes things worse")
    found.table("effects", effects[EFFECT_COLUMNS])
    cases = overshoot_cases(effects, clear_share=clear_share)
    for p in dict.fromkeys(effects.perturbation):
        counts = overshoot_counts(cases, p)
        found.state("second_order.overshoots", perturbation=p, clear_share=clear_share, **counts)
        by_kind = cases[cases.perturbation == p].groupby("kind", sort=False).overshot
        n_overshot, n_clear = by_kind.sum(), by_kind.size()
        every = [k for k in n_clear.index if n_overshot[k] == n_clear[k] and n_overshot[k] > 0]
        never = [k for k in n_clear.index if n_overshot[k] == 0]
        if every:
            found.state("second_order.kinds_all_overshot", perturbation=p, kinds=every)
        if never:
            found.state("second_order.kinds_never_overshot", perturbation=p, kinds=never)
    overshot = cases[cases.overshot]
    if len(overshot):
        loss = overshot.hvp_error - overshot.atp_error
        worst = overshot.loc[loss.idxmax()]
        found.state(
            "second_order.worst_overshoot",
            component=worst.component,
            perturbation=worst.perturbation,
            AP=float(worst.AP),
            AtP=float(worst.AtP),
            corrected=float(worst["HVP diag"]),
            atp_error=float(worst.atp_error),
            hvp_error=float(worst.hvp_error),
            points_away=bool(worst.points_away),
        )
    return found


def cross_term_counts(cross: pd.DataFrame, *, n_probes: int) -> dict[str, int]:
    """(perturbation, kind) groups whose joint cross terms exceed the mean ``|g''|`` (ratio
    above 1) and half of it, and where Hutchinson's error is below the joint mode's."""
    joint, hutchinson = cross[JOINT_COLUMN], cross[hutchinson_column(n_probes)]
    return dict(
        n_groups=len(cross),
        n_larger=int((joint > 1).sum()),
        n_over_half=int((joint > 0.5).sum()),
        n_hutchinson_closer=int((hutchinson < joint).sum()),
    )


def cross_terms(cross: pd.DataFrame, *, n_probes: int) -> Findings:
    """The joint mode's cross terms and the Hutchinson error against the mean ``|g''|``
    (:func:`cross_term_counts`), with the range of Hutchinson's ratio."""
    found = Findings("04", "Cross terms and random signs")
    found.table("cross_terms", cross)
    counts = cross_term_counts(cross, n_probes=n_probes)
    found.state("second_order.joint_cross_terms", **counts)
    hutchinson = cross[hutchinson_column(n_probes)]
    found.state(
        "second_order.hutchinson_closer",
        n_probes=n_probes,
        n_closer=counts["n_hutchinson_closer"],
        n_groups=counts["n_groups"],
        ratio_min=float(hutchinson.min()),
        ratio_max=float(hutchinson.max()),
    )
    return found


def per_kind(nmae: pd.DataFrame) -> Findings:
    """Per (perturbation, kind): whether the per-component correction cuts AtP's NMAE
    (``HVP diag < AtP``) or raises it, by which factor, and the most accurate method."""
    found = Findings("04", "The verdict per kind")
    found.table("nmae", nmae)
    for (p, kind), row in nmae.iterrows():
        atp, diag = float(row["AtP"]), float(row["HVP diag"])
        found.state(
            "second_order.kind_cuts" if diag < atp else "second_order.kind_raises",
            perturbation=p,
            kind=kind,
            atp_nmae=atp,
            diag_nmae=diag,
            ratio=diag / atp if atp > 0 else None,
            best=str(row.idxmin()),
        )
    return found


def summary(
    accuracy: pd.DataFrame,
    *,
    nmae: pd.DataFrame,
    check_table: pd.DataFrame,
    effects: pd.DataFrame,
    cross: pd.DataFrame,
    clear_share: float,
    n_probes: int,
) -> Findings:
    """The section verdicts together: the check's agreement, the HVP pass counts (``diag`` one
    per component and ``joint`` one in every group), per perturbation the kinds the
    correction helps and hurts and its overshoots, and the joint mode's cross terms."""
    found = Findings("04", "Summary")
    found.state(
        "second_order.hvp_matches",
        max_relative_disagreement=max_relative_disagreement(check_table),
    )
    groups = ["perturbation", "kind"]
    passes = accuracy.pivot_table(index=groups, columns="method", values="hvp_passes", sort=False)
    n = accuracy.groupby(groups, sort=False).n.first()
    found.table("hvp_passes", passes.assign(n=n))
    diag = next(m for m in passes.columns if m.startswith("HVP diag"))
    joint = next(m for m in passes.columns if m.startswith("HVP joint"))
    if (passes[diag] == n).all() and (passes[joint] == 1).all():
        found.state("second_order.pass_counts", n_probes=n_probes)
    cases = overshoot_cases(effects, clear_share=clear_share)
    for p in dict.fromkeys(nmae.index.get_level_values("perturbation")):
        rows = nmae.loc[p]
        helped = [k for k, r in rows.iterrows() if r["HVP diag"] < r["AtP"]]
        hurt = [k for k, r in rows.iterrows() if r["HVP diag"] >= r["AtP"]]
        if not hurt:
            found.state("second_order.lowers_every_kind", perturbation=p)
        elif not helped:
            found.state("second_order.raises_every_kind", perturbation=p)
        else:
            found.state("second_order.lowers_some_kinds", perturbation=p, helped=helped, hurt=hurt)
        counts = overshoot_counts(cases, p)
        if counts["n_overshot"]:
            found.state("second_order.overshoot_ways", perturbation=p, **counts)
        else:
            found.state("second_order.overshoots_none", perturbation=p, n_clear=counts["n_clear"])
    found.state("second_order.joint_cost", **cross_term_counts(cross, n_probes=n_probes))
    found.state("second_order.next_notebooks")
    return found
