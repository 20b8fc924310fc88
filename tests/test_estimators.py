"""Estimators against independent references (float64): plain TransformerLens hooks,
torch.autograd, torch.autograd.functional and finite differences."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from reference import (
    BAD_OPTION_ERRORS,
    atp_reference,
    component_index,
    graddrop_reference,
    hook_gradients_reference,
    made_up,
    path_derivative,
    path_function,
    qk_fixed_reference,
    quadratic_case,
    slice_function,
    whole_hook_function,
)

import hvp_utils as hu
from hvp_utils import components
from hvp_utils.core.components import Component
from hvp_utils.core.engine import EngineRun, path_derivatives, prepare
from hvp_utils.core.results import CostMeter


def pick(comps, k=4):
    return [comps[i] for i in sorted(set(np.linspace(0, len(comps) - 1, k).round().astype(int)))]


@pytest.mark.parametrize(
    "kind",
    [
        "mlp_out",
        "head_q",
        *(
            pytest.param(kind, marks=pytest.mark.slow)
            for kind in ("head_out", "neuron", "head_pattern", "neuron_pre", "head_out_pos")
        ),
    ],
)
def test_second_derivative_matches_autograd_hvp_and_finite_differences(kind, small64, small_task):
    comps = pick(components(small64, kind, layers=[1], n_positions=small_task.n_positions))
    estimate = hu.hvp_correction(small64, small_task, comps, mode="diag", chunk_size=3)
    for i, comp in enumerate(comps):
        phi, x_r, x_c = slice_function(small64, small_task, comp)
        delta = x_c - x_r
        _, h_delta = torch.autograd.functional.hvp(phi, x_r, delta)
        by_hessian = float((delta * h_delta).sum())
        g = path_function(small64, small_task, comp)
        step = 1e-4
        by_fd = (path_derivative(g, step, 1) - path_derivative(g, -step, 1)) / (2 * step)
        ours = float(estimate.second[i])
        scale = max(1.0, abs(by_hessian))
        assert abs(ours - by_hessian) < 1e-6 * scale, (comp.name, ours, by_hessian)
        assert abs(ours - by_fd) < 1e-6 * scale, (comp.name, ours, by_fd)
        assert float(estimate.first[i]) == pytest.approx(path_derivative(g, 0.0, 1), abs=1e-8)
    assert estimate.second.abs().max() > 1e-6, "no curvature at all: the test proves nothing"


@pytest.mark.slow
def test_third_derivative_matches_autograd(small64, small_task):
    comps = components(small64, "mlp_out")
    run = EngineRun(small64, small_task, prepare(small64, small_task, comps), CostMeter())
    path = path_derivatives(run, comps, t=0.3, order=3)
    for i, comp in enumerate(comps):
        g = path_function(small64, small_task, comp)
        for order, ours in ((1, path.d1), (2, path.d2), (3, path.d3)):
            reference = path_derivative(g, 0.3, order)
            assert float(ours[i]) == pytest.approx(reference, rel=1e-7, abs=1e-9)


def test_second_order_is_exact_for_a_quadratic_metric(tiny64, tiny_task):
    task, comps = quadratic_case(tiny64, tiny_task, whole=True)
    truth = hu.activation_patching(tiny64, task, comps)
    first = hu.atp(tiny64, task, comps)
    assert (truth.values - first.values).abs().max() > 1e-3, "metric is not curved"
    exact = [
        hu.hvp_correction(tiny64, task, comps, mode="diag"),
        hu.hvp_correction(tiny64, task, comps[:1], mode="joint"),
        hu.multistep_hvp(tiny64, task, comps, steps=1, rule="taylor"),
        hu.integrated_gradients(tiny64, task, comps, steps=1),
    ]
    for estimate in exact:
        n = len(estimate)
        torch.testing.assert_close(estimate.values, truth.values[:n], atol=1e-9, rtol=1e-9)


def test_joint_hvp_matches_a_whole_hook_hessian_vector_product(small64, small_task):
    """Every head of two layers: v = the whole delta of both hooks, and the joint second term
    is <delta_c, (H v)_c> with H the Hessian in both hooks jointly (cross terms included,
    within a hook and across the two)."""
    comps = components(small64, "head_out", layers=[1, 2])
    joint = hu.hvp_correction(small64, small_task, comps, mode="joint")
    hooks = sorted({c.hook for c in comps})
    phi, zeros, v = whole_hook_function(small64, small_task, hooks)
    _, h_v = torch.autograd.functional.hvp(phi, zeros, v)
    expected = torch.tensor(
        [
            float((v[hooks.index(c.hook)] * h_v[hooks.index(c.hook)])[component_index(c, 4)].sum())
            for c in comps
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(joint.second, expected, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(joint.first, hook_gradients_reference(small64, small_task, comps))
    torch.testing.assert_close(joint.values, joint.first + expected / 2, rtol=1e-7, atol=1e-10)
    diag = hu.hvp_correction(small64, small_task, comps, mode="diag").second
    assert (joint.second - diag).abs().max() > 1e-3, "no cross terms: the test proves nothing"
    assert joint.cost.hvp == 1 and joint.cost.backward == 1


@pytest.mark.slow
def test_hutchinson_mean_approaches_diag(small64, small_task):
    comps = components(small64, "head_out", layers=[0, 1])
    diag = hu.hvp_correction(small64, small_task, comps, mode="diag").second
    errors = {}
    for n_probes in (4, 64):
        runs = [
            hu.hvp_correction(
                small64, small_task, comps, mode="hutchinson", n_probes=n_probes, seed=s
            )
            for s in range(3)
        ]
        errors[n_probes] = np.mean([float((r.second - diag).abs().mean()) for r in runs])
        assert all(r.cost.hvp == n_probes for r in runs)
    joint = hu.hvp_correction(small64, small_task, comps, mode="joint").second
    assert errors[64] < errors[4] / 2.5  # variance ~ 1/S: error ~ 1/sqrt(S), 4x here
    assert errors[64] < float((joint - diag).abs().mean())


@pytest.fixture(scope="module")
def curved(toy64, toy_task):
    """The most curved path of each of three kinds (largest |AP - AtP|: MLP out, head out,
    head query) among those AtP misses by at most half their effect, each with an AtP error of
    at least 1e-3 so the errors at K = 16 and 32 stay above rounding.

    (A path AtP misses by more bends so sharply that K = 16 is still pre-asymptotic: MLP0's,
    whose AtP has the wrong sign under random_token, shows it in notebook 05.)
    """
    comps = []
    for kind in ("mlp_out", "head_out", "head_q"):
        candidates = components(toy64, kind)
        truth = hu.activation_patching(toy64, toy_task, candidates)
        error = (truth.values - hu.atp(toy64, toy_task, candidates).values).abs()
        error[error > 0.5 * truth.values.abs()] = 0.0  # the sharply bent paths
        assert error.max() > 1e-3, kind
        comps.append(candidates[int(error.argmax())])
    return toy_task, comps, hu.activation_patching(toy64, toy_task, comps)


@pytest.mark.slow
@pytest.mark.parametrize(
    "rule,method",
    [
        ("taylor", "multistep"),
        ("trapezoid", "multistep"),
        ("radau", "multistep"),
        ("midpoint", "ig"),
        ("gauss", "ig"),
    ],
)
def test_quadrature_error_order(rule, method, toy64, curved):
    """The error falls like K^-p from K = 16 to 32, with p the rule's derived order.

    Only the last doubling is read: a path is in the asymptotic range only from some K on. On
    toy-ioi the largest head's path (L3H7) still shows the trapezoid rule's error falling 2.7x
    from K = 4 to 8 (then 16x per doubling), and MLP0's path, whose g'' swings between -20
    and +28, falls up to 300x per doubling up to K = 32 for the order-4 rules. A faster fall
    is fine; a wrong weight drops the order to 2 or 1 on every path.
    """
    task, comps, truth = curved
    errors = {}
    for k in (16, 32):
        if method == "multistep":
            estimate = hu.multistep_hvp(toy64, task, comps, steps=k, rule=rule)
        else:
            estimate = hu.integrated_gradients(toy64, task, comps, steps=k, rule=rule)
        errors[k] = (estimate.values - truth.values).abs().double()
    for i, comp in enumerate(comps):
        order = math.log2(float(errors[16][i]) / float(errors[32][i]))
        assert order >= hu.RULES[rule].error_order - 0.6, (comp.name, order)


def test_joint_ig_interpolates_a_hook_together(small64, small_task):
    comps = components(small64, "head_out", layers=[1])
    joint = hu.integrated_gradients(small64, small_task, comps, steps=50, mode="joint")
    # completeness: the per-component joint IG values add up to patching the whole hook
    whole = hu.activation_patching(
        small64, small_task, [Component("attn1", "custom", "blocks.1.attn.hook_z", 1, ())]
    )
    assert float(joint.values.sum()) == pytest.approx(float(whole.values[0]), rel=1e-3)
    assert joint.cost.forward == 2 + 50 and joint.cost.backward == 50


def test_atp_star_qk_fix_linearises_only_after_the_pattern(small64, small_task):
    comps = components(small64, "head_q", layers=[1]) + components(small64, "head_k", layers=[2])
    star = hu.atp_star(small64, small_task, comps, graddrop=False)
    for i in (0, 3, 8, 13):
        reference = qk_fixed_reference(small64, small_task, comps[i])
        assert float(star.values[i]) == pytest.approx(reference, abs=1e-8), comps[i].name
    plain = hu.atp(small64, small_task, comps)
    assert (star.values - plain.values).abs().max() > 1e-3, "the QK fix changed nothing"


def test_atp_star_on_attention_patterns_alone_and_mixed_with_queries(small64, small_task):
    """head_pattern components keep plain AtP (the pattern is already after the softmax);
    they used to fail with a KeyError on the pattern hook, alone or beside head_q."""
    patterns = components(small64, "head_pattern", layers=[1])[:4]
    queries = components(small64, "head_q", layers=[1])[:2]
    plain = torch.tensor([atp_reference(small64, small_task, c) for c in patterns])
    qk = torch.tensor([qk_fixed_reference(small64, small_task, c) for c in queries])
    alone = hu.atp_star(small64, small_task, patterns, graddrop=False)
    torch.testing.assert_close(alone.values, plain.double(), rtol=1e-7, atol=1e-9)
    mixed = hu.atp_star(small64, small_task, patterns + queries, graddrop=False)
    torch.testing.assert_close(mixed.values, torch.cat([plain, qk]).double(), rtol=1e-7, atol=1e-9)
    dropped = hu.atp_star(small64, small_task, patterns)
    expected = graddrop_reference(small64, small_task, patterns)
    torch.testing.assert_close(dropped.graddrop, expected, rtol=1e-7, atol=1e-10)
    mixed_dropped = hu.atp_star(small64, small_task, patterns + queries)
    torch.testing.assert_close(mixed_dropped.graddrop[:4], expected, rtol=1e-7, atol=1e-10)


def test_graddrop_matches_plain_hooks_with_detached_layers(small64, small_task):
    heads = components(small64, "head_out")
    comps = [heads[i] for i in (3, 12, 21, 30)]  # one head in each of the 4 layers
    star = hu.atp_star(small64, small_task, comps)
    expected = graddrop_reference(small64, small_task, comps)
    plain = hook_gradients_reference(small64, small_task, comps)
    torch.testing.assert_close(star.graddrop, expected, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(star.qk_fixed, plain, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(star.values, torch.sign(plain) * expected, rtol=1e-7, atol=1e-10)
    n_layers = small64.cfg.n_layers
    undropped = n_layers / (n_layers - 1) * plain.abs()
    assert (expected[:2] - undropped[:2]).abs().min() > 1e-3, "dropping changed nothing"
    assert star.cost.backward == n_layers  # the base run and one per later layer


def test_compare_against_closed_forms():
    names = [f"c{i}" for i in range(5)]
    truth = made_up(torch.tensor([1.0, -2.0, 3.0, 0.01, 4.0], dtype=torch.float64), names, "AP")
    est = made_up(torch.tensor([2.5, -1.0, 2.0, -0.5, 4.0], dtype=torch.float64), names)
    row = hu.compare(est, truth, top_k=2).iloc[0]
    assert row.pearson == pytest.approx(np.corrcoef(est.values, truth.values)[0, 1])
    assert row.spearman == pytest.approx(0.9)  # c0 and c2 swap ranks: 1 - 6*2/(5*24)
    assert row.nmae == pytest.approx((1.5 + 1 + 1 + 0.51 + 0) / 5 / ((1 + 2 + 3 + 0.01 + 4) / 5))
    assert row.sign_agreement == 1.0  # c3 (|AP| = 0.01 < 5% of 4) is not counted
    assert row.topk_recall == 0.5  # top-2 by |AP|: c4, c2; by |est|: c4, c0


ESTIMATOR_FUNCTIONS = {
    "ap": hu.activation_patching,
    "atp": hu.atp,
    "atp_star": hu.atp_star,
    "hvp": hu.hvp_correction,
    "multistep": hu.multistep_hvp,
    "ig": hu.integrated_gradients,
}
#: One bad value per Literal option: (function, options, ValueError message without a checker).
BAD_LITERALS = {
    "hvp-mode": (hu.hvp_correction, {"mode": "full"}, "unknown mode"),
    "ig-mode": (hu.integrated_gradients, {"mode": "jointly"}, "unknown mode"),
    "multistep-rule": (hu.multistep_hvp, {"rule": "simpson"}, "unknown rule"),
    "ig-rule": (hu.integrated_gradients, {"rule": "simpson"}, "unknown rule"),
    **{
        f"{name}-direction": (func, {"direction": "sideways"}, None)
        for name, func in ESTIMATOR_FUNCTIONS.items()
    },
}


@pytest.mark.parametrize("case", list(BAD_LITERALS))
def test_a_bad_literal_option_is_refused(case, small64, small_task):
    func, options, message = BAD_LITERALS[case]
    comps = components(small64, "mlp_out")
    bad = next(iter(options.values()))
    with pytest.raises(BAD_OPTION_ERRORS, match=bad):
        func(small64, small_task, comps, **options)
    if message is not None:  # and without a type checker, the estimator's own check
        with pytest.raises(ValueError, match=message):
            inspect.unwrap(func)(small64, small_task, comps, **options)


def test_a_bad_direction_or_kind_is_refused_by_prepare_and_components(small64, small_task):
    comps = components(small64, "mlp_out")
    with pytest.raises(BAD_OPTION_ERRORS, match="sideways"):
        prepare(small64, small_task, comps, direction="sideways")
    with pytest.raises(ValueError, match="unknown direction"):
        inspect.unwrap(prepare)(small64, small_task, comps, direction="sideways")
    with pytest.raises(BAD_OPTION_ERRORS, match="attention"):
        components(small64, "attention")
    with pytest.raises(ValueError, match="unknown component kind"):
        inspect.unwrap(components)(small64, "attention")


def test_bad_counts_and_empty_sets(small64, small_task):
    comps = components(small64, "mlp_out")
    with pytest.raises(ValueError, match="empty component set"):
        hu.hvp_correction(small64, small_task, [])
    with pytest.raises(ValueError, match="n_probes"):
        hu.hvp_correction(small64, small_task, comps, mode="hutchinson", n_probes=0)
    with pytest.raises(ValueError, match="steps"):
        hu.multistep_hvp(small64, small_task, comps, steps=0)
    with pytest.raises(ValueError, match="steps"):
        hu.integrated_gradients(small64, small_task, comps, steps=0)
    with pytest.raises(TypeError):  # options are keyword-only
        hu.hvp_correction(small64, small_task, comps, "joint")
