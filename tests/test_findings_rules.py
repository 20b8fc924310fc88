"""The findings rules on small tables whose verdicts are known by hand, by notebook."""

import pandas as pd

from hvp_utils.analysis.findings import circuits, diagnosis, takeaways, workflow


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


# notebook 06


def roles_frame(rows):
    """Head-role rows (head, layer, AP, role, in circuit); attention shares are not read."""
    cols = ["head", "layer", "AP", "role", "in circuit"]
    shares = {c: 0.0 for c in ["end->IO", "end->S1", "end->S2", "S2->S1", "S2->IO"]}
    return pd.DataFrame(rows, columns=cols).assign(**shares).set_index("head")


def test_reference_circuit_groups_roles_and_reads_the_layer0_mechanism():
    roles = roles_frame(
        [
            ("L0H0", 0, 1.0, "copies S to end", True),
            ("L1H0", 1, -0.5, "negative", True),
            ("L1H1", 1, 0.01, "other", False),
        ]
    )
    found = circuits.reference_circuit(roles, fraction=0.1, run={"seed": 0})
    keys = [f.key for f in found.findings]
    assert keys == [
        "circuits.reference",
        "circuits.roles",
        "circuits.no_name_mover",
        "circuits.positive_layer0_copy_s",
    ]
    reference, groups = found.findings[0].values, found.findings[1].values["groups"]
    assert (reference["n_reference"], reference["n_heads"], reference["heads"]) == (
        2,
        3,
        "L0H0, L1H0",
    )
    assert [(g["layer"], g["role"], g["n"]) for g in groups] == [
        (0, "copies S to end", 1),
        (1, "negative", 1),
    ]
    assert found.values["seed"] == 0 and found.values["reference_fraction"] == 0.1


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
            ("p", "a", "AtP", 0.2, 1.0, 0.2, True, "AtP", 0.2),
            ("p", "b", "AtP*", 0.1, 1.5, 0.3, False, "AP", 1.0),
            ("p", "c", "AtP*", 0.1, 1.5, 0.3, False, "IG K=2", 0.5),
        ],
        columns=["perturbation", "kind", *columns, "cheapest ranking like AP", "its x AP time"],
    ).set_index(["perturbation", "kind"])
    found = takeaways.rules_of_thumb(
        decision, kinds=["a", "b", "c"], perturbation="p", budget_x_atp=2.0
    )
    assert [f.values["ranking"] for f in found.findings] == ["atp", "only_ap", "cheapest"]
    assert [f.values["atp_best"] for f in found.findings] == [True, False, False]
