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
    # notebook 01: add its verdicts here (AP and AtP)
    #
    #
    # notebook 03: add its verdicts here (reliability)
    #
    #
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
