"""The patch-path explorer: patch paths on demand (hu.PathSource), the flag rules redrawn at
any tau and theta, the static figure outside JupyterLab and the live widget inside it."""

from __future__ import annotations

import base64

import pandas as pd
import pytest
import torch
from reference import component_index, endpoints, path_derivative

import hvp_utils as hu
from hvp_utils import components, viz


@pytest.fixture(scope="module")
def tasks(small64):
    return {
        p: hu.ioi_dataset(small64, n_prompts=4, perturbation=p, seed=0)
        for p in ("name_swap", "random_token")
    }


@pytest.fixture(scope="module")
def source(small64, tasks):
    comps = components(small64, "mlp_out") + components(small64, "head_out")[:3]
    return hu.PathSource(small64, tasks, comps, n_points=5)


def hand_path(model, task, comp):
    """``g(t)`` by a plain TransformerLens hook that adds ``t * delta`` to the component's slice
    of the corrupted run (``delta``: clean minus corrupted there, zero elsewhere), and the
    activation-patching hook that writes the clean slice in."""
    clean, corrupt = endpoints(model, task, comp)
    index = component_index(comp, clean.dim())
    delta = torch.zeros_like(clean)
    delta[index] = clean[index] - corrupt[index]

    def g(t):
        add = [(comp.hook, lambda act, hook: act + t * delta)]
        return task.metric(model.run_with_hooks(task.corrupted_tokens, fwd_hooks=add))

    def patched(act, hook):
        act = act.clone()
        act[index] = clean[index]
        return act

    with torch.no_grad():
        ap = task.metric(
            model.run_with_hooks(task.corrupted_tokens, fwd_hooks=[(comp.hook, patched)])
        )
        ap = float(ap - task.metric(model(task.corrupted_tokens)))
    return g, ap


def test_source_paths_are_the_hooked_path_and_activation_patching(small64, tasks, source):
    comp = components(small64, "mlp_out")[1]
    task = tasks["random_token"]
    got = source("random_token", comp.name)
    assert source("random_token", comp.name) is got  # kept, not recomputed
    g, ap = hand_path(small64, task, comp)
    with torch.no_grad():
        base = float(g(0.0))
        expected = [float(g(t)) - base for t in got.curves.t]
    assert got.curves.t.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    torch.testing.assert_close(
        torch.tensor(got.curves.AP_t.tolist(), dtype=torch.float64),
        torch.tensor(expected, dtype=torch.float64),
        rtol=1e-9,
        atol=1e-10,
    )
    row = got.summary.iloc[0]
    assert row.AP == pytest.approx(ap, abs=1e-10)  # t = 1 is activation patching
    assert row.AtP == pytest.approx(path_derivative(g, 0.0, 1), rel=1e-7)
    assert row.g2 == pytest.approx(path_derivative(g, 0.0, 2), rel=1e-7)


def test_source_scale_is_the_kinds_largest_atp(small64, tasks, source):
    heads = components(small64, "head_out")[:3]
    first = hu.atp(small64, tasks["name_swap"], heads)
    assert source.scale("name_swap", "head_out") == pytest.approx(float(first.values.abs().max()))
    assert source.kinds() == ["mlp_out", "head_out"]
    assert source.names("head_out") == [c.name for c in heads]


def test_source_reuses_precomputed_paths(small64, tasks):
    comps = components(small64, "mlp_out")[:2]
    paths = hu.path_curves(small64, tasks["name_swap"], comps, n_points=5)
    source = hu.PathSource(small64, tasks, comps, n_points=5, precomputed={"name_swap": paths})
    kept = source("name_swap", comps[1].name)
    assert kept.summary.component.tolist() == [comps[1].name]
    assert (
        kept.curves.AP_t.tolist()
        == paths.curves[paths.curves.component == comps[1].name].AP_t.tolist()
    )


def test_source_rejects_bad_input(small64, tasks, source):
    with pytest.raises(ValueError, match="at least one component"):
        hu.PathSource(small64, tasks, [])
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


def test_explorer_verdict_follows_the_closed_form_rules(small64, tasks, source):
    """The verdict from g'(0), g''(0) (autograd on the hooked path), the Lagrange interval
    g'(0) -+ M2/2 and theta = share * the largest |g'(0)| of the MLPs, at several tau, share."""
    mlps = components(small64, "mlp_out")
    slopes = {
        c.name: path_derivative(hand_path(small64, tasks["name_swap"], c)[0], 0.0, 1) for c in mlps
    }
    g, _ = hand_path(small64, tasks["name_swap"], mlps[1])
    first, second = path_derivative(g, 0.0, 1), path_derivative(g, 0.0, 2)
    score = abs(second / 2) / (abs(first) + abs(second / 2))
    explorer = viz.explore(source, component=mlps[1].name)
    lower, upper = first - explorer.row().M2 / 2, first + explorer.row().M2 / 2
    verdicts = set()
    for tau in (0.0, 0.3, 1.0):
        for share in (0.0, 0.1, 0.5, 10.0):
            explorer.tau, explorer.threshold_share = tau, share
            theta = share * max(abs(v) for v in slopes.values())
            assert explorer.theta == pytest.approx(theta, rel=1e-7)
            on = [
                name
                for name, rule in (
                    ("r>tau", score > tau),
                    ("sign", first * (first + second / 2) < 0),
                    ("threshold", any(lower < x < upper for x in (theta, -theta))),
                )
                if rule
            ]
            verdicts.add(explorer.verdict())
            assert explorer.verdict() == ("flagged: " + ", ".join(on) if on else "ok")
    assert len(verdicts) > 1, verdicts  # the grid reaches both sides of some rule


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_figures_are_stored_as_palette_pngs_close_to_full_colour():
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    viz.set_style()
    figure, ax = plt.subplots(figsize=(4, 3))
    ax.imshow(np.linspace(0, 1, 400).reshape(20, 20), cmap="viridis")
    ax.plot([0, 19], [0, 19], label="y = x")
    ax.set_title("a heatmap with a line")
    full_png = io.BytesIO()
    figure.savefig(full_png, format="png", bbox_inches="tight")
    full = np.asarray(Image.open(full_png).convert("RGB"), dtype=float)
    stored = Image.open(io.BytesIO(base64.b64decode(viz.plots.palette_png(figure))))
    plt.close(figure)
    assert stored.mode == "P" and len(stored.getcolors()) <= viz.plots.PNG_COLOURS
    palette = np.asarray(stored.convert("RGB"), dtype=float)
    assert palette.shape == full.shape
    assert np.abs(palette - full).mean() < 1.0  # out of 255: no visible change
    assert viz.plots.palette_png(plt.figure()) is None
