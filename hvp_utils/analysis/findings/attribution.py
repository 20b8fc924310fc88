"""The verdicts of notebook 01: activation patching (AP) against attribution patching (AtP).

The functions read the notebook's tables: the component table (one row per perturbation and
component with ``kind``, ``AP``, ``estimate`` = AtP, ``error`` = AtP - AP), the sign counts
per (perturbation, kind), the per-kind accuracy of :func:`hvp_utils.compare`, the MLPs'
shares of the gap and their effect by position, and the pass counts. Each decides the
verdicts of one notebook section and returns them as
:class:`~hvp_utils.analysis.findings.record.Findings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import pandas as pd

from hvp_utils.analysis.benchmark import LIKE_AP, ROUGHLY_LIKE_AP
from hvp_utils.analysis.findings.record import Findings

#: A component's effect is clear when |AP| exceeds this share of its kind's largest |AP|.
CLEAR_SHARE = 0.05
#: An MLP acts through the final position when patching it there keeps at least this share
#: of its all-position effect ...
FINAL_SHARE = 0.8
#: ... and patching it at the name positions keeps less than this share.
NAME_SHARE = 0.1
#: AtP's sizes are nearly exact for a kind when its largest NMAE is below this.
NEARLY_EXACT_NMAE = 0.05

Bend = Literal["up_then_down", "down_then_up", "both_ways"]
RankAgreement = Literal["like_ap", "roughly_like_ap", "differently"]
ErrorSides = Literal["all_below", "clear_below", "both_sides"]


def remainder(
    curvature: pd.DataFrame,
    *,
    component: str,
    perturbation: str,
    ap: float,
    atp: float,
    integral: float,
) -> Findings:
    """The sign of g''(t) at the midpoint nodes of one path (``curvature``: ``t``, ``g2``), the
    side of AP on which AtP lies (below when AP - AtP > 0), and the midpoint rule's
    ``integral`` of (1 - t) g''(t) against AP - AtP, which it approximates."""
    found = Findings("01", "Answer")
    found.table("remainder_curvature", curvature[["t", "g2"]])
    n_up, n = int((curvature.g2 > 0).sum()), len(curvature)
    values = dict(
        component=component,
        perturbation=perturbation,
        n_nodes=n,
        side="below" if ap - atp > 0 else "above",
    )
    if n_up == n:
        found.state("attribution.remainder_convex", **values)
    elif n_up == 0:
        found.state("attribution.remainder_concave", **values)
    else:
        first_up, last_up = bool(curvature.g2.iloc[0] > 0), bool(curvature.g2.iloc[-1] > 0)
        bend: Bend = (
            "up_then_down"
            if first_up and not last_up
            else "down_then_up"
            if last_up and not first_up
            else "both_ways"
        )
        found.state("attribution.remainder_mixed", **values, n_up=n_up, bend=bend)
    found.state("attribution.remainder_midpoint", n_nodes=n, integral=integral, AP=ap, AtP=atp)
    return found


def most_accurate_kind(nmae_by_kind: pd.DataFrame, *, perturbations: list[str]) -> Findings:
    """Per perturbation, the kinds ordered by NMAE (``nmae_by_kind``: ``perturbation``,
    ``kind``, ``nmae``), most accurate first; and whether the neuron wins everywhere."""
    found = Findings("01", "Answer")
    found.table("nmae_by_kind", nmae_by_kind[["perturbation", "kind", "nmae"]])
    best = {}
    for p in perturbations:
        rows = nmae_by_kind[nmae_by_kind.perturbation == p].sort_values("nmae")
        best[p] = rows.kind.iloc[0]
        found.state(
            "attribution.accuracy_ranking",
            perturbation=p,
            kinds=rows.kind.tolist(),
            nmae=rows.nmae.tolist(),
        )
    if set(best.values()) == {"neuron"}:
        found.state("attribution.neuron_most_accurate")
    return found


def error_signs(
    frame: pd.DataFrame, *, sign_table: pd.DataFrame, perturbation: str, rounding: float
) -> Findings:
    """On which side of AP AtP falls, per (perturbation, kind) of ``sign_table`` (counts of
    errors below -``rounding`` and above +``rounding``, among all and among the clear
    effects, and the share of |AtP - AP| the ones below carry); then whether every error, or
    every clear one, is below AP, or which groups fall on both sides."""
    found = Findings("01", "On which side of AP AtP falls")
    found.record("featured_perturbation", perturbation)
    found.record("rounding_tolerance", rounding)
    # AP and AtP per component (the error AtP - AP is their difference; recorded to 6 digits)
    columns = ["perturbation", "kind", "component", "AP", "estimate"]
    found.table("component_errors", frame[columns].reset_index(drop=True))
    for (p, kind), row in sign_table.iterrows():
        found.state(
            "attribution.error_sides",
            perturbation=p,
            kind=kind,
            n=int(row.n),
            below=int(row.below),
            above=int(row.above),
            clear=int(row.clear),
            clear_below=int(row.clear_below),
            below_share=float(row.below_error_share),
        )
    sides = error_sides(sign_table)
    if sides == "all_below":
        found.state("attribution.every_error_below")
    elif sides == "clear_below":
        found.state("attribution.every_clear_error_below")
    else:
        mixed = sign_table[(sign_table.below > 0) & (sign_table.above > 0)]
        found.state("attribution.error_both_sides", groups=[list(g) for g in mixed.index])
    return found


def largest_relative_errors(worst: pd.DataFrame, *, kinds: list[str]) -> Findings:
    """Per kind, among the clear effects (|AP| > 5% of the kind's largest), the component
    with the largest relative error |AtP - AP| / |AP| (``worst``: one perturbation's rows with
    ``rel_error``)."""
    found = Findings("01", "Largest relative error among the clear effects")
    for kind in kinds:
        rows = worst[worst.kind == kind]
        clear = rows[rows.AP.abs() > CLEAR_SHARE * rows.AP.abs().max()]
        row = clear.nlargest(1, "rel_error").iloc[0]
        found.state(
            "attribution.worst_relative",
            kind=kind,
            component=row.component,
            AP=float(row.AP),
            AtP=float(row.estimate),
            rel_error=float(row.rel_error),
        )
    return found


#: Separate shares that add up to more than the joint share by this much of the gap overlap.
OVERLAP_MARGIN = 0.05


def gap_shares(
    mlp_table: pd.DataFrame,
    *,
    mlp_effects: pd.DataFrame,
    mlp_positions: pd.DataFrame,
    perturbations: list[str],
    final_differs: dict[str, int],
    joint_shares: Mapping[str, float],
) -> Findings:
    """Per perturbation, the two MLPs that restore the largest share of the gap
    (``mlp_table``: ``AP``, ``gap``, ``share_of_gap`` and AP summed over the ``final
    position`` and the ``name positions`` per (perturbation, component)): their shares alone
    and patched together (``joint_shares[p]``: :func:`~hvp_utils.joint_patching` of the two,
    over the gap) against the sum of their separate shares (the sum exceeds the joint share by
    more than :data:`OVERLAP_MARGIN` of the gap: their effects overlap), the share of their
    effect kept at the
    final position and at the name positions, and whether they act through the final
    position (final share >= 0.8 for both, |name share| < 0.1, and the final token the same
    in every prompt: ``final_differs[p] == 0``)."""
    found = Findings("01", "How much of the gap one MLP restores")
    found.table("mlp_effects", mlp_effects)
    found.table("mlp_positions", mlp_positions)
    for p in perturbations:
        rows = mlp_table.loc[p].sort_values("share_of_gap", ascending=False)
        top = rows.index[:2].tolist()
        shares = [float(rows.loc[name, "share_of_gap"]) for name in top]
        finals = [float(rows.loc[name, "final position"] / rows.loc[name, "AP"]) for name in top]
        names = [float(rows.loc[name, "name positions"] / rows.loc[name, "AP"]) for name in top]
        pair = dict(perturbation=p, first=top[0], second=top[1])
        found.state("attribution.gap_top_two", **pair, gap=float(rows.gap.iloc[0]), shares=shares)
        found.state("attribution.gap_positions", **pair, final_shares=finals, name_shares=names)
        at_final = min(finals) >= FINAL_SHARE and max(abs(x) for x in names) < NAME_SHARE
        if final_differs[p] == 0 and at_final:
            found.state("attribution.through_final_position", perturbation=p)
        elif final_differs[p] == 0:
            found.state("attribution.not_through_final_position", perturbation=p)
        else:
            found.state(
                "attribution.final_token_differs", perturbation=p, n_prompts=final_differs[p]
            )
        summed, joint = sum(shares), float(joint_shares[p])
        overlap = summed - joint > OVERLAP_MARGIN
        key = "attribution.together_overlap" if overlap else "attribution.together"
        found.state(key, **pair, joint=joint, summed=summed)
    found.table(
        "mlp_pairs",
        pd.DataFrame(
            {"perturbation": list(joint_shares), "joint_share": list(joint_shares.values())}
        ),
    )
    return found


def costs(cost: pd.DataFrame) -> Findings:
    """The pass counts (``cost``: index (perturbation, kind, method), columns ``components``,
    ``forward``, ``backward``): whether AtP's are the same for every kind, and whether AP's
    forward passes exceed the number of components by one constant."""
    found = Findings("01", "What AtP and AP cost")
    found.table("pass_counts", cost[["components", "forward", "backward"]])
    atp_cost, ap_cost = cost.xs("AtP", level="method"), cost.xs("AP", level="method")
    atp_forward, atp_backward = sorted(set(atp_cost.forward)), sorted(set(atp_cost.backward))
    if len(atp_forward) == 1 and len(atp_backward) == 1:
        found.state(
            "attribution.atp_cost",
            forward=int(atp_forward[0]),
            backward=int(atp_backward[0]),
            min_components=int(atp_cost.components.min()),
            max_components=int(atp_cost.components.max()),
        )
    else:
        found.state("attribution.atp_cost_varies", forward=atp_forward, backward=atp_backward)
    ap_extra = sorted(set(ap_cost.forward - ap_cost.components))
    if len(ap_extra) == 1:
        per_kind = ap_cost.droplevel("perturbation").groupby(level="kind", sort=False).first()
        found.state(
            "attribution.ap_cost",
            extra=int(ap_extra[0]),
            kinds=per_kind.index.tolist(),
            forward=[int(x) for x in per_kind.forward],
            components=[int(x) for x in per_kind.components],
        )
    else:
        found.state("attribution.ap_cost_varies", extra=ap_extra)
    return found


def summary(
    accuracy: pd.DataFrame,
    *,
    kinds: list[str],
    cost: pd.DataFrame,
    sign_table: pd.DataFrame,
    mlp_table: pd.DataFrame,
    perturbations: list[str],
    final_differs: dict[str, int],
) -> Findings:
    """The section verdicts together: per kind, how AtP ranks the components (by the lowest
    Spearman over the perturbations: >= ``LIKE_AP`` like AP, >= 0.7 roughly, else differently) and
    how close its sizes are (largest NMAE < 0.05: nearly exact); the pass counts when both
    are constant; the sign verdict; per perturbation the MLP restoring the largest share of
    the gap, and whether it does so through the final position (final share >= 0.8 and the
    same final token in every prompt)."""
    found = Findings("01", "Summary")
    found.table("accuracy", accuracy[["n", "pearson", "spearman", "nmae"]])
    for kind in kinds:
        rows = accuracy.xs(kind, level="kind")
        low = rows.spearman.min()
        found.state(
            "attribution.kind_accuracy",
            kind=kind,
            n=int(rows.n.iloc[0]),
            ranks=rank_agreement(low),
            nearly_exact=bool(rows.nmae.max() < NEARLY_EXACT_NMAE),
            spearman_min=float(low),
            spearman_max=float(rows.spearman.max()),
            nmae_min=float(rows.nmae.min()),
            nmae_max=float(rows.nmae.max()),
        )
    atp_cost, ap_cost = cost.xs("AtP", level="method"), cost.xs("AP", level="method")
    atp_passes = set(zip(atp_cost.forward, atp_cost.backward, strict=True))
    ap_extra = set(ap_cost.forward - ap_cost.components)
    if len(atp_passes) == 1 and len(ap_extra) == 1:
        ((forward, backward),) = atp_passes
        found.state(
            "attribution.cost_summary",
            atp_forward=int(forward),
            atp_backward=int(backward),
            ap_extra=int(ap_extra.pop()),
        )
    found.state("attribution.error_sides_summary", sides=error_sides(sign_table))
    for p in perturbations:
        rows = mlp_table.loc[p]
        top = rows.share_of_gap.idxmax()
        final_share = float(rows.loc[top, "final position"] / rows.loc[top, "AP"])
        found.state(
            "attribution.top_mlp",
            perturbation=p,
            component=top,
            share=float(rows.loc[top, "share_of_gap"]),
            through_final=final_share >= FINAL_SHARE and final_differs[p] == 0,
        )
    return found


def rank_agreement(spearman: float) -> RankAgreement:
    """How AtP ranks the components, by Spearman's correlation: like AP from
    :data:`~hvp_utils.analysis.benchmark.LIKE_AP` (0.99) on, roughly from 0.7, the rest
    differently."""
    if spearman >= LIKE_AP:
        return "like_ap"
    if spearman >= ROUGHLY_LIKE_AP:
        return "roughly_like_ap"
    return "differently"


def error_sides(sign_table: pd.DataFrame) -> ErrorSides:
    """Whether every error is below AP, every clear one is, or the errors fall on both sides."""
    if (sign_table.below == sign_table.n).all():
        return "all_below"
    if (sign_table.clear_below == sign_table.clear).all():
        return "clear_below"
    return "both_sides"
