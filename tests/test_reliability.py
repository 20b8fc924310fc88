"""Reliability scores, flags and Lagrange error bounds, against closed forms and references."""

from __future__ import annotations

import math

import pytest
import torch
from reference import BAD_OPTION_ERRORS, path_derivative, path_function, quadratic_case

import hvp_utils as hu
from hvp_utils import components, viz
from hvp_utils.analysis.reliability import (
    coverage_report,
    detector_report,
    error_bounds,
    interval_maximum,
    reliability,
    reliability_score,
    sign_change,
    straddles,
)
from hvp_utils.core.metrics import auroc


def t64(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_score_sign_and_straddle_closed_forms():
    first, second = t64(1.0, 1.0, -2.0, 0.0), t64(-3.0, 0.2, 1.0, 0.0)
    expected = t64(1.5 / 2.5, 0.1 / 1.1, 0.5 / 2.5, 0.0)
    torch.testing.assert_close(reliability_score(first[:3], second[:3], eps=0.0), expected[:3])
    torch.testing.assert_close(reliability_score(first, second), expected)  # eps: 0/0 -> 0
    assert sign_change(first, second).tolist() == [True, False, False, False]
    lower, upper = t64(0.5, 1.2, -1.5, -0.5, -3.0), t64(1.5, 2.0, -0.5, 0.5, 3.0)
    assert straddles(lower, upper, 1.0).tolist() == [True, False, True, False, True]


def test_interval_maximum_catches_a_bump_between_nodes():
    # f(t) = sin(pi t): zero at both nodes, mean 2/pi; the quadratic 12/pi u(1-u) peaks at 3/pi
    f, mean = t64(0.0, 0.0)[:, None], t64(2 / math.pi)[:, None]
    assert float(interval_maximum(f, mean, 1.0)) == pytest.approx(3 / math.pi)
    # a quadratic is reproduced exactly: f(t) = 1 - 4 (t - 0.4)^2 on [0, 1], max 1 at t = 0.4
    f = lambda t: 1 - 4 * (t - 0.4) ** 2  # noqa: E731
    integral = 1 - 4 * ((0.6**3 + 0.4**3) / 3)
    value = interval_maximum(t64(f(0.0), f(1.0))[:, None], t64(integral)[:, None], 1.0)
    assert float(value) == pytest.approx(1.0)
    # two intervals (h = 1/2), linear pieces: the maximum is a node value
    nodes, integrals = t64(0.0, 1.0, -3.0)[:, None], t64(0.25, -0.5)[:, None]
    assert float(interval_maximum(nodes, integrals, 0.5)) == pytest.approx(3.0)


def test_auroc_and_detector_closed_forms():
    labels = torch.tensor([True, False, True, False, False])
    assert auroc(t64(0.9, 0.1, 0.4, 0.5, 0.2), labels) == pytest.approx(5 / 6)
    assert auroc(t64(1.0, 1.0, 1.0, 1.0, 1.0), labels) == pytest.approx(0.5)
    assert math.isnan(auroc(t64(1.0, 2.0), torch.tensor([True, True])))
    names = [f"c{i}" for i in range(4)]
    truth = hu.Attribution(t64(1.0, 1.0, 1.0, -1.0), names, "AP", {})
    result = hu.Attribution(
        t64(2.0, 1.1, 0.0, -1.0),
        names,
        "reliability",
        {},
        extras={
            "first": t64(2.0, 1.1, 0.0, -1.0),
            "scores": t64(0.9, 0.2, 0.1, 0.0),
            "flags": torch.tensor([True, True, False, False]),
        },
    )
    row = detector_report(result, truth).iloc[0]  # positives: c0 (100% off) and c2 (100%)
    assert (row.positives, row.flagged, row.precision, row.recall) == (2, 2, 0.5, 0.5)
    assert row.auroc == pytest.approx(0.75)  # pairs (c0, c1), (c0, c3), (c2, c3) of four


def test_reliability_scores_match_path_derivatives(toy64, toy_task):
    comps = components(toy64, "head_q", layers=[1])[:3] + components(toy64, "mlp_out")[:2]
    result = reliability(toy64, toy_task, comps, tau=0.3)
    torch.testing.assert_close(result.values, hu.atp(toy64, toy_task, comps).values)
    for i, comp in enumerate(comps):
        g = path_function(toy64, toy_task, comp)
        first, second = path_derivative(g, 0.0, 1), path_derivative(g, 0.0, 2)
        score = abs(second / 2) / (abs(first) + abs(second / 2) + 1e-12)
        assert float(result.scores[i]) == pytest.approx(score, rel=1e-7)
        assert bool(result.flags[i]) == (score > 0.3 or first * (first + second / 2) < 0)
    assert result.flags.dtype == torch.bool and len(result.scores) == len(comps)
    assert not result.flag_threshold.any()


@pytest.fixture(scope="module")
def quadratic(tiny64, tiny_task):
    """A metric quadratic in the final normalised residual stream: g''' = 0 on every path."""
    task, comps = quadratic_case(tiny64, tiny_task)
    return task, comps, hu.activation_patching(tiny64, task, comps)


def test_bounds_are_exact_on_a_quadratic_metric(tiny64, quadratic):
    task, comps, truth = quadratic
    second = error_bounds(tiny64, task, comps, order=2, n_nodes=2)
    torch.testing.assert_close(second.values, truth.values, atol=1e-10, rtol=1e-10)
    assert second.radius.abs().max() < 1e-10  # g''' = 0: a zero-width interval
    first = error_bounds(tiny64, task, comps, order=1, n_nodes=3)
    # g'' is constant, so Delta - g'(0) = g''/2 exactly: AP sits on the interval's edge
    edge = torch.where(first.second > 0, first.upper, first.lower)
    torch.testing.assert_close(edge, truth.values, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(first.radius, first.second.abs() / 2)
    centre = float(first.values[0].abs())  # strictly inside the first interval
    flagged = reliability(tiny64, task, comps, threshold=centre, bounds=first)
    assert bool(flagged.flag_threshold[0]) and bool(flagged.flags[0])
    far = 10 * float(first.upper.abs().max() + first.lower.abs().max())
    assert not reliability(tiny64, task, comps, threshold=far, bounds=first).flag_threshold.any()


def test_bounds_use_the_lagrange_factors(toy64, toy_task):
    comps = components(toy64, "mlp_out")[:2]
    for order, factor in ((1, 1 / 2), (2, 1 / 6)):
        plain = error_bounds(toy64, toy_task, comps, order=order, n_nodes=3, refine=False)
        g = [path_function(toy64, toy_task, c) for c in comps]
        maxima = t64(
            *[max(abs(path_derivative(f, t, order + 1)) for t in (0.0, 0.5, 1.0)) for f in g]
        )
        torch.testing.assert_close(plain.radius, factor * maxima, rtol=1e-7, atol=1e-12)
        refined = error_bounds(toy64, toy_task, comps, order=order, n_nodes=3)
        assert (refined.radius >= plain.radius - 1e-15).all()
    with pytest.raises(BAD_OPTION_ERRORS):
        error_bounds(toy64, toy_task, comps, order=3)


def test_detector_and_coverage_on_the_embedded_model(toy64, toy_task):
    comps = components(toy64, "head_q", layers=[1, 2])
    truth = hu.activation_patching(toy64, toy_task, comps)
    scored = reliability(toy64, toy_task, comps)
    report = detector_report(scored, truth).iloc[0]
    assert 0 < report.positives < len(comps)
    assert report.auroc > 0.7, report
    bounds = error_bounds(toy64, toy_task, comps, order=2, n_nodes=3)
    assert coverage_report(bounds, truth).iloc[0].coverage >= 0.95


def test_path_curves_static_figure_and_explorer(toy64, toy_task):
    comps = components(toy64, "mlp_out")[:2]
    paths = hu.path_curves(toy64, toy_task, comps, n_points=5, threshold=0.5)
    end = paths.curves[paths.curves.t == 1.0].set_index("component")
    truth = hu.activation_patching(toy64, toy_task, comps)
    first = hu.atp(toy64, toy_task, comps)
    for i, comp in enumerate(comps):
        assert end.loc[comp.name, "AP_t"] == pytest.approx(float(truth.values[i]), abs=1e-10)
        assert end.loc[comp.name, "taylor1"] == pytest.approx(float(first.values[i]), abs=1e-10)
    fig = viz.static_path_figure(paths, ncols=3)
    assert sum(ax.get_visible() for ax in fig.axes) == len(comps)
    widget = viz.explore(paths)
    assert widget.children[0].options == tuple(c.name for c in comps)


def test_flag_reasons_closed_forms():
    first, second = t64(1.0, 1.0, -2.0, 2.0), t64(-3.0, 0.2, 1.0, 0.1)
    reasons = hu.flag_reasons(first, second, tau=0.3)
    assert reasons["flag_score"].tolist() == [True, False, False, False]
    assert reasons["flag_sign"].tolist() == [True, False, False, False]
    assert not reasons["flag_threshold"].any()
    lower, upper = first - 0.5, first + 0.5
    near = hu.flag_reasons(first, second, tau=0.3, lower=lower, upper=upper, threshold=1.8)
    assert near["flag_threshold"].tolist() == [False, False, True, True]
    assert near["flags"].tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match="needs the interval"):
        hu.flag_reasons(first, second, tau=0.3, threshold=1.0)


def test_path_nodes_need_both_end_points():
    from hvp_utils.analysis.reliability import path_nodes

    assert path_nodes(3) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="n_nodes"):
        path_nodes(1)
