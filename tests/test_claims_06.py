"""Notebook 06's verdicts, recomputed from the tables it recorded (committed run and reruns).

The rankings, circuits, AUROCs, head roles and faithfulness gaps are recomputed here with plain
numpy/pandas from the recorded per-head estimates, role evidence and curves (not with
``hvp_utils``), then compared with the verdict keys and values the notebook states; AP's
faithfulness at the reference size is recomputed from the embedded model with plain
mean-ablation hooks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hvp_utils.analysis.findings.circuits import GPT2_ROLES  # the roles and evidence stated
from tests.claims import Recorded, close, params

NB = "06"
AP, ATP, DIAG = "AP", "AtP", "HVP diag"
THRESHOLDS = ["min_selectivity", "min_copy_margin", "min_inhibition", "min_duplicate"]
THRESHOLDS += ["min_induction"]


def reference_of(values: pd.Series, threshold_share: float) -> list[str]:
    """Components whose |AP| is at least ``threshold_share`` of the largest, in given order."""
    size = values.abs()
    return [name for name, v in size.items() if v >= threshold_share * size.max()]


def top_set(values: pd.Series, k: int) -> set[str]:
    return set(values.abs().sort_values(ascending=False, kind="stable").index[:k])


def auroc_pairs(values: pd.Series, positive: set[str]) -> float:
    """Share of (positive, negative) pairs ranked the right way by |value|, ties counting 1/2."""
    size = values.abs()
    pos = size[size.index.isin(positive)].to_numpy()[:, None]
    neg = size[~size.index.isin(positive)].to_numpy()[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def ranks_of(values: pd.Series) -> pd.Series:
    """1-based rank by |value|, largest first."""
    order = values.abs().sort_values(ascending=False, kind="stable").index
    return pd.Series(np.arange(1, len(order) + 1), index=order)


def roles_of(row: pd.Series, t: dict) -> list[str]:
    """The roles the notebook's rule table gives a head, written out again from its evidence."""
    attends_io = row["end selectivity"] > t["min_selectivity"]
    copy, dla, inhibition = row["copy margin"], row["DLA"], row["inhibition"]
    rules = {
        "name mover": attends_io and copy > t["min_copy_margin"] and dla > 0,
        "negative name mover": attends_io
        and copy < -t["min_copy_margin"]
        and (row["AP"] < 0 or dla < 0),
        "S-inhibition": not pd.isna(inhibition) and inhibition >= t["min_inhibition"],
        "duplicate token": row["S2->S1"] >= t["min_duplicate"],
        "induction": row["S2->S1+1"] >= t["min_induction"],
    }
    return [role for role, holds in rules.items() if holds]


def role_table(r: Recorded) -> tuple[pd.DataFrame, dict]:
    """The recorded head-role table with each head's roles recomputed (column ``ours``), and
    the thresholds the notebook recorded."""
    t = {name: r[name] for name in THRESHOLDS}
    roles = r.table("head_roles").set_index("head")
    roles["inhibition"] = pd.to_numeric(roles["inhibition"])
    roles["ours"] = [roles_of(row, t) for _, row in roles.iterrows()]
    return roles, t


def largest(column: pd.Series) -> tuple[float, str]:
    return float(column.max()), str(column.idxmax())


def load(path) -> tuple[Recorded, pd.DataFrame, list[str]]:
    r = Recorded(path)
    scores = r.table("head_estimates").set_index("head")
    reference = reference_of(scores[AP], r["threshold_share"])
    return r, scores, reference


def recovered(scores: pd.DataFrame, reference: list[str]) -> pd.DataFrame:
    """Per estimator: precision at k = |reference|, AUROC, and the heads missed / added."""
    k, rows = len(reference), {}
    for m in scores.columns.drop(AP):
        top = top_set(scores[m], k)
        rows[m] = {
            "precision": len(top & set(reference)) / k,
            "auroc": auroc_pairs(scores[m], set(reference)),
            "missed": ", ".join(h for h in scores.index if h in reference and h not in top),
            "false_positives": ", ".join(
                h for h in scores.index if h in top and h not in reference
            ),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


@params(NB)
def test_defaults_of_the_committed_notebook(path):
    r = Recorded(path)
    if path.parent.name == "notebooks":
        assert (r["perturbation"], r["n_prompts"], r["seed"]) == ("name_swap", 8, 0)


@params(NB)
def test_reference_circuit_and_roles(path):
    r, scores, reference = load(path)
    roles, t = role_table(r)
    assert list(roles.index) == list(scores.index)
    assert np.allclose(roles.AP, scores.AP)
    assert roles.index[roles["in circuit"]].tolist() == reference
    _, stated = r.only("circuits.reference")
    assert (stated["n_reference"], stated["n_heads"]) == (len(reference), len(roles))
    assert stated["threshold_share"] == r["threshold_share"]
    assert close(stated["largest_abs_ap"], roles.AP.abs().max())
    assert stated["heads"] == ", ".join(reference)

    # every head's roles follow the rule table from its evidence alone (no layer enters)
    for head, row in roles.iterrows():
        assert (row["roles"] or "") == ", ".join(row.ours), head
        assert row.role == (row.ours[0] if row.ours else "other"), head

    circuit = roles.loc[reference]
    groups = [
        {"layer": layer, "role": role, "n": len(g), "heads": ", ".join(g.index)}
        for (layer, role), g in circuit.groupby(["layer", "role"])
    ]
    assert r.only("circuits.roles")[1]["groups"] == groups

    selective = roles[roles["end selectivity"] > t["min_selectivity"]]
    for role, columns in GPT2_ROLES.items():
        have = roles[[role in ours for ours in roles.ours]]
        if len(have):
            _, stated = r.only("circuits.role_found", role=role)
            assert [h["head"] for h in stated["heads"]] == have.index.tolist()
            for h in stated["heads"]:
                row = roles.loc[h["head"]]
                assert (h["layer"], h["in_circuit"]) == (row.layer, bool(row["in circuit"]))
                assert all(close(h[c], row[c]) for c in columns), (role, h)
            continue
        assert not r.verdicts("circuits.role_found", role=role)
        if role in ("name mover", "negative name mover"):
            key = "circuits.no_" + role.replace(" ", "_")
            _, stated = r.only(key)
            assert stated["n_selective"] == len(selective)
            assert [h["head"] for h in stated["selective"]] == selective.index.tolist()
            for h in stated["selective"]:
                row = roles.loc[h["head"]]
                assert close(h["copy_margin"], row["copy margin"]) and close(h["DLA"], row.DLA)
                assert close(h["AP"], row.AP)
            value, head = largest(roles["end selectivity"])
            assert close(stated["largest_selectivity"], value)
            assert stated["largest_selectivity_head"] == head
            assert stated["min_selectivity"] == t["min_selectivity"]
        elif role == "S-inhibition":
            _, stated = r.only("circuits.no_s_inhibition")
            tested = roles.inhibition.dropna()
            assert stated["n_tested"] == len(tested)
            if len(tested):
                value, head = largest(tested)
                assert close(stated["largest"], value) and stated["largest_head"] == head
                assert value < t["min_inhibition"] == stated["min_inhibition"]
            else:  # no name mover, so no head was tested
                assert not [ours for ours in roles.ours if "name mover" in ours]
        else:
            key, column, threshold = {
                "duplicate token": ("circuits.no_duplicate_token", "S2->S1", "min_duplicate"),
                "induction": ("circuits.no_induction", "S2->S1+1", "min_induction"),
            }[role]
            _, stated = r.only(key)
            value, head = largest(roles[column])
            assert close(stated["largest"], value) and stated["largest_head"] == head
            assert value < t[threshold] == stated["threshold"]


@params(NB)
def test_recovery_of_every_estimator(path):
    r, scores, reference = load(path)
    table = r.table("recovery").set_index("method")
    ours = recovered(scores, reference)
    assert set(table.index) == set(ours.index)
    for m in table.index:
        assert close(table.loc[m, "precision"], ours.loc[m, "precision"]), m
        assert close(table.loc[m, "auroc"], ours.loc[m, "auroc"]), m
        assert (table.loc[m, "missed"] or "") == ours.loc[m, "missed"], m
        assert (table.loc[m, "false_positives"] or "") == ours.loc[m, "false_positives"], m
    ours = ours.loc[table.index]  # the notebook's order of estimators
    auroc = ours.auroc
    key, stated = r.only("circuits.auroc_equal", "circuits.auroc_range")
    if auroc.min() == auroc.max():
        assert key == "circuits.auroc_equal" and close(stated["auroc"], auroc.min())
    else:
        assert key == "circuits.auroc_range"
        assert close(stated["min_auroc"], auroc.min()) and close(stated["max_auroc"], auroc.max())
        assert stated["min_method"] == auroc.idxmin() and stated["n_estimators"] == len(ours)

    exact = ours.index[ours.precision == 1.0].tolist()
    _, stated = r.only("circuits.exact")
    assert stated["methods"] == exact and stated["n_exact"] == len(exact)
    assert (stated["n_estimators"], stated["n_reference"]) == (len(ours), len(reference))
    erring = ours[ours.precision < 1.0]
    assert len(r.verdicts("circuits.misses")) == len(erring)
    for m, row in erring.iterrows():
        _, stated = r.only("circuits.misses", method=m)
        assert (stated["missed"], stated["false_positives"]) == (row.missed, row.false_positives)

    error = (scores[ATP] - scores[AP]).abs()
    key, stated = r.only("circuits.first_order_exact", "circuits.first_order_misses")
    assert close(stated["auroc"], ours.loc[ATP, "auroc"])
    if ATP in exact:
        assert key == "circuits.first_order_exact"
        assert close(stated["max_error"], error.max(), abs_=1e-5)
        assert stated["max_error_head"] == error.idxmax()
    else:
        assert key == "circuits.first_order_misses"
        assert stated["missed"] == ours.loc[ATP, "missed"]


@params(NB)
def test_faithfulness_claims(path):
    r, scores, reference = load(path)
    k = len(reference)
    at_ref = r.table("faithfulness_at_reference").set_index("method")
    assert (at_ref["size"] == k).all(), "faithfulness is read at exactly the reference size"
    sets = r.table("top_k_sets").set_index("method").top_k
    for m in scores.columns:
        assert sets[m] == ", ".join(sorted(top_set(scores[m], k))), m
    faith_ap = at_ref.loc[AP, "faithfulness"]
    key, stated = r.only("circuits.reference_above_full", "circuits.reference_faithfulness")
    assert key == (
        "circuits.reference_above_full" if faith_ap > 1 else "circuits.reference_faithfulness"
    )
    assert close(stated["faithfulness"], faith_ap)
    assert (stated["n_reference"], stated["n_others"]) == (k, len(scores) - k)

    same = [m for m in scores.columns if m != AP and sets[m] == sets[AP]]
    for m in same:  # the same kept set gives the same ablated model
        assert close(at_ref.loc[m, "faithfulness"], faith_ap)
    differ = {m: at_ref.loc[m, "faithfulness"] for m in at_ref.index if m != AP and m not in same}
    key, stated = r.only("circuits.same_top_sets", "circuits.some_top_sets_differ")
    assert (stated["n_same"], stated["n_estimators"]) == (len(same), len(at_ref) - 1)
    if differ:
        assert key == "circuits.some_top_sets_differ"
        assert stated["differ"].keys() == differ.keys()
        assert all(close(stated["differ"][m], v) for m, v in differ.items())
    else:
        assert key == "circuits.same_top_sets"

    curves = r.table("faithfulness_curves").set_index("size")[list(at_ref.index)]
    assert curves.index.tolist() == sorted(curves.index) and k in curves.index
    assert curves.index.min() == 0 and curves.index.max() == len(scores)
    gap = curves.drop(columns=AP).sub(curves[AP], axis=0).abs()
    largest = gap.max().max()
    key, stated = r.only("circuits.curves_equal", "circuits.curves_close", "circuits.curves_apart")
    assert close(stated["max_gap"], largest, abs_=1e-5)
    if largest == 0:
        assert key == "circuits.curves_equal"
    else:
        assert key == ("circuits.curves_close" if largest < 0.1 else "circuits.curves_apart")
        assert stated["method"] == gap.max().idxmax()
        assert stated["size"] == gap[gap.max().idxmax()].idxmax()
    _, stated = r.only("circuits.faithfulness_summary")
    assert close(stated["faithfulness"], faith_ap) and close(stated["max_gap"], largest, abs_=1e-5)


@params(NB)
def test_faithfulness_of_ap_recomputed_from_the_model(path):
    """AP's top-k heads kept, every other head's output (hook_z) replaced by its clean mean."""
    r, scores, reference = load(path)
    if r["model_name"] != "toy-ioi":
        pytest.skip("recomputed on the embedded model only")
    import torch

    import hvp_utils as hu

    model = hu.load_model("toy-ioi", dtype="float64")
    task = hu.ioi_dataset(
        model, n_prompts=r["n_prompts"], perturbation=r["perturbation"], seed=r["seed"]
    )
    kept = top_set(scores["AP"], len(reference))
    _, cache = model.run_with_cache(task.clean_tokens)

    def hook_for(layer):
        def ablate(act, hook):
            out = cache[f"blocks.{layer}.attn.hook_z"].mean(0, keepdim=True).expand_as(act).clone()
            for h in range(model.cfg.n_heads):
                if f"L{layer}H{h}" in kept:
                    out[:, :, h] = act[:, :, h]
            return out

        return (f"blocks.{layer}.attn.hook_z", ablate)

    with torch.no_grad():
        full = float(task.metric(model(task.clean_tokens)))
        hooks = [hook_for(layer) for layer in range(model.cfg.n_layers)]
        ablated = float(task.metric(model.run_with_hooks(task.clean_tokens, fwd_hooks=hooks)))
    _, stated = r.only("circuits.reference_above_full", "circuits.reference_faithfulness")
    assert close(stated["faithfulness"], ablated / full)


@params(NB)
def test_why_they_err(path):
    r, scores, reference = load(path)
    k = len(reference)
    ours = recovered(scores, reference)
    wrong = sorted(
        {h for col in ("missed", "false_positives") for c in ours[col] if c for h in c.split(", ")}
    )
    if not wrong:
        assert r.verdicts("circuits.no_wrong_heads")
        return
    heads = r.table("wrong_heads").set_index("head")
    assert heads.index.tolist() == wrong
    ranks = {m: ranks_of(scores[m]) for m in scores.columns}
    own = "g''(0)/2"
    for h in wrong:
        assert close(heads.loc[h, "AtP"], scores.loc[h, ATP], abs_=1e-5)
        assert close(heads.loc[h, own], scores.loc[h, DIAG] - scores.loc[h, ATP], abs_=1e-5)
        assert heads.loc[h, "rank AP"] == ranks[AP][h]
    n_stated = 0
    for m in ours.index[ours.precision < 1.0]:
        for h in wrong:
            rank, rank_ap = ranks[m][h], ranks[AP][h]
            assert heads.loc[h, f"rank {m}"] == rank
            if (rank <= k) == (rank_ap <= k):
                assert not r.verdicts(
                    "circuits.misranked", "circuits.misranked_split", method=m, head=h
                )
                continue
            n_stated += 1
            key, stated = r.only("circuits.misranked", "circuits.misranked_split", method=m, head=h)
            error = scores.loc[h, m] - scores.loc[h, AP]
            assert (stated["rank"], stated["rank_ap"], stated["n_reference"]) == (rank, rank_ap, k)
            assert stated["inside"] is bool(rank <= k)
            assert close(stated["error"], error, abs_=1e-5)
            assert close(stated["estimate"], scores.loc[h, m], abs_=1e-5)
            assert close(stated["ap"], scores.loc[h, AP], abs_=1e-5)
            if f"{m}: cross terms / 2" not in heads.columns:
                assert key == "circuits.misranked"
                continue
            assert key == "circuits.misranked_split"
            cross = scores.loc[h, m] - scores.loc[h, DIAG]  # both are AtP + second / 2
            first = scores.loc[h, ATP] - scores.loc[h, AP]
            assert close(stated["cross"], cross, abs_=1e-5)
            assert close(stated["first_error"], first, abs_=1e-5)
            assert close(error, first + heads.loc[h, own] + cross, abs_=1e-5)
            assert stated["cross_most"] is bool(abs(cross) > abs(error) / 2)
    assert n_stated == len(r.verdicts("circuits.misranked", "circuits.misranked_split"))


@params(NB)
def test_heads_at_each_position(path):
    r, scores, _ = load(path)
    pos = r.table("position_estimates").set_index("component")
    reference = reference_of(pos[AP], r["threshold_share"])
    table = r.table("recovery_pos").set_index("method")
    ours = recovered(pos, reference)
    assert set(table.index) == set(ours.index)
    for m in table.index:
        assert close(table.loc[m, "precision"], ours.loc[m, "precision"])
        assert close(table.loc[m, "auroc"], ours.loc[m, "auroc"])
    ours = ours.loc[table.index]
    exact = ours.index[ours.precision == 1.0].tolist()
    _, stated = r.only("circuits.positions")
    assert (stated["n_reference"], stated["n_components"]) == (len(reference), len(pos))
    assert (stated["n_exact"], stated["n_estimators"]) == (len(exact), len(ours))
    assert close(stated["min_auroc"], ours.auroc.min())
    assert stated["min_method"] == ours.auroc.idxmin()
    erring = ours[ours.precision < 1.0]
    assert len(r.verdicts("circuits.position_misses")) == len(erring)
    for m, row in erring.iterrows():
        _, stated = r.only("circuits.position_misses", method=m)
        assert (stated["missed"], stated["false_positives"]) == (row.missed, row.false_positives)

    heads = recovered(scores, reference_of(scores[AP], r["threshold_share"]))
    heads = heads.loc[r.table("recovery").method]
    both = [m for m in heads.index if m in ours.index]
    exact_both = [m for m in both if heads.loc[m, "precision"] == 1.0 and m in exact]
    _, stated = r.only("circuits.exact_at_both")
    assert stated == {"n_both": len(both), "methods": exact_both}


@params(NB)
def test_summary(path):
    r, scores, reference = load(path)
    roles, _ = role_table(r)
    _, stated = r.only("circuits.summary_roles")
    found = {
        role: [{"head": h, "layer": int(roles.layer[h])} for h in roles.index[has]]
        for role in GPT2_ROLES
        if (has := np.array([role in ours for ours in roles.ours])).any()
    }
    assert stated["found"] == found
    assert stated["missing"] == [role for role in GPT2_ROLES if role not in found]
    circuit = roles.loc[reference]
    without = sum(not any(role in GPT2_ROLES for role in ours) for ours in circuit.ours)
    assert (stated["n_without"], stated["n_reference"]) == (without, len(reference))

    ours = recovered(scores, reference).loc[r.table("recovery").method]
    key, stated = r.only("circuits.rankings_close", "circuits.rankings_far")
    assert key == (
        "circuits.rankings_close" if ours.auroc.min() >= 0.9 else "circuits.rankings_far"
    )
    assert (
        close(stated["min_auroc"], ours.auroc.min()) and stated["min_method"] == ours.auroc.idxmin()
    )
    assert stated["n_exact"] == int((ours.precision == 1.0).sum())
    assert (stated["n_estimators"], stated["n_reference"]) == (len(ours), len(reference))
    erring = ours.index[ours.precision < 1.0].tolist()
    if not erring:
        assert not r.verdicts("circuits.erring")
        return
    _, stated = r.only("circuits.erring")
    assert stated == {"methods": erring, "first_order_errs": ATP in erring}


@params(NB)
def test_answer_about_the_first_order_ranking(path):
    """The answer to the prediction: whether AtP's top k is the reference, decided at the
    boundary between the weakest circuit head and the strongest other head."""
    r, scores, reference = load(path)
    k = len(reference)
    boundary = r.table("boundary").set_index("head")
    assert np.allclose(boundary["|AP|"], scores.loc[boundary.index, AP].abs(), atol=1e-5)
    assert np.allclose(boundary["|AtP|"], scores.loc[boundary.index, ATP].abs(), atol=1e-5)
    assert boundary.index[boundary["in circuit"]].tolist() == reference

    ap, at = scores[AP].abs(), scores[ATP].abs()
    err = (scores[ATP] - scores[AP]).abs()
    assert np.allclose(boundary["|AtP - AP|"], err.loc[boundary.index], atol=1e-5)
    inside = ap.index.isin(reference)
    atp_in, atp_out = at[inside].idxmin(), at[~inside].idxmax()
    keeps = bool(at[atp_in] > at[atp_out])
    assert keeps == (top_set(scores[ATP], k) == set(reference))
    key, stated = r.only("circuits.answer_keeps", "circuits.answer_swaps")
    assert key == ("circuits.answer_keeps" if keeps else "circuits.answer_swaps")
    assert (stated["weakest_in"], stated["strongest_out"], stated["n_reference"]) == (
        atp_in,
        atp_out,
        k,
    )
    assert close(stated["weakest_in_size"], at[atp_in], abs_=1e-5)
    assert close(stated["strongest_out_size"], at[atp_out], abs_=1e-5)
    assert close(stated["max_error"], err.max(), abs_=1e-5)
    assert stated["max_error_head"] == err.idxmax()

    weak_in, strong_out = ap[inside].idxmin(), ap[~inside].idxmax()
    margin = ap[weak_in] - ap[strong_out]
    assert margin > 0
    key, stated = r.only(
        "circuits.margin_holds", "circuits.margin_exceeded_kept", "circuits.margin_exceeded_swapped"
    )
    assert (stated["weakest_in"], stated["strongest_out"]) == (weak_in, strong_out)
    assert close(stated["margin"], margin)
    assert close(stated["error_in"], err[weak_in], abs_=1e-5)
    assert close(stated["error_out"], err[strong_out], abs_=1e-5)
    if err[weak_in] + err[strong_out] < margin:
        assert key == "circuits.margin_holds"
        assert at[weak_in] > at[strong_out]  # a consequence the test checks directly
    elif at[weak_in] > at[strong_out]:
        assert key == "circuits.margin_exceeded_kept"
    else:
        assert key == "circuits.margin_exceeded_swapped"

    worst = err.idxmax()
    distance = ap[worst] - ap[strong_out] if worst in reference else ap[weak_in] - ap[worst]
    key, stated = r.only("circuits.largest_error_far", "circuits.largest_error_near")
    assert key == (
        "circuits.largest_error_far" if err.max() < distance else "circuits.largest_error_near"
    )
    assert close(stated["distance"], distance, abs_=1e-5)
    assert stated["inside"] is (worst in reference)
