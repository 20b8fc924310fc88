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
