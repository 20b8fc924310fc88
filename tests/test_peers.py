"""The peer baselines (TransformerLens's patching, Captum's LayerIG) against our estimators."""

from __future__ import annotations

import pytest
import torch
from reference import BAD_OPTION_ERRORS

import hvp_utils as hu
from hvp_utils import activation_patching, components, integrated_gradients
from hvp_utils.analysis.peers import captum_layer_ig, tl_patching_ap

NAMED_POSITIONS = ("N1", "N2", "S2", "end")


def peer_components(model, task, kind):
    """Components of ``kind`` as the peers are timed on (neurons: every 8th of layer 2)."""
    if kind == "head_out_pos":
        positions = [task.position_labels.index(label) for label in NAMED_POSITIONS]
        return components(model, kind, positions=positions)
    if kind == "neuron":
        return components(model, kind, layers=[2])[::8]
    return components(model, kind)


def assert_same(peer, ours, comps):
    assert peer.names == [c.name for c in comps] and peer.kinds == [c.kind for c in comps]
    torch.testing.assert_close(peer.values, ours.values, atol=1e-10, rtol=0)
    assert ours.values.abs().max() > 1e-3, "degenerate comparison: nothing to compare"


@pytest.mark.parametrize(
    "kind",
    ["head_out", *(pytest.param(k, marks=pytest.mark.slow) for k in ("head_out_pos", "neuron"))],
)
def test_transformer_lens_patching_matches_our_ap(kind, small64, small_task):
    comps = peer_components(small64, small_task, kind)
    peer = tl_patching_ap(small64, small_task, comps)
    assert_same(peer, activation_patching(small64, small_task, comps), comps)
    assert peer.method == "AP (transformer_lens.patching)" and peer.estimator.is_ground_truth
    assert peer.cost.forward == 2 + len(comps) and peer.cost.backward == 0


def test_transformer_lens_patching_keeps_the_order_of_comps(small64, small_task):
    comps = components(small64, "head_out", layers=[3, 1])[::3]
    peer = tl_patching_ap(small64, small_task, comps)
    assert_same(peer, activation_patching(small64, small_task, comps), comps)


@pytest.mark.parametrize("kinds", [["mlp_out"], ["head_q"], ["head_out", "neuron"]])
def test_transformer_lens_patching_refuses_other_kinds(kinds, small64, small_task):
    comps = [c for kind in kinds for c in components(small64, kind, layers=[1])]
    with pytest.raises(ValueError, match="head_out.*head_out_pos.*neuron"):
        tl_patching_ap(small64, small_task, comps)


#: (Captum method, its n_steps) and the IG rule and steps with the same nodes and weights.
CAPTUM_RULES = [
    ("riemann_middle", 2, "midpoint", 2),
    pytest.param("riemann_middle", 8, "midpoint", 8, marks=pytest.mark.slow),
    ("gausslegendre", 2, "gauss", 1),
]


@pytest.mark.parametrize(("method", "n_steps", "rule", "steps"), CAPTUM_RULES)
@pytest.mark.parametrize(
    ("kind", "layers"),
    [
        ("head_out", None),
        pytest.param("neuron", [2], marks=pytest.mark.slow),
        pytest.param("mlp_out", None, marks=pytest.mark.slow),
    ],
)
def test_captum_layer_ig_matches_our_joint_ig(
    kind, layers, method, n_steps, rule, steps, small64, small_task
):
    comps = components(small64, kind, layers=layers)
    peer = captum_layer_ig(small64, small_task, comps, steps=n_steps, method=method)
    ours = integrated_gradients(small64, small_task, comps, steps=steps, rule=rule, mode="joint")
    assert_same(peer, ours, comps)
    n_hooks = len({c.hook for c in comps})
    assert peer.cost.forward == n_hooks * (2 + n_steps)
    assert peer.cost.backward == n_hooks * n_steps


def test_captum_layer_ig_noising(small64, small_task):
    comps = components(small64, "head_out", layers=[1, 2])
    peer = captum_layer_ig(small64, small_task, comps, steps=4, direction="noising")
    ours = integrated_gradients(
        small64, small_task, comps, steps=4, mode="joint", direction="noising"
    )
    assert_same(peer, ours, comps)
    assert peer.method == "IG joint (Captum LayerIG) K=4 (noising)"


def test_captum_layer_ig_labels_and_options(small64, small_task):
    comps = components(small64, "mlp_out", layers=[0])
    assert captum_layer_ig(small64, small_task, comps).method == "IG joint (Captum LayerIG) K=2"
    with pytest.raises(BAD_OPTION_ERRORS):
        captum_layer_ig(small64, small_task, comps, method="riemann_left")
    with pytest.raises(ValueError, match="steps >= 2"):
        captum_layer_ig(small64, small_task, comps, steps=1)


@pytest.mark.slow
def test_peers_run_in_float32(toy32):
    task = hu.ioi_dataset(toy32, n_prompts=4, seed=0)
    comps = components(toy32, "head_out", layers=[1])
    ap = tl_patching_ap(toy32, task, comps)
    torch.testing.assert_close(
        ap.values, activation_patching(toy32, task, comps).values, atol=1e-4, rtol=0
    )
    ig = captum_layer_ig(toy32, task, comps)
    ours = integrated_gradients(toy32, task, comps, mode="joint")
    torch.testing.assert_close(ig.values, ours.values, atol=1e-4, rtol=0)
    assert ig.values.dtype == ap.values.dtype == torch.float64
