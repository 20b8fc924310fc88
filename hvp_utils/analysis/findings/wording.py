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


def count_phrase(n: int, total: int, noun: str, plural: str | None = None) -> str:
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
    "as_ap": "as AP does",
    "roughly_as_ap": "roughly as AP does",
    "differently": "differently from AP",
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
        f"{RANK_AGREEMENT[v['ranks']]} under both perturbations ({spearman}) {sizes}."
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
        "`{perturbation}`: {first} and {second} together restore {share:.0%} of the gap, more "
        "than all of it: their effects overlap, as links of one chain carry the same signal."
    ),
    "attribution.together": (
        "`{perturbation}`: {first} and {second} together restore {share:.0%} of the gap."
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
    # notebook 04: add its verdicts here (HVP)
    #
    #
    # notebook 05: add its verdicts here (multi-step and IG)
    #
    #
    # notebook 06: add its verdicts here (circuits)
    #
    #
    # notebook 07: add its verdicts here (Screen-Flag-Fix)
    #
    #
    # notebook 08: add its verdicts here (take-home)
    #
    #
}


def sentence(key: str, values: Mapping[str, Any]) -> str:
    """The sentence of verdict ``key`` stating ``values``."""
    if key not in SENTENCES:
        raise KeyError(f"no wording for verdict {key!r}; add it to SENTENCES in {__name__}")
    template = SENTENCES[key]
    return template(values) if callable(template) else template.format(**values)
