"""The verdicts of notebook 07: what Screen-Flag-Fix gains over AtP alone, and what it costs.

The functions read the notebook's results table: one row per (granularity, perturbation,
method) with ``components``, ``flagged``, ``spearman`` (against AP), ``top-k recall``, the pass
counts ``forward``, ``backward``, ``hvp`` and the wall time ``x AP time`` (as a multiple of AP
everywhere's). The methods are the notebook's rows :data:`ATP`, :data:`PATCH` (and the other
two fixes), :data:`AP` and :data:`HVP`. Each function decides the verdicts of one notebook
section and returns them as :class:`~hvp_utils.analysis.findings.record.Findings`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from hvp_utils.analysis.benchmark import LIKE_AP
from hvp_utils.analysis.findings.record import Findings
from hvp_utils.analysis.screen_flag_fix import DEFAULT_MARGIN

ATP, AP, HVP = "AtP alone", "AP everywhere", "HVP everywhere"
#: The three fixes of Screen-Flag-Fix, the exact one (:data:`PATCH`) first.
FIXES = ("SFF (patch)", "SFF (hvp)", "SFF (multistep)")
PATCH = FIXES[0]
#: The columns of the results table that are the same on every run (no wall time).
ACCURACY_COLUMNS = [
    "granularity",
    "perturbation",
    "method",
    "components",
    "flagged",
    "spearman",
    "nmae",
    "top-k recall",
    "circuit size",
    "forward",
    "backward",
    "hvp",
]
#: The smallest Spearman gain over AtP alone that makes a fix worth it.
MIN_GAIN = 0.01


def gains(
    results: pd.DataFrame, heads: pd.DataFrame, *, featured: str, like_ap: float = LIKE_AP
) -> Findings:
    """Per granularity: whether AtP alone ranks like AP (Spearman >= ``like_ap``) under every
    perturbation, and what the exact fix changes; in how many (granularity, perturbation) cells
    AtP and SFF (patch) recover AP's circuit (top-k recall 1); how often ``patch`` ranks at least
    as well as the other fixes with the fewest passes; and HVP everywhere's passes against AP's.
    ``heads`` (per-head values, recorded) is the table behind the heads' Spearman."""
    found = Findings("07", "What the fix gains over AtP alone")
    found.table("accuracy", results[ACCURACY_COLUMNS])
    found.table("heads", heads)
    perts = perturbations(results, featured=featured)
    table = _by_cell(results)
    for g in dict.fromkeys(results.granularity):
        detail = [
            {
                "perturbation": p,
                "atp": float(table.loc[(g, p, ATP), "spearman"]),
                "sff": float(table.loc[(g, p, PATCH), "spearman"]),
                "flagged": int(table.loc[(g, p, PATCH), "flagged"]),
            }
            for p in perts
        ]
        values = dict(granularity=g, n=_components(table, g, perts), like_ap=like_ap, detail=detail)
        misranks = atp_misranks(table, g, perts, like_ap=like_ap)
        if not misranks:
            found.state("workflow.atp_ranks_like_ap", **values)
            continue
        found.state(
            "workflow.atp_misranks",
            **values,
            misranks=misranks,
            n_perturbations=len(perts),
            towards=all(d["sff"] > d["atp"] for d in detail),
        )
    found.state("workflow.same_circuit", **same_circuit(results))
    found.state("workflow.patch_fix_best", **patch_fix_best(results))
    hvp = results[results.method == HVP].set_index(["granularity", "perturbation"])
    ap = results[results.method == AP].set_index(["granularity", "perturbation"]).loc[hvp.index]
    found.state(
        "workflow.hvp_everywhere_passes",
        extra_forward=sorted({int(v) for v in hvp.forward - ap.forward}),
        backward_per_component=sorted({float(v) for v in hvp.backward / hvp.components}),
        hvp_per_component=sorted({float(v) for v in hvp.hvp / hvp.components}),
    )
    return found


def atp_misranks(
    table: pd.DataFrame, granularity: str, perts: list[str], *, like_ap: float
) -> list[str]:
    """The perturbations under which AtP alone's Spearman is below ``like_ap``."""
    return [p for p in perts if table.loc[(granularity, p, ATP), "spearman"] < like_ap]


def perturbations(results: pd.DataFrame, *, featured: str) -> list[str]:
    """The perturbations of ``results``, the featured one first."""
    return [featured, *[p for p in dict.fromkeys(results.perturbation) if p != featured]]


def same_circuit(results: pd.DataFrame) -> dict[str, int]:
    """In how many (granularity, perturbation) cells AtP alone and SFF (patch) have top-k
    recall 1."""
    atp, sff = results[results.method == ATP], results[results.method == PATCH]
    return {
        "n_atp": int((atp["top-k recall"] == 1.0).sum()),
        "n_sff": int((sff["top-k recall"] == 1.0).sum()),
        "n_cells": len(atp),
    }


def patch_fix_best(results: pd.DataFrame) -> dict[str, int]:
    """Over the cells where all three fixes ran: in how many ``patch`` has the largest Spearman
    (ties count) and the fewest passes ``forward + backward + hvp`` (ties count)."""
    fixes = results[results.method.isin(FIXES)]
    cells = ["granularity", "perturbation"]
    spearman = fixes.pivot_table(index=cells, columns="method", values="spearman").dropna()
    passes = (
        fixes.assign(total=fixes.forward + fixes.backward + fixes.hvp)
        .pivot_table(index=cells, columns="method", values="total")
        .loc[spearman.index]
    )
    others = list(FIXES[1:])
    return {
        "n_best": int((spearman[PATCH] >= spearman[others].max(axis=1)).sum()),
        "n_fewest": int((passes[PATCH] <= passes[others].min(axis=1)).sum()),
        "n_cells": len(spearman),
    }


def budget(
    curve: pd.DataFrame,
    heads: pd.DataFrame,
    *,
    results: pd.DataFrame,
    perturbation: str,
    like_ap: float = LIKE_AP,
) -> Findings:
    """The smallest budget (flagged heads fixed, most curved first) whose Spearman reaches
    ``like_ap``, against the forward passes of AP everywhere on the heads. ``heads`` (per-head
    AtP, curvature, AP and flag, recorded) is the table the curve is computed from."""
    found = Findings("07", "What a budget buys")
    found.table("budget", curve)
    found.table("budget_heads", heads)
    n_flagged = int(heads.flagged.astype(bool).sum())
    rho = dict(zip(curve.budget, curve.spearman, strict=True))
    values = dict(
        perturbation=perturbation,
        like_ap=like_ap,
        n_flagged=n_flagged,
        atp=float(rho[0]),
        all_fixed=float(rho[n_flagged]),
    )
    reached = curve[curve.spearman >= like_ap]
    if not len(reached):
        found.state("workflow.budget_never", **values)
    elif reached.budget.min() == 0:
        found.state("workflow.budget_none_needed", **values)
    else:
        enough = int(reached.budget.min())
        ap_forward = _by_cell(results).loc[("heads", perturbation, AP), "forward"]
        found.state(
            "workflow.budget_reaches",
            **values,
            n_fixed=enough,
            reached=float(rho[enough]),
            ap_forward=int(ap_forward),
        )
    return found


def pays_off(results: pd.DataFrame, *, featured: str, min_gain: float = MIN_GAIN) -> Findings:
    """Per granularity, from wall time: whether SFF (patch) is cheaper than AP everywhere
    (``x AP time < 1``) and worth it (Spearman gain over AtP alone >= ``min_gain``) under each
    perturbation; and in how many runs HVP everywhere took longer than AP everywhere."""
    found = Findings("07", "Where Screen-Flag-Fix pays off (wall time)")
    found.table(
        "timings", results[["granularity", "perturbation", "method", "spearman", "x AP time"]]
    )
    perts = perturbations(results, featured=featured)
    times = _by_cell(results)["x AP time"]
    for g, (cheaper, worth) in verdicts_by_granularity(results, perts, min_gain).items():
        values: dict[str, Any] = dict(
            granularity=g,
            perturbations=perts,
            costs=[float(times[g, p, PATCH]) for p in perts],
            lifts=_lifts(results, g, perts),
            cheaper=cheaper,
            worth=worth,
            min_gain=min_gain,
        )
        both = [p for p in perts if p in cheaper and p in worth]
        if len(both) == len(perts):
            found.state("workflow.pays_off", **values)
        elif not cheaper and worth:
            found.state("workflow.ap_better_buy", **values)
        elif cheaper and not worth:
            atp_costs = [float(times[g, p, ATP]) for p in perts]
            found.state("workflow.screen_enough", **values, atp_costs=atp_costs)
        else:
            found.state("workflow.pays_off_partly", **values, both=both)
    hvp = results[results.method == HVP]["x AP time"]
    found.state(
        "workflow.hvp_everywhere_slower",
        n_slower=int((hvp > 1).sum()),
        n_runs=len(hvp),
        fastest=float(hvp.min()),
        slowest=float(hvp.max()),
    )
    return found


def verdicts_by_granularity(
    results: pd.DataFrame, perts: list[str], min_gain: float
) -> dict[str, tuple[list[str], list[str]]]:
    """Per granularity: the perturbations under which SFF (patch) is cheaper than AP everywhere
    (``x AP time < 1``), and those under which it lifts Spearman by at least ``min_gain``."""
    times = _by_cell(results)["x AP time"]
    verdicts = {}
    for g in dict.fromkeys(results.granularity):
        lifts = dict(zip(perts, _lifts(results, g, perts), strict=True))
        cheaper = [p for p in perts if times[g, p, PATCH] < 1]
        verdicts[g] = (cheaper, [p for p in perts if lifts[p] >= min_gain])
    return verdicts


def answer(results: pd.DataFrame, *, featured: str, min_gain: float = MIN_GAIN) -> Findings:
    """The granularities where SFF (patch) pays off under every perturbation (cheaper than AP
    everywhere and worth ``min_gain`` of Spearman), then each granularity's verdict."""
    found = Findings("07", "Answer")
    perts = perturbations(results, featured=featured)
    verdicts = verdicts_by_granularity(results, perts, min_gain)
    everywhere = [
        g for g, (cheaper, worth) in verdicts.items() if len(cheaper) == len(worth) == len(perts)
    ]
    found.state("workflow.answer_pays_at", granularities=everywhere)
    table = _by_cell(results)
    for g, (cheaper, worth) in verdicts.items():
        values = dict(granularity=g, n=_components(table, g, perts), min_gain=min_gain)
        if g in everywhere:
            found.state("workflow.answer_pays_off", **values)
        elif not cheaper and len(worth) == len(perts):
            found.state("workflow.answer_few_components", **values)
        elif len(cheaper) == len(perts) and not worth:
            found.state("workflow.answer_screen_enough", **values)
        else:
            found.state("workflow.answer_mixed", **values, cheaper=cheaper, worth=worth)
    return found


def summary(results: pd.DataFrame, *, featured: str, like_ap: float = LIKE_AP) -> Findings:
    """The section verdicts together: per granularity, whether AtP misranks (Spearman below
    ``like_ap``) and the passes SFF (patch) spends against AP's under ``featured``; the
    circuits recovered; and whether ``patch`` is the best fix everywhere."""
    found = Findings("07", "Summary")
    perts = perturbations(results, featured=featured)
    table = _by_cell(results)
    for g in dict.fromkeys(results.granularity):
        sff, ap = table.loc[(g, featured, PATCH)], table.loc[(g, featured, AP)]
        values = dict(
            granularity=g,
            n=int(ap.components),
            like_ap=like_ap,
            featured=featured,
            sff_forward=int(sff.forward),
            sff_backward=int(sff.backward),
            sff_hvp=int(sff.hvp),
            ap_forward=int(ap.forward),
        )
        misranks = atp_misranks(table, g, perts, like_ap=like_ap)
        if misranks:
            spearman = {
                m: [float(table.loc[(g, p, m), "spearman"]) for p in perts] for m in (ATP, PATCH)
            }
            found.state(
                "workflow.summary_misranks",
                **values,
                misranks=misranks,
                atp=spearman[ATP],
                sff=spearman[PATCH],
            )
        else:
            found.state("workflow.summary_ranks_like_ap", **values)
    circuits = same_circuit(results)
    if circuits["n_atp"] == circuits["n_cells"]:
        found.state("workflow.summary_same_circuit_everywhere", **circuits)
    else:
        found.state("workflow.summary_same_circuit", **circuits)
    best = patch_fix_best(results)
    if best["n_best"] == best["n_fewest"] == best["n_cells"]:
        found.state("workflow.summary_patch_best_everywhere", **best)
    else:
        found.state("workflow.summary_patch_best", **best)
    found.state("workflow.summary_wall_time")
    return found


def _by_cell(results: pd.DataFrame) -> pd.DataFrame:
    return results.set_index(["granularity", "perturbation", "method"])


def _components(table: pd.DataFrame, granularity: str, perts: list[str]) -> int:
    return int(table.loc[(granularity, perts[0], ATP), "components"])


def _lifts(results: pd.DataFrame, granularity: str, perts: list[str]) -> list[float]:
    """SFF (patch)'s Spearman minus AtP alone's, per perturbation."""
    spearman = _by_cell(results).spearman
    return [float(spearman[granularity, p, PATCH] - spearman[granularity, p, ATP]) for p in perts]


#: Columns of the notebook's margin table (one row per screen, i.e. per granularity and
#: perturbation): the calibrated margin; and, on the held-out half, the share of components
#: whose AP lies in their interval and the components whose interval straddles the circuit's
#: cut, each as ``"{column}, {at}"`` with ``at`` "margin 2" or "calibrated".
CALIBRATED, COVERED, FLAGGED = "calibrated margin", "held-out covered", "held-out flagged"


def margins(
    table: pd.DataFrame,
    heads: pd.DataFrame,
    *,
    coverage: float,
    margin: float = DEFAULT_MARGIN,
) -> Findings:
    """Calibrating the flag's margin.

    ``table`` has one row per screen with ``granularity``, ``perturbation``, ``components``,
    ``unchanged`` (components with AtP and g'' exactly 0: the same in the clean and corrupted
    runs, in neither half), ``calibration``, ``held out``, ``threshold`` (the circuit's cut),
    :data:`CALIBRATED` (the smallest margin whose intervals hold the AP of ``coverage`` of the
    calibration half) and the held-out :data:`COVERED` share and :data:`FLAGGED` count at
    ``margin`` and at the calibrated margin. ``heads`` (per head: AtP, curvature, AP and
    whether it is in the calibration half; recorded) is what the heads' rows come from.

    The sentences state, per granularity, the calibrated margins and whether ``margin`` is too
    narrow or wider than needed for ``coverage``; how many components were left out as
    unchanged; the held-out coverage at both margins; the threshold flags at both; and that
    all of it rests on one prompt sample and one split."""
    found = Findings("07", "Calibrating the margin")
    found.table("margins", table)
    found.table("margin_heads", heads)
    default = f"margin {margin:g}"
    share = f"{coverage:.0%}"
    found.record("margin_coverage", coverage)
    found.record("margin_default", margin)
    perts = list(dict.fromkeys(table.perturbation))
    granularities = list(dict.fromkeys(table.granularity))
    by_cell = table.set_index(["granularity", "perturbation"])
    calibrated = {g: [float(by_cell.loc[(g, p), CALIBRATED]) for p in perts] for g in granularities}
    found.record("margin_calibrated", calibrated)
    narrow = found.record(
        "margin_too_narrow", [g for g in granularities if min(calibrated[g]) >= margin]
    )
    wide = found.record(
        "margin_too_wide", [g for g in granularities if max(calibrated[g]) < margin]
    )
    mixed = [g for g in granularities if g not in narrow and g not in wide]
    listed = "; ".join(
        f"{g} {' and '.join(f'{m:.2f}' for m in calibrated[g])}" for g in granularities
    )
    verdicts = []
    if narrow:
        verdicts.append(f"too narrow at {_and(narrow)}")
    if wide:
        verdicts.append(f"wider than needed at {_and(wide)}")
    if mixed:
        some = "one perturbation" if len(perts) == 2 else "some perturbations"
        verdicts.append(f"too narrow under {some} only, at {_and(mixed)}")
    found.say(
        f"The smallest margin whose intervals hold the AP of {share} of the calibration half, "
        f"under {_and([f'`{p}`' for p in perts])}: {listed}. For this target {default} is "
        f"{', and '.join(verdicts)}."
    )
    unchanged = {
        g: [int(by_cell.loc[(g, p), "unchanged"]) for p in perts]
        for g in granularities
        if by_cell.loc[g, "unchanged"].any()
    }
    found.record("margin_unchanged", unchanged)
    if unchanged:
        listed = "; ".join(
            f"{' and '.join(str(k) for k in dict.fromkeys(counts))} of the "
            f"{int(by_cell.loc[(g, perts[0]), 'components'])} at {g}"
            for g, counts in unchanged.items()
        )
        found.say(
            f"Some components are the same in the clean and the corrupted run (AtP and g'' "
            f"exactly 0): {listed}. Patching them changes nothing, so they are left out of "
            "both halves."
        )
    held = {at: table[f"{COVERED}, {at}"].astype(float).tolist() for at in (default, "calibrated")}
    met = found.record(
        "margin_met", {at: sum(v >= coverage - 1e-9 for v in shares) for at, shares in held.items()}
    )
    found.record("margin_held_out", {at: [min(v), max(v)] for at, v in held.items()})
    n = len(table)
    found.say(
        "On the held-out halves the calibrated margin holds the AP of "
        f"{_range(held['calibrated'])} of the components, reaching {share} on "
        f"{met['calibrated']} of the {n} screens; {default} holds {_range(held[default])} "
        f"(reaching {share} on {met[default]})."
    )
    flagged = {at: table[f"{FLAGGED}, {at}"].astype(int).tolist() for at in (default, "calibrated")}
    pairs = list(zip(flagged["calibrated"], flagged[default], strict=True))
    counts = found.record(
        "margin_flags",
        {
            "calibrated": sum(flagged["calibrated"]),
            "default": sum(flagged[default]),
            "fewer": sum(c < d for c, d in pairs),
            "more": sum(c > d for c, d in pairs),
        },
    )
    change = [
        f"{word} on {k}"
        for word, k in (
            ("fewer", counts["fewer"]),
            ("more", counts["more"]),
            ("as many", n - counts["fewer"] - counts["more"]),
        )
        if k
    ]
    found.say(
        f"The calibrated intervals flag {counts['calibrated']} held-out components in all as "
        f"straddling the circuit's cut, {default} flags {counts['default']} ({', '.join(change)} "
        f"of the {n} screens). A wider interval straddles the cut wherever a narrower one "
        f"does, so the flags follow the margin: never more where it is below {margin:g}, never "
        "fewer where it is above."
    )
    sizes = found.record(
        "margin_calibration_sizes", [int(table.calibration.min()), int(table.calibration.max())]
    )
    fewest = str(table.granularity[table.calibration.idxmin()])
    found.say(
        f"Each calibrated margin is one order statistic of {sizes[0]} to {sizes[1]} "
        "calibration components, from this prompt sample and one random split: another sample "
        f"or split moves it, the more so the fewer the components ({fewest})."
    )
    return found


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _range(shares: list[float]) -> str:
    low, high = min(shares), max(shares)
    return f"{low:.0%}" if f"{low:.0%}" == f"{high:.0%}" else f"{low:.0%} to {high:.0%}"
