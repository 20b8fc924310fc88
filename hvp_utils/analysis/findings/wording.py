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


def _role_groups(v: Mapping[str, Any]) -> str:
    parts = [
        f"{g['n']} at layer {g['layer']} {'is' if g['n'] == 1 else 'are'} '{g['role']}' "
        f"({g['heads']})"
        for g in v["groups"]
    ]
    return "By the role table: " + "; ".join(parts) + "."


def _summary_roles(v: Mapping[str, Any]) -> str:
    mechanism = v["mechanism"]
    return _role_groups(v) + (" " + sentence(mechanism, v) if mechanism else "")


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


def _name_movers(v: Mapping[str, Any]) -> str:
    return f"{count_phrase(v['n_movers'], v['n_reference'], 'circuit head')} are name movers."


def _positive_layers(v: Mapping[str, Any]) -> str:
    heads = count_phrase(v["n_layer0"], v["n_positive"], "positive-effect circuit head")
    return f"{heads} sit at layer 0."


def _largest_error(v: Mapping[str, Any]) -> str:
    side = "inside" if v["inside"] else "outside"
    return (
        f"AtP's largest error ({v['max_error']:.2f} logits) falls on {v['max_error_head']}, "
        f"{side} the circuit and {v['distance']:.2f} logits from the boundary: "
    )


def _largest_error_far(v: Mapping[str, Any]) -> str:
    return _largest_error(v) + (
        "that error changes the head's size, and on its own it cannot move the head across."
    )


def _largest_error_near(v: Mapping[str, Any]) -> str:
    return _largest_error(v) + "close enough for that error to carry it across."


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
    # notebook 00: add its verdicts here (patching by hand)
    #
    #
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
    # notebook 06: circuits
    "circuits.reference": (
        "The reference circuit holds {n_reference} of {n_heads} heads, those whose |AP| is at "
        "least {fraction:.0%} of the largest ({largest_abs_ap:.2f} logits): {heads}."
    ),
    "circuits.roles": _role_groups,
    "circuits.no_name_mover": (
        "No circuit head is a name mover (attending from the end to IO more than to S in both "
        "name orders): the class that carries IO to the answer in GPT-2 has no member here."
    ),
    "circuits.name_movers": _name_movers,
    "circuits.positive_layer0_copy_s": (
        "Every circuit head with a positive effect ({n_positive}) sits at layer 0, and all copy S "
        "to the end: they move the subject's name from S2 to the final position, the token "
        "itself, since a layer-0 head has nothing else to move. GPT-2's story (duplicate-token, "
        "S-inhibition and name-mover heads over many layers) does not describe this model's "
        "circuit heads."
    ),
    "circuits.positive_layer0": (
        "Every circuit head with a positive effect ({n_positive}) sits at layer 0, and "
        "{n_copy_s} of them copy S to the end."
    ),
    "circuits.positive_layers": _positive_layers,
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
    "takeaways.rerun": (
        "Only `perturbation` (here `{perturbation}`) changes what the page shows. To measure "
        "with your own settings, run `python -m hvp_utils.cli.bench --model {model_name} "
        "--n-prompts {n_prompts} --seed {seed} --dtype {dtype} --out runs/bench` from the "
        'repository root and set `bench_dir = "../runs/bench"`.'
    ),
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
        "the cheaper one; these rules earn their place as fixes for a few flagged components, "
        "or where AP is expensive."
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
}


def sentence(key: str, values: Mapping[str, Any]) -> str:
    """The sentence of verdict ``key`` stating ``values``."""
    if key not in SENTENCES:
        raise KeyError(f"no wording for verdict {key!r}; add it to SENTENCES in {__name__}")
    template = SENTENCES[key]
    return template(values) if callable(template) else template.format(**values)
