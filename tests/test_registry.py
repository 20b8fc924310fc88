"""The estimator registry: keys, labels and families derived from options, never parsed."""

from __future__ import annotations

import pytest

import hvp_utils as hu
from hvp_utils.estimators.registry import ESTIMATORS, keyword_defaults


def test_every_estimator_is_registered_with_keyword_only_options():
    assert {"ap", "atp", "atp_star", "hvp", "multistep", "ig", "sff"} <= set(ESTIMATORS)
    for name, spec in ESTIMATORS.items():
        assert spec.defaults == keyword_defaults(spec.func), name
        assert "direction" in spec.defaults, f"{name} has no direction option"


def test_keys_are_unique_per_options_and_labels_are_derived():
    a = hu.estimator("hvp", mode="hutchinson", n_probes=16, seed=0)
    b = hu.estimator("hvp", mode="hutchinson", n_probes=16, seed=1)
    assert a.key != b.key and a.label == b.label == "HVP hutchinson S=16"
    assert hu.estimator("hvp").key == hu.estimator("hvp", mode="diag").key == "hvp"
    assert hu.estimator("ig", steps=4).label == "IG K=4"
    joint = hu.estimator("ig", steps=2, mode="joint", rule="gauss")
    assert joint.label == "IG joint gauss K=2" and joint.family == "IG (joint per hook)"
    assert hu.estimator("atp", direction="noising").label == "AtP (noising)"
    assert hu.estimator("ap", chunk_size=3).key == "ap", "runtime options are not identity"


def test_unknown_names_and_options_are_refused():
    with pytest.raises(KeyError, match="registered"):
        hu.estimator("atp_plus")
    with pytest.raises(TypeError, match="samples"):
        hu.estimator("hvp", samples=4)


def test_a_spec_and_a_direct_call_give_the_same_result(toy64, toy_task):
    heads = hu.components(toy64, "head_out", layers=[1])
    spec = hu.estimator("hvp", mode="hutchinson", n_probes=4, seed=3)
    via_spec = spec(toy64, toy_task, heads)
    direct = hu.hvp_correction(toy64, toy_task, heads, mode="hutchinson", n_probes=4, seed=3)
    assert via_spec.key == direct.key == spec.key
    assert via_spec.method == direct.method == spec.label
    assert via_spec.family == direct.family == "HVP (one point)"
    assert (via_spec.values == direct.values).all()
    frame = direct.to_frame()
    assert set(frame.key) == {spec.key} and set(frame.family) == {"HVP (one point)"}
