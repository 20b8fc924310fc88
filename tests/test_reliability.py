"""Reliability scores, flags and Lagrange error bounds, against closed forms and references."""

from __future__ import annotations

import math

import pytest
import torch
from reference import BAD_OPTION_ERRORS, path_derivative, path_function, quadratic_case

import hvp_utils as hu
from hvp_utils import components, viz
from hvp_utils.analysis.reliability import (
    bad_estimates,
    coverage_report,
    detector_report,
    error_bounds,
    interval_maximum,
    lagrange_interval,
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
    truth = t64(1.0, 1.0, 1.0, -1.0)
    first = t64(2.0, 1.1, 0.0, -1.0)
    no = torch.zeros(len(names), dtype=torch.bool)
    reasons = hu.FlagReasons(
        scores=t64(0.9, 0.2, 0.1, 0.0),
        flag_score=torch.tensor([True, True, False, False]),
        flag_sign=no,
        flag_threshold=no,
    )
    # relative error alone: c0 (100% off) and c2 (100%) are bad
    row = detector_report(
        reasons, first=first, truth=truth, negligible_share=0.0, threshold_share=None
    ).iloc[0]
    assert (row.positives, row.flagged, row.precision, row.recall) == (2, 2, 0.5, 0.5)
    assert row.auroc == pytest.approx(0.75)  # pairs (c0, c1), (c0, c3), (c2, c3) of four
    # no bad estimate at all: recall is undefined (NaN), not 0; so is the AUROC
    row = detector_report(reasons, first=first, truth=first).iloc[0]
    assert row.positives == 0 and row.flagged == 2 and row.precision == 0.0
    assert math.isnan(row.recall) and math.isnan(row.auroc)
    # nothing flagged: precision is undefined (NaN)
    row = detector_report(reasons, first=first, truth=truth, tau=1.0).iloc[0]
    assert row.flagged == 0 and math.isnan(row.precision) and row.recall == 0.0


def test_bad_estimates_account_for_absolute_size():
    truth = t64(10.0, 10.0, 0.001, 0.5, -0.4)
    estimate = t64(7.0, 9.0, 0.004, 0.1, 0.4)
    # errors 3, 1, 0.003, 0.4, 0.8; relative 0.3, 0.1, 3, 0.8, 2; the kind's scale is 10
    relative_only = bad_estimates(estimate, truth, negligible_share=0.0, threshold_share=None)
    assert relative_only.tolist() == [False, False, True, True, True]
    matters = bad_estimates(estimate, truth, negligible_share=0.05, threshold_share=0.2)
    # 3 > 0.2 * 10: bad although only 30% off; 0.003 and 0.4 are below 0.05 * 10: negligible
    assert matters.tolist() == [True, False, False, False, True]
    per_component = bad_estimates(
        estimate,
        truth,
        negligible_share=0.05,
        threshold_share=0.2,
        scale=t64(100, 100, 1, 1, 1),
    )
    assert per_component.tolist() == [False, False, False, True, True]


def test_reliability_scores_match_path_derivatives(small64, small_task):
    comps = components(small64, "head_q", layers=[1])[:3] + components(small64, "mlp_out")[:2]
    result = reliability(small64, small_task, comps, tau=0.3)
    torch.testing.assert_close(result.values, hu.atp(small64, small_task, comps).values)
    for i, comp in enumerate(comps):
        g = path_function(small64, small_task, comp)
        first, second = path_derivative(g, 0.0, 1), path_derivative(g, 0.0, 2)
        score = abs(second / 2) / (abs(first) + abs(second / 2) + 1e-12)
        assert float(result.reasons.scores[i]) == pytest.approx(score, rel=1e-7)
        assert bool(result.reasons.flags[i]) == (score > 0.3 or first * (first + second / 2) < 0)
    assert result.reasons.flags.dtype == torch.bool and len(result.reasons.scores) == len(comps)
    assert not result.reasons.flag_threshold.any()


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
    assert bool(flagged.reasons.flag_threshold[0]) and bool(flagged.reasons.flags[0])
    far = 10 * float(first.upper.abs().max() + first.lower.abs().max())
    assert not reliability(
        tiny64, task, comps, threshold=far, bounds=first
    ).reasons.flag_threshold.any()


@pytest.mark.slow
def test_bounds_use_the_lagrange_factors(small64, small_task):
    comps = components(small64, "mlp_out")[:2]
    for order, factor in ((1, 1 / 2), (2, 1 / 6)):
        plain = error_bounds(small64, small_task, comps, order=order, n_nodes=3, refine=False)
        g = [path_function(small64, small_task, c) for c in comps]
        maxima = t64(
            *[max(abs(path_derivative(f, t, order + 1)) for t in (0.0, 0.5, 1.0)) for f in g]
        )
        torch.testing.assert_close(plain.radius, factor * maxima, rtol=1e-7, atol=1e-12)
        refined = error_bounds(small64, small_task, comps, order=order, n_nodes=3)
        assert (refined.radius >= plain.radius - 1e-15).all()
    with pytest.raises(BAD_OPTION_ERRORS):
        error_bounds(small64, small_task, comps, order=3)


def pair_counting_auroc(scores: list[float], positive: list[bool]) -> float:
    """P(score of a positive > score of a negative), ties counting 1/2, over every pair."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.slow
def test_detector_and_coverage_on_the_embedded_model(toy64, toy_task):
    comps = components(toy64, "head_q", layers=[1, 2])
    truth = hu.activation_patching(toy64, toy_task, comps)
    bounds = error_bounds(toy64, toy_task, comps, n_nodes=3)  # the Lagrange interval
    scored = reliability(toy64, toy_task, comps, threshold=0.01, bounds=bounds)
    torch.testing.assert_close(scored.lower, bounds.lower)
    torch.testing.assert_close(scored.upper, bounds.upper)
    intervals = list(zip(bounds.lower.tolist(), bounds.upper.tolist(), strict=True))
    crosses = [lo < 0.01 < up or lo < -0.01 < up for lo, up in intervals]
    assert scored.reasons.flag_threshold.tolist() == crosses
    # the detector, recomputed: AtP more than 50% off AP, AUROC of the scores by pair counting
    ap = truth.values.tolist()
    bad = [abs(f - a) > 0.5 * abs(a) for f, a in zip(scored.first.tolist(), ap, strict=True)]
    report = detector_report(
        scored.reasons,
        first=scored.first,
        truth=truth.values,
        negligible_share=0.0,
        threshold_share=None,
    ).iloc[0]
    assert report.positives == sum(bad) and 0 < sum(bad) < len(comps)
    expected = pair_counting_auroc(scored.reasons.scores.tolist(), bad)
    assert report.auroc == pytest.approx(expected, abs=1e-12)
    assert report.auroc > 0.7, report
    # measured, not guaranteed: on these queries the estimated intervals hold every AP effect
    inside = [lo <= a <= up for (lo, up), a in zip(intervals, ap, strict=True)]
    covered = coverage_report(lower=bounds.lower, upper=bounds.upper, truth=truth.values)
    assert all(inside) and covered.iloc[0].coverage == 1.0
    # the same estimate of max|g''| without bounds=: the same interval and flags
    alone = reliability(toy64, toy_task, comps, threshold=0.01, n_nodes=3)
    torch.testing.assert_close(alone.max_second, bounds.max_second)
    assert alone.reasons.flag_threshold.tolist() == scored.reasons.flag_threshold.tolist()


@pytest.mark.slow
def test_path_curves_static_figure_and_explorer(small64, small_task):
    comps = components(small64, "mlp_out")[:2]
    paths = hu.path_curves(small64, small_task, comps, n_points=5, threshold=0.5)
    end = paths.curves[paths.curves.t == 1.0].set_index("component")
    truth = hu.activation_patching(small64, small_task, comps)
    first = hu.atp(small64, small_task, comps)
    for i, comp in enumerate(comps):
        assert end.loc[comp.name, "AP_t"] == pytest.approx(float(truth.values[i]), abs=1e-10)
        assert end.loc[comp.name, "taylor1"] == pytest.approx(float(first.values[i]), abs=1e-10)
    # the band at t = 1 is the Lagrange interval of error_bounds (same nodes, same estimate)
    bounds = error_bounds(small64, small_task, comps, n_nodes=3)
    band = end.loc[[c.name for c in comps], "band"].to_numpy()
    torch.testing.assert_close(torch.tensor(band), bounds.radius, rtol=1e-9, atol=1e-12)
    summary = paths.summary.set_index("component").loc[[c.name for c in comps]]
    torch.testing.assert_close(torch.tensor(summary.lower.to_numpy()), bounds.lower)
    expected = straddles(bounds.lower, bounds.upper, 0.5).tolist()
    assert summary.flag_threshold.tolist() == expected
    fig = viz.static_path_figure(paths, ncols=3)
    assert sum(ax.get_visible() for ax in fig.axes) == len(comps)
    dotted = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == ":"]
    assert sorted(float(line.get_ydata()[0]) for line in dotted) == [-0.5, 0.5]  # ±theta
    by_kind = hu.path_curves(small64, small_task, comps, n_points=3, threshold={"mlp_out": 0.25})
    assert by_kind.summary.threshold.tolist() == [0.25, 0.25]
    assert hu.path_curves(small64, small_task, comps, n_points=3).summary.threshold.isna().all()


def test_flag_reasons_closed_forms():
    first, second = t64(1.0, 1.0, -2.0, 2.0), t64(-3.0, 0.2, 1.0, 0.1)
    reasons = hu.flag_reasons(first, second, tau=0.3)
    assert reasons.flag_score.tolist() == [True, False, False, False]
    assert reasons.flag_sign.tolist() == [True, False, False, False]
    assert not reasons.flag_threshold.any()
    # the Lagrange interval g'(0) -+ M2/2 with M2 = 1: [0.5, 1.5], [0.5, 1.5], [-2.5, -1.5], ...
    m2 = t64(1.0, 1.0, 1.0, 1.0)
    lower, upper = lagrange_interval(first, m2)
    torch.testing.assert_close(lower, first - 0.5)
    torch.testing.assert_close(upper, first + 0.5)
    near = hu.flag_reasons(first, second, tau=0.3, max_second=m2, threshold=1.8)
    assert near.flag_threshold.tolist() == [False, False, True, True]
    assert near.flags.tolist() == [True, False, True, True]
    per_component = hu.flag_reasons(
        first, second, tau=0.3, max_second=m2, threshold=t64(1, 1, 9, 9)
    )
    assert per_component.flag_threshold.tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="needs the Lagrange interval"):
        hu.flag_reasons(first, second, tau=0.3, threshold=1.0)


def test_path_nodes_need_both_end_points():
    from hvp_utils.analysis.reliability import path_nodes

    assert path_nodes(3) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="n_nodes"):
        path_nodes(1)
