"""Every estimator on tiny random-initialised models of each architecture family TransformerLens
supports, checked against plain-hook references (float64)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from reference import path_derivative, path_function, qk_fixed_reference, slice_function

import hvp_utils as hu
from hvp_utils import components

FAMILIES = {
    "gpt2 (LayerNorm, learned positions, GELU)": "gpt2",
    "llama (RMSNorm, rotary, gated SiLU, GQA)": "llama",
    "gemma-2 (soft-capped attention and logits, GQA)": "gemma2",
    "neox (parallel attention + MLP, rotary)": "neox",
}


#: TransformerLens's bridge computes the attention softmax of rotary-position models in float32
#: even in a float64 model (``PositionEmbeddingsAttentionBridge``): their derivatives carry
#: ~1e-7 absolute rounding noise, so checks there are at 1e-4 relative, not 1e-6.
FLOAT32_SOFTMAX = {"llama", "gemma2", "neox"}


#: The unit tier's families: LayerNorm + learned positions, and RMSNorm + rotary + GQA.
UNIT_FAMILIES = ("gpt2", "llama")


@pytest.fixture(
    scope="module",
    params=[
        k if FAMILIES[k] in UNIT_FAMILIES else pytest.param(k, marks=pytest.mark.slow)
        for k in FAMILIES
    ],
    ids=lambda k: k.split(" ")[0],
)
def family(request):
    model = tiny_model(FAMILIES[request.param], seed=5)
    task = hu.ioi_dataset(model, n_prompts=4, perturbation="name_swap", seed=1)
    model.test_rtol = 1e-4 if FAMILIES[request.param] in FLOAT32_SOFTMAX else 1e-6
    return model, task


def all_estimators(model, task, comps):
    return [
        hu.atp(model, task, comps),
        hu.hvp_correction(model, task, comps, mode="diag"),
        hu.hvp_correction(model, task, comps, mode="joint"),
        hu.hvp_correction(model, task, comps, mode="hutchinson", n_probes=4),
        hu.multistep_hvp(model, task, comps, steps=2, rule="taylor"),
        hu.multistep_hvp(model, task, comps, steps=1, rule="radau"),
        hu.multistep_hvp(model, task, comps, steps=1, rule="trapezoid"),
        hu.integrated_gradients(model, task, comps, steps=2),
        hu.integrated_gradients(model, task, comps, steps=2, mode="joint"),
        hu.atp_star(model, task, comps, graddrop=False),
        hu.atp_star(model, task, comps),
    ]


@pytest.mark.parametrize(
    "kind",
    ["head_k"]
    + [
        pytest.param(k, marks=pytest.mark.slow)
        for k in ("head_out", "mlp_out", "head_q", "head_pattern")
    ],
)
def test_every_estimator_runs_and_is_right(family, kind):
    model, task = family
    comps = components(model, kind, n_positions=task.n_positions)
    truth = hu.activation_patching(model, task, comps)
    estimates = all_estimators(model, task, comps)
    for estimate in estimates:
        assert estimate.names == truth.names
        assert torch.isfinite(estimate.values).all(), estimate.method
    # AP and the second derivative against plain-hook references on one component
    comp = comps[len(comps) // 2]
    g = path_function(model, task, comp)
    with torch.no_grad():
        one, zero = (g(torch.tensor(t, dtype=torch.float64)) for t in (1.0, 0.0))
    assert float(truth[comp.name]) == pytest.approx(float(one - zero), abs=1e-9)
    phi, x_r, x_c = slice_function(model, task, comp)
    _, h_delta = torch.autograd.functional.hvp(phi, x_r, x_c - x_r)
    second = float(((x_c - x_r) * h_delta).sum())
    diag = estimates[1]
    rtol = model.test_rtol
    assert float(diag.second[comps.index(comp)]) == pytest.approx(second, rel=rtol, abs=1e-9)
    # first-order and quadrature rules against the same path differentiated by plain autograd
    d = {(t, k): path_derivative(g, t, k) for t in (0.0, 0.25, 0.5, 0.75, 1.0) for k in (1, 2)}
    qk_fix = qk_fixed_reference(model, task, comp) if kind in ("head_q", "head_k") else d[0.0, 1]
    expected = {
        "AtP": d[0.0, 1],
        "HVP diag": d[0.0, 1] + d[0.0, 2] / 2,
        "AtP* (QK fix)": qk_fix,
        "multistep radau K=1": 11 / 27 * d[0.0, 1] + 16 / 27 * d[0.75, 1] + d[0.0, 2] / 18,
        "multistep trapezoid K=1": (d[0.0, 1] + d[1.0, 1]) / 2 - (d[1.0, 2] - d[0.0, 2]) / 12,
        "multistep taylor K=2": (d[0.0, 1] + d[0.5, 1]) / 2 + (d[0.0, 2] + d[0.5, 2]) / 8,
        "IG K=2": (d[0.25, 1] + d[0.75, 1]) / 2,
    }
    by_method = {e.method: e for e in estimates}
    for method, value in expected.items():
        ours = float(by_method[method][comp.name])
        assert ours == pytest.approx(value, rel=rtol, abs=1e-9), method


def test_grouped_query_keys_are_kv_heads(family):
    model, _ = family
    kv = model.cfg.n_key_value_heads or model.cfg.n_heads
    assert len(components(model, "head_k", layers=[0])) == kv


def test_a_head_sample_keeps_the_key_heads_its_heads_read(family):
    """``heads=`` names query heads: every per-head kind keeps those heads, and a grouped key
    head stays while one query head of its group is kept (head h reads key head h // group)."""
    model, _ = family
    cfg = model.cfg
    group = cfg.n_heads // (cfg.n_key_value_heads or cfg.n_heads)
    sample = [(0, cfg.n_heads - 1), (1, 0)]
    for kind in ("head_out", "head_q", "head_pattern"):
        assert [(c.layer, c.head) for c in components(model, kind, heads=sample)] == sample
    keys = components(model, "head_k", heads=sample)
    assert [(c.layer, c.head) for c in keys] == [(0, (cfg.n_heads - 1) // group), (1, 0)]
    per_position = components(model, "head_out_pos", n_positions=3, heads=sample)
    assert len(per_position) == 6 and {(c.layer, c.head) for c in per_position} == set(sample)
    assert len(components(model, "mlp_out", heads=sample)) == cfg.n_layers  # not per head
