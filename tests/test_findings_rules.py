"""The findings rules on small tables whose verdicts are known by hand, by notebook."""

import numpy as np
import pandas as pd

from hvp_utils.analysis.findings import (
    circuits,
    diagnosis,
    quadrature,
    second_order,
    takeaways,
    workflow,
)
from hvp_utils.analysis.roles import HeadRoles


def frame(rows):
    """Diagnosis rows (perturbation, kind, AP, AtP, AtP_out, second_local, second_down)."""
    cols = ["perturbation", "kind", "AP", "AtP", "AtP_out", "second_local", "second_down"]
    d = pd.DataFrame(rows, columns=cols).assign(component=lambda d: [f"c{i}" for i in d.index])
    return d.assign(E_down=d.AP - d.AtP_out, E_local=d.AtP_out - d.AtP)


def test_dominance_of_a_query_that_is_all_local():
    # E_down = AP - AtP_out = 0, E_local = AtP_out - AtP = 1: 0% downstream
    d = frame(
        [("p", "head_q", 2.0, 1.0, 2.0, 0.5, 0.0), ("p", "head_out", 1.0, 0.5, 0.5, 0.0, 1.0)]
    )
    (finding,) = diagnosis.dominance(d, perturbations=["p"]).findings
    assert finding.key == "diagnosis.dominance"
    assert finding.values["down_share"] == 0.0 and finding.values["band"] == "almost_all_local"
    assert finding.values["second_band"] == "almost_all_local"


def test_summary_counts_local_wins_and_compares_absolute_sizes():
    d = frame(
        [
            ("p", "head_q", 2.0, 1.0, 2.0, 1.0, 0.0),  # local 1.0, down 0: local wins
            ("p", "head_k", 2.0, 1.0, 1.0, 0.0, 1.0),  # down 1.0: downstream
            ("p", "mlp_out", 9.0, 1.0, 1.0, 0.0, 1.0),  # mean |AP - AtP| = 8: the largest
        ]
    )
    checks = pd.DataFrame({"max": [0.0]}, index=pd.Index(["p"], name="perturbation"))
    keys = [f.key for f in diagnosis.summary(d, perturbations=["p"], checks=checks).findings]
    assert keys[0] == "diagnosis.split_exact" and "diagnosis.local_in_some" in keys
    largest = diagnosis.summary(d, perturbations=["p"], checks=checks).findings[-1]
    assert largest.key == "diagnosis.largest_downstream"
    assert largest.values["ratio"] == 8.0 and largest.values["local_kind"] == "head_q"


def test_failed_checks_are_not_called_exact():
    checks = pd.DataFrame({"max": [1e-3, 0.0]}, index=pd.Index(["a", "b"], name="perturbation"))
    (finding,) = diagnosis.checks_hold(checks).findings
    assert finding.values["n_passed"] == 1 and finding.values["all_pass"] is False
    assert finding.sentence.startswith("On 1 of 2 perturbations")


# notebook 00


def test_by_hand_counts_signs_on_clear_effects_and_ranks_the_worst_head():
    from hvp_utils.analysis.findings import by_hand

    heads = pd.DataFrame(
        {
            "component": ["a", "b", "c", "d"],
            "AP": [4.0, -2.0, 1.0, 0.1],  # d is below 5% of 4: not a clear effect
            "AtP": [3.9, 1.0, 1.0, -0.1],  # b has the wrong sign and the largest error (3)
        }
    )
    found = {f.key: f.values for f in by_hand.atp_against_ap(heads).findings}
    assert found["by_hand.sign_agreement"] == {"n_sign_right": 2, "n_clear": 3}
    assert found["by_hand.same_top"] == {"component": "a"}
    assert found["by_hand.largest_error"]["component"] == "b"
    assert found["by_hand.largest_error"]["ap_rank"] == 2


def test_by_hand_second_order_names_the_heads_it_misses():
    from hvp_utils.analysis.findings import by_hand

    # x: |1 + 1 - 2| = 0 < 1, closer; y: |1 + 2 - 1| = 2 > 0, further
    second = pd.DataFrame(
        {"component": ["x", "y"], "AP": [2.0, 1.0], "AtP": [1.0, 1.0], "g2": [2.0, 4.0]}
    )
    found = {f.key: f.values for f in by_hand.second_order(second).findings}
    assert found["by_hand.second_order_closer"] == {"n_better": 1, "n": 2}
    assert found["by_hand.second_order_mean_error"] == {"error_atp": 0.5, "error_second": 1.0}
    assert found["by_hand.second_order_misses"] == {"components": "y"}


def test_by_hand_path_that_bends_up_with_a_negative_curvature_at_zero():
    from hvp_utils.analysis.findings import by_hand

    path = pd.DataFrame({"t": [0.0, 0.5, 1.0], "g": [1.0, 1.2, 2.0]})  # AP = 1
    found = by_hand.top_path(path, component="h", atp=0.5, g2=-0.3).findings
    assert [f.key for f in found] == ["by_hand.path_bend", "by_hand.curvature_opposite_sign"]
    assert found[0].values["bend"] == 0.5


# notebook 03


def reliability_rows(rows):
    """Component rows (kind, AP, AtP, lower, upper, lower_nodes, upper_nodes, flag_score,
    flag_sign, flag_threshold) under one perturbation ``p``."""
    cols = ["kind", "AP", "AtP", "lower", "upper", "lower_nodes", "upper_nodes"]
    cols += ["flag_score", "flag_sign", "flag_threshold"]
    t = pd.DataFrame(rows, columns=cols).assign(perturbation="p")
    return t.assign(
        component=[f"c{i}" for i in t.index],
        flags=t.flag_score | t.flag_sign | t.flag_threshold,
    )


def test_reliability_coverage_counts_the_nodes_misses_and_the_widths():
    from hvp_utils.analysis.findings import reliability

    t = reliability_rows(
        [
            ("head_q", 1.0, 0.5, 0.0, 2.0, 0.0, 0.8, False, False, False),  # width 2, nodes miss
            ("head_q", 2.0, 2.0, 1.0, 3.0, 1.0, 3.0, False, False, False),  # width 1
            ("mlp_out", 1.0, 1.5, 1.2, 1.8, 1.2, 1.8, False, False, False),  # outside, width 0.6
        ]
    )
    found = {f.key: f.values for f in reliability.coverage(t, perturbations=["p"]).findings}
    assert found["reliability.coverage"] == {
        "perturbation": "p",
        "inside": 2,
        "n": 3,
        "median_width": 1.0,
    }
    assert found["reliability.outside"]["n_outside"] == 1
    assert found["reliability.nodes_miss"]["n_more"] == 1
    assert found["reliability.width_by_kind"]["narrowest"] == "mlp_out"
    assert found["reliability.width_by_kind"]["widest_width"] == 1.5


def test_reliability_flag_reasons_finds_the_rarest_reason_and_sign_implies_score():
    from hvp_utils.analysis.findings import reliability

    t = reliability_rows(
        [
            ("head_q", 1, 1, 0, 2, 0, 2, True, True, False),
            ("head_q", 1, 1, 0, 2, 0, 2, True, False, True),
            ("head_q", 1, 1, 0, 2, 0, 2, True, False, True),
            ("mlp_out", 1, 1, 0, 2, 0, 2, False, False, True),
        ]
    )
    found = reliability.flag_reasons(t, perturbations=["p"], tau=0.3).findings
    values = {f.key: f.values for f in found}
    assert values["reliability.most_flagged_kind"]["kind"] == "head_q"
    assert values["reliability.most_flagged_kind"]["n_flagged"] == 3
    assert values["reliability.rarest_reason"] == {
        "reason": "flag_sign",
        "n": 1,
        "commonest": "flag_score",
        "n_commonest": 3,
    }
    assert "reliability.sign_implies_score" in values
    assert not any(
        f.key == "reliability.sign_implies_score"
        for f in reliability.flag_reasons(t, perturbations=["p"], tau=0.6).findings
    )


def test_reliability_detector_quality_bands():
    from hvp_utils.analysis.findings import reliability

    assert [reliability.detector_quality(a) for a in (0.95, 0.9, 0.8, 0.7, 0.6, 0.5)] == [
        "strong",
        "strong",
        "useful",
        "weak",
        "chance",
        "chance",
    ]


# notebook 01


def test_attribution_remainder_of_a_path_that_bends_up_then_down():
    from hvp_utils.analysis.findings import attribution

    curvature = pd.DataFrame({"t": [0.25, 0.75], "g2": [2.0, -1.0]})
    found = attribution.remainder(
        curvature, component="m", perturbation="p", ap=1.0, atp=0.5, integral=0.5
    ).findings
    assert found[0].key == "attribution.remainder_mixed"
    assert found[0].values["bend"] == "up_then_down" and found[0].values["side"] == "below"
    assert found[0].values["n_up"] == 1


def test_attribution_error_signs_names_the_groups_on_both_sides():
    from hvp_utils.analysis.findings import attribution

    signs = pd.DataFrame(
        {"n": [2, 2], "below": [2, 1], "above": [0, 1], "clear": [1, 1], "clear_below": [1, 0]},
        index=pd.MultiIndex.from_tuples([("p", "a"), ("p", "b")], names=["perturbation", "kind"]),
    ).assign(below_error_share=[1.0, 0.5])
    assert attribution.error_sides(signs) == "both_sides"
    assert attribution.error_sides(signs.assign(clear_below=[1, 1])) == "clear_below"
    assert attribution.error_sides(signs.assign(below=[2, 2])) == "all_below"
    frame = pd.DataFrame(columns=["perturbation", "kind", "component", "AP", "estimate"])
    found = attribution.error_signs(frame, sign_table=signs, perturbation="p", rounding=1e-12)
    last = found.findings[-1]
    assert last.key == "attribution.error_both_sides" and last.values["groups"] == [["p", "b"]]


def test_attribution_costs_constant_and_varying():
    from hvp_utils.analysis.findings import attribution

    index = pd.MultiIndex.from_tuples(
        [("p", "a", "AP"), ("p", "a", "AtP"), ("p", "b", "AP"), ("p", "b", "AtP")],
        names=["perturbation", "kind", "method"],
    )
    cost = pd.DataFrame(
        {"components": [4, 4, 10, 10], "forward": [6, 3, 12, 3], "backward": [0, 1, 0, 1]},
        index=index,
    )
    found = {f.key: f.values for f in attribution.costs(cost).findings}
    assert found["attribution.atp_cost"] == {
        "forward": 3,
        "backward": 1,
        "min_components": 4,
        "max_components": 10,
    }
    assert found["attribution.ap_cost"]["extra"] == 2
    varying = cost.assign(forward=[6, 3, 13, 3])
    keys = [f.key for f in attribution.costs(varying).findings]
    assert keys == ["attribution.atp_cost", "attribution.ap_cost_varies"]


# notebook 04


def effects(rows):
    """Effects rows (perturbation, kind, AP, AtP, c = g''(0)/2)."""
    d = pd.DataFrame(rows, columns=["perturbation", "kind", "AP", "AtP", "c"])
    return d.assign(
        component=[f"c{i}" for i in d.index], e1=d.AP - d.AtP, **{"HVP diag": d.AtP + d.c}
    )


def test_overshoots_split_by_the_way_they_overshoot():
    d = effects(
        [
            ("p", "mlp_out", 10.0, 9.0, -1.0),  # e1 = 1, c = -1: points away, error 1 -> 2
            ("p", "mlp_out", 10.0, 9.0, 3.0),  # e1 = 1, c = 3 > 2 e1: too far, error 1 -> 2
            ("p", "mlp_out", 10.0, 9.0, 0.5),  # helps: error 1 -> 0.5
            ("p", "mlp_out", 0.1, 0.0, -5.0),  # |AP| below 5% of 10: not a clear effect
            ("p", "head_q", 4.0, 2.0, 1.0),  # helps: never overshot
        ]
    )
    found = second_order.overshoots(d, clear_share=0.05)
    keys = [f.key for f in found.findings]
    assert keys == [
        "second_order.overshoots",
        "second_order.kinds_never_overshot",
        "second_order.worst_overshoot",
    ]
    counts = found.findings[0].values
    assert (counts["n_clear"], counts["n_overshot"]) == (4, 2)
    assert (counts["n_points_away"], counts["n_goes_too_far"]) == (1, 1)
    assert found.findings[1].values["kinds"] == ["head_q"]
    # both overshoots lose 1.0: the first one listed is the worst
    assert found.findings[2].values["component"] == "c0"
    assert found.findings[2].values["points_away"] is True


def test_answer_with_one_kind_lowered_names_only_it():
    index = pd.MultiIndex.from_tuples([("p", "a"), ("p", "b")], names=["perturbation", "kind"])
    nmae = pd.DataFrame({"AtP": [0.2, 0.1], "HVP diag": [0.1, 0.3]}, index=index)
    lowers, free = second_order.answer(nmae).findings
    assert lowers.key == "second_order.answer_lowers"
    assert lowers.values["best"] == "a" and lowers.values["gain"] == 0.5
    assert lowers.values["raised"] == ["b"] and free.key == "second_order.no_free_improvement"
    assert "only for a (to 0.50x" in lowers.sentence


def test_per_kind_with_an_exact_atp_states_no_ratio():
    index = pd.MultiIndex.from_tuples([("p", "a")], names=["perturbation", "kind"])
    nmae = pd.DataFrame({"AtP": [0.0], "HVP diag": [0.1]}, index=index)
    (finding,) = second_order.per_kind(nmae).findings
    assert finding.key == "second_order.kind_raises" and finding.values["ratio"] is None
    assert finding.values["best"] == "AtP" and "(n/a)" in finding.sentence


# notebook 05


def bench_rows(key, method, nmaes, hvp):
    """Two (perturbation, kind) cells of one estimator: NMAE, 3 forward, 1 backward, hvp."""
    cells = [("p", "head_out"), ("p", "mlp_out")]
    return [
        dict(perturbation=p, kind=k, key=key, method=method, family="f", nmae=e)
        | dict(forward=3, backward=1, hvp=hvp)
        for (p, k), e in zip(cells, nmaes, strict=True)
    ]


def test_duels_name_the_winner_and_the_extra_double_backward_passes():
    (radau, gauss), (taylor, midpoint) = quadrature.duel_pairs().values()
    bench = pd.DataFrame(
        bench_rows(radau, "radau", [0.2, 0.4], hvp=4)
        + bench_rows(gauss, "gauss", [0.1, 0.1], hvp=0)
        + bench_rows(taylor, "taylor", [0.1, 0.3], hvp=8)
        + bench_rows(midpoint, "midpoint", [0.2, 0.2], hvp=0)
    )
    first, second, verdict = quadrature.duels(bench).findings
    assert first.key == "quadrature.duel_incumbent_better"
    assert (first.values["ratio_min"], first.values["ratio_max"]) == (2.0, 4.0)
    assert first.values["extra_hvp"] == [4] and "radau adds 4 double-backward" in first.sentence
    assert second.key == "quadrature.duel_split" and second.values["n_challenger_better"] == 1
    assert verdict.key == "quadrature.gauss_beats_radau"


def convergence_curve(errors):
    """Curves of rules {rule: (derived order, [errors at K = 2, 4, 8])}."""
    rows = [
        dict(perturbation="p", rule=rule, K=k, max_abs_error=e, worst="MLP0", derived_order=order)
        | dict(floor=1e-14, eps=2.2e-16)
        for rule, (order, es) in errors.items()
        for k, e in zip((2, 4, 8), es, strict=True)
    ]
    return pd.DataFrame(rows)


def test_doubling_compares_each_shrink_with_its_order():
    curve = convergence_curve(
        {"midpoint": (2, [1.0, 0.25, 0.0625]), "gauss": (4, [1.0, 1 / 16, 1 / 256])}
    )
    doubled, ranked = quadrature.doubling(curve).findings
    assert [(r["rule"], r["shrink"]) for r in doubled.values["rules"]] == [
        ("midpoint", 4.0),
        ("gauss", 16.0),
    ]
    assert "gauss 16.0x (order 4 predicts 16x)" in doubled.sentence
    assert ranked.key == "quadrature.order4_faster"


def test_error_orders_flag_slow_fits_growth_and_the_floor():
    # gauss grows from K = 2 to 4, then its last point sits on the floor
    curve = convergence_curve(
        {"midpoint": (2, [1.0, 0.25, 0.0625]), "gauss": (4, [1e-3, 2e-3, 1e-14])}
    )
    fits = pd.DataFrame(
        [
            dict(rule="midpoint", derived_order=2, fitted_order=2.0, k_min=2, k_max=8, excluded=""),
            dict(
                rule="gauss",
                derived_order=4,
                fitted_order=-1.0,
                k_min=2,
                k_max=4,
                excluded="8 (floor)",
            ),
        ]
    ).assign(perturbation="p")
    found = quadrature.error_orders(curve, fits, featured="p", fit_from=2)
    keys = [f.key for f in found.findings]
    assert keys == [
        "quadrature.fitted_orders",
        "quadrature.slower_than_derived",
        "quadrature.error_grows",
        "quadrature.cut_at_floor",
    ]
    orders = found.findings[0].values
    assert (orders["matching"], orders["slower"], orders["faster"]) == (["midpoint"], ["gauss"], [])
    assert found.findings[2].values["rules"] == ["gauss"]


# notebook 06


def head_roles(rows: dict[str, dict], roles: dict[str, str]) -> HeadRoles:
    """A head-role table by hand: every evidence column neutral unless a row sets it, and the
    roles written out (not computed), with assign_roles' default thresholds."""
    neutral = {
        "layer": 0,
        "AP": 0.1,
        "end->IO": 0.1,
        "end->S1": 0.2,
        "end->S2": 0.2,
        "end selectivity": -0.3,
        "S2->S1": 0.1,
        "S2->S1+1": 0.1,
        "copy margin": 0.5,
        "DLA": 0.0,
        "inhibition": np.nan,
    }
    table = pd.DataFrame({h: {**neutral, **row} for h, row in rows.items()}).T
    table = table.astype({c: float for c in neutral}).astype({"layer": int})
    table["roles"] = [roles.get(h, "") for h in table.index]
    table["role"] = [roles.get(h, "other").split(", ")[0] for h in table.index]
    return HeadRoles(table, copy=None, query_paths=None, thresholds=dict(THRESHOLDS))


THRESHOLDS = dict(
    min_selectivity=0.0,
    min_copy_margin=0.0,
    min_inhibition=0.05,
    min_duplicate=0.3,
    min_induction=0.3,
)


def verdicts(found):
    return {(f.key, f.values.get("role")): f.values for f in found.findings}


def test_reference_circuit_states_the_roles_found_and_the_evidence_against_the_others():
    roles = head_roles(
        {
            "L0H0": {"AP": 1.0, "S2->S1": 0.6},
            "L1H0": {"layer": 1, "AP": 0.4, "inhibition": 0.2},
            "L2H0": {
                "layer": 2,
                "AP": 2.0,
                "end->IO": 0.7,
                "end->S1": 0.05,
                "end->S2": 0.1,
                "end selectivity": 0.55,
                "copy margin": 3.0,
                "DLA": 1.5,
            },
            "L2H1": {"layer": 2, "AP": 0.01, "S2->S1+1": 0.25},
        },
        {"L0H0": "duplicate token", "L1H0": "S-inhibition", "L2H0": "name mover"},
    )
    found = circuits.reference_circuit(
        roles, reference=["L0H0", "L2H0"], threshold_share=0.1, run={"seed": 0}
    )
    said = verdicts(found)
    assert list(said) == [
        ("circuits.reference", None),
        ("circuits.roles", None),
        ("circuits.role_found", "name mover"),
        ("circuits.no_negative_name_mover", None),
        ("circuits.role_found", "S-inhibition"),
        ("circuits.role_found", "duplicate token"),
        ("circuits.no_induction", None),
    ]
    (mover,) = said["circuits.role_found", "name mover"]["heads"]
    assert mover == {
        "head": "L2H0",
        "layer": 2,
        "in_circuit": True,
        "end->IO": 0.7,
        "end->S1": 0.05,
        "end->S2": 0.1,
        "copy margin": 3.0,
        "DLA": 1.5,
    }
    (inhibitor,) = said["circuits.role_found", "S-inhibition"]["heads"]
    assert (inhibitor["head"], inhibitor["in_circuit"], inhibitor["inhibition"]) == (
        "L1H0",
        False,
        0.2,
    )
    # the one head that attends to IO copies it and helps: no negative name mover
    negative = said["circuits.no_negative_name_mover", None]
    assert negative["n_selective"] == 1
    assert negative["selective"] == [{"head": "L2H0", "copy_margin": 3.0, "AP": 2.0, "DLA": 1.5}]
    induction = said["circuits.no_induction", None]
    assert (induction["largest"], induction["largest_head"], induction["threshold"]) == (
        0.25,
        "L2H1",
        0.3,
    )
    text = " ".join(found.sentences)
    assert "L2H0 at layer 2, in the circuit (END attends to IO 0.70 against S1 0.05" in text
    assert "L1H0 at layer 1 (corrupting its END output lowers" in text
    assert "largest S2 → S1+1 attention is 0.250, at L2H1" in text
    assert found.values["min_inhibition"] == 0.05 and found.values["seed"] == 0
    recorded = pd.DataFrame(found.tables["head_roles"]).set_index("head")
    assert recorded["in circuit"].tolist() == [True, False, True, False]


def test_no_role_where_no_head_attends_to_io():
    roles = head_roles(
        {"L0H0": {"AP": 1.0, "end selectivity": -0.2}, "L1H0": {"layer": 1, "AP": -0.5}}, {}
    )
    found = circuits.reference_circuit(
        roles, reference=["L0H0", "L1H0"], threshold_share=0.1, run={}
    )
    said = verdicts(found)
    for key in ("circuits.no_name_mover", "circuits.no_negative_name_mover"):
        values = said[key, None]
        assert values["n_selective"] == 0 and values["selective"] == []
        assert (values["largest_selectivity"], values["largest_selectivity_head"]) == (-0.2, "L0H0")
    assert said["circuits.no_s_inhibition", None]["n_tested"] == 0
    assert said["circuits.no_duplicate_token", None]["largest"] == 0.1
    assert "no head attends from END more to IO than to S1 and S2 together" in found.sentences[2]
    assert "there is no name mover" in found.sentences[4]


def test_a_head_that_attends_to_io_without_copying_is_named_with_its_numbers():
    roles = head_roles(
        {
            "L2H0": {"layer": 2, "end selectivity": 0.4, "copy margin": -1.0, "DLA": 0.2},
            "L1H0": {"layer": 1, "inhibition": 0.01},
        },
        {},
    )
    said = verdicts(
        circuits.reference_circuit(roles, reference=["L2H0"], threshold_share=0.1, run={})
    )
    mover = said["circuits.no_name_mover", None]
    assert mover["n_selective"] == 1 and mover["selective"][0]["copy_margin"] == -1.0
    inhibition = said["circuits.no_s_inhibition", None]
    assert (inhibition["n_tested"], inhibition["largest"], inhibition["largest_head"]) == (
        1,
        0.01,
        "L1H0",
    )


def test_summary_lists_roles_found_and_missing():
    roles = head_roles(
        {"L0H0": {"S2->S1": 0.6}, "L1H0": {"layer": 1}, "L1H1": {"layer": 1}},
        {"L0H0": "duplicate token"},
    )
    recovery = pd.DataFrame({"precision": [1.0], "auroc": [1.0]}, index=["AtP"])
    curves = pd.DataFrame(
        {
            "size": [0, 2, 0, 2],
            "method": ["AP", "AP", "AtP", "AtP"],
            "faithfulness": [0.0, 1.0, 0.0, 1.0],
        }
    )
    found = circuits.summary(
        roles,
        reference=["L0H0", "L1H0"],
        recovery=recovery,
        recovery_pos=recovery,
        curves=curves,
        truth="AP",
        first_order="AtP",
    )
    roles_said = found.findings[0]
    assert roles_said.key == "circuits.summary_roles"
    assert roles_said.values["found"] == {"duplicate token": [{"head": "L0H0", "layer": 0}]}
    assert roles_said.values["missing"] == [
        "name mover",
        "negative name mover",
        "S-inhibition",
        "induction",
    ]
    assert (roles_said.values["n_without"], roles_said.values["n_reference"]) == (1, 2)
    assert "duplicate token (L0H0 at layer 0)" in roles_said.sentence
    assert "1 of the 2 circuit heads have none of them" in roles_said.sentence


def test_boundary_swapped_by_errors_larger_than_the_margin():
    # |AP|: A 1.0, B 0.5 (the circuit), C 0.4; AtP puts C (0.35) above B (0.3)
    scores = pd.DataFrame(
        {"AP": [1.0, 0.5, 0.4], "AtP": [0.9, 0.3, 0.35]}, index=pd.Index(list("ABC"), name="head")
    )
    found = circuits.boundary(scores, reference=["A", "B"], truth="AP", first_order="AtP")
    (answer, margin, largest) = found.findings
    assert answer.key == "circuits.answer_swaps"
    assert (answer.values["weakest_in"], answer.values["strongest_out"]) == ("B", "C")
    # margin 0.5 - 0.4 = 0.1 < errors 0.2 + 0.05, and AtP does swap B and C
    assert margin.key == "circuits.margin_exceeded_swapped"
    assert abs(margin.values["margin"] - 0.1) < 1e-12
    # the largest error (0.2, on B) is 0.1 from the boundary: near enough to carry B across
    assert largest.key == "circuits.largest_error_near" and largest.values["inside"] is True
    assert largest.values["max_error_head"] == "B"


def test_faithfulness_gap_and_differing_top_sets():
    scores = pd.DataFrame({"AP": [2.0, 1.0, 0.1], "X": [0.1, 1.0, 2.0]}, index=list("ABC"))
    curves = pd.DataFrame(
        {
            "size": [0, 1, 2, 3] * 2,
            "method": ["AP"] * 4 + ["X"] * 4,
            "faithfulness": [0.0, 0.8, 1.2, 1.0, 0.0, 0.1, 0.9, 1.0],
        }
    )
    found = circuits.faithfulness(curves, scores, reference=["A", "B"], truth="AP")
    ap, tops, gap = found.findings
    assert ap.key == "circuits.reference_above_full" and ap.values["faithfulness"] == 1.2
    assert tops.key == "circuits.some_top_sets_differ" and tops.values["differ"] == {"X": 0.9}
    # |0.1 - 0.8| = 0.7 at k = 1 is the largest gap, above 0.1: the curves are apart
    assert gap.key == "circuits.curves_apart"
    assert (gap.values["method"], gap.values["size"]) == ("X", 1)
    assert abs(gap.values["max_gap"] - 0.7) < 1e-12


# notebook 07


def sff_results(rows):
    """Results rows (granularity, perturbation, method, spearman, x AP time); 10 components,
    top-k recall 1 and fixed pass counts everywhere."""
    cols = ["granularity", "perturbation", "method", "spearman", "x AP time"]
    frame = pd.DataFrame(rows, columns=cols)
    return frame.assign(
        components=10, flagged=2, forward=12, backward=0, hvp=0, **{"top-k recall": 1.0}
    )


def test_pays_off_where_cheaper_and_worth_it_and_not_where_the_screen_is_enough():
    rows = []
    for p in ("a", "b"):
        rows += [
            ("many", p, workflow.ATP, 0.90, 0.01),
            ("many", p, workflow.PATCH, 0.99, 0.5),  # cheaper than AP, +0.09: pays off
            ("many", p, workflow.AP, 1.0, 1.0),
            ("tame", p, workflow.ATP, 0.999, 0.01),
            ("tame", p, workflow.PATCH, 0.9995, 0.2),  # cheaper, but +0.0005 < 0.01
            ("tame", p, workflow.AP, 1.0, 1.0),
        ]
    rows += [("many", "a", workflow.HVP, 1.0, 2.0), ("many", "b", workflow.HVP, 1.0, 0.5)]
    results = sff_results(rows)
    keys = [f.key for f in workflow.pays_off(results, featured="b").findings]
    assert keys == ["workflow.pays_off", "workflow.screen_enough", "workflow.hvp_everywhere_slower"]
    slower = workflow.pays_off(results, featured="b").findings[-1].values
    assert (slower["n_slower"], slower["n_runs"]) == (1, 2)
    answer = workflow.answer(results, featured="a").findings
    assert answer[0].values["granularities"] == ["many"]
    assert [f.key for f in answer[1:]] == [
        "workflow.answer_pays_off",
        "workflow.answer_screen_enough",
    ]


def test_budget_reaches_like_ap_with_the_first_fix():
    curve = pd.DataFrame(
        {"budget": [0, 1, 2], "forward passes": [0, 1, 2], "spearman": [0.9, 0.995, 0.999]}
    )
    heads = pd.DataFrame({"component": list("xyz"), "flagged": [True, True, False]})
    results = sff_results([("heads", "a", workflow.AP, 1.0, 1.0)])
    (finding,) = workflow.budget(curve, heads, results=results, perturbation="a").findings
    assert finding.key == "workflow.budget_reaches"
    assert (finding.values["n_fixed"], finding.values["n_flagged"]) == (1, 2)
    assert finding.values["ap_forward"] == 12 and finding.values["reached"] == 0.995


# notebook 08


def test_answer_names_the_worst_kinds_and_whether_they_are_the_local_ones():
    atp_nmae = pd.DataFrame(
        {"p": [0.9, 0.1, 0.8], "q": [0.9, 0.8, 0.1]},
        index=pd.Index(["head_q", "head_out", "neuron_pre"], name="kind"),
    )
    found = takeaways.answer(atp_nmae, local_kinds=["head_q", "neuron_pre"])
    p, q = found.findings
    assert p.key == "takeaways.worst_are_local"
    assert [w["kind"] for w in p.values["worst"]] == ["head_q", "neuron_pre"]
    assert q.key == "takeaways.worst_not_local"  # head_out (0.8) outranks neuron_pre (0.1)


def test_rules_of_thumb_pick_what_ranks_like_ap():
    columns = ["best at AtP cost", "its nmae", "its x AtP time", "AtP nmae", "AtP ranks like AP"]
    decision = pd.DataFrame(
        [
            ("p", "a", "AtP", 0.2, 1.0, 0.2, True, "AtP", 0.2, False, True),
            ("p", "b", "AtP*", 0.1, 1.5, 0.3, False, "AP", 1.0, True, False),
            ("p", "c", "AtP*", 0.1, 1.5, 0.3, False, "IG K=2", 0.5, False, False),
        ],
        columns=[
            "perturbation",
            "kind",
            *columns,
            "cheapest ranking like AP",
            "its x AP time",
            "only AP ranks like AP",
            "AtP is best at its cost",
        ],
    ).set_index(["perturbation", "kind"])
    found = takeaways.rules_of_thumb(
        decision, kinds=["a", "b", "c"], perturbation="p", budget_x_atp=2.0
    )
    assert [f.values["ranking"] for f in found.findings] == ["atp", "only_ap", "cheapest"]
    assert [f.values["atp_best"] for f in found.findings] == [True, False, False]


def test_source_says_whether_the_benchmark_ran_at_the_page_settings():
    asked = dict(model_name="toy-ioi", n_prompts=8, seed=0, dtype="float64")
    run = {"command": "bench", "seconds": 60.0, "settings": {**asked, "quick": False}}

    def keys(run, **changed):
        found = takeaways.source(run, perturbation="name_swap", **{**asked, **changed})
        return [f.key for f in found.findings], found.findings[1].values

    assert keys(run)[0] == ["takeaways.source", "takeaways.same_settings", "takeaways.rerun"]
    differ, values = keys(run, n_prompts=6, seed=1)
    assert differ[1] == "takeaways.settings_differ"
    assert values["differ"] == [
        {"name": "n_prompts", "asked": 6, "measured": 8},
        {"name": "seed", "asked": 1, "measured": 0},
    ]
    assert keys({"command": "bench", "seconds": 60.0})[0][1] == "takeaways.settings_unknown"
