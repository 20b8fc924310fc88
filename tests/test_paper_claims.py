"""The judge of the seed paper's claims (notebook 08, section 6) on constructed measures."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hvp_utils.analysis.findings import paper, spread


def constructed(holds: dict[tuple[str, str], list[bool]]) -> pd.DataFrame:
    """Measures of every claim part at seeds 0-1 x two perturbations; ``holds`` overrides the
    outcomes of some parts (in the order seed 0 / name_swap, seed 0 / random_token, ...)."""
    rows = []
    for claim in paper.CLAIMS:
        for part in claim.parts:
            outcome = holds.get((claim.key, part), [True] * 4)
            for i, (seed, p) in enumerate(
                (s, p) for s in (0, 1) for p in ("name_swap", "random_token")
            ):
                rows.append(
                    dict(
                        seed=seed,
                        claim=claim.key,
                        part=part,
                        perturbation=p,
                        value=0.1 * (i + 1),
                        holds=outcome[i],
                        detail=f"detail {seed} {p}",
                    )
                )
    return pd.DataFrame(rows)


def test_verdicts_follow_the_outcomes_over_seeds_and_perturbations():
    measures = constructed(
        {("bounds", "coverage"): [False] * 4, ("HVP", "one pass"): [True, True, False, True]}
    )
    table, found = paper.judge(measures, featured_seed=0, perturbation="random_token")
    verdicts = {(f.values["claim_key"], f.values["part"]): f.key for f in found.findings}
    assert verdicts[("bounds", "coverage")] == "paper.refuted"
    assert verdicts[("HVP", "one pass")] == "paper.not_settled"
    assert verdicts[("downstream", "error")] == "paper.reproduced"
    assert len(table) == sum(len(c.parts) for c in paper.CLAIMS)
    hvp = next(f for f in found.findings if f.values["part"] == "one pass")
    assert (hvp.values["held"], hvp.values["n"]) == (3, 4)
    assert (hvp.values["low"], hvp.values["high"]) == pytest.approx((0.1, 0.4))
    assert hvp.values["detail"] == "detail 0 random_token"
    assert "Not settled" in hvp.sentence and "3 of 4 measurements" in hvp.sentence
    assert list(table.columns[4:7]) == ["seed 0", "over 2 seeds", "held"]


def test_other_seeds_missing_differing_and_matching(tmp_path):
    asked = dict(model_name="toy-ioi", n_prompts=8, dtype="float64", seed=0)
    rows, found = paper.other_seeds(tmp_path / "none", **asked)
    assert rows.empty and found.findings[0].key == "paper.seeds_missing"

    settings = {"model_name": "toy-ioi", "seeds": [0, 1], "n_prompts": 6, "dtype": "float64"}
    (tmp_path / "run.json").write_text(
        json.dumps({"command": "c", "seconds": 60, "settings": settings})
    )
    constructed({}).to_csv(tmp_path / "measures.csv", index=False)
    rows, found = paper.other_seeds(tmp_path, **asked)
    assert rows.empty and found.findings[0].key == "paper.seeds_differ"
    assert "n_prompts 6, not 8" in found.sentences[0]

    settings["n_prompts"] = 8
    (tmp_path / "run.json").write_text(
        json.dumps({"command": "c", "seconds": 60, "settings": settings})
    )
    rows, found = paper.other_seeds(tmp_path, **asked)
    assert found.findings[0].key == "paper.seeds_source" and set(rows.seed) == {1}
    assert found.findings[0].values["seeds"] == [1]


def test_a_missing_notebook_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="run notebooks 01-07 there first"):
        paper.run_measures(tmp_path)


def test_a_claim_no_run_measured_is_said_so():
    measures = constructed({})
    measures = measures[measures.claim != "reliability score"]
    table, found = paper.judge(measures, featured_seed=0, perturbation="name_swap")
    missing = [f for f in found.findings if f.key == "paper.not_measured"]
    assert [f.values["part"] for f in missing] == ["detection"]
    assert "Not measured" in missing[0].sentence and len(table) == 7


def key_rows(held: dict[str, list[bool]], seeds=(0, 1, 2)) -> pd.DataFrame:
    """One item of every key number at ``seeds``; ``held`` gives some keys' outcomes."""
    return pd.DataFrame(
        dict(seed=s, key=n.key, item="heads", perturbation="name_swap", value=0.5 + s, holds=h)
        for n in spread.KEY_NUMBERS
        for s, h in zip(seeds, held.get(n.key, [True] * len(seeds)), strict=True)
    )


def test_key_number_verdicts_are_settled_only_when_every_seed_agrees():
    rows = key_rows({"atp_topk": [False] * 3, "hvp_diag": [True, False, True]})
    table, found = spread.stability(rows, featured_seed=1)
    verdicts = table.set_index("quantity").verdict
    by_key = {n.key: n.quantity for n in spread.KEY_NUMBERS}
    assert verdicts[by_key["atp_spearman"]] == "holds"
    assert verdicts[by_key["atp_topk"]] == "fails"
    assert verdicts[by_key["hvp_diag"]] == "not settled"
    n = len(spread.KEY_NUMBERS)
    assert table["seed 1"].tolist() == [1.5] * n and set(table["over 3 seeds"]) == {"0.5 to 2.5"}
    keys = [f.key for f in found.findings]
    assert keys.count("spread.not_settled") == 1 and keys.count("spread.settled") == n - 1
    (unsettled,) = [f.values for f in found.findings if f.key == "spread.not_settled"]
    assert unsettled["unsettled"] == [
        dict(item="heads", perturbation="name_swap", held=2, n=3, low=0.5, high=2.5)
    ]


def test_one_prompt_sample_settles_nothing():
    table, found = spread.stability(key_rows({}, seeds=(4,)), featured_seed=4)
    assert set(table.verdict) == {"one sample"}
    assert [f.key for f in found.findings] == ["spread.one_sample"]
