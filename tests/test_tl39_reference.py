"""The TransformerLens 4 port reproduces the numbers of the TransformerLens 3.9 line.

``tests/data/tl39_reference.json`` holds AP, AtP, HVP diag and IG K=2 on toy-ioi (float64, 16
prompt pairs), computed by this package on TransformerLens 3.9 (HookedTransformer) from the same
checkpoint before the port; the port matched them to 7e-15 absolute.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import hvp_utils as hu

REFERENCE = json.loads((Path(__file__).parent / "data" / "tl39_reference.json").read_text())
ESTIMATORS = {
    "ap": hu.ap_estimator(),
    "atp": hu.atp_estimator(),
    "hvp_diag": hu.hvp_estimator(mode="diag"),
    "ig2": hu.ig_estimator(steps=2),
}


def kind_components(model, kind):
    if kind == "neuron":
        return hu.components(model, "neuron", layers=[2])[:64]
    return hu.components(model, kind)


@pytest.fixture(scope="module", params=["name_swap", "random_token"])
def task(request, toy64):
    return hu.ioi_dataset(toy64, n_prompts=16, perturbation=request.param, seed=0)


def test_baseline_matches_the_tl39_line(toy64, task):
    expected = REFERENCE["results"][f"{task.perturbation}/baseline"]
    found = hu.task_baseline(toy64, task)
    for key in ("clean_metric", "corrupted_metric", "clean_accuracy"):
        assert found[key] == pytest.approx(expected[key], rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["head_out", "mlp_out", "head_q", "neuron"])
@pytest.mark.parametrize("key", sorted(ESTIMATORS))
def test_estimates_match_the_tl39_line(toy64, task, kind, key):
    expected = REFERENCE["results"][f"{task.perturbation}/{kind}/{key}"]
    result = ESTIMATORS[key](toy64, task, kind_components(toy64, kind))
    assert result.names == expected["names"]
    reference = torch.tensor(expected["values"], dtype=torch.float64)
    torch.testing.assert_close(result.values, reference, rtol=1e-9, atol=1e-12)
