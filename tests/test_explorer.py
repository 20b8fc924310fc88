"""The patch-path explorer: patch paths on demand (hu.PathSource), the flag rules redrawn at
any tau and theta, the static figure outside JupyterLab and the live widget inside it."""

from __future__ import annotations

import base64

import pandas as pd
import pytest
import torch

import hvp_utils as hu
from hvp_utils import components, viz


@pytest.fixture(scope="module")
def tasks(toy64):
    return {
        p: hu.ioi_dataset(toy64, n_prompts=4, perturbation=p, seed=0)
        for p in ("name_swap", "random_token")
    }


@pytest.fixture(scope="module")
def source(toy64, tasks):
    comps = components(toy64, "mlp_out") + components(toy64, "head_out")[:3]
    return hu.PathSource(toy64, tasks, comps, n_points=5)


def test_source_computes_paths_on_demand_as_path_curves(toy64, tasks, source):
    comp = components(toy64, "mlp_out")[1]
    got = source("random_token", comp.name)
    direct = hu.path_curves(toy64, tasks["random_token"], [comp], n_points=5)
    pd.testing.assert_frame_equal(got.curves, direct.curves)
    pd.testing.assert_frame_equal(got.summary, direct.summary)
    assert source("random_token", comp.name) is got  # kept, not recomputed
    # AP at t = 1 is activation patching
    truth = hu.activation_patching(toy64, tasks["random_token"], [comp])
    assert got.summary.AP.iloc[0] == pytest.approx(float(truth.values[0]), abs=1e-10)


def test_source_scale_is_the_kinds_largest_atp(toy64, tasks, source):
    heads = components(toy64, "head_out")[:3]
    first = hu.atp(toy64, tasks["name_swap"], heads)
    assert source.scale("name_swap", "head_out") == pytest.approx(float(first.values.abs().max()))
    assert source.kinds() == ["mlp_out", "head_out"]
    assert source.names("head_out") == [c.name for c in heads]


def test_source_reuses_precomputed_paths(toy64, tasks):
    comps = components(toy64, "mlp_out")[:2]
    paths = hu.path_curves(toy64, tasks["name_swap"], comps, n_points=5)
    source = hu.PathSource(toy64, tasks, comps, n_points=5, precomputed={"name_swap": paths})
    kept = source("name_swap", comps[1].name)
    assert kept.summary.component.tolist() == [comps[1].name]
    assert (
        kept.curves.AP_t.tolist()
        == paths.curves[paths.curves.component == comps[1].name].AP_t.tolist()
    )


def test_source_rejects_bad_input(toy64, tasks, source):
    with pytest.raises(ValueError, match="at least one component"):
        hu.PathSource(toy64, tasks, [])
    with pytest.raises(KeyError, match="unknown perturbation"):
        source("mean_ablation", "MLP0")
    with pytest.raises(KeyError, match="PathSource"):
        source("name_swap", "L9H9")


def test_flag_rules_at_any_tau_and_theta_closed_form():
    # r = 1.5 / 2.5 = 0.6; AtP = 1 and AtP + g''/2 = -0.5 have opposite signs;
    # the Lagrange interval is 1 -+ 3/2 = [-0.5, 2.5]
    row = pd.Series({"AtP": 1.0, "g2": -3.0, "M2": 3.0})
    reasons = viz.explorer.flag_reasons_of(row, tau=0.5, theta=1.0)
    assert float(reasons.scores[0]) == pytest.approx(0.6)
    assert [
        bool(getattr(reasons, k)[0]) for k in ("flag_score", "flag_sign", "flag_threshold")
    ] == [
        True,
        True,
        True,
    ]
    quiet = viz.explorer.flag_reasons_of(row, tau=0.7, theta=3.0)
    assert [bool(getattr(quiet, k)[0]) for k in ("flag_score", "flag_sign", "flag_threshold")] == [
        False,
        True,
        False,
    ]
    lines = viz.flag_explanation(row, tau=0.7, theta=3.0)
    assert lines[0].startswith("r>tau (ok)") and "0.60 ≤ τ = 0.70" in lines[0]
    assert (
        lines[2].startswith("threshold (ok)") and "[-0.5, 2.5] does not cross ±θ = ±3" in lines[2]
    )


def test_explorer_verdict_matches_flag_reasons(source):
    explorer = viz.explore(source, tau=0.3, threshold_share=0.1, component="MLP1")
    row = explorer.row()
    theta = 0.1 * source.scale("name_swap", "mlp_out")
    expected = hu.flag_reasons(
        torch.tensor([row.AtP]),
        torch.tensor([row.g2]),
        tau=0.3,
        max_second=torch.tensor([row.M2]),
        threshold=theta,
    )
    assert explorer.theta == pytest.approx(theta)
    names = {"flag_score": "r>tau", "flag_sign": "sign", "flag_threshold": "threshold"}
    on = [short for key, short in names.items() if bool(getattr(expected, key)[0])]
    assert explorer.verdict() == ("flagged: " + ", ".join(on) if on else "ok")


def test_static_outside_jupyter_live_widget_inside(source, monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    explorer = viz.explore(source, component="MLP0")
    assert not viz.in_jupyter_frontend()
    bundle = explorer._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "image/png"}
    assert base64.b64decode(bundle["image/png"])[:4] == b"\x89PNG"
    assert bundle["text/plain"] == repr(explorer) and "MLP0" in bundle["text/plain"]

    monkeypatch.setenv("JPY_SESSION_NAME", "03_reliability_and_error_bounds.ipynb")
    assert viz.in_jupyter_frontend()
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert viz.explore(source, interactive=False)._repr_mimebundle_().keys() == {
        "text/plain",
        "image/png",
    }


def test_widget_controls_drive_the_selection(source):
    explorer = viz.explore(source, tau=0.3, threshold_share=0.1, component="MLP0", interactive=True)
    box = explorer.widget()
    (selects, sliders), verdict = box.children[0].children, box.children[1]
    perturbation, kind, component = selects.children
    tau, share = sliders.children
    kind.value = "head_out"
    assert component.options == tuple(source.names("head_out"))
    assert explorer.component == component.value == source.names("head_out")[0]
    perturbation.value = "random_token"
    tau.value, share.value = 0.0, 0.0
    assert (explorer.perturbation, explorer.tau, explorer.threshold_share) == (
        "random_token",
        0.0,
        0.0,
    )
    assert "r>tau" in verdict.value  # any curvature exceeds tau = 0
    tau.value = 1.0
    assert "r>tau" not in verdict.value  # r < 1 always
