"""The verdicts of notebook 03: the reliability score, the Lagrange interval and the flags.

The functions read the notebook's component table (one row per perturbation and component
with ``kind``, ``AP``, ``AtP``, ``abs_error = |AtP - AP|``, ``rel_error = abs_error / |AP|``,
``scale`` (the kind's largest |AP|), ``bad`` (the error matters), ``score``, the interval
``lower``/``upper`` and ``lower_nodes``/``upper_nodes`` (max |g''| read off the nodes only),
and the boolean ``flags``, ``flag_score``, ``flag_sign``, ``flag_threshold``), and the
detector table of :func:`hvp_utils.detector_report` (one row per group ``"{p} / {kind}"`` and
``"{p} / all kinds"``). Each decides the verdicts of one notebook section.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from hvp_utils.analysis.findings.record import Findings

#: The columns of the component table the verdicts are computed from.
COMPONENT_COLUMNS = [
    "perturbation",
    "kind",
    "component",
    "AP",
    "AtP",
    "abs_error",
    "second_order",
    "score",
    "flags",
    "flag_score",
    "flag_sign",
    "flag_threshold",
]
INTERVAL_COLUMNS = [
    "perturbation",
    "kind",
    "component",
    "AP",
    "AtP",
    "lower",
    "upper",
    "lower_nodes",
    "upper_nodes",
]
DETECTION_COLUMNS = ["n", "bad", "flagged", "caught", "auroc", "auroc (relative error only)"]
REASONS = ["flag_score", "flag_sign", "flag_threshold"]

DetectorQuality = Literal["strong", "useful", "weak", "chance"]


def detector_quality(auroc: float) -> DetectorQuality:
    """The band of an AUROC: >= 0.9 strong, >= 0.75 useful, > 0.6 weak, else chance."""
    if auroc >= 0.9:
        return "strong"
    if auroc >= 0.75:
        return "useful"
    if auroc > 0.6:
        return "weak"
    return "chance"


def detector(
    table: pd.DataFrame,
    *,
    detection: pd.DataFrame,
    perturbation: str,
    perturbations: list[str],
    tau: float,
    max_rel_error: float,
    negligible_share: float,
    selection_share: float,
    n_nodes: int,
) -> Findings:
    """The score as a detector of bad AtP estimates, per perturbation over all kinds: how many
    are bad, the AUROC against the bad ones and against large relative errors alone, what the
    flags catch; the groups where recall or precision is undefined (nothing bad, nothing
    flagged); and, under ``perturbation``, the largest error that relative error alone
    (``rel_error <= max_rel_error``) would call good and the smallest it would call bad."""
    found = Findings("03", "The score as a detector")
    found.table("components", table[COMPONENT_COLUMNS])
    found.table("detection", detection[DETECTION_COLUMNS])
    settings = {
        "featured_perturbation": perturbation,
        "tau": tau,
        "max_rel_error": max_rel_error,
        "negligible_share": negligible_share,
        "selection_share": selection_share,
        "n_nodes": n_nodes,
    }
    for key, value in settings.items():
        found.record(key, value)
    for p in perturbations:
        row = detection.loc[f"{p} / all kinds"]
        bad, flagged = int(row.bad), int(row.flagged)
        auroc, relative = float(row.auroc), float(row["auroc (relative error only)"])
        if bad:
            found.state(
                "reliability.detector",
                perturbation=p,
                n=int(row.n),
                bad=bad,
                auroc=auroc,
                caught=int(row.caught),
                flagged=flagged,
            )
        else:
            found.state("reliability.nothing_bad", perturbation=p, n=int(row.n), flagged=flagged)
        if not (pd.isna(auroc) or pd.isna(relative)):
            key = (
                "reliability.relative_auroc_higher"
                if relative > auroc
                else "reliability.relative_auroc_no_higher"
            )
            found.state(key, perturbation=p, auroc=auroc, auroc_relative=relative)
    no_bad = [g for g, r in detection.iterrows() if r.bad == 0]
    if no_bad:
        found.state("reliability.recall_undefined", groups=no_bad)
    no_flags = [g for g, r in detection.iterrows() if r.flagged == 0]
    if no_flags:
        found.state("reliability.precision_undefined", groups=no_flags)
    featured = table[table.perturbation == perturbation]
    fine_by_ratio = featured[(featured.rel_error <= max_rel_error) & featured.bad]
    if len(fine_by_ratio):
        big = fine_by_ratio.loc[fine_by_ratio.abs_error.idxmax()]
        found.state(
            "reliability.relative_calls_good",
            perturbation=perturbation,
            component=big.component,
            error=float(big.abs_error),
            rel_error=float(big.rel_error),
            AP=float(big.AP),
        )
    tiny = featured[(featured.rel_error > max_rel_error) & ~featured.bad]
    if len(tiny):
        small = tiny.loc[tiny.abs_error.idxmin()]
        found.state(
            "reliability.relative_calls_bad",
            perturbation=perturbation,
            component=small.component,
            rel_error=float(small.rel_error),
            error=float(small.abs_error),
            share=float(small.abs_error / small.scale),
        )
    return found


def coverage(table: pd.DataFrame, *, perturbations: list[str]) -> Findings:
    """Per perturbation: how many AP lie in the Lagrange interval ``[lower, upper]`` and in its
    node-only version, the median width ``(upper - lower) / |AP|``, and the kinds with the
    narrowest and widest median width."""
    found = Findings("03", "Coverage and width of the Lagrange interval")
    found.table("intervals", table[INTERVAL_COLUMNS])
    for p in perturbations:
        sub = table[table.perturbation == p]
        n, inside, inside_nodes = len(sub), _inside(sub), _inside(sub, nodes=True)
        width = (sub.upper - sub.lower) / sub.AP.abs()
        found.state(
            "reliability.coverage",
            perturbation=p,
            inside=inside,
            n=n,
            median_width=float(width.median()),
        )
        if inside < n:
            found.state("reliability.outside", perturbation=p, n_outside=n - inside)
        if inside_nodes < inside:
            found.state("reliability.nodes_miss", perturbation=p, n_more=inside - inside_nodes)
        elif inside_nodes == inside:
            found.state("reliability.nodes_same", perturbation=p)
        by_kind = width.groupby(sub.kind).median()
        narrow, wide = by_kind.idxmin(), by_kind.idxmax()
        found.state(
            "reliability.width_by_kind",
            perturbation=p,
            narrowest=narrow,
            narrowest_width=float(by_kind[narrow]),
            widest=wide,
            widest_width=float(by_kind[wide]),
        )
    return found


def flag_reasons(table: pd.DataFrame, *, perturbations: list[str], tau: float) -> Findings:
    """Which kind collects the most flags per perturbation, the rarest reason over all rows,
    and whether every sign flag is also a score flag (a sign flip needs |g''(0)/2| > |g'(0)|,
    so r_c > 1/2: implied when ``tau`` < 1/2)."""
    found = Findings("03", "Answer")
    by_kind = table.groupby(["perturbation", "kind"], sort=False)
    reasons = by_kind[[*REASONS, "flags"]].sum().astype(int).assign(n=by_kind.size())
    found.table("reasons", reasons)
    for p in perturbations:
        counts = reasons.loc[p]
        top = str(counts["flags"].idxmax())
        found.state(
            "reliability.most_flagged_kind",
            perturbation=p,
            kind=top,
            n_flagged=int(counts.loc[top, "flags"]),
            n=int(counts.loc[top, "n"]),
        )
    totals = reasons[REASONS].sum()
    found.state(
        "reliability.rarest_reason",
        reason=str(totals.idxmin()),
        n=int(totals.min()),
        commonest=str(totals.idxmax()),
        n_commonest=int(totals.max()),
    )
    sign_only = int((table.flag_sign & ~table.flag_score).sum())
    if tau < 0.5 and sign_only == 0:
        found.state("reliability.sign_implies_score", tau=tau)
    return found


def summary(
    table: pd.DataFrame,
    *,
    passes: pd.DataFrame,
    ap_passes: pd.DataFrame,
    detection: pd.DataFrame,
    perturbation: str,
    perturbations: list[str],
    n_nodes: int,
) -> Findings:
    """The section verdicts together: the passes of the interval and score (``passes``: one
    row per group with ``components``, ``hvp``, ``third_order``) against AP's (``ap_passes``:
    ``components``, ``forward``), per perturbation the detector's quality
    (:func:`detector_quality` of the AUROC) and the interval's coverage, and the flag counts
    by reason under ``perturbation``."""
    found = Findings("03", "Summary")
    found.table("passes", passes[["components", "forward", "backward", "hvp", "third_order"]])
    found.table("ap_passes", ap_passes[["perturbation", "kind", "components", "forward"]])
    per_component = sorted(set((passes.hvp / passes.components).tolist()))
    if len(per_component) == 1 and not passes.third_order.any():
        ap_extra = sorted(set((ap_passes.forward - ap_passes.components).tolist()))
        found.state(
            "reliability.cost",
            hvp_per_component=int(per_component[0]),
            n_nodes=n_nodes,
            ap_extra_forward=int(ap_extra[0]) if len(ap_extra) == 1 else None,
        )
    for p in perturbations:
        row = detection.loc[f"{p} / all kinds"]
        if row.bad:
            found.state(
                "reliability.detector_quality",
                perturbation=p,
                quality=detector_quality(row.auroc),
                auroc=float(row.auroc),
                auroc_relative=float(row["auroc (relative error only)"]),
                caught=int(row.caught),
                bad=int(row.bad),
            )
        else:
            found.state("reliability.detector_undefined", perturbation=p)
        sub = table[table.perturbation == p]
        found.state(
            "reliability.coverage_measured",
            perturbation=p,
            n_nodes=n_nodes,
            inside=_inside(sub),
            n=len(sub),
        )
    sub = table[table.perturbation == perturbation]
    counts = {reason: int(sub[reason].sum()) for reason in ["flags", *REASONS]}
    found.state("reliability.flag_counts", perturbation=perturbation, n=len(sub), **counts)
    found.state("reliability.flags_feed_fixes")
    return found


def _inside(rows: pd.DataFrame, *, nodes: bool = False) -> int:
    """How many AP lie in ``[lower, upper]`` (or the node-only interval)."""
    lower, upper = (rows.lower_nodes, rows.upper_nodes) if nodes else (rows.lower, rows.upper)
    return int(((lower <= rows.AP) & (rows.AP <= upper)).sum())
