"""The verdicts of notebook 06: the reference circuit, and how well each estimator recovers it.

The functions read the notebook's tables: the head roles of :func:`hvp_utils.ioi_head_roles`
(a :class:`~hvp_utils.analysis.roles.HeadRoles`: one row of evidence per head, its role, the
thresholds it was read with), the per-component estimates (one column per method, AP first
under the label ``truth``), the recovery tables of :func:`hvp_utils.recovery_table` (one row per
estimator: ``precision``, ``auroc``, ``missed``, ``false_positives``) and the faithfulness
curves of :func:`hvp_utils.faithfulness` (``size``, ``faithfulness``, ``method``). Each decides
the verdicts of one notebook section and returns them as
:class:`~hvp_utils.analysis.findings.record.Findings`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from hvp_utils.analysis.findings.record import Findings
from hvp_utils.analysis.roles import EVIDENCE_COLUMNS, HeadRoles, assign_roles

#: The columns of the head-role table recorded beside the role verdicts: the layer, the END
#: attention to each name, every evidence column :func:`hvp_utils.assign_roles` reads (AP
#: first) and the role.
ROLE_COLUMNS = [
    "layer",
    EVIDENCE_COLUMNS[0],
    "end->IO",
    "end->S1",
    "end->S2",
    *EVIDENCE_COLUMNS[1:],
    "role",
]
#: GPT-2's IOI roles (Wang et al. 2022) the notebook looks for, and the evidence each found
#: head is reported with.
GPT2_ROLES = {
    "name mover": ["end->IO", "end->S1", "end->S2", "copy margin", "DLA"],
    "negative name mover": ["end selectivity", "copy margin", "AP", "DLA"],
    "S-inhibition": ["inhibition", "AP"],
    "duplicate token": ["S2->S1"],
    "induction": ["S2->S1+1"],
}
#: The defaults of :func:`hvp_utils.assign_roles`, used where a :class:`HeadRoles` does not
#: carry its thresholds.
DEFAULT_THRESHOLDS = {
    name: float(p.default)
    for name, p in inspect.signature(assign_roles).parameters.items()
    if p.kind is p.KEYWORD_ONLY
}
#: Below this largest gap to AP's faithfulness curve, mean ablation "barely tells them apart".
CLOSE_GAP = 0.1
#: From this lowest AUROC on, the estimators' head rankings are "close to AP's".
CLOSE_AUROC = 0.9


def role_table(roles: HeadRoles, reference: list[str]) -> pd.DataFrame:
    """The evidence columns, ``role`` and ``in circuit`` of every head (the recorded table)."""
    table = roles.table
    missing = [c for c in [*ROLE_COLUMNS, "roles"] if c not in table.columns]
    if missing:
        raise ValueError(
            f"the head-role table lacks columns {missing}; pass the result of "
            "hu.ioi_head_roles(model, task, truth)"
        )
    unknown = sorted(set(reference) - set(table.index))
    if unknown:
        raise ValueError(f"reference heads {unknown[:5]} are not rows of the head-role table")
    out = table[[*ROLE_COLUMNS, "roles"]].copy()
    out["in circuit"] = out.index.isin(reference)
    out.index.name = "head"
    return out


def reference_circuit(
    roles: HeadRoles,
    *,
    reference: list[str],
    threshold_share: float,
    run: Mapping[str, Any],
) -> Findings:
    """The reference circuit (``reference``: ``|AP| >= threshold_share * max|AP|``), its heads
    grouped by (layer, role), and for each of GPT-2's roles (:data:`GPT2_ROLES`) the heads that
    have it, with their evidence, or the evidence that no head has it (:func:`role_verdicts`).
    ``run`` (model, perturbation, prompts, seed) and the role thresholds are recorded as flat
    values; the head-role table (:func:`role_table`) beside them."""
    found = Findings("06", "The reference circuit and the roles of its heads")
    thresholds = {**DEFAULT_THRESHOLDS, **roles.thresholds}
    for key, value in {**run, "threshold_share": threshold_share, **thresholds}.items():
        found.record(key, value)
    table = found.table("head_roles", role_table(roles, reference))
    circuit = table[table["in circuit"]]
    found.state(
        "circuits.reference",
        n_reference=len(circuit),
        n_heads=len(table),
        threshold_share=threshold_share,
        largest_abs_ap=float(table.AP.abs().max()),
        heads=", ".join(circuit.index),
    )
    found.state("circuits.roles", groups=role_groups(circuit))
    for key, values in role_verdicts(table, thresholds):
        found.state(key, **values)
    return found


def role_groups(circuit: pd.DataFrame) -> list[dict[str, Any]]:
    """The circuit's heads by (layer, role), in order of layer then role."""
    return [
        {"layer": int(layer), "role": role, "n": len(g), "heads": ", ".join(g.index)}
        for (layer, role), g in circuit.groupby(["layer", "role"], sort=True)
    ]


def _has(table: pd.DataFrame, role: str) -> pd.Series:
    """Rows whose ``roles`` (every match of :func:`hvp_utils.assign_roles`) include ``role``."""
    return table["roles"].fillna("").map(lambda listed: role in listed.split(", "))


def _largest(column: pd.Series) -> dict[str, Any]:
    """The largest value of a column and its head (None when every value is NaN)."""
    if column.isna().all():
        return {"largest": None, "largest_head": None}
    return {"largest": float(column.max()), "largest_head": str(column.idxmax())}


#: Attention roles: their verdict when missing, the attention column, the threshold's name.
_ATTENTION_ROLES = {
    "duplicate token": ("circuits.no_duplicate_token", "S2->S1", "min_duplicate"),
    "induction": ("circuits.no_induction", "S2->S1+1", "min_induction"),
}


def role_verdicts(
    table: pd.DataFrame, thresholds: Mapping[str, float]
) -> list[tuple[str, dict[str, Any]]]:
    """For each of GPT-2's roles, in :data:`GPT2_ROLES` order: ``circuits.role_found`` with the
    heads whose ``roles`` include it (layer, whether in the circuit, the role's evidence
    columns), or a ``circuits.no_...`` verdict with the numbers that rule it out:

    - name mover, negative name mover: the heads with ``end selectivity > min_selectivity``
      (END attends to IO more than to S1 and S2 together) and their copy margin, AP and DLA, or
      when there are none, the largest end selectivity;
    - S-inhibition: the largest ``inhibition`` (NaN everywhere when no name mover was found,
      so no head was tested);
    - duplicate token, induction: the largest ``S2->S1`` or ``S2->S1+1`` attention.
    """
    verdicts = []
    selective = table[table["end selectivity"] > thresholds["min_selectivity"]]
    attention = {
        "min_selectivity": thresholds["min_selectivity"],
        "n_selective": len(selective),
        "n_heads": len(table),
        **{
            key.replace("largest", "largest_selectivity"): value
            for key, value in _largest(table["end selectivity"]).items()
        },
        "selective": [
            {
                "head": str(head),
                "copy_margin": float(row["copy margin"]),
                "AP": float(row["AP"]),
                "DLA": float(row["DLA"]),
            }
            for head, row in selective.iterrows()
        ],
    }
    for role, columns in GPT2_ROLES.items():
        have = table[_has(table, role)]
        if len(have):
            heads = [
                {
                    "head": str(head),
                    "layer": int(row["layer"]),
                    "in_circuit": bool(row["in circuit"]),
                    **{column: float(row[column]) for column in columns},
                }
                for head, row in have.iterrows()
            ]
            verdicts.append(("circuits.role_found", {"role": role, "heads": heads}))
        elif role == "name mover":
            verdicts.append(
                (
                    "circuits.no_name_mover",
                    {**attention, "min_copy_margin": thresholds["min_copy_margin"]},
                )
            )
        elif role == "negative name mover":
            verdicts.append(
                (
                    "circuits.no_negative_name_mover",
                    {**attention, "min_copy_margin": thresholds["min_copy_margin"]},
                )
            )
        elif role == "S-inhibition":
            tested = table["inhibition"].notna()
            verdicts.append(
                (
                    "circuits.no_s_inhibition",
                    {
                        "n_tested": int(tested.sum()),
                        "min_inhibition": thresholds["min_inhibition"],
                        **_largest(table["inhibition"]),
                    },
                )
            )
        else:
            key, column, threshold = _ATTENTION_ROLES[role]
            values = {"threshold": thresholds[threshold], **_largest(table[column])}
            verdicts.append((key, values))
    return verdicts


def roles_found(table: pd.DataFrame) -> dict[str, Any]:
    """Which of GPT-2's roles some head has (role -> its heads, with their layers), which no
    head has, and how many circuit heads have none of them."""
    found = {}
    for role in GPT2_ROLES:
        have = table[_has(table, role)]
        if len(have):
            found[role] = [
                {"head": str(h), "layer": int(layer)} for h, layer in have["layer"].items()
            ]
    circuit = table[table["in circuit"]]
    none = ~np.logical_or.reduce([_has(circuit, role) for role in GPT2_ROLES])
    return {
        "found": found,
        "missing": [role for role in GPT2_ROLES if role not in found],
        "n_without": int(none.sum()),
        "n_reference": len(circuit),
    }


def recovery(
    scores: pd.DataFrame,
    recovery: pd.DataFrame,
    *,
    reference: list[str],
    truth: str,
    first_order: str,
) -> Findings:
    """The AUROC range over the estimators, which recover the reference exactly at its size
    (precision 1), what the others miss, and whether the first-order estimator
    (``first_order``) is exact, with its largest error ``max|estimate - truth|``."""
    found = Findings("06", "Recovery")
    found.table("head_estimates", scores)
    found.table("recovery", recovery[["precision", "recall", "auroc", "missed", "false_positives"]])
    auroc = recovery.auroc
    if auroc.min() == auroc.max():
        found.state("circuits.auroc_equal", auroc=float(auroc.min()))
    else:
        found.state(
            "circuits.auroc_range",
            min_auroc=float(auroc.min()),
            min_method=str(auroc.idxmin()),
            max_auroc=float(auroc.max()),
            n_estimators=len(recovery),
        )
    exact = recovery.index[recovery.precision == 1.0].tolist()
    found.state(
        "circuits.exact",
        n_exact=len(exact),
        n_estimators=len(recovery),
        methods=exact,
        n_reference=len(reference),
    )
    for method, row in recovery[recovery.precision < 1.0].iterrows():
        found.state(
            "circuits.misses", method=method, missed=row.missed, false_positives=row.false_positives
        )
    error = (scores[first_order] - scores[truth]).abs()
    values = dict(auroc=float(recovery.loc[first_order, "auroc"]))
    if recovery.loc[first_order, "precision"] == 1.0:
        found.state(
            "circuits.first_order_exact",
            **values,
            max_error=float(error.max()),
            max_error_head=str(error.idxmax()),
        )
    else:
        found.state(
            "circuits.first_order_misses", **values, missed=recovery.loc[first_order, "missed"]
        )
    return found


def boundary(
    scores: pd.DataFrame, *, reference: list[str], truth: str, first_order: str
) -> Findings:
    """Whether the first-order ranking keeps the circuit boundary: its weakest circuit head
    against its strongest other head; AP's margin ``min_C|AP| - max_notC|AP|`` against the
    first-order errors on the two heads at AP's boundary; and how far from the boundary the
    largest error falls (``|AP| - max_notC|AP|`` inside, ``min_C|AP| - |AP|`` outside)."""
    found = Findings("06", "Answer")
    size_ap, size_fo = scores[truth].abs(), scores[first_order].abs()
    inside = size_ap.index.isin(reference)
    error = (scores[first_order] - scores[truth]).abs()
    table = pd.DataFrame(
        {"in circuit": inside, "|AP|": size_ap, "|AtP|": size_fo, "|AtP - AP|": error}
    )
    found.table("boundary", table)
    max_head = str(error.idxmax())
    largest = dict(max_error=float(error.max()), max_error_head=max_head)
    fo_in, fo_out = str(size_fo[inside].idxmin()), str(size_fo[~inside].idxmax())
    kept = bool(size_fo[fo_in] > size_fo[fo_out])
    found.state(
        "circuits.answer_keeps" if kept else "circuits.answer_swaps",
        n_reference=len(reference),
        **largest,
        weakest_in=fo_in,
        weakest_in_size=float(size_fo[fo_in]),
        strongest_out=fo_out,
        strongest_out_size=float(size_fo[fo_out]),
    )
    weak_in, strong_out = str(size_ap[inside].idxmin()), str(size_ap[~inside].idxmax())
    margin = float(size_ap[weak_in] - size_ap[strong_out])
    err_in, err_out = float(error[weak_in]), float(error[strong_out])
    if err_in + err_out < margin:
        key = "circuits.margin_holds"
    elif size_fo[weak_in] > size_fo[strong_out]:
        key = "circuits.margin_exceeded_kept"
    else:
        key = "circuits.margin_exceeded_swapped"
    found.state(
        key,
        weakest_in=weak_in,
        weakest_in_ap=float(size_ap[weak_in]),
        strongest_out=strong_out,
        strongest_out_ap=float(size_ap[strong_out]),
        margin=margin,
        error_in=err_in,
        error_out=err_out,
        weakest_in_size=float(size_fo[weak_in]),
        strongest_out_size=float(size_fo[strong_out]),
    )
    worst_in = max_head in reference
    distance = float(
        size_ap[max_head] - size_ap[strong_out]
        if worst_in
        else size_ap[weak_in] - size_ap[max_head]
    )
    found.state(
        "circuits.largest_error_far"
        if largest["max_error"] < distance
        else "circuits.largest_error_near",
        **largest,
        inside=worst_in,
        distance=distance,
    )
    return found


def faithfulness(
    curves: pd.DataFrame, scores: pd.DataFrame, *, reference: list[str], truth: str
) -> Findings:
    """Faithfulness at the reference size ``k``: AP's (above the full model's when > 1),
    which estimators put AP's top-``k`` heads on top (and so match it), and the largest gap
    ``|F_method(k) - F_AP(k)|`` between an estimator's curve and AP's over all sizes (close
    when below :data:`CLOSE_GAP`)."""
    found = Findings("06", "Faithfulness")
    k = len(reference)
    at_reference = curves[curves["size"] == k].set_index("method")[["size", "faithfulness"]]
    found.table("faithfulness_at_reference", at_reference)
    top_sets = {m: ", ".join(sorted(top_k(scores[m], k))) for m in at_reference.index}
    found.table(
        "top_k_sets", pd.DataFrame({"method": list(top_sets), "top_k": list(top_sets.values())})
    )
    faith = float(at_reference.loc[truth, "faithfulness"])
    found.state(
        "circuits.reference_above_full" if faith > 1 else "circuits.reference_faithfulness",
        n_reference=k,
        n_others=len(scores) - k,
        faithfulness=faith,
    )
    others = at_reference.drop(index=truth).faithfulness
    same = [m for m in others.index if top_sets[m] == top_sets[truth]]
    differ = {m: float(v) for m, v in others.items() if m not in same}
    values = dict(n_same=len(same), n_estimators=len(others), n_reference=k)
    if differ:
        found.state("circuits.some_top_sets_differ", **values, differ=differ)
    else:
        found.state("circuits.same_top_sets", **values)
    wide = curves.pivot_table(index="size", columns="method", values="faithfulness", sort=False)
    found.table("faithfulness_curves", wide)
    gap = _gaps(wide, truth)
    max_gap = float(gap.max().max())
    if max_gap == 0:
        found.state("circuits.curves_equal", max_gap=max_gap)
        return found
    method = str(gap.max().idxmax())
    found.state(
        "circuits.curves_close" if max_gap < CLOSE_GAP else "circuits.curves_apart",
        max_gap=max_gap,
        method=method,
        size=int(gap[method].idxmax()),
    )
    return found


def top_k(values: pd.Series, k: int) -> list[str]:
    """The ``k`` components with the largest |value|."""
    return values.abs().nlargest(k).index.tolist()


def why_they_err(wrong: pd.DataFrame, recovery: pd.DataFrame, *, n_reference: int) -> Findings:
    """For each erring estimator (precision < 1) and each head it puts on the wrong side of the
    ``n_reference``-head boundary (``rank <= n_reference`` unlike AP's): its estimate against
    AP's, and for the HVP variants the split of the error into AtP's, the head's own curvature
    ``g''(0)/2`` and the cross terms (which make "most" of it when ``|cross| > |error| / 2``)."""
    found = Findings("06", "Why they err")
    if len(wrong):
        found.table("wrong_heads", wrong)
    else:
        found.state("circuits.no_wrong_heads")
    for method in recovery.index[recovery.precision < 1.0]:
        for head, row in wrong.iterrows():
            rank, rank_ap = int(row[f"rank {method}"]), int(row["rank AP"])
            if (rank <= n_reference) == (rank_ap <= n_reference):
                continue  # this estimator puts the head on the right side of the boundary
            estimate, ap = float(row[method]), float(row["AP"])
            values = dict(
                method=method,
                head=head,
                rank=rank,
                rank_ap=rank_ap,
                inside=rank <= n_reference,
                n_reference=n_reference,
                estimate=estimate,
                ap=ap,
                error=estimate - ap,
            )
            cross_column = f"{method}: cross terms / 2"
            if cross_column not in wrong.columns:
                found.state("circuits.misranked", **values)
                continue
            cross = float(row[cross_column])
            found.state(
                "circuits.misranked_split",
                **values,
                first_error=float(row["AtP"]) - ap,
                curvature=float(row["g''(0)/2"]),
                cross=cross,
                cross_most=abs(cross) > abs(estimate - ap) / 2,
            )
    return found


def positions(scores: pd.DataFrame, recovery: pd.DataFrame, *, reference: list[str]) -> Findings:
    """Recovery at (head, position) granularity: the reference size, how many estimators
    recover it exactly (precision 1), the lowest AUROC, and what the others miss."""
    found = Findings("06", "Heads at each position")
    found.table("position_estimates", scores)
    found.table("recovery_pos", recovery[["precision", "auroc", "missed", "false_positives"]])
    found.state(
        "circuits.positions",
        n_reference=len(reference),
        n_components=len(scores),
        n_exact=int((recovery.precision == 1.0).sum()),
        n_estimators=len(recovery),
        min_auroc=float(recovery.auroc.min()),
        min_method=str(recovery.auroc.idxmin()),
    )
    for method, row in recovery[recovery.precision < 1.0].iterrows():
        found.state(
            "circuits.position_misses",
            method=method,
            missed=row.missed,
            false_positives=row.false_positives,
        )
    return found


def summary(
    roles: HeadRoles,
    *,
    reference: list[str],
    recovery: pd.DataFrame,
    recovery_pos: pd.DataFrame,
    curves: pd.DataFrame,
    truth: str,
    first_order: str,
) -> Findings:
    """The section verdicts together: which of GPT-2's roles some head has and which none has
    (:func:`roles_found`), the lowest AUROC (close when at least :data:`CLOSE_AUROC`), the
    rankings that err, the estimators exact at both granularities, AP's faithfulness at the
    reference size and the largest gap to its curve."""
    found = Findings("06", "Summary")
    found.state("circuits.summary_roles", **roles_found(role_table(roles, reference)))
    auroc = recovery.auroc
    found.state(
        "circuits.rankings_close" if auroc.min() >= CLOSE_AUROC else "circuits.rankings_far",
        min_auroc=float(auroc.min()),
        min_method=str(auroc.idxmin()),
        n_exact=int((recovery.precision == 1.0).sum()),
        n_estimators=len(recovery),
        n_reference=len(reference),
    )
    erring = recovery.index[recovery.precision < 1.0].tolist()
    if erring:
        found.state("circuits.erring", methods=erring, first_order_errs=first_order in erring)
    both = [m for m in recovery.index if m in recovery_pos.index]
    exact_both = [
        m
        for m in both
        if recovery.loc[m, "precision"] == 1.0 and recovery_pos.loc[m, "precision"] == 1.0
    ]
    found.state("circuits.exact_at_both", n_both=len(both), methods=exact_both)
    wide = curves.pivot_table(index="size", columns="method", values="faithfulness", sort=False)
    found.state(
        "circuits.faithfulness_summary",
        faithfulness=float(wide.loc[len(reference), truth]),
        max_gap=float(_gaps(wide, truth).max().max()),
    )
    found.state("circuits.next_notebook")
    return found


def _gaps(wide: pd.DataFrame, truth: str) -> pd.DataFrame:
    """``|F_method(k) - F_truth(k)|`` per size (rows) and estimator (columns)."""
    return wide.drop(columns=truth).sub(wide[truth], axis=0).abs()
