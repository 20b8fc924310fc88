"""Screen-Flag-Fix: the stages do what they say, and the costs add up."""

from __future__ import annotations

import pytest
import torch
from reference import BAD_OPTION_ERRORS

import hvp_utils as hu
from hvp_utils import components
from hvp_utils.analysis.screen_flag_fix import screen_flag_fix


@pytest.fixture(scope="module")
def heads(small64):
    return components(small64, "head_out")


@pytest.mark.slow
def test_everything_flagged_and_patched_is_activation_patching(small64, small_task, heads):
    result = screen_flag_fix(small64, small_task, heads, fix="patch", tau=-1.0)
    assert bool(result.fixed.all())
    truth = hu.activation_patching(small64, small_task, heads)
    torch.testing.assert_close(result.values, truth.values)
    stages = result.cost.stages
    assert set(stages) == {"screen_flag", "fix"}
    assert result.cost.forward == sum(s.forward for s in stages.values())
    # one Hutchinson pass screens and flags (no separate AtP run), in one prepared context
    alone = hu.hvp_correction(small64, small_task, heads, mode="hutchinson", n_probes=8)
    for passes in ("forward", "backward", "hvp"):
        assert getattr(stages["screen_flag"], passes) == getattr(alone.cost, passes)
    assert stages["fix"].forward == truth.cost.forward - 2  # no second prepare
    torch.testing.assert_close(result.first, hu.atp(small64, small_task, heads).values)
    assert result.key == "sff[tau=-1.0]" and result.method == "SFF (patch)"
    assert result.estimator.family is hu.Family.SFF
    assert list(result.cost.to_frame().index) == ["screen_flag", "fix", "total"]


def test_nothing_fixed_is_atp(small64, small_task, heads):
    result = screen_flag_fix(small64, small_task, heads, max_fixed=0)
    torch.testing.assert_close(result.values, hu.atp(small64, small_task, heads).values)
    assert not bool(result.fixed.any()) and "fix" not in result.cost.stages


def test_fix_replaces_only_flagged_components(small64, small_task, heads):
    result = screen_flag_fix(small64, small_task, heads, fix="hvp", tau=0.2, max_fixed=4)
    flagged = result.fixed.nonzero().flatten().tolist()
    assert 0 < len(flagged) <= 4
    diag = hu.hvp_correction(small64, small_task, [heads[i] for i in flagged])
    torch.testing.assert_close(result.values[flagged], diag.values)
    others = [i for i in range(len(heads)) if i not in flagged]
    torch.testing.assert_close(result.values[others], result.first[others])
    # the budget keeps the most curved of all flagged components
    unlimited = screen_flag_fix(small64, small_task, heads, fix="hvp", tau=0.2)
    every = unlimited.fixed.nonzero().flatten().tolist()
    assert len(every) > len(flagged)
    curvature = unlimited.second.abs()
    expected = sorted(sorted(every, key=lambda i: -float(curvature[i]))[: len(flagged)])
    assert flagged == expected


def test_bad_fix_is_an_error(small64, small_task, heads):
    with pytest.raises(BAD_OPTION_ERRORS):
        screen_flag_fix(small64, small_task, heads, fix="magic")


def test_a_share_of_the_components_caps_the_fixed_count(small64, small_task, heads):
    result = screen_flag_fix(small64, small_task, heads, tau=-1.0, max_fixed_share=0.1)
    assert int(result.fixed.sum()) == int(0.1 * len(heads)) > 0
    assert result.key == "sff[max_fixed_share=0.1,tau=-1.0]"
