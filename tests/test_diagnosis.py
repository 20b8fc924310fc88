"""The AtP error split into downstream and local terms, against plain-hook references (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model
from reference import component_index, endpoints, path_derivative, path_function

import hvp_utils as hu
from hvp_utils import components
from hvp_utils.analysis.diagnosis import diagnose, error_shares, output_slice

LOCAL_KINDS = ("head_q", "head_k", "neuron_pre")
IDENTITY_KINDS = ("head_out", "mlp_out", "neuron", "resid_pos", "head_out_pos")


def pick(comps, k=3):
    return [comps[i] for i in sorted(set(np.linspace(0, len(comps) - 1, k).round().astype(int)))]


def layer_comps(model, task, kind, layer=1, k=3):
    return pick(components(model, kind, layers=[layer], n_positions=task.n_positions), k)


def patched_output(model, task, comp, out):
    """Reference ``o_c``: the output hook on the corrupted run with only the component's
    slice of its input hook set to the clean value (plain hooks)."""
    clean, _ = endpoints(model, task, comp)
    index = component_index(comp, clean.dim())
    captured = {}

    def patch(act, hook):
        act = act.clone()
        act[index] = clean[index]
        return act

    with torch.no_grad():
        model.run_with_hooks(
            task.corrupted_tokens,
            fwd_hooks=[(comp.hook, patch), (out.hook, lambda act, hook: captured.update(o=act))],
        )
        _, corrupt = model.run_with_cache(task.corrupted_tokens, names_filter=out.hook)
    return captured["o"], corrupt[out.hook]


def output_path(model, task, out, o_r, direction):
    """G(s) = m(corrupted run with the output slice moved to o_r + s * direction)."""
    mask = out.mask(o_r.shape, dtype=o_r.dtype)

    def G(s):
        def hook(act, hook):
            return o_r + mask * s * direction

        return task.metric(
            model.run_with_hooks(task.corrupted_tokens, fwd_hooks=[(out.hook, hook)])
        )

    return G


@pytest.fixture(scope="module")
def diagnosed(small64, small_task):
    comps = [c for kind in LOCAL_KINDS for c in layer_comps(small64, small_task, kind)]
    return comps, diagnose(small64, small_task, comps)


def local_error_reference(model, task, comp, out, direction="denoising", eps=1e-5):
    """``E_local = <grad D(o_r), (o_c - o_r) - J_phi delta>`` from plain hooks: the local map
    ``phi(s)`` read at the output hook while the input hook moves along ``a_r + s delta``
    (full forwards), ``J_phi delta`` by a central difference, ``grad D`` by autograd."""
    clean, corrupt = endpoints(model, task, comp)
    denoising = direction == "denoising"
    tokens = task.corrupted_tokens if denoising else task.clean_tokens
    base, source = (corrupt, clean) if denoising else (clean, corrupt)
    index = component_index(comp, clean.dim())
    delta = torch.zeros_like(base)
    delta[index] = (source - base)[index]

    def phi(s):
        captured = {}
        model.run_with_hooks(
            tokens,
            fwd_hooks=[
                (comp.hook, lambda act, hook: base + s * delta),
                (out.hook, lambda act, hook: captured.update(o=act)),
            ],
        )
        return captured["o"]

    with torch.no_grad():
        o_r, o_c = phi(0.0), phi(1.0)
        # five-point central difference: truncation error O(eps^4)
        slope = (8 * (phi(eps) - phi(-eps)) - (phi(2 * eps) - phi(-2 * eps))) / (12 * eps)
    o_leaf = o_r.clone().requires_grad_(True)
    logits = model.run_with_hooks(tokens, fwd_hooks=[(out.hook, lambda act, hook: o_leaf)])
    (grad,) = torch.autograd.grad(task.metric(logits), o_leaf)
    mask = out.mask(o_r.shape, dtype=o_r.dtype)
    return float((grad * mask * ((o_c - o_r) - slope)).sum())


@pytest.mark.slow
def test_ap_atp_and_local_error_against_plain_hooks(small64, small_task, diagnosed):
    comps, frame = diagnosed
    for i, comp in enumerate(comps):
        g = path_function(small64, small_task, comp)
        row = frame.iloc[i]
        with torch.no_grad():
            ap = float(g(torch.tensor(1.0)) - g(torch.tensor(0.0)))
        assert row.AP == pytest.approx(ap, abs=1e-10), comp.name
        assert row.AtP == pytest.approx(path_derivative(g, 0.0, 1), rel=1e-9, abs=1e-12)
        reference = local_error_reference(small64, small_task, comp, output_slice(small64, comp))
        assert row.E_local == pytest.approx(reference, rel=1e-5, abs=1e-9), comp.name
    assert frame.E_local.abs().max() > 1e-3, "no local curvature: the test proves nothing"


@pytest.mark.slow
def test_output_side_against_finite_differences_and_autograd(small64, small_task, diagnosed):
    comps, frame = diagnosed
    for i, comp in enumerate(comps):
        out = output_slice(small64, comp)
        o_c, o_r = patched_output(small64, small_task, comp, out)
        G = output_path(small64, small_task, out, o_r, o_c - o_r)
        step = 1e-5
        with torch.no_grad():
            by_fd = float(G(step) - G(-step)) / (2 * step)
            ap_out = float(G(1.0) - G(0.0))
        row = frame.iloc[i]
        assert row.AtP_out == pytest.approx(by_fd, rel=1e-6, abs=1e-9), comp.name
        assert row.AP == pytest.approx(ap_out, abs=1e-10), comp.name  # D(o_c) - D(o_r) = AP
        g2 = path_derivative(path_function(small64, small_task, comp), 0.0, 2)
        assert row.second_local + row.second_down == pytest.approx(g2, rel=1e-7, abs=1e-10)


def local_curvature_reference(model, task, comp, out, eps=1e-4):
    """phi''[delta, delta] by a central second difference of the local map, full forwards."""
    clean, corrupt = endpoints(model, task, comp)
    index = component_index(comp, clean.dim())
    delta = torch.zeros_like(corrupt)
    delta[index] = (clean - corrupt)[index]

    def phi(s):
        captured = {}
        model.run_with_hooks(
            task.corrupted_tokens,
            fwd_hooks=[
                (comp.hook, lambda act, hook: corrupt + s * delta),
                (out.hook, lambda act, hook: captured.update(o=act)),
            ],
        )
        return captured["o"]

    with torch.no_grad():
        return (phi(eps) - 2 * phi(0.0) + phi(-eps)) / eps**2


@pytest.mark.slow  # about 3 s with its fixture: the unit tier keeps its minute
def test_second_local_against_second_differences(small64, small_task, diagnosed):
    comps, frame = diagnosed
    for i, comp in enumerate(comps):
        out = output_slice(small64, comp)
        _, o_r = patched_output(small64, small_task, comp, out)
        w = local_curvature_reference(small64, small_task, comp, out) * out.mask(
            o_r.shape, dtype=o_r.dtype
        )
        o_leaf = o_r.clone().requires_grad_(True)
        logits = small64.run_with_hooks(
            small_task.corrupted_tokens, fwd_hooks=[(out.hook, lambda act, hook, o=o_leaf: o)]
        )
        (grad,) = torch.autograd.grad(small_task.metric(logits), o_leaf)
        reference = float((grad * w).sum())
        assert frame.iloc[i].second_local == pytest.approx(reference, rel=1e-4, abs=1e-8)


def test_identity_kinds_have_no_local_error(small64, small_task):
    comps = [c for kind in IDENTITY_KINDS for c in layer_comps(small64, small_task, kind, k=1)]
    frame = diagnose(small64, small_task, comps)
    assert (frame.E_local == 0).all() and (frame.second_local == 0).all()
    assert (frame.AtP_out == frame.AtP).all()
    for i, comp in enumerate(comps):
        g = path_function(small64, small_task, comp)
        assert frame.iloc[i].second_down == pytest.approx(path_derivative(g, 0.0, 2), rel=1e-7)


def test_pattern_map_is_linear(small64, small_task):
    comps = layer_comps(small64, small_task, "head_pattern", k=2)
    frame = diagnose(small64, small_task, comps)
    assert (frame.second_local.abs() < 1e-14).all()
    for i, comp in enumerate(comps):
        reference = local_error_reference(small64, small_task, comp, output_slice(small64, comp))
        assert abs(reference) < 1e-8, comp.name  # the plain-hook map is linear too
        assert abs(frame.iloc[i].E_local) < 1e-12, comp.name


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_grouped_query_keys_feed_their_group(direction):
    model = tiny_model("llama", seed=5)
    task = hu.ioi_dataset(model, n_prompts=4, perturbation="name_swap", seed=1)
    comps = components(model, "head_k") + components(model, "neuron_pre", layers=[0])[:3]
    assert output_slice(model, comps[1]).indices == (2, 3)
    frame = diagnose(model, task, comps, direction=direction)
    # TransformerLens's Llama attention takes its softmax in float32 even in a float64 model, so
    # its outputs carry ~1e-7 rounding noise: a five-point difference with step 1e-2 keeps it small,
    # and two autograd routes to g'(0) or g''(0) agree to ~1e-6 absolute (1e-12 on GPT-2)
    for i, comp in enumerate(comps):
        out = output_slice(model, comp)
        reference = local_error_reference(model, task, comp, out, direction, eps=1e-2)
        assert frame.iloc[i].E_local == pytest.approx(reference, rel=1e-3, abs=1e-5), comp.name
        g = path_function(model, task, comp, direction=direction)
        atp = path_derivative(g, 0.0, 1)
        assert frame.iloc[i].AtP == pytest.approx(atp, rel=1e-4, abs=1e-6), comp.name
        g2 = path_derivative(g, 0.0, 2)
        total = frame.iloc[i].second_local + frame.iloc[i].second_down
        assert total == pytest.approx(g2, rel=1e-4, abs=1e-6), comp.name


def test_error_shares_closed_form(diagnosed):
    _, frame = diagnosed
    shares = error_shares(frame)
    sub = frame[frame.kind == "head_q"]
    down, local = sub.E_down.abs().sum(), sub.E_local.abs().sum()
    assert shares.loc["head_q", "down_share"] == pytest.approx(down / (down + local))
    assert shares.loc["head_q", "n"] == len(sub)


def test_solu_pre_activations_are_rejected(small64, small_task):
    model = tiny_model()
    model.cfg.act_fn = "solu_ln"  # SoLU's LayerNorm mixes the neurons of a position
    with pytest.raises(ValueError, match="per-neuron local map"):
        diagnose(model, small_task, components(model, "neuron_pre", layers=[0])[:2])
