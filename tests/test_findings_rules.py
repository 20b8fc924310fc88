"""The rules of notebook 02 on small tables whose verdicts are known by hand."""

import pandas as pd

from hvp_utils.analysis.findings import diagnosis


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
