"""The wording of every verdict, in one place.

A rule of the analysis layer decides a verdict (a key of :data:`SENTENCES`) and the values it
states; this module turns the two into a sentence. Rewording a verdict is an edit here alone:
the rules and the claim tests speak of keys and values, never of words.

A sentence is a :meth:`str.format` template over the verdict's values, or, where the wording
depends on the values (a list, a count), a function of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hvp_utils.analysis.benchmark import LIKE_AP, ROUGHLY_LIKE_AP


def count_phrase(n: int, total: int, noun: str, *, plural: str | None = None) -> str:
    """'all 32 heads', 'none of the 32 heads', 'the one head', '31 of 32 heads'."""
    many = plural or f"{noun}s"
    if total == 1:
        return f"the one {noun}" if n == 1 else f"not the one {noun}"
    if n == total:
        return f"all {total} {many}"
    if n == 0:
        return f"none of the {total} {many}"
    return f"{n} of {total} {many}" if n > 1 else f"1 of {total} {many}"


#: How a share of the AtP error carried downstream reads (bands of ``diagnosis.share_band``).
SHARE_BANDS = {
    "almost_all_downstream": "almost all downstream",
    "mostly_downstream": "mostly downstream",
    "about_even": "about even",
    "mostly_local": "mostly local",
    "almost_all_local": "almost all local",
}

#: What the local map of a kind is, in words.
LOCAL_MAP_OF = {
    "head_q": "queries (the softmax)",
    "head_k": "keys (the softmax)",
    "neuron_pre": "neuron pre-activations (the activation function)",
}


def _checks_hold(v: Mapping[str, Any]) -> str:
    n, total = v["n_passed"], v["n_perturbations"]
    where = "both perturbations" if n == total == 2 else count_phrase(n, total, "perturbation")
    return (
        f"On {where} every check above holds to within 1e{v['exponent']}: the two terms add up "
        "to AP - AtP, the two curvature terms to the HVP's g''(0), and the kinds without a local "
        "map have E_local = 0."
    )


def _dominance(v: Mapping[str, Any]) -> str:
    down, second = v["down_share"], v["second_down_share"]
    return (
        f"`{v['perturbation']}`, {v['kind']}: the AtP error is {SHARE_BANDS[v['band']]} "
        f"({down:.0%} downstream, {1 - down:.0%} local); the curvature g''(0) is "
        f"{SHARE_BANDS[v['second_band']]} ({second:.0%} downstream)."
    )


def _kind_bands(v: Mapping[str, Any]) -> str:
    bands = v["bands"]
    if len(bands) == 2 and len(set(bands.values())) == 1:
        words = f"{SHARE_BANDS[next(iter(bands.values()))]} under both perturbations"
    else:
        words = " and ".join(f"{SHARE_BANDS[b]} under `{p}`" for p, b in bands.items())
    return f"For {LOCAL_MAP_OF[v['kind']]} the error is {words}."


def ordinal(n: int) -> str:
    """'1st', '2nd', '3rd', '4th', ..., '11th', '21st'."""
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _sign_agreement(v: Mapping[str, Any]) -> str:
    heads = count_phrase(v["n_sign_right"], v["n_clear"], "head")
    return (
        f"AtP gives the right sign to {heads} whose effect is clearly non-zero "
        "(|AP| above 5% of the largest)."
    )


def _largest_error(v: Mapping[str, Any]) -> str:
    rank = v["ap_rank"]
    which = "the largest effect" if rank == 1 else f"the {ordinal(rank)} largest effect"
    return (
        f"The largest error is on {v['component']} (AP {v['AP']:+.3f}, AtP {v['AtP']:+.3f}), "
        f"the head with {which}."
    )


def _path_bend(v: Mapping[str, Any]) -> str:
    bend = v["bend"]
    how = (
        "upward (it lies above its tangent)" if bend > 0 else "downward (it lies below its tangent)"
    )
    return (
        f"The path of {v['component']} changes the metric by AP = {v['AP']:+.3f} from t = 0 to 1, "
        f"and its tangent at 0 predicts AtP = {v['AtP']:+.3f}: AP - AtP = {bend:+.3f}, so on "
        f"average over [0, 1] the path bends {how}."
    )


def _second_order_closer(v: Mapping[str, Any]) -> str:
    heads = count_phrase(v["n_better"], v["n"], "head")
    return f"Adding g''(0)/2 brings the estimate closer to AP for {heads} with the largest effects."


def _by_hand_passes(v: Mapping[str, Any]) -> str:
    b = v["atp_backward"]
    return (
        f"Activation patching of the {v['n']} heads costs {v['ap_forward']} forward passes over "
        f"the prompt batch; AtP costs {v['atp_forward']} forward and {b} backward "
        f"pass{'es' if b != 1 else ''} for all of them, and ranks the heads with a Spearman "
        f"correlation of {v['spearman']:.2f} to AP."
    )


def _hvp_closer(v: Mapping[str, Any]) -> str:
    heads = count_phrase(v["n_better"], v["n"], "head")
    return (
        "One Hessian-vector product per head, AtP + g''(0)/2, is closer to AP than AtP for "
        f"{heads} with the largest effects."
    )


#: How notebook 00's summary opens: the metric on both runs and the top head's patch.
_GAP = (
    "The logit difference is {clean_metric:.2f} on the clean prompts and {corrupted_metric:.2f} "
    "on the corrupted ones; patching the clean output of {component} alone into the corrupted "
    "run "
)


def _top_moves_away(v: Mapping[str, Any]) -> str:
    away = f"moves the metric away from the clean value, by {-v['share']:.0%} of the gap."
    return _GAP.format(**v) + away


def _detector(v: Mapping[str, Any]) -> str:
    bad, caught, flagged = v["bad"], v["caught"], v["flagged"]
    return (
        f"`{v['perturbation']}`, all kinds: {count_phrase(bad, v['n'], 'AtP estimate')} are bad; "
        f"the score ranks a bad one above a good one with probability {v['auroc']:.2f} (AUROC); "
        f"the flags catch {caught} of the {bad} and {flagged - caught} of the {flagged} flags are "
        "false alarms."
    )


def _recall_undefined(v: Mapping[str, Any]) -> str:
    return (
        f"Recall is undefined (NaN) for {', '.join(v['groups'])}: no AtP estimate there is bad, "
        "so there is nothing to catch."
    )


def _precision_undefined(v: Mapping[str, Any]) -> str:
    return f"Precision is undefined (NaN) for {', '.join(v['groups'])}: nothing there is flagged."


def _relative_calls_bad(v: Mapping[str, Any]) -> str:
    return (
        f"`{v['perturbation']}`: relative error alone would call {v['component']} bad "
        f"({v['rel_error']:.0%} off), although its error is {v['error']:.1e} logits, "
        f"{100 * v['share']:.2g}% of the largest effect of its kind; here it counts as good."
    )


def _coverage(v: Mapping[str, Any]) -> str:
    inside, n = v["inside"], v["n"]
    return (
        f"`{v['perturbation']}`: the Lagrange interval holds AP for "
        f"{count_phrase(inside, n, 'component')} (measured coverage {inside / n:.0%}); its median "
        f"width is {v['median_width']:.2f} x |AP|."
    )


def _outside(v: Mapping[str, Any]) -> str:
    k = v["n_outside"]
    return (
        f"`{v['perturbation']}`: {k} AP effect{'s' if k > 1 else ''} fall outside: there the "
        "samples underestimate the true maximum of |g''|, so the interval is no bound."
    )


def _most_flagged_kind(v: Mapping[str, Any]) -> str:
    where = (
        " (the queries, whose patch passes through the attention softmax, the local "
        "non-linearity of notebook 02)"
        if v["kind"] == "head_q"
        else ""
    )
    flagged = count_phrase(v["n_flagged"], v["n"], "component")
    return (
        f"`{v['perturbation']}`: {v['kind']} collects the most flags{where}: {flagged} of that "
        "kind are flagged."
    )


def _reliability_cost(v: Mapping[str, Any]) -> str:
    k, extra = v["hvp_per_component"], v["ap_extra_forward"]
    ap = f"; AP costs N + {extra} forward passes for N components" if extra is not None else ""
    return (
        f"The Lagrange interval and the score together cost {k} second-order "
        f"pass{'es' if k != 1 else ''} per component ({v['n_nodes']} path samples) and no "
        f"third-order pass{ap}."
    )


#: How a detector of a given AUROC band reads (bands of ``reliability.detector_quality``).
DETECTOR_QUALITY = {
    "strong": "a strong",
    "useful": "a useful",
    "weak": "a weak",
    "chance": "no better than a chance",
}


def _detector_quality(v: Mapping[str, Any]) -> str:
    return (
        f"`{v['perturbation']}`: the reliability score is {DETECTOR_QUALITY[v['quality']]} "
        f"detector of AtP errors that matter (AUROC {v['auroc']:.2f}; {v['auroc_relative']:.2f} "
        f"against the relative error alone), and the flags catch {v['caught']} of the "
        f"{v['bad']} bad estimates."
    )


def _coverage_measured(v: Mapping[str, Any]) -> str:
    inside = count_phrase(v["inside"], v["n"], "component")
    return (
        f"`{v['perturbation']}`: the Lagrange interval, with max |g''| estimated from "
        f"{v['n_nodes']} path samples, holds AP for {inside}; a measured coverage, not a guarantee."
    )


def _flag_counts(v: Mapping[str, Any]) -> str:
    return (
        f"`{v['perturbation']}`: {count_phrase(v['flags'], v['n'], 'component')} are flagged: "
        f"{v['flag_score']} by the score, {v['flag_sign']} by a sign change and "
        f"{v['flag_threshold']} because the Lagrange interval straddles the circuit threshold."
    )


#: The noun of one component of a kind ("the 32 heads").
KIND_NOUNS = {"head_out": "head", "mlp_out": "MLP", "neuron": "neuron"}


def percent(share: float) -> str:
    """A share in whole percent, without a '-0%'."""
    return f"{0 if round(100 * share) == 0 else share:.0%}"


def gap_phrase(share: float) -> str:
    """'more than the whole gap (139%)', 'almost the whole gap (93%)', '56% of the gap'."""
    if share > 1:
        return f"more than the whole gap ({share:.0%})"
    if share >= 0.9:
        return f"almost the whole gap ({share:.0%})"
    return f"{share:.0%} of the gap"


#: How a path with g'' of both signs at the midpoint nodes bends (``attribution.remainder``).
BENDS = {
    "up_then_down": "upward near the corrupted end and downward near the clean end",
    "down_then_up": "downward near the corrupted end and upward near the clean end",
    "both_ways": "both ways",
}


def _remainder_mixed(v: Mapping[str, Any]) -> str:
    return (
        f"On the path of {v['component']} (`{v['perturbation']}`), g''(t) is positive at "
        f"{v['n_up']} of the {v['n_nodes']} nodes: the path bends {BENDS[v['bend']]}, so the sign "
        "of the remainder is that of the weighted balance, and the weight 1 - t counts the start "
        f"of the path most. Here AtP lies {v['side']} AP."
    )


def _remainder_midpoint(v: Mapping[str, Any]) -> str:
    ap, atp, integral = v["AP"], v["AtP"], v["integral"]
    error = ap - atp
    return (
        f"The midpoint rule with {v['n_nodes']} nodes gives int (1 - t) g''(t) dt = "
        f"{integral:+.3f}, against AP - AtP = {ap:+.3f} - ({atp:+.3f}) = {error:+.3f}: the exact "
        f"integral is AP - AtP, so the difference, {integral - error:+.3f}, is the error of the "
        "rule, which shrinks like 1/n² with n nodes."
    )


def _accuracy_ranking(v: Mapping[str, Any]) -> str:
    kinds = v["kinds"]
    ranking = ", then ".join(
        f"{kind} ({value:.1%})" for kind, value in zip(kinds, v["nmae"], strict=True)
    )
    return (
        f"`{v['perturbation']}`: AtP is most accurate on {kinds[0]} and least on {kinds[-1]}; by "
        f"NMAE: {ranking}."
    )


def _error_sides(v: Mapping[str, Any]) -> str:
    noun = KIND_NOUNS.get(v["kind"], v["kind"])
    return (
        f"`{v['perturbation']}`, {v['kind']}: AtP lies below AP for "
        f"{count_phrase(v['below'], v['n'], noun)} and above it for {v['above']}; among the clear "
        f"effects, below for {count_phrase(v['clear_below'], v['clear'], noun)}; the ones below "
        f"AP carry {v['below_share']:.0%} of the total |AtP - AP|."
    )


def _error_both_sides(v: Mapping[str, Any]) -> str:
    groups = ", ".join(f"`{p}` {kind}" for p, kind in v["groups"])
    return (
        f"The sign of the error is not fixed: AtP falls on both sides of AP for {groups}, so some "
        "paths bend upward (g'' > 0 somewhere) and others downward (g'' < 0 somewhere). No single "
        "factor can correct AtP; the curvature of each path has to be measured (notebooks 03 and "
        "04)."
    )


def _worst_relative(v: Mapping[str, Any]) -> str:
    return (
        f"{v['kind']}: {v['component']} (AP {v['AP']:+.3f}, AtP {v['AtP']:+.3f}, "
        f"{100 * v['rel_error']:.0f}% off)."
    )


def _gap_top_two(v: Mapping[str, Any]) -> str:
    first, second = v["shares"]
    return (
        f"`{v['perturbation']}` (gap {v['gap']:.2f} logits): patching {v['first']} alone restores "
        f"{gap_phrase(first)}, {v['second']} alone {gap_phrase(second)}."
    )


def _gap_positions(v: Mapping[str, Any]) -> str:
    finals, names = v["final_shares"], v["name_shares"]
    return (
        f"`{v['perturbation']}`: patched at the final position only, {v['first']} and "
        f"{v['second']} keep {percent(finals[0])} and {percent(finals[1])} of their all-position "
        "effect; patched at the name positions only, where the names' own token embeddings "
        f"enter, {percent(names[0])} and {percent(names[1])}."
    )


def _atp_cost(v: Mapping[str, Any]) -> str:
    f, b = v["forward"], v["backward"]
    which = (
        " (the clean run, the corrupted run, the corrupted forward pass that the backward pass "
        "differentiates, and that backward pass)"
        if (f, b) == (3, 1)
        else ""
    )
    return (
        f"AtP costs {f} forward and {b} backward pass{'es' if b != 1 else ''} for every kind, "
        f"from {v['min_components']} to {v['max_components']} components{which}."
    )


def _ap_cost(v: Mapping[str, Any]) -> str:
    listed = ", ".join(
        f"{f} for {n} {KIND_NOUNS.get(kind, kind)}s"
        for kind, f, n in zip(v["kinds"], v["forward"], v["components"], strict=True)
    )
    return (
        f"AP costs N + {v['extra']} forward passes for N components ({listed}) and no backward "
        "pass."
    )


#: How AtP ranks a kind's components (bands of ``attribution.rank_agreement``).
RANK_AGREEMENT = {
    "like_ap": "like AP",
    "roughly_like_ap": "roughly like AP",
    "differently": "differently from AP",
}


#: The Spearman band of each ``attribution.rank_agreement`` verdict.
RANK_BANDS = {
    "like_ap": f"at least {LIKE_AP:g}",
    "roughly_like_ap": f"at least {ROUGHLY_LIKE_AP:g}, below {LIKE_AP:g}",
    "differently": f"below {ROUGHLY_LIKE_AP:g}",
}


def _kind_accuracy(v: Mapping[str, Any]) -> str:
    low, high = v["spearman_min"], v["spearman_max"]
    spearman = (
        f"Spearman {low:.3f}"
        if f"{low:.3f}" == f"{high:.3f}"
        else f"Spearman {low:.3f} to {high:.3f}"
    )
    sizes = (
        f"and its sizes are nearly exact (NMAE at most {v['nmae_max']:.1%})"
        if v["nearly_exact"]
        else f"but misses their sizes by {v['nmae_min']:.0%} to {v['nmae_max']:.0%} on average "
        "(NMAE)"
    )
    return (
        f"{v['kind']}: AtP ranks the {v['n']} {KIND_NOUNS.get(v['kind'], v['kind'])}s "
        f"{RANK_AGREEMENT[v['ranks']]} under both perturbations ({spearman}; the lower "
        f"{RANK_BANDS[v['ranks']]}) {sizes}."
    )


def _cost_summary(v: Mapping[str, Any]) -> str:
    b = v["atp_backward"]
    return (
        f"AtP costs {v['atp_forward']} forward and {b} backward pass{'' if b == 1 else 'es'} for "
        "any number of components; AP costs one forward pass per component plus "
        f"{v['ap_extra']}."
    )


#: The sign verdict in the summary of notebook 01 (bands of ``attribution.error_sides``).
ERROR_SIDES = {
    "all_below": "AtP lies below AP for every component: the paths bend upward.",
    "clear_below": (
        "AtP lies below AP for every clear effect (upward-bending paths); small effects fall on "
        "both sides."
    ),
    "both_sides": (
        "AtP falls on both sides of AP: some paths bend upward, others downward, so the error "
        "has no fixed sign."
    ),
}


def _error_sides_summary(v: Mapping[str, Any]) -> str:
    return ERROR_SIDES[v["sides"]]


def _top_mlp(v: Mapping[str, Any]) -> str:
    tail = (
        ", nearly all of it at the final position, downstream of the attention that moves the "
        "names there."
        if v["through_final"]
        else "."
    )
    return f"`{v['perturbation']}`: {v['component']} alone restores {gap_phrase(v['share'])}{tail}"


def _names(kinds: list[str]) -> str:
    return ", ".join(kinds)


def _check_agrees(v: Mapping[str, Any]) -> str:
    return (
        f"On the {v['n_components']} checked components, g'(0) and g''(0) agree with autograd, "
        "`torch.autograd.functional.hvp` and finite differences to within "
        f"{max(v['max_relative_disagreement'], 1e-16):.0e} (relative)."
    )


def _answer_lowers(v: Mapping[str, Any]) -> str:
    which = (
        f"only for {v['best']}"
        if v["n_lowered"] == 1
        else f"for {count_phrase(v['n_lowered'], v['n_kinds'], 'kind')}, most for {v['best']}"
    )
    raised = f"; it raises it for {_names(v['raised'])}." if v["raised"] else "."
    return (
        f"`{v['perturbation']}`: the correction lowers the NMAE {which} (to {v['gain']:.2f}x "
        f"AtP's NMAE){raised}"
    )


def _overshoots(v: Mapping[str, Any]) -> str:
    n = v["n_overshot"]
    ways = (
        f" ({v['n_points_away']} because it points away from AP, {v['n_goes_too_far']} because "
        "it goes more than twice AtP's error)."
        if n
        else "."
    )
    return (
        f"`{v['perturbation']}`: the correction overshoots "
        f"{count_phrase(n, v['n_clear'], 'clear effect')}{ways}"
    )


def _kinds_all_overshot(v: Mapping[str, Any]) -> str:
    return f"`{v['perturbation']}`: for {_names(v['kinds'])} every clear effect is overshot."


def _kinds_never_overshot(v: Mapping[str, Any]) -> str:
    return f"`{v['perturbation']}`: for {_names(v['kinds'])} no clear effect is overshot."


def _worst_overshoot(v: Mapping[str, Any]) -> str:
    how = "points away from AP" if v["points_away"] else "goes more than twice AtP's error"
    return (
        f"The worst is {v['component']} under `{v['perturbation']}`: AP {v['AP']:.2f}, AtP "
        f"{v['AtP']:.2f}, AtP + g''(0)/2 = {v['corrected']:.2f}; the correction {how}, and the "
        f"error grows from {v['atp_error']:.2f} to {v['hvp_error']:.2f}."
    )


def _joint_cross_terms(v: Mapping[str, Any]) -> str:
    groups = count_phrase(v["n_larger"], v["n_groups"], "(perturbation, kind) group")
    return (
        f"The joint mode's cross terms are larger than the curvature it is after in {groups}, "
        f"and above half of it in {v['n_over_half']}."
    )


def _hutchinson_closer(v: Mapping[str, Any]) -> str:
    return (
        f"Hutchinson with S={v['n_probes']} random-sign probes is closer to the diagonal g''(0) "
        f"than the joint mode in {count_phrase(v['n_closer'], v['n_groups'], 'group')} (mean "
        f"error {v['ratio_min']:.2f} to {v['ratio_max']:.2f} of mean |g''|)."
    )


def _kind_nmae(v: Mapping[str, Any], change: str) -> str:
    factor = f"{v['ratio']:.2f}x" if v["ratio"] is not None else "n/a"
    return (
        f"`{v['perturbation']}` {v['kind']}: the per-component correction {change} AtP's NMAE "
        f"from {v['atp_nmae']:.3f} to {v['diag_nmae']:.3f} ({factor}); the most accurate here "
        f"is {v['best']}."
    )


def _kind_cuts(v: Mapping[str, Any]) -> str:
    return _kind_nmae(v, "cuts")


def _kind_raises(v: Mapping[str, Any]) -> str:
    return _kind_nmae(v, "raises")


def _hvp_matches(v: Mapping[str, Any]) -> str:
    return (
        "The second-order term is one Hessian-vector product per direction; `hvp_utils` "
        "computes it by double backward on replicated batches, and it matches "
        "`torch.autograd.functional.hvp` and finite differences to within "
        f"{max(v['max_relative_disagreement'], 1e-16):.0e}."
    )


def _lowers_some_kinds(v: Mapping[str, Any]) -> str:
    return (
        f"`{v['perturbation']}`: the per-component correction lowers AtP's NMAE for "
        f"{_names(v['helped'])} and raises it for {_names(v['hurt'])}."
    )


def _overshoot_ways(v: Mapping[str, Any]) -> str:
    return (
        f"`{v['perturbation']}`: it overshoots "
        f"{count_phrase(v['n_overshot'], v['n_clear'], 'clear effect')}: in "
        f"{v['n_points_away']} the curvature at t = 0 has the opposite sign of its path "
        f"average, in {v['n_goes_too_far']} it is more than twice that average."
    )


CELL = "(perturbation, kind) cell"


def _duel(v: Mapping[str, Any], accuracy: str) -> str:
    a, b = v["challenger"], v["incumbent"]
    spread = f"{a}'s NMAE is {v['ratio_min']:.2f}x to {v['ratio_max']:.2f}x {b}'s"
    extra = v["extra_hvp"]
    if v["same_forward_backward"] and min(extra) > 0:
        cost = (
            f"both use the same forward and backward passes, and {a} adds "
            + " or ".join(str(n) for n in extra)
            + " double-backward passes (one per component per step, for g'')"
        )
    elif v["same_forward_backward"]:
        cost = "both use the same passes"
    else:
        cost = "their forward and backward pass counts differ (see the table above)"
    return f"{accuracy} ({spread}); {cost}."


def _duel_everywhere(v: Mapping[str, Any], winner: str, loser: str) -> str:
    n = v["n_cells"]
    return _duel(v, f"{v[winner]} is more accurate than {v[loser]} in {count_phrase(n, n, CELL)}")


def _duel_incumbent_better(v: Mapping[str, Any]) -> str:
    return _duel_everywhere(v, "incumbent", "challenger")


def _duel_challenger_better(v: Mapping[str, Any]) -> str:
    return _duel_everywhere(v, "challenger", "incumbent")


def _duel_split(v: Mapping[str, Any]) -> str:
    wins, n = v["n_challenger_better"], v["n_cells"]
    return _duel(
        v,
        f"{v['challenger']} is more accurate than {v['incumbent']} in "
        f"{count_phrase(wins, n, CELL)} and less accurate in the other {n - wins}",
    )


def _frontier(v: Mapping[str, Any]) -> str:
    slower = count_phrase(v["n_slower_than_ap"], v["n_estimators"], "estimator")
    return (
        f"`{v['perturbation']}`, {v['kind']}: the frontier runs {' -> '.join(v['frontier'])}; "
        f"{slower} take longer than AP and are dominated by it."
    )


def _gauss_faster(v: Mapping[str, Any]) -> str:
    return (
        f"{v['gauss']} took less wall time than {v['radau']} in "
        f"{count_phrase(v['n_faster'], v['n_panels'], 'panel')}"
    )


def _gauss_faster_everywhere(v: Mapping[str, Any]) -> str:
    return (
        f"{_gauss_faster(v)} (Radau took {v['slowdown_min']:.1f}x to {v['slowdown_max']:.1f}x "
        "as long)."
    )


def _gauss_faster_in_some(v: Mapping[str, Any]) -> str:
    return f"{_gauss_faster(v)}."


def _per_component_slower(v: Mapping[str, Any]) -> str:
    return (
        "Of the per-component rules (IG, multi-step HVP, HVP diag), "
        f"{count_phrase(v['n_slower'], v['n_runs'], 'run')} took longer than AP on the same "
        "components."
    )


def _doubling(v: Mapping[str, Any]) -> str:
    k_lo, k_hi = v["k_from"], v["k_to"]
    listed = ", ".join(
        f"{r['rule']} {r['shrink']:.1f}x (order {r['derived_order']} predicts "
        f"{(k_hi / k_lo) ** r['derived_order']:g}x)"
        for r in v["rules"]
    )
    return (
        f"`{v['perturbation']}`: from K = {k_lo} to K = {k_hi} the largest error against AP "
        f"shrank by {listed}."
    )


def _fitted_orders(v: Mapping[str, Any]) -> str:
    listed = ", ".join(
        f"{r['rule']} {r['fitted_order']:.2f} (derived {r['derived_order']})"
        if r["fitted_order"] is not None
        else f"{r['rule']} not fitted (fewer than two K before the floor; derived "
        f"{r['derived_order']})"
        for r in v["rules"]
    )
    within = count_phrase(v["n_matching"], v["n_rules"], "rule")
    return (
        f"`{v['perturbation']}`: fitted orders {listed}; {within} within {v['tolerance']} of the "
        "derived order."
    )


def _fit_s(rules: list[str]) -> str:
    return f"{', '.join(rules)} fit{'s' if len(rules) == 1 else ''}"


def _slower_than_derived(v: Mapping[str, Any]) -> str:
    return (
        f"`{v['perturbation']}`: {_fit_s(v['rules'])} slower than derived: over these K the "
        "leading error term does not dominate yet (pre-asymptotic); the largest error at "
        f"K = {v['k_max']} is on {', '.join(v['worst'])}."
    )


def _faster_than_derived(v: Mapping[str, Any]) -> str:
    return (
        f"`{v['perturbation']}`: {_fit_s(v['rules'])} faster than derived: the leading error "
        "term is still shrinking faster than its asymptotic rate over these K (pre-asymptotic)."
    )


def _error_grows(v: Mapping[str, Any]) -> str:
    return (
        f"`{v['perturbation']}`: the error of {', '.join(v['rules'])} grows from one K to the "
        f"next somewhere between K = {v['k_from']} and {v['k_to']}: these steps are still too "
        "coarse for the path's curvature."
    )


def _floor_words(v: Mapping[str, Any]) -> str:
    return f"10 x eps x max|AP| = {v['floor']:.1e}"


def _no_cut(v: Mapping[str, Any]) -> str:
    return (
        f"`{v['perturbation']}`: no trailing error is at the rounding floor ({_floor_words(v)}; "
        f"the smallest error is {v['smallest_error']:.1e}) or on a plateau, so every fit uses "
        f"K = {v['k_min']} to {v['k_max']}."
    )


def _cut_at_floor(v: Mapping[str, Any]) -> str:
    return (
        f"`{v['perturbation']}`: {v['rule']} leaves out K = {v['excluded']}: its error there is "
        f"at the rounding floor ({_floor_words(v)}), where float rounding in AP and in the "
        "estimate, not the rule, sets the error."
    )


def _cut_at_plateau(v: Mapping[str, Any]) -> str:
    return (
        f"`{v['perturbation']}`: {v['rule']} leaves out K = {v['excluded']}: its error stops "
        f"decreasing above the rounding floor ({_floor_words(v)}), so not float rounding: the "
        "rule is still pre-asymptotic there."
    )


def _orders_shown(v: Mapping[str, Any]) -> str:
    n, total = v["n_matching"], v["n_rules"]
    others = (
        ""
        if n == total
        else f"; the others are still pre-asymptotic at K = {v['k_max']} on these paths"
    )
    cut = (
        "; some fits are cut short by the rounding floor or a plateau (section 4)."
        if v["cut"]
        else "; no fit is cut short by the rounding floor or a plateau."
    )
    return (
        f"Error orders under `{v['perturbation']}`: "
        f"{count_phrase(n, total, 'quadrature rule')} show their derived order (fitted within "
        f"{v['tolerance']}){others}{cut}"
    )


def _gauss_more_accurate_in(v: Mapping[str, Any]) -> str:
    cells = count_phrase(v["n_better"], v["n_cells"], CELL)
    return f"{v['gauss']} is more accurate than {v['radau']} in {cells}."


def _midpoint_better(v: Mapping[str, Any]) -> str:
    return (
        f"At equal K = 2, {v['midpoint']} is more accurate than {v['taylor']} in "
        f"{count_phrase(v['n_better'], v['n_cells'], 'cell')} with the same gradient passes and "
        "no second derivatives"
    )


def _midpoint_better_everywhere(v: Mapping[str, Any]) -> str:
    return f"{_midpoint_better(v)}: a second derivative per node buys less than a gradient node."


def _midpoint_better_in(v: Mapping[str, Any]) -> str:
    return f"{_midpoint_better(v)}."


def _pass_growth(v: Mapping[str, Any]) -> str:
    return (
        "The per-component rules (IG, multi-step HVP, HVP diag) use at least as many forward "
        f"passes as AP, plus backward passes, in {count_phrase(v['n_more'], v['n_runs'], 'run')}; "
        "the estimators whose passes do not grow with the number of components are "
        f"{', '.join(v['flat'])}."
    )


def _role_groups(v: Mapping[str, Any]) -> str:
    parts = [
        f"{g['n']} at layer {g['layer']} {'is' if g['n'] == 1 else 'are'} '{g['role']}' "
        f"({g['heads']})"
        for g in v["groups"]
    ]
    return "By their evidence, the circuit's heads are: " + "; ".join(parts) + "."


#: What each of GPT-2's IOI roles is found with, per head (``circuits.role_found``).
_ROLE_EVIDENCE = {
    "name mover": lambda h: (
        f"END attends to IO {h['end->IO']:.2f} against S1 {h['end->S1']:.2f} and S2 "
        f"{h['end->S2']:.2f}; copy margin {h['copy margin']:.2f}, DLA {h['DLA']:.3f}"
    ),
    "negative name mover": lambda h: (
        f"end selectivity {h['end selectivity']:.2f}, copy margin {h['copy margin']:.2f}, "
        f"AP {h['AP']:.3f}, DLA {h['DLA']:.3f}"
    ),
    "S-inhibition": lambda h: (
        f"corrupting its END output lowers a name mover's END selectivity by "
        f"{h['inhibition']:.2f}; AP {h['AP']:.3f}"
    ),
    "duplicate token": lambda h: f"S2 attends to S1 {h['S2->S1']:.2f}",
    "induction": lambda h: f"S2 attends to the token after S1 {h['S2->S1+1']:.2f}",
}


def _role_found(v: Mapping[str, Any]) -> str:
    heads = v["heads"]
    listed = "; ".join(
        f"{h['head']} at layer {h['layer']}"
        f"{', in the circuit' if h['in_circuit'] else ''} ({_ROLE_EVIDENCE[v['role']](h)})"
        for h in heads
    )
    many = "heads" if len(heads) > 1 else "head"
    return f"GPT-2's {v['role']} role is found in {len(heads)} {many}: {listed}."


def _largest_selectivity(v: Mapping[str, Any]) -> str:
    return (
        f"the largest end selectivity, A(END→IO) − A(END→S1) − A(END→S2), is "
        f"{v['largest_selectivity']:.3f}, at {v['largest_selectivity_head']}, and a mover needs "
        f"more than {v['min_selectivity']:g}"
    )


def _no_name_mover(v: Mapping[str, Any]) -> str:
    if not v["n_selective"]:
        return (
            "No head is a name mover: no head attends from END more to IO than to S1 and S2 "
            f"together ({_largest_selectivity(v)})."
        )
    listed = "; ".join(
        f"{h['head']}: copy margin {h['copy_margin']:.2f}, DLA {h['DLA']:.3f}"
        for h in v["selective"]
    )
    return (
        f"No head is a name mover: {count_phrase(v['n_selective'], v['n_heads'], 'head')} attend "
        "from END more to IO than to S1 and S2 together, but none both copies the name it reads "
        f"(copy margin above {v['min_copy_margin']:g}) and raises logit(IO) − logit(S) directly "
        f"(DLA above 0): {listed}."
    )


def _no_negative_name_mover(v: Mapping[str, Any]) -> str:
    if not v["n_selective"]:
        return (
            "No head is a negative name mover: it would attend from END to IO as a name mover "
            f"does, and no head does (largest end selectivity {v['largest_selectivity']:.3f}, "
            f"at {v['largest_selectivity_head']})."
        )
    listed = "; ".join(
        f"{h['head']}: copy margin {h['copy_margin']:.2f}, AP {h['AP']:.3f}, DLA {h['DLA']:.3f}"
        for h in v["selective"]
    )
    return (
        f"No head is a negative name mover: of the {v['n_selective']} heads that attend from END "
        "more to IO than to S1 and S2 together, none both writes against the name it reads "
        f"(copy margin below −{v['min_copy_margin']:g}) and lowers the answer (AP or DLA below "
        f"0): {listed}."
    )


def _no_s_inhibition(v: Mapping[str, Any]) -> str:
    if not v["n_tested"]:
        return (
            "No head is tested for S-inhibition: the test is how much corrupting a head's END "
            "output lowers a later name mover's END selectivity, and there is no name mover."
        )
    return (
        "No head is an S-inhibition head: of the "
        f"{v['n_tested']} heads before a name mover, corrupting {v['largest_head']}'s END output "
        f"lowers a name mover's END selectivity the most, by {v['largest']:.3f}, and the role "
        f"needs at least {v['min_inhibition']:g}."
    )


def _summary_roles(v: Mapping[str, Any]) -> str:
    found = "; ".join(
        f"{role} ({', '.join(_at_layer(h) for h in heads)})" for role, heads in v["found"].items()
    )
    missing = v["missing"]
    if not found:
        text = f"No head has any of GPT-2's IOI roles ({', '.join(missing)}); "
    elif missing:
        text = f"Of GPT-2's IOI roles this model has {found}, and no head is {_or(missing)}; "
    else:
        text = f"This model has every one of GPT-2's IOI roles: {found}; "
    n, total = v["n_without"], v["n_reference"]
    if n == 0:
        rest = f"every one of the {total} circuit heads has one of them."
    elif n == total:
        rest = f"none of the {total} circuit heads has one of them."
    else:
        rest = f"{n} of the {total} circuit heads have none of them."
    return text + rest + " Section 1 gives the evidence for each."


def _at_layer(head: Mapping[str, Any]) -> str:
    return f"{head['head']} at layer {head['layer']}"


def _or(roles: list[str]) -> str:
    """'a name mover', 'an induction head or a duplicate token head', ..."""
    words = [f"{'an' if r[0] in 'aeiouAEIOS' else 'a'} {r} head" for r in roles]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _exact_recovery(v: Mapping[str, Any]) -> str:
    n, total = v["n_exact"], v["n_estimators"]
    listed = ": " + ", ".join(v["methods"]) + "." if 0 < n < total else "."
    return (
        f"{count_phrase(n, total, 'estimator').capitalize()} recover the reference circuit "
        f"exactly at its size ({v['n_reference']} heads)" + listed
    )


_MARGIN = (
    "What decides it is the heads near the boundary, not the largest error: the weakest "
    "reference head, {weakest_in} (|AP| = {weakest_in_ap:.3f}), and the strongest head outside, "
    "{strongest_out} (|AP| = {strongest_out_ap:.3f}), are {margin:.3f} logits apart, and AtP's "
    "errors on these two heads ({error_in:.3f} and {error_out:.3f}) add up to "
)
_MARGIN_EXCEEDED = "more than that margin, so they could have swapped, "
_SWAP_SIZES = (
    ": |AtP| = {weakest_in_size:.3f} for {weakest_in} against {strongest_out_size:.3f} for "
    "{strongest_out}."
)


def _circuit_largest_error(v: Mapping[str, Any]) -> str:
    side = "inside" if v["inside"] else "outside"
    return (
        f"AtP's largest error ({v['max_error']:.2f} logits) falls on {v['max_error_head']}, "
        f"{side} the circuit and {v['distance']:.2f} logits from the boundary: "
    )


def _largest_error_far(v: Mapping[str, Any]) -> str:
    return _circuit_largest_error(v) + (
        "that error changes the head's size, and on its own it cannot move the head across."
    )


def _largest_error_near(v: Mapping[str, Any]) -> str:
    return _circuit_largest_error(v) + "close enough for that error to carry it across."


_REFERENCE_FAITHFULNESS = (
    "Keeping only the {n_reference} reference heads and mean-ablating the other {n_others} "
    "leaves {faithfulness:.3f} of the full model's logit difference"
)
_LARGEST_GAP = (
    "Over all sizes, the largest gap between an estimator's curve and AP's is {max_gap:.3f} "
    "({method} at k = {size})"
)


def _some_top_sets_differ(v: Mapping[str, Any]) -> str:
    same = count_phrase(v["n_same"], v["n_estimators"], "estimator").capitalize()
    k = v["n_reference"]
    differ = "; ".join(f"{m} keeps {f:.3f}" for m, f in v["differ"].items())
    return f"{same} put AP's {k} heads on top and match its faithfulness at k = {k}; {differ}."


def _misranked_clause(v: Mapping[str, Any]) -> str:
    side = "inside" if v["inside"] else "outside"
    return (
        f"{v['method']} puts {v['head']} at rank {v['rank']} (AP: rank {v['rank_ap']}), {side} "
        f"the {v['n_reference']}-head circuit: its estimate is {v['estimate']:.3f} against AP's "
        f"{v['ap']:.3f}"
    )


def _misranked(v: Mapping[str, Any]) -> str:
    return _misranked_clause(v) + "."


def _misranked_split(v: Mapping[str, Any]) -> str:
    share = "most" if v["cross_most"] else "less than half"
    return (
        f"{_misranked_clause(v)}. The error {v['error']:.3f} is AtP's {v['first_error']:.3f}, "
        f"plus the head's own curvature term {v['curvature']:.3f}, plus cross terms "
        f"{v['cross']:.3f}: the cross terms make {share} of it."
    )


def _positions(v: Mapping[str, Any]) -> str:
    exact = count_phrase(v["n_exact"], v["n_estimators"], "estimator")
    return (
        f"{v['n_reference']} of {v['n_components']} (head, position) components are in the "
        f"reference; {exact} recover it exactly, and the lowest AUROC is {v['min_auroc']:.3f} "
        f"({v['min_method']})."
    )


def _rankings(v: Mapping[str, Any], lead: str) -> str:
    exact = count_phrase(v["n_exact"], v["n_estimators"], "estimator")
    return (
        f"{lead}: the lowest AUROC is {v['min_auroc']:.3f} ({v['min_method']}), and {exact} "
        f"recover the {v['n_reference']}-head circuit exactly."
    )


def _rankings_close(v: Mapping[str, Any]) -> str:
    return _rankings(v, "Head rankings from the estimators are close to AP's")


def _rankings_far(v: Mapping[str, Any]) -> str:
    return _rankings(v, "Some head rankings are far from AP's")


def _erring(v: Mapping[str, Any]) -> str:
    methods = v["methods"]
    lead = (
        "Per head, the only ranking that errs is "
        if len(methods) == 1
        else "Per head, the rankings that err are "
    )
    among = "AtP is among them. " if v["first_order_errs"] else "AtP is not among them. "
    return (
        lead
        + ", ".join(methods)
        + "; "
        + among
        + "Section 4 splits each error into AtP's, the head's own curvature and cross terms."
    )


def _exact_at_both(v: Mapping[str, Any]) -> str:
    methods = v["methods"]
    which = f"{len(methods)} ({', '.join(methods)}) recover" if methods else "none recovers"
    return (
        f"Of the {v['n_both']} estimators run at both granularities, {which} the circuit "
        "exactly both per head and per (head, position)."
    )


def _quoted(names: list[str], sep: str = ", ") -> str:
    """'`a`, `b`': names set as code."""
    return sep.join(f"`{name}`" for name in names)


def _fix_detail(v: Mapping[str, Any]) -> str:
    return "; ".join(
        f"`{d['perturbation']}` {d['atp']:.4f} -> {d['sff']:.4f}, {d['flagged']} of {v['n']} fixed"
        for d in v["detail"]
    )


def _atp_ranks_like_ap(v: Mapping[str, Any]) -> str:
    return (
        f"{v['granularity']} ({v['n']} components): AtP alone already ranks like AP (Spearman "
        f"at least {v['like_ap']} under every perturbation), so there is little for a fix to "
        f"gain. AtP -> SFF (patch): {_fix_detail(v)}."
    )


def _atp_misranks(v: Mapping[str, Any]) -> str:
    misranks = v["misranks"]
    where = (
        "under every perturbation"
        if len(misranks) == v["n_perturbations"]
        else "under " + _quoted(misranks)
    )
    moves = "moves" if v["towards"] else "does not always move"
    return (
        f"{v['granularity']} ({v['n']} components): AtP misranks {where} (Spearman below "
        f"{v['like_ap']}); fixing the flagged components with exact patching {moves} the "
        f"ranking towards AP's. AtP -> SFF (patch): {_fix_detail(v)}."
    )


def _same_circuit(v: Mapping[str, Any]) -> str:
    n = v["n_cells"]
    atp = count_phrase(v["n_atp"], n, "(granularity, perturbation) cell")
    ending = (
        ": what the fix changes is the order of the effects, not circuit membership."
        if v["n_atp"] == n
        else "."
    )
    return (
        f"AtP alone puts AP's circuit on top (top-k recall 1) in {atp}, SFF (patch) in "
        f"{count_phrase(v['n_sff'], n, 'cell')}{ending}"
    )


def _patch_fix_best(v: Mapping[str, Any]) -> str:
    n = v["n_cells"]
    return (
        "Where all three fixes ran, the exact fix (`patch`) ranks at least as well as `hvp` and "
        f"`multistep` in {count_phrase(v['n_best'], n, 'cell')} and uses the fewest passes in "
        f"{count_phrase(v['n_fewest'], n, 'cell')}."
    )


def _hvp_everywhere_passes(v: Mapping[str, Any]) -> str:
    extra = "" if v["extra_forward"] == [0] else f" plus {v['extra_forward']}"
    backward = " or ".join(f"{x:g}" for x in v["backward_per_component"])
    hvp = " or ".join(f"{x:g}" for x in v["hvp_per_component"])
    return (
        f"HVP everywhere uses AP's forward passes{extra}, plus {backward} backward and {hvp} "
        "double-backward pass per component: more than AP everywhere, by construction."
    )


def _budget_reaches(v: Mapping[str, Any]) -> str:
    n = v["n_fixed"]
    fixed = count_phrase(n, v["n_flagged"], "flagged head")
    return (
        f"Fixing the flagged heads most curved first (`{v['perturbation']}`), Spearman first "
        f"reaches {v['like_ap']} with {fixed} fixed ({v['reached']:.4f}; AtP alone "
        f"{v['atp']:.4f}, all {v['n_flagged']} fixed {v['all_fixed']:.4f}): {n} forward "
        f"{'pass' if n == 1 else 'passes'} on top of the screen's, where AP everywhere spends "
        f"{v['ap_forward']}."
    )


def _costs(times: list[float]) -> str:
    return " and ".join(f"{t:.2g}x" for t in times)


def _lifts(v: Mapping[str, Any]) -> str:
    return " and ".join(f"{x:+.3f}" for x in v["lifts"])


def _pays_off(v: Mapping[str, Any]) -> str:
    return (
        f"{v['granularity']}: SFF (patch) takes {_costs(v['costs'])} AP's time and raises "
        f"Spearman by {_lifts(v)} over AtP alone ({_quoted(v['perturbations'], ' and ')}): here "
        "it pays off."
    )


def _ap_better_buy(v: Mapping[str, Any]) -> str:
    return (
        f"{v['granularity']}: SFF (patch) raises Spearman by {_lifts(v)} over AtP alone but "
        f"takes {_costs(v['costs'])} AP's time, longer than patching every component exactly: "
        "with this few components, AP everywhere is the better buy."
    )


def _screen_enough(v: Mapping[str, Any]) -> str:
    return (
        f"{v['granularity']}: SFF (patch) takes {_costs(v['costs'])} AP's time, but AtP alone, "
        f"at {_costs(v['atp_costs'])}, already ranks within {v['min_gain']} of it (Spearman gain "
        f"{_lifts(v)}): the screen alone is enough here."
    )


def _pays_off_partly(v: Mapping[str, Any]) -> str:
    where = f"under {_quoted(v['both'])}." if v["both"] else "under no perturbation."
    return (
        f"{v['granularity']}: SFF (patch) takes {_costs(v['costs'])} AP's time and changes "
        f"Spearman by {_lifts(v)} over AtP alone; it is both cheaper than AP and worth at least "
        f"{v['min_gain']} in Spearman only {where}"
    )


def _hvp_everywhere_slower(v: Mapping[str, Any]) -> str:
    n, total = v["n_slower"], v["n_runs"]
    runs = "both runs" if n == total == 2 else count_phrase(n, total, "run")
    spread = f" ({v['fastest']:.1f}x to {v['slowest']:.1f}x)." if total > 1 else "."
    return f"HVP everywhere took longer than AP everywhere in {runs}{spread}"


def _answer_pays_at(v: Mapping[str, Any]) -> str:
    where = " and ".join(v["granularities"]) or "no granularity"
    return (
        f"In this run SFF (patch) pays off under every perturbation at {where}: it needs both "
        "many components, so that AP everywhere is expensive, and an AtP that misranks."
    )


def _answer_mixed(v: Mapping[str, Any]) -> str:
    cheaper = _quoted(v["cheaper"]) or "no perturbation"
    worth = _quoted(v["worth"]) or "no perturbation"
    return (
        f"{v['granularity']} ({v['n']} components): cheaper than AP everywhere under {cheaper} "
        f"and worth it under {worth}."
    )


def _spend(v: Mapping[str, Any]) -> str:
    return (
        f"SFF (patch) spends {v['sff_forward']} forward, {v['sff_backward']} backward and "
        f"{v['sff_hvp']} double-backward passes where AP spends {v['ap_forward']} forward passes "
        f"(`{v['featured']}`)"
    )


def _summary_misranks(v: Mapping[str, Any]) -> str:
    sff = " and ".join(f"{x:.4f}" for x in v["sff"])
    atp = " and ".join(f"{x:.4f}" for x in v["atp"])
    return (
        f"{v['granularity']} ({v['n']} components): AtP misranks (Spearman below {v['like_ap']} "
        f"under {_quoted(v['misranks'])}); with the flagged ones fixed by exact patching, "
        f"Spearman is {sff} (AtP: {atp}); {_spend(v)}."
    )


def _summary_ranks_like_ap(v: Mapping[str, Any]) -> str:
    return (
        f"{v['granularity']} ({v['n']} components): AtP alone already ranks like AP (Spearman "
        f"at least {v['like_ap']}), so the fix has little to gain; {_spend(v)}."
    )


def _summary_same_circuit_everywhere(v: Mapping[str, Any]) -> str:
    return (
        "AtP alone recovers AP's circuit (top-k recall 1) in "
        f"{count_phrase(v['n_atp'], v['n_cells'], 'cell')}: on this model the fix refines the "
        "order of the effects rather than the circuit."
    )


def _summary_same_circuit(v: Mapping[str, Any]) -> str:
    n = v["n_cells"]
    return (
        f"AtP alone recovers AP's circuit (top-k recall 1) in {count_phrase(v['n_atp'], n, 'cell')}"
        f", SFF (patch) in {count_phrase(v['n_sff'], n, 'cell')}."
    )


def _summary_patch_best(v: Mapping[str, Any]) -> str:
    n = v["n_cells"]
    return (
        "Among the three fixes, exact patching ranks at least as well as the second-order ones "
        f"in {count_phrase(v['n_best'], n, 'cell')} where all three ran, and uses the fewest "
        f"passes in {count_phrase(v['n_fewest'], n, 'cell')}."
    )


def _worst_listing(v: Mapping[str, Any]) -> str:
    return ", ".join(f"`{w['kind']}` ({w['nmae']:.3f})" for w in v["worst"])


def _settings_differ(v: Mapping[str, Any]) -> str:
    listing = ", ".join(
        f"`{d['name']}` {d['measured']!r} (this page asks for {d['asked']!r})" for d in v["differ"]
    )
    return (
        f"**These tables are not this page's settings**: the benchmark ran with {listing}. The "
        "numbers below are the benchmark's, not those of notebooks 01-07 at this page's "
        "settings; the command below measures those."
    )


def _paper_claim(v: Mapping[str, Any]) -> str:
    held, n = v["held"], v["n"]
    seeds = ", ".join(str(s) for s in v["seeds"])
    each = "each perturbation" if n > len(v["seeds"]) else f"`{v['shown']}`"
    where = f"{count_phrase(held, n, 'measurement')} (seeds {seeds}, {each})"
    if held == n:
        head, tail = "Reproduced", ""
    elif held == 0:
        head, tail = "Refuted", ""
    else:
        head = "Not settled"
        tail = " The test's outcome depends on the prompt sample or the perturbation."
    return (
        f"**{head}** ({v['part']}): {v['claim']} Measured as the {v['measure']} (notebook "
        f"{v['notebook']}), which is {v['test']} in {where}; it ranges from {v['low']:.3g} to "
        f"{v['high']:.3g}. At the prompts of notebooks 01-07, `{v['shown']}`: {v['detail']}.{tail}"
    )


def _measurements(span: Mapping[str, Any]) -> str:
    """'in all 6 measurements, seeds 0-2', 'in 4 of 6 measurements, seeds 0-2', ..."""
    seeds = span["seeds"]
    where = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
    return f"in {count_phrase(span['held'], span['n'], 'measurement')}, {where}"


def _range(span: Mapping[str, Any], fmt: str = ".2f") -> str:
    low, high = format(span["low"], fmt), format(span["high"], fmt)
    return low if low == high else f"{low} to {high}"


def _lie(v: Mapping[str, Any]) -> str:
    local = v["local"]
    which = (
        "none of them has a non-linear local map"
        if not local
        else f"of these, {_quoted(local)} {'has' if len(local) == 1 else 'have'} a non-linear "
        "local map (queries and keys: the softmax; pre-activations: the GELU)"
    )
    down = v["downstream"]
    then = {
        "reproduced": "the error comes mostly from downstream non-linearity, on every sample",
        "refuted": "the error comes mostly from the local map, on every sample",
        "not settled": "whether downstream or local dominates depends on the prompt sample",
    }[down["verdict"]]
    return (
        f"**When does AtP lie?** In relative error (NMAE: AtP's mean absolute error over the "
        f"mean |AP| of a kind, section 1), AtP is furthest from AP under `{v['perturbation']}` "
        f"on {_worst_listing(v)}; {which}. In absolute error, notebook 02 finds "
        f"{_range(down, '.0%')} of AtP's error downstream of the patched component, over every "
        f"component (above half {_measurements(down)}): {then}."
    )


def _tell(v: Mapping[str, Any]) -> str:
    det, cover = v["detection"], v["coverage"]
    detects = {
        "reproduced": "a useful detector on every sample",
        "refuted": "not a useful detector on any sample",
        "not settled": "useful on some samples and not on others, so not settled here",
    }[det["verdict"]]
    covers = {
        "reproduced": "the bounds hold on every sample",
        "refuted": "the bounds miss on every sample",
        "not settled": "whether the bounds hold depends on the sample",
    }[cover["verdict"]]
    return (
        f"**How do I tell?** Notebook 03's reliability score separates the estimates with large "
        f"errors from the rest with an AUROC of {_range(det)} in its weakest component kind "
        f"(at least 0.75 {_measurements(det)}): {detects}. Its Lagrange interval contains AP "
        f"for {_range(cover, '.0%')} of the components (at least 95% {_measurements(cover)}): "
        f"{covers}."
    )


def _at_every_seed(v: Mapping[str, Any]) -> str:
    """' at all 3 seeds of the benchmark', or nothing when the page has one seed."""
    return f" at all {v['n_seeds']} seeds of the benchmark" if v["n_seeds"] else ""


def _held(items: list[Mapping[str, Any]], held: bool) -> list[str]:
    """The kinds of ``items`` whose choice is (``held=True``) or is not the same at every seed;
    without other seeds every item counts as held."""
    return [i["kind"] for i in items if (i["settled"] is not False) == held]


def _pick_note(c: Mapping[str, Any]) -> str:
    if c["settled"] is None:
        return ""
    return ", the pick at every seed" if c["settled"] else ", not the pick at every seed"


_CHOICE_WORDS = {
    "AtP ranks like AP": "whether AtP alone ranks like AP",
    "best at AtP cost": "the most accurate estimator at AtP's cost",
    "cheapest ranking like AP": "the cheapest estimator that ranks like AP",
}


def _choice_spread(v: Mapping[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in v["seeds"])
    counts = "; ".join(
        f"{_CHOICE_WORDS[c]} is the same at every seed for {count_phrase(n, v['n_groups'], 'pair')}"
        for c, n in v["settled"].items()
    )
    moving = [
        f"{_CHOICE_WORDS[c]} on `{u['kind']}` ({' | '.join(str(p) for p in u['picks'])})"
        for c, items in v["unsettled"].items()
        for u in items
    ]
    changes = (
        f"Under `{v['perturbation']}` the choices that change with the sample are "
        + "; ".join(moving)
        + ", in seed order: these are not settled at this size."
        if moving
        else f"Under `{v['perturbation']}` every choice is the same at every seed."
    )
    return (
        f"Over seeds {seeds} and the (perturbation, kind) pairs of the benchmark: {counts}. "
        + changes
    )


def _instead(v: Mapping[str, Any]) -> str:
    parts = []
    if ranks := _held(v["atp_ranks"], True):
        parts.append(f"AtP alone ranks {_quoted(ranks)} like AP{_at_every_seed(v)}")
    if ranks := _held(v["atp_ranks"], False):
        parts.append(f"AtP alone ranks {_quoted(ranks)} like AP here but not at every seed")
    if v["cheaper"]:
        cheaper = "; ".join(
            f"{c['method']} on `{c['kind']}` ({c['atp']:.3f} to {c['nmae']:.3f}{_pick_note(c)})"
            for c in v["cheaper"]
        )
        parts.append(f"at AtP's cost, a better estimate lowers the relative error: {cheaper}")
    if need := _held(v["need_ap"], True):
        parts.append(
            f"nothing cheaper than activation patching ranks {_quoted(need)} like it"
            f"{_at_every_seed(v)}"
        )
    if need := _held(v["need_ap"], False):
        parts.append(
            f"only activation patching ranks {_quoted(need)} like itself here, but something "
            "cheaper does at another seed"
        )
    sff = v["sff"]
    saves = {
        "reproduced": "ranks like AP for fewer passes than AP on every sample",
        "refuted": "does not rank like AP for fewer passes than AP on any sample",
        "not settled": "ranks like AP for fewer passes than AP on some samples only",
    }[sff["verdict"]]
    return (
        f"**What do I use instead?** Under `{v['perturbation']}` (section 2): "
        f"{'; '.join(parts)}. Screen-Flag-Fix (notebook 07) {saves}: its passes are "
        f"{_range(sff)}x AP's at the finest granularity (below 1 with a Spearman correlation "
        f"of at least {LIKE_AP:g} {_measurements(sff)})."
    )


def _worst_are_local(v: Mapping[str, Any]) -> str:
    return (
        f"Under `{v['perturbation']}` AtP is furthest off on {_worst_listing(v)}: exactly the "
        "kinds whose local map is non-linear (the softmax for queries and keys, the GELU for "
        "neuron pre-activations), where $E_\\text{local}$ adds to $E_\\text{down}$."
    )


def _worst_not_local(v: Mapping[str, Any]) -> str:
    return (
        f"Under `{v['perturbation']}` AtP is furthest off on {_worst_listing(v)}; the kinds with "
        f"a non-linear local map are {_quoted(v['local_kinds'])}, so here downstream "
        "non-linearity also matters."
    )


def _atp_enough(v: Mapping[str, Any]) -> str:
    kinds = v["kinds"]
    return (
        f"Under `{v['perturbation']}`, AtP alone already ranks like AP on {_quoted(kinds)} "
        f"({count_phrase(len(kinds), v['n_kinds'], 'kind')})."
    )


def _need_ap(v: Mapping[str, Any]) -> str:
    return (
        f"On {_quoted(v['kinds'])} nothing cheaper than activation patching ranks like it: there, "
        "when the ranking matters, patch."
    )


def _budget_changes_pick(v: Mapping[str, Any]) -> str:
    return (
        f"Spending up to AP's time instead of {v['budget_x_atp']:g}x AtP's changes the most "
        f"accurate choice on {count_phrase(v['n_changed'], v['n_kinds'], 'kind')}."
    )


def _envelope(v: Mapping[str, Any]) -> str:
    where = (
        "always at more than AP's wall time"
        if v["all_slower"]
        else "in some kinds below AP's wall time"
    )
    return (
        "At any cost, the most accurate estimator of each kind reaches an NMAE of at most "
        f"{v['max_best']:.2g} under `{v['perturbation']}` (the hardest kind is `{v['hardest']}`), "
        f"{where}; below AP's time the best NMAE per kind ranges from {v['below_min']:.2g} to "
        f"{v['below_max']:.2g}."
    )


def _joint_worse(v: Mapping[str, Any]) -> str:
    return (
        f"The one-pass joint HVP correction costs {v['median_x_atp']:.2f}x AtP's time (median "
        "over kinds) but is less accurate than AtP on "
        f"{count_phrase(v['n_worse'], v['n_kinds'], 'kind')} (notebook 04 shows why: its cross "
        "terms between components can be as large as the curvature it is after)."
    )


def _rule_of_thumb(v: Mapping[str, Any]) -> str:
    if v["atp_best"]:
        advice = (
            f"AtP (NMAE {v['atp_nmae']:.2g}): nothing within {v['budget_x_atp']:g}x its time "
            "does better"
        )
    else:
        advice = (
            f"{v['best']} at AtP's cost (NMAE {v['best_nmae']:.2g} against AtP's "
            f"{v['atp_nmae']:.2g}, {v['best_x_atp']:.2f}x AtP's time)"
        )
    ranking = {
        "atp": "AtP already ranks like AP",
        "only_ap": "only AP itself ranks like AP",
        "cheapest": (
            f"the cheapest that ranks like AP is {v['cheapest']} ({v['cheapest_x_ap']:.2f}x AP's "
            "time)"
        ),
    }[v["ranking"]]
    return f"`{v['kind']}`: {advice}. For the ranking alone, {ranking}."


SENTENCES: dict[str, str | Callable[[Mapping[str, Any]], str]] = {
    # notebook 02: diagnosis
    "diagnosis.checks_hold": _checks_hold,
    "diagnosis.dominance": _dominance,
    "diagnosis.worst_all_downstream": (
        "The {n} components with the largest AtP error under `{perturbation}` are all of kinds "
        "without a local map ({kinds}): their error is entirely downstream."
    ),
    "diagnosis.worst_mixed": (
        "Of the {n} components with the largest AtP error under `{perturbation}` ({kinds}), "
        "{n_without_local_map} have no local map; the local term carries {local_share:.0%} of "
        "their sum |E_down| + |E_local|."
    ),
    "diagnosis.split_exact": (
        "The AtP error of every component splits exactly into a downstream and a local term "
        "(every check holds to within 1e{exponent})."
    ),
    "diagnosis.identity_kinds": (
        "Head outputs, MLP outputs and neurons have no local map, and the attention pattern feeds "
        "z linearly: all of their AtP error is downstream, by construction."
    ),
    "diagnosis.kind_bands": _kind_bands,
    "diagnosis.local_everywhere": (
        "Wherever a component has a local non-linearity, its local term carries most of AtP's "
        "error here."
    ),
    "diagnosis.local_in_some": (
        "The local term carries most of the error (more than 60%) in {n_local} of the {total} "
        "pairs of a kind with a local map and a perturbation; in the others the split is about "
        "even or leans downstream."
    ),
    "diagnosis.local_nowhere": (
        "Even where a component has a local non-linearity, the local term does not carry most of "
        "AtP's error here."
    ),
    "diagnosis.largest_downstream": (
        "In absolute terms the largest errors are downstream: the largest mean |AP - AtP| is that "
        "of {kind} under `{perturbation}` ({mean_error:.3f}), {ratio:.1f} times the largest of a "
        "kind with a local map ({local_kind} under `{local_perturbation}`, "
        "{local_mean_error:.3f})."
    ),
    "diagnosis.largest_local": (
        "The largest mean |AP - AtP| is that of {kind} under `{perturbation}` "
        "({mean_error:.3f}), a kind with a local map."
    ),
    # notebook 00: patching by hand
    "by_hand.sign_agreement": _sign_agreement,
    "by_hand.same_top": "AP and AtP both rank {component} first.",
    "by_hand.different_top": "AP ranks {top_ap} first, AtP ranks {top_atp} first.",
    "by_hand.rank_correlation": (
        "Over all {n} heads the Spearman rank correlation of AtP with AP is {spearman:.2f}."
    ),
    "by_hand.largest_error": _largest_error,
    "by_hand.path_bend": _path_bend,
    "by_hand.curvature_same_sign": (
        "At t = 0 the curvature g''(0) = {g2:+.3f} has the same sign, so the second-order term "
        "moves the estimate towards AP."
    ),
    "by_hand.curvature_opposite_sign": (
        "At t = 0 the curvature g''(0) = {g2:+.3f} has the opposite sign: the path changes its "
        "bend between 0 and 1, and the second-order term built at t = 0 moves the estimate away "
        "from AP."
    ),
    "by_hand.second_order_closer": _second_order_closer,
    "by_hand.second_order_mean_error": (
        "Their mean absolute error goes from {error_atp:.3f} (AtP) to {error_second:.3f} "
        "(AtP + g''(0)/2)."
    ),
    "by_hand.second_order_misses": (
        "For {components} the curvature at t = 0 does not describe the whole path: the third and "
        "higher derivatives matter there (notebook 03 bounds them)."
    ),
    "by_hand.top_restores_more_than_gap": _GAP + "restores more than the whole gap ({share:.0%}).",
    "by_hand.top_restores_part_of_gap": _GAP + "restores {share:.0%} of that gap.",
    "by_hand.top_moves_away": _top_moves_away,
    "by_hand.passes": _by_hand_passes,
    "by_hand.hvp_closer": _hvp_closer,
    # notebook 01: AP and AtP
    "attribution.remainder_convex": (
        "On the path of {component} (`{perturbation}`), g''(t) is positive at all {n_nodes} "
        "nodes: the path is convex there, so the remainder is positive and AtP lies {side} AP."
    ),
    "attribution.remainder_concave": (
        "On the path of {component} (`{perturbation}`), g''(t) is negative at all {n_nodes} "
        "nodes: the path is concave there, so the remainder is negative and AtP lies {side} AP."
    ),
    "attribution.remainder_mixed": _remainder_mixed,
    "attribution.remainder_midpoint": _remainder_midpoint,
    "attribution.accuracy_ranking": _accuracy_ranking,
    "attribution.neuron_most_accurate": (
        "A single neuron is the smallest patch here: it moves one of the d_mlp hidden units of "
        "its MLP, so the rest of the network responds to it almost linearly and its path is "
        "nearly straight."
    ),
    "attribution.error_sides": _error_sides,
    "attribution.every_error_below": (
        "Every AtP error is negative: AtP underestimates every signed effect, so every path has "
        "g'' > 0 somewhere and bends upward on balance (convex, in the weighted sense of the "
        "remainder)."
    ),
    "attribution.every_clear_error_below": (
        "Every clear effect is underestimated (AtP below AP: those paths bend upward); only small "
        "effects fall on both sides."
    ),
    "attribution.error_both_sides": _error_both_sides,
    "attribution.worst_relative": _worst_relative,
    "attribution.gap_top_two": _gap_top_two,
    "attribution.gap_positions": _gap_positions,
    "attribution.through_final_position": (
        "`{perturbation}`: so these MLPs matter through the final position, not through the "
        "names' embeddings. The final token is the same in every clean and corrupted prompt, so "
        "their input there differs between the runs only through what attention moved from the "
        "name positions: their clean output carries that name information on to the layers "
        "above and the unembedding."
    ),
    "attribution.not_through_final_position": (
        "`{perturbation}`: the final token is the same in every clean and corrupted prompt, but "
        "the effect is not concentrated at the final position: the MLPs also act through the "
        "other positions."
    ),
    "attribution.final_token_differs": (
        "`{perturbation}`: the final token differs in {n_prompts} prompts, so the MLP inputs at "
        "the final position also differ through that token."
    ),
    "attribution.together_overlap": (
        "`{perturbation}`: patched together, {first} and {second} restore {joint:.0%} of the "
        "gap, less than the {summed:.0%} their separate patches add up to: their effects "
        "overlap, as links of one chain carry the same signal."
    ),
    "attribution.together": (
        "`{perturbation}`: patched together, {first} and {second} restore {joint:.0%} of the "
        "gap; their separate patches add up to {summed:.0%}."
    ),
    "attribution.atp_cost": _atp_cost,
    "attribution.atp_cost_varies": (
        "AtP's pass counts vary by kind: forward {forward}, backward {backward}."
    ),
    "attribution.ap_cost": _ap_cost,
    "attribution.ap_cost_varies": (
        "AP's forward passes exceed the number of components by {extra}, depending on the kind."
    ),
    "attribution.kind_accuracy": _kind_accuracy,
    "attribution.cost_summary": _cost_summary,
    "attribution.error_sides_summary": _error_sides_summary,
    "attribution.top_mlp": _top_mlp,
    # notebook 03: reliability
    "reliability.detector": _detector,
    "reliability.nothing_bad": (
        "`{perturbation}`, all kinds: none of the {n} AtP estimates is bad, so the detector has "
        "nothing to catch (AUROC and recall undefined); {flagged} components are flagged all the "
        "same."
    ),
    "reliability.relative_auroc_higher": (
        "`{perturbation}`: against the relative error alone the AUROC would be "
        "{auroc_relative:.2f}, higher: the score is itself a share of the estimate, so it ranks "
        "relative errors better than errors that matter in logits."
    ),
    "reliability.relative_auroc_no_higher": (
        "`{perturbation}`: against the relative error alone the AUROC would be "
        "{auroc_relative:.2f}, no higher: the score detects errors that matter in logits at least "
        "as well as large relative errors."
    ),
    "reliability.recall_undefined": _recall_undefined,
    "reliability.precision_undefined": _precision_undefined,
    "reliability.relative_calls_good": (
        "`{perturbation}`: relative error alone would call {component} good, although AtP misses "
        "it by {error:.2f} logits ({rel_error:.0%} of AP {AP:+.2f}); here it counts as bad."
    ),
    "reliability.relative_calls_bad": _relative_calls_bad,
    "reliability.coverage": _coverage,
    "reliability.outside": _outside,
    "reliability.nodes_miss": (
        "`{perturbation}`: with the maximum read off the nodes alone, {n_more} more would fall "
        "outside: |g''| peaks between the nodes there, and the exact interval means of the same "
        "sweep catch it."
    ),
    "reliability.nodes_same": (
        "`{perturbation}`: reading the maximum off the nodes alone gives the same coverage here."
    ),
    "reliability.width_by_kind": (
        "`{perturbation}`: the interval is narrowest for {narrowest} (median "
        "{narrowest_width:.3f} x |AP|) and widest for {widest} ({widest_width:.2f} x |AP|)."
    ),
    "reliability.most_flagged_kind": _most_flagged_kind,
    "reliability.rarest_reason": (
        "Over both perturbations the rarest reason is {reason} ({n} flags, against "
        "{n_commonest} for {commonest})."
    ),
    "reliability.sign_implies_score": (
        "Every sign flag is also a score flag: the sign flips only when |g''(0)/2| > |g'(0)|, so "
        "r_c > 1/2 > tau = {tau}; the sign reason adds no component of its own here, it says why "
        "the score is high."
    ),
    "reliability.cost": _reliability_cost,
    "reliability.detector_quality": _detector_quality,
    "reliability.detector_undefined": (
        "`{perturbation}`: no AtP estimate is bad, so the detector's quality is undefined here."
    ),
    "reliability.coverage_measured": _coverage_measured,
    "reliability.flag_counts": _flag_counts,
    "reliability.flags_feed_fixes": (
        "Notebook 07 uses these flags to decide which components to fix with HVP, multi-step or "
        "exact patching."
    ),
    # notebook 04: HVP
    "second_order.check_agrees": _check_agrees,
    "second_order.answer_lowers": _answer_lowers,
    "second_order.answer_raises_all": (
        "`{perturbation}`: the correction raises the NMAE for every kind, the least for {best} "
        "({gain:.2f}x AtP's NMAE)."
    ),
    "second_order.no_free_improvement": (
        "So the correction is no free improvement: g''(0) describes the start of the path only, "
        "and where the curvature changes along the path it can point the wrong way or too far "
        "(section 5 says exactly when)."
    ),
    "second_order.diag_slower_than_ap": (
        "Per-component HVP (diag) took {low:.1f}x to {high:.1f}x the wall time of activation "
        "patching itself: each component needs its own forward, backward and double backward."
    ),
    "second_order.diag_time_range": (
        "Per-component HVP (diag) took between {low:.2f}x and {high:.1f}x the wall time of "
        "activation patching."
    ),
    "second_order.overshoots": _overshoots,
    "second_order.kinds_all_overshot": _kinds_all_overshot,
    "second_order.kinds_never_overshot": _kinds_never_overshot,
    "second_order.worst_overshoot": _worst_overshoot,
    "second_order.joint_cross_terms": _joint_cross_terms,
    "second_order.hutchinson_closer": _hutchinson_closer,
    "second_order.kind_cuts": _kind_cuts,
    "second_order.kind_raises": _kind_raises,
    "second_order.hvp_matches": _hvp_matches,
    "second_order.pass_counts": (
        "`diag` needs one HVP pass per component, `joint` one pass for any number of "
        "components, Hutchinson {n_probes} (one per probe)."
    ),
    "second_order.lowers_every_kind": (
        "`{perturbation}`: the per-component correction lowers AtP's NMAE for every kind."
    ),
    "second_order.raises_every_kind": (
        "`{perturbation}`: the per-component correction raises AtP's NMAE for every kind."
    ),
    "second_order.lowers_some_kinds": _lowers_some_kinds,
    "second_order.overshoot_ways": _overshoot_ways,
    "second_order.overshoots_none": (
        "`{perturbation}`: it overshoots none of the {n_clear} clear effects."
    ),
    "second_order.joint_cost": (
        "`joint` costs one extra pass for any number of components, but its cross terms exceed "
        "the curvature it is after in {n_larger} of {n_groups} groups; random signs "
        "(`hutchinson`) come closer in {n_hutchinson_closer} of them at S passes."
    ),
    "second_order.next_notebooks": (
        "Notebook 05 asks what multi-step rules buy for the same quantities, and notebook 03 uses "
        "g'' to decide *which* components need any of this."
    ),
    # notebook 05: multi-step and IG
    "quadrature.duel_incumbent_better": _duel_incumbent_better,
    "quadrature.duel_challenger_better": _duel_challenger_better,
    "quadrature.duel_split": _duel_split,
    "quadrature.gauss_beats_radau": (
        "So at one step {gauss} beats our {radau} on accuracy and on passes alike: a second "
        "gradient node at a Gauss point buys more than the g''(0) node Radau reuses. Radau's case "
        "rests on g''(0) being paid for already, by an HVP correction that ran first."
    ),
    "quadrature.gauss_more_accurate": (
        "So at one step {gauss} beats {radau} on accuracy; their costs differ as stated."
    ),
    "quadrature.radau_more_accurate": (
        "So at one step our {radau} beats {gauss} on accuracy, for the extra double-backward "
        "passes."
    ),
    "quadrature.radau_gauss_mixed": (
        "At one step neither of {radau} and {gauss} is more accurate everywhere."
    ),
    "quadrature.frontier": _frontier,
    "quadrature.gauss_faster_everywhere": _gauss_faster_everywhere,
    "quadrature.gauss_faster_in_some": _gauss_faster_in_some,
    "quadrature.per_component_slower": _per_component_slower,
    "quadrature.doubling": _doubling,
    "quadrature.order4_faster": (
        "Every order-4 rule shrank its error faster than every order-2 rule: the derived orders "
        "rank the rules already at these K."
    ),
    "quadrature.order4_not_all_faster": (
        "Not every order-4 rule shrank its error faster than every order-2 rule: over these K "
        "some rules are still pre-asymptotic (section 4's fits say which)."
    ),
    "quadrature.fitted_orders": _fitted_orders,
    "quadrature.slower_than_derived": _slower_than_derived,
    "quadrature.faster_than_derived": _faster_than_derived,
    "quadrature.error_grows": _error_grows,
    "quadrature.no_cut": _no_cut,
    "quadrature.cut_at_floor": _cut_at_floor,
    "quadrature.cut_at_plateau": _cut_at_plateau,
    "quadrature.orders_shown": _orders_shown,
    "quadrature.gauss_beats_radau_everywhere": (
        "{gauss} beats our {radau} on accuracy in every (perturbation, kind) cell, with the same "
        "gradient passes and no double-backward ones: the Hermite-Radau rule is worth running "
        "only where g''(0) is already paid for."
    ),
    "quadrature.gauss_more_accurate_in": _gauss_more_accurate_in,
    "quadrature.midpoint_better_everywhere": _midpoint_better_everywhere,
    "quadrature.midpoint_better_in": _midpoint_better_in,
    "quadrature.pass_growth": _pass_growth,
    # notebook 06: circuits
    "circuits.reference": (
        "The reference circuit holds {n_reference} of {n_heads} heads, those whose |AP| is at "
        "least {threshold_share:.0%} of the largest ({largest_abs_ap:.2f} logits): {heads}."
    ),
    "circuits.roles": _role_groups,
    "circuits.role_found": _role_found,
    "circuits.no_name_mover": _no_name_mover,
    "circuits.no_negative_name_mover": _no_negative_name_mover,
    "circuits.no_s_inhibition": _no_s_inhibition,
    "circuits.no_duplicate_token": (
        "No head is a duplicate-token head: no head's S2 attends to S1 with weight "
        "{threshold:g} or more (the largest S2 → S1 attention is {largest:.3f}, at "
        "{largest_head})."
    ),
    "circuits.no_induction": (
        "No head is an induction head: no head's S2 attends to the token after S1 with weight "
        "{threshold:g} or more (the largest S2 → S1+1 attention is {largest:.3f}, at "
        "{largest_head})."
    ),
    "circuits.auroc_equal": "Every estimator's AUROC is {auroc:.3f}.",
    "circuits.auroc_range": (
        "AUROC ranges from {min_auroc:.3f} ({min_method}) to {max_auroc:.3f} over the "
        "{n_estimators} estimators."
    ),
    "circuits.exact": _exact_recovery,
    "circuits.misses": (
        "{method} misses {missed} and ranks {false_positives} in the circuit instead."
    ),
    "circuits.first_order_exact": (
        "AtP, one backward pass, already recovers the circuit exactly (AUROC {auroc:.3f}), "
        "although it is off by up to {max_error:.2f} logits ({max_error_head}): its errors here "
        "are errors of size, not of order across the circuit boundary."
    ),
    "circuits.first_order_misses": "AtP misses {missed} (AUROC {auroc:.3f}).",
    "circuits.answer_keeps": (
        "Yes: AtP's top {n_reference} heads are exactly the reference circuit, although AtP is "
        "off by up to {max_error:.2f} logits ({max_error_head}). Its weakest circuit head, "
        "{weakest_in} (|AtP| = {weakest_in_size:.3f}), still outranks its strongest other head, "
        "{strongest_out} (|AtP| = {strongest_out_size:.3f})."
    ),
    "circuits.answer_swaps": (
        "No: AtP ranks {strongest_out} (|AtP| = {strongest_out_size:.3f}, outside the circuit) "
        "above {weakest_in} (|AtP| = {weakest_in_size:.3f}, inside it), so its top {n_reference} "
        "heads are not the reference circuit; AtP is off by up to {max_error:.2f} logits "
        "({max_error_head})."
    ),
    "circuits.margin_holds": _MARGIN + "less than that margin, so AtP cannot swap these two.",
    "circuits.margin_exceeded_kept": _MARGIN + _MARGIN_EXCEEDED + "but they do not" + _SWAP_SIZES,
    "circuits.margin_exceeded_swapped": _MARGIN + _MARGIN_EXCEEDED + "and they do" + _SWAP_SIZES,
    "circuits.largest_error_far": _largest_error_far,
    "circuits.largest_error_near": _largest_error_near,
    "circuits.reference_above_full": _REFERENCE_FAITHFULNESS
    + (
        ": more than the full model, so together the other heads' outputs (against their "
        "means) lower the logit difference."
    ),
    "circuits.reference_faithfulness": _REFERENCE_FAITHFULNESS + ".",
    "circuits.same_top_sets": (
        "All {n_estimators} estimators put the same {n_reference} heads on top, so their curves "
        "meet AP's at k = {n_reference}."
    ),
    "circuits.some_top_sets_differ": _some_top_sets_differ,
    "circuits.curves_equal": "Every estimator's faithfulness curve equals AP's at every size.",
    "circuits.curves_close": _LARGEST_GAP
    + ": the rankings differ in order below the top, but mean-ablation barely tells them apart.",
    "circuits.curves_apart": _LARGEST_GAP + ".",
    "circuits.no_wrong_heads": (
        "No estimator misranks a head across the circuit boundary, so no head needs explaining."
    ),
    "circuits.misranked": _misranked,
    "circuits.misranked_split": _misranked_split,
    "circuits.positions": _positions,
    "circuits.position_misses": (
        "At positions, {method} misses {missed} and ranks {false_positives} in the circuit instead."
    ),
    "circuits.summary_roles": _summary_roles,
    "circuits.rankings_close": _rankings_close,
    "circuits.rankings_far": _rankings_far,
    "circuits.erring": _erring,
    "circuits.exact_at_both": _exact_at_both,
    "circuits.faithfulness_summary": (
        "At the reference size AP's heads keep {faithfulness:.3f} of the full model's logit "
        "difference, and no estimator's faithfulness curve is more than {max_gap:.3f} from AP's "
        "at any size."
    ),
    "circuits.next_notebook": (
        "Notebook 07 turns curvature flags into a workflow that spends exact compute only on the "
        "components that need it."
    ),
    # notebook 07: Screen-Flag-Fix
    "workflow.atp_ranks_like_ap": _atp_ranks_like_ap,
    "workflow.atp_misranks": _atp_misranks,
    "workflow.same_circuit": _same_circuit,
    "workflow.patch_fix_best": _patch_fix_best,
    "workflow.hvp_everywhere_passes": _hvp_everywhere_passes,
    "workflow.budget_never": (
        "Even with all {n_flagged} flagged heads fixed (`{perturbation}`), Spearman stays below "
        "{like_ap} (AtP alone {atp:.4f}, all {n_flagged} fixed {all_fixed:.4f})."
    ),
    "workflow.budget_none_needed": (
        "AtP alone already ranks the heads like AP under `{perturbation}` (Spearman {atp:.4f}, "
        "at least {like_ap}): no fix is needed; all {n_flagged} flagged heads fixed give "
        "{all_fixed:.4f}."
    ),
    "workflow.budget_reaches": _budget_reaches,
    "workflow.pays_off": _pays_off,
    "workflow.ap_better_buy": _ap_better_buy,
    "workflow.screen_enough": _screen_enough,
    "workflow.pays_off_partly": _pays_off_partly,
    "workflow.hvp_everywhere_slower": _hvp_everywhere_slower,
    "workflow.answer_pays_at": _answer_pays_at,
    "workflow.answer_pays_off": (
        "{granularity} ({n} components): it pays off, cheaper than AP everywhere and lifting "
        "Spearman by at least {min_gain} over AtP alone under every perturbation."
    ),
    "workflow.answer_few_components": (
        "{granularity} ({n} components): the fix is worth it, but with this few components "
        "patching every one takes less time than the screen and the fix together."
    ),
    "workflow.answer_screen_enough": (
        "{granularity} ({n} components): cheaper than AP everywhere, but the fix lifts Spearman "
        "by less than {min_gain} over AtP alone: the screen alone is as good here."
    ),
    "workflow.answer_mixed": _answer_mixed,
    "workflow.summary_misranks": _summary_misranks,
    "workflow.summary_ranks_like_ap": _summary_ranks_like_ap,
    "workflow.summary_same_circuit_everywhere": _summary_same_circuit_everywhere,
    "workflow.summary_same_circuit": _summary_same_circuit,
    "workflow.summary_patch_best_everywhere": (
        "Among the three fixes, exact patching ranks at least as well as the second-order ones "
        "in every cell where all three ran ({n_cells}), with the fewest passes: a fix for a few "
        "flagged components needs no second derivative."
    ),
    "workflow.summary_patch_best": _summary_patch_best,
    "workflow.summary_wall_time": (
        "Whether those passes cost less time than AP's is measured in section 3: the workflow "
        "can only pay off where both conditions hold, AtP misranking and enough components to "
        "make AP expensive."
    ),
    # notebook 08: take-home
    "takeaways.source": (
        "The tables were made by `{command}` in {minutes:.1f} minutes; this page reads them and "
        "measures nothing."
    ),
    "takeaways.same_settings": (
        "The benchmark ran at this page's settings: `{model_name}`, {n_prompts} prompt pairs "
        "(seed {seed}) in {dtype}, the prompts of notebooks 01-07. Where it measures what an "
        "earlier notebook measured (AtP on head and MLP outputs, notebook 01; the estimator grid "
        "on head outputs, queries and MLP outputs, notebook 05), its numbers are that "
        "notebook's."
    ),
    "takeaways.settings_differ": _settings_differ,
    "takeaways.settings_unknown": (
        "This benchmark's `run.json` does not record its settings, so its numbers cannot be "
        "matched to those of notebooks 01-07: run the command below to measure them again."
    ),
    "takeaways.rerun": (
        "`perturbation` (here `{perturbation}`) picks what the page features. To measure "
        "at this page's settings, run `python -m hvp_utils.cli.bench --model {model_name} "
        "--n-prompts {n_prompts} --seed {seed} --dtype {dtype} --out runs/bench` from the "
        'repository root and set `bench_dir = "../runs/bench"`.'
    ),
    "takeaways.lie": _lie,
    "takeaways.tell": _tell,
    "takeaways.instead": _instead,
    "takeaways.worst_are_local": _worst_are_local,
    "takeaways.worst_not_local": _worst_not_local,
    "takeaways.atp_enough": _atp_enough,
    "takeaways.atp_enough_nowhere": (
        "Under `{perturbation}`, AtP alone ranks like AP on none of the {n_kinds} kinds."
    ),
    "takeaways.need_ap": _need_ap,
    "takeaways.exact_local": (
        "On `{kind}`, AtP (exact local) cuts AtP's NMAE from {atp_nmae:.3f} to {local_nmae:.3f} "
        "({ratio:.2f}x) at {x_atp:.2f}x AtP's wall time: it removes the local error and keeps "
        "the downstream one."
    ),
    "takeaways.budget_changes_pick": _budget_changes_pick,
    "takeaways.per_component_slower": (
        "No per-component correction (HVP diag, per-component IG, multi-step HVP) is faster than "
        "AP on any kind or perturbation: the fastest, {method} on `{kind}` under "
        "`{perturbation}`, takes {x_ap:.2f}x AP's time. On a model this size the exact answer is "
        "the cheaper one, so these rules pay only where a forward pass is expensive; notebook 07 "
        "weighs them against exact patching as the fix for the components a screen flags."
    ),
    "takeaways.per_component_fastest": (
        "The fastest per-component correction, {method} on `{kind}` under `{perturbation}`, "
        "takes {x_ap:.2f}x AP's time."
    ),
    "takeaways.envelope": _envelope,
    "takeaways.joint_worse": _joint_worse,
    "takeaways.diag_neurons": (
        "On the {n_components} neurons of the layer, the exact per-neuron correction (HVP diag) "
        "cuts AtP's NMAE from {atp_nmae:.2g} to {diag_nmae:.2g} but costs {x_atp:.0f}x AtP's "
        "time ({x_ap:.2f}x AP's)."
    ),
    "takeaways.hutchinson_beats_atp": (
        "Hutchinson needs {n_probes} probes to beat AtP (NMAE {nmae:.2g}) and costs "
        "{x_atp:.1f}x AtP's time there; {max_probes} probes reach NMAE {max_nmae:.2g} at "
        "{max_x_ap:.2f}x AP's time."
    ),
    "takeaways.hutchinson_never_beats": (
        "No probe count up to {max_probes} beats AtP's NMAE ({atp_nmae:.2g}) here."
    ),
    "takeaways.sff_neurons": (
        "Screen-Flag-Fix (patch) on `{kind}`: Spearman {spearman:.4f} with AP and top-k recall "
        "{topk_recall:.2f} at {x_ap:.2f}x AP's time."
    ),
    "takeaways.rule_of_thumb": _rule_of_thumb,
    "takeaways.bench_seeds": lambda v: (
        f"The same benchmark ran at seeds {', '.join(str(s) for s in v['seeds'])} (other "
        f"prompt samples, {v['minutes']:.0f} minutes in all: "
        + ", ".join(f"`{c}`" for c in v["commands"])
        + f"), with `{v['model_name']}`, {v['n_prompts']} prompt pairs in {v['dtype']}, as here."
    ),
    "takeaways.bench_seeds_missing": (
        "The benchmark was not run at other prompt samples (no `{bench_dir}/seeds/seed<N>/` with "
        "this page's settings), so no choice below can be called settled: each is what this one "
        "sample shows. `make bench-seeds` from the repository root measures two more."
    ),
    "takeaways.choice_spread": _choice_spread,
    "takeaways.choice_one_sample": (
        "Only this prompt sample (seed {seed}) was benchmarked with these settings, so no choice "
        "above can be called settled: each is what this one sample shows."
    ),
    "paper.seeds_source": lambda v: (
        f"Seeds {', '.join(str(s) for s in v['seeds'])} were measured by `{v['command']}` "
        f"({v['minutes']:.0f} minutes): notebooks 01-07 rerun at each seed, with "
        f"`{v['model_name']}`, {v['n_prompts']} prompt pairs in {v['dtype']}, as here."
    ),
    "paper.seeds_missing": (
        "No other prompt samples were measured (`{seeds_dir}/run.json` is missing), so each "
        "claim is judged on this run's prompts alone; `python -m hvp_utils.cli.seeds --seeds 1 "
        "2` from the repository root measures two more."
    ),
    "paper.seeds_differ": lambda v: (
        "The other prompt samples were measured with other settings ("
        + "; ".join(f"{d['name']} {d['measured']!r}, not {d['asked']!r}" for d in v["differ"])
        + "), so each claim is judged on this run's prompts alone."
    ),
    "paper.not_measured": (
        "**Not measured** ({part}): {claim} No run measured it (for a detector: no kind had "
        "both trustworthy and untrustworthy estimates)."
    ),
    "spread.one_sample": (
        "Only this run's prompt sample (seed {seed}) was measured with these settings, so no "
        "verdict below can be called settled: each is what this one sample shows."
    ),
    "spread.settled": lambda v: (
        f"**{v['quantity']}** (notebook {v['notebook']}; test: {v['test']}): the verdict is the "
        f"same at every seed ({', '.join(str(s) for s in v['seeds'])}) for "
        f"{count_phrase(v['n_items'], v['n_items'], 'item')}."
    ),
    "spread.not_settled": lambda v: (
        f"**{v['quantity']}** (notebook {v['notebook']}; test: {v['test']}): not settled at this "
        f"size for {count_phrase(len(v['unsettled']), v['n_items'], 'item')}: "
        + "; ".join(
            f"{u['item']} under `{u['perturbation']}` (held at {u['held']} of {u['n']} seeds, "
            f"{u['low']:.3g} to {u['high']:.3g})"
            for u in v["unsettled"]
        )
        + ". A verdict on these items in the earlier notebooks describes their prompt sample, "
        "not the model."
    ),
    "paper.reproduced": _paper_claim,
    "paper.refuted": _paper_claim,
    "paper.not_settled": _paper_claim,
}


def sentence(key: str, values: Mapping[str, Any]) -> str:
    """The sentence of verdict ``key`` stating ``values``."""
    if key not in SENTENCES:
        raise KeyError(f"no wording for verdict {key!r}; add it to SENTENCES in {__name__}")
    template = SENTENCES[key]
    return template(values) if callable(template) else template.format(**values)
