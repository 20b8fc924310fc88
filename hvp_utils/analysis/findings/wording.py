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
