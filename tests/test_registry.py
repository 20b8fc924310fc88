"""Estimator records: declared beside each function, carried by its results, never parsed."""

from __future__ import annotations

import pytest
import torch

import hvp_utils as hu
from hvp_utils.analysis.checks import path_derivative, path_function

RECORDS = (
    hu.ap_estimator,
    hu.atp_estimator,
    hu.atp_star_estimator,
    hu.atp_local_estimator,
    hu.hvp_estimator,
    hu.multistep_estimator,
    hu.ig_estimator,
    hu.sff_estimator,
)


def test_every_record_binds_every_keyword_option_of_its_function():
    for record_of in RECORDS:
        record = record_of()
        assert record.func is not None and record.key == record.name, record
        assert "direction" in record.options, f"{record.name} has no direction option"


def test_keys_are_unique_per_options_and_labels_are_written_out():
    a = hu.hvp_estimator(mode="hutchinson", n_probes=16, seed=0)
    b = hu.hvp_estimator(mode="hutchinson", n_probes=16, seed=1)
    assert a.key != b.key and a.label == b.label == "HVP hutchinson S=16"
    assert hu.hvp_estimator().key == hu.hvp_estimator(mode="diag").key == "hvp"
    assert hu.ig_estimator(steps=4).label == "IG K=4"
    joint = hu.ig_estimator(steps=2, mode="joint", rule="gauss")
    assert joint.label == "IG joint gauss K=2" and joint.family is hu.Family.IG_JOINT
    assert hu.atp_estimator(direction="noising").label == "AtP (noising)"
    assert hu.ap_estimator(chunk_size=3).key == "ap", "runtime options are not identity"
    assert hu.ap_estimator().is_ground_truth and not hu.atp_estimator().is_ground_truth


def test_unknown_options_are_refused():
    with pytest.raises(TypeError, match="samples"):
        hu.hvp_estimator(mode="diag")(None, None, [], samples=4)
    with pytest.raises(TypeError, match="samples"):
        hu.sff_estimator(samples=4)


def test_a_record_runs_its_estimator_and_the_result_carries_it(small64, small_task):
    """The record of the per-component HVP correction, called, gives ``g'(0) + g''(0)/2`` of
    each head's own patch path, differentiated independently by autograd through ``t``."""
    heads = hu.components(small64, "head_out", layers=[1])
    record = hu.hvp_estimator(mode="diag")
    result = record(small64, small_task, heads)
    for i, comp in enumerate(heads):
        g = path_function(small64, small_task, comp)
        expected = path_derivative(g, 0.0, 1) + path_derivative(g, 0.0, 2) / 2
        assert float(result.values[i]) == pytest.approx(expected, rel=1e-8, abs=1e-10)
    assert result.estimator == record and result.method == record.label == "HVP diag"
    frame = result.to_frame()
    assert set(frame.key) == {"hvp"} and set(frame.family) == {"HVP (one point)"}
    torch.testing.assert_close(torch.tensor(frame.first.to_numpy()), result.first)
