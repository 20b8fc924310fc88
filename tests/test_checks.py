"""The notebook-facing reference checks: they follow the direction, and they can fail."""

from __future__ import annotations

import pytest
import torch
from reference import BAD_OPTION_ERRORS

import hvp_utils as hu
from hvp_utils import components
from hvp_utils.analysis.checks import path_derivative, path_function, slice_function


@pytest.fixture(scope="module")
def some_queries(small64):
    return components(small64, "head_q", layers=[2])[:2]


def test_noising_swaps_base_and_source(small64, small_task, some_queries):
    comp = some_queries[0]
    _, x_r, x_c = slice_function(small64, small_task, comp, direction="denoising")
    _, y_r, y_c = slice_function(small64, small_task, comp, direction="noising")
    torch.testing.assert_close(x_r, y_c)
    torch.testing.assert_close(x_c, y_r)
    # the noising path starts on the clean run and ends on AP's noising effect
    g = path_function(small64, small_task, comp, direction="noising")
    truth = hu.activation_patching(small64, small_task, [comp], direction="noising")
    with torch.no_grad():
        clean = small_task.metric(small64(small_task.clean_tokens))
        assert float(g(torch.tensor(0.0))) == pytest.approx(float(clean), abs=1e-10)
        assert float(g(torch.tensor(1.0)) - clean) == pytest.approx(truth[comp.name], abs=1e-10)
    assert path_derivative(g, 0.0, 1) == pytest.approx(
        float(hu.atp(small64, small_task, [comp], direction="noising").values[0]), rel=1e-9
    )


@pytest.mark.parametrize(
    "direction", ["denoising", pytest.param("noising", marks=pytest.mark.slow)]
)
def test_check_second_order_passes_in_each_direction(small64, small_task, some_queries, direction):
    estimate = hu.hvp_correction(small64, small_task, some_queries, direction=direction)
    frame = hu.check_second_order(small64, small_task, some_queries, estimate, direction=direction)
    assert len(frame) == len(some_queries)


def test_check_second_order_catches_a_wrong_estimate(small64, small_task, some_queries):
    noising = hu.hvp_correction(small64, small_task, some_queries, direction="noising")
    with pytest.raises(AssertionError, match="disagrees"):
        hu.check_second_order(small64, small_task, some_queries, noising, direction="denoising")
    with pytest.raises(BAD_OPTION_ERRORS):
        slice_function(small64, small_task, some_queries[0], direction="sideways")


def test_path_slope_is_atp_at_zero_and_the_slope_along_the_path(small64, small_task, some_queries):
    """g'(0) is AtP; along the path the slope's central difference is the HVP's g''(0)."""
    comp = some_queries[0]
    slope = hu.path_slope(small64, small_task, comp)
    zero = torch.tensor(0.0, dtype=torch.float64)
    assert slope(zero).dtype == torch.float64 and slope(zero).dim() == 0
    atp = hu.atp(small64, small_task, [comp]).values[0]
    assert float(slope(zero)) == pytest.approx(float(atp), rel=1e-9)
    h = torch.tensor(1e-5, dtype=torch.float64)
    second = hu.hvp_correction(small64, small_task, [comp]).second[0]
    assert float((slope(h) - slope(-h)) / (2 * h)) == pytest.approx(float(second), rel=1e-7)
