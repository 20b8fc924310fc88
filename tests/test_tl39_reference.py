"""The TransformerLens 4 port reproduces the numbers of the TransformerLens 3.9 line.

``tests/data/tl39_reference.json`` holds AP, AtP, HVP diag and IG K=2 on the first toy-ioi
(float64, 16 prompt pairs), computed by this package on TransformerLens 3.9 (HookedTransformer)
from the same checkpoint before the port; the port matched them to 7e-15 absolute. That
checkpoint and the IOI vocabulary it was trained and evaluated with are kept beside the
reference, in ``tests/data/toy-ioi-tl39/`` (the embedded model has been retrained since).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import hvp_utils as hu
from hvp_utils.core import ioi_text

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "tl39_reference.json").read_text())
TL39_CHECKPOINT = DATA / "toy-ioi-tl39"
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


@pytest.fixture(scope="module")
def toy64():
    """The checkpoint of the reference (not today's embedded model), in float64."""
    return hu.load_model(str(TL39_CHECKPOINT), dtype="float64")


@pytest.fixture(scope="module", params=["name_swap", "random_token"])
def task(request, toy64):
    """The reference's prompt pairs: drawn from the vocabulary of that time."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ioi_text, "IOI_VOCAB_FILE", TL39_CHECKPOINT / "ioi_vocab.json")
        ioi_text.ioi_vocab.cache_clear()
        try:
            return hu.ioi_dataset(toy64, n_prompts=16, perturbation=request.param, seed=0)
        finally:
            ioi_text.ioi_vocab.cache_clear()


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
