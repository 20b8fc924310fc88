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
