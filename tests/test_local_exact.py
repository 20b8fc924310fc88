"""AtP with the exact local map (``atp_local``) against a plain-hook reference (float64).

The reference is the definition, ``<grad_o m(x_base), o_c - o_b>``: full forward passes of
the base input with only the component's entries of its input hook set to their source value,
``o`` read at the output hook, ``grad_o m`` by autograd with respect to a leaf that replaces
the output hook. It sums over the *whole* output hook, so it also checks which output entries
a component moves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model
from reference import component_index, endpoints
from transformer_lens.utilities import get_act_name

import hvp_utils as hu
from hvp_utils.core.components import Component
from hvp_utils.core.local_maps import local_change, output_slice

LOCAL_KINDS = ("head_q", "head_k", "neuron_pre")
IDENTITY_KINDS = ("head_out", "head_out_pos", "mlp_out", "neuron", "resid_pos")
#: The hook after each kind's non-linearity (the reference's own table).
OUTPUT = {"head_q": "z", "head_k": "z", "head_pattern": "z", "neuron_pre": "post"}


def pick(comps, k=2):
    return [comps[i] for i in sorted(set(np.linspace(0, len(comps) - 1, k).round().astype(int)))]


def layer_comps(model, task, kinds, layers=(1, 2), k=2):
    return [
        c
        for kind in kinds
        for layer in layers
        for c in pick(hu.components(model, kind, layers=[layer], n_positions=task.n_positions), k)
    ]


def reference(model, task, comp, direction="denoising"):
    """``(<grad_o m(x_base), o_c - o_b>, o_c - o_b)`` with plain hooks (module docstring)."""
    out_hook = get_act_name(OUTPUT[comp.kind], comp.layer)
    clean, corrupt = endpoints(model, task, comp)
    denoising = direction == "denoising"
    tokens = task.corrupted_tokens if denoising else task.clean_tokens
    base, source = (corrupt, clean) if denoising else (clean, corrupt)
    patched = base.clone()  # the base activation with only the component's entries moved
    index = component_index(comp, clean.dim())
    patched[index] = source[index]
    captured = {}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=out_hook)
        hooks = [
            (comp.hook, lambda act, hook: patched),
            (out_hook, lambda act, hook: captured.update(o=act)),
        ]
        model.run_with_hooks(tokens, fwd_hooks=hooks)
    o_b = cache[out_hook]
    leaf = o_b.clone().requires_grad_(True)
    logits = model.run_with_hooks(tokens, fwd_hooks=[(out_hook, lambda act, hook: leaf)])
    (grad,) = torch.autograd.grad(task.metric(logits), leaf)
    change = captured["o"] - o_b
    return float((grad * change).sum()), change


def references(model, task, comps, direction="denoising"):
    return torch.tensor(
        [reference(model, task, c, direction)[0] for c in comps], dtype=torch.float64
    )


@pytest.mark.parametrize(
    "direction", ["denoising", pytest.param("noising", marks=pytest.mark.slow)]
)
def test_plain_hook_reference_and_diagnose(small64, small_task, direction):
    comps = layer_comps(small64, small_task, LOCAL_KINDS)
    result = hu.atp_local(small64, small_task, comps, direction=direction)
    torch.testing.assert_close(
        result.values, references(small64, small_task, comps, direction), rtol=1e-8, atol=1e-10
    )
    frame = hu.diagnose(small64, small_task, comps, direction=direction)
    torch.testing.assert_close(
        result.values, torch.tensor(frame.AtP_out.values), rtol=1e-10, atol=1e-12
    )
    atp = hu.atp(small64, small_task, comps, direction=direction)
    assert (result.values - atp.values).abs().max() > 1e-3, "no local curvature: proves nothing"
    # one caching pair, one forward/backward, one single-layer pass per input hook
    n_hooks = len({c.hook for c in comps})
    assert (result.cost.forward, result.cost.backward) == (3 + n_hooks, 1)


@pytest.mark.parametrize(
    "kind", [k if k == "head_k" else pytest.param(k, marks=pytest.mark.slow) for k in LOCAL_KINDS]
)
def test_one_whole_hook_pass_gives_every_components_own_change(small64, small_task, kind):
    """Heads are independent in the softmax and neurons in GELU: moving the whole input hook
    changes each head's (neuron's) output exactly as moving that head (neuron) alone does."""
    comps = hu.components(small64, kind, layers=[1])
    comps = comps if kind != "neuron_pre" else pick(comps, 4)
    out_hook = output_slice(small64, comps[0]).hook
    ctx = hu.prepare(small64, small_task, comps, extra_hooks=(out_hook,))
    change = local_change(small64, ctx, in_hook=comps[0].hook, out_hook=out_hook, layer=1)
    for comp in comps:
        _, own = reference(small64, small_task, comp)
        mask = output_slice(small64, comp).mask(own.shape, dtype=own.dtype)
        assert own.abs().max() > 1e-6, comp.name
        assert (own * (1 - mask)).abs().max() < 1e-14, f"{comp.name} moves other outputs"
        torch.testing.assert_close(change * mask, own, rtol=1e-10, atol=1e-13)


def positioned(model, task, kind, layer=1):
    """Custom components of one input hook at single positions: two units at two positions."""
    hook = get_act_name({"head_q": "q", "head_k": "k", "neuron_pre": "pre"}[kind], layer)
    units = (0, 3) if kind != "neuron_pre" else (5, 40)
    positions = (task.n_positions - 1, task.n_positions - 3)
    return [
        Component(f"{kind}{u}@{p}", kind, hook, layer, ((1, p), (2, u)))
        for u in units
        for p in positions
    ]


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_components_at_several_positions_of_one_hook(small64, small_task, direction):
    comps = [c for kind in LOCAL_KINDS for c in positioned(small64, small_task, kind)]
    result = hu.atp_local(small64, small_task, comps, direction=direction)
    torch.testing.assert_close(
        result.values, references(small64, small_task, comps, direction), rtol=1e-8, atol=1e-10
    )
    # queries and neurons: one pass per hook; keys: one per key position (softmax over keys)
    assert result.cost.forward == 3 + 1 + 1 + 2
    keys = [c for c in comps if c.kind == "head_k" and dict(c.select)[2] == 0]
    whole = Component("k0", "head_k", keys[0].hook, 1, ((2, 0),))
    separate = hu.atp_local(small64, small_task, keys, direction=direction).values.sum()
    joint = hu.atp_local(small64, small_task, [whole], direction=direction).values
    assert abs(float(separate - joint)) > 1e-6, "key positions would be additive: proves nothing"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_other_architectures(family):
    model = tiny_model(family, seed=5)
    task = hu.ioi_dataset(model, n_prompts=4, perturbation="name_swap", seed=1)
    comps = hu.components(model, "head_q", layers=[1]) + hu.components(model, "head_k")
    comps += pick(hu.components(model, "neuron_pre", layers=[0]), 3)
    if family == "llama":
        assert output_slice(model, comps[5]).indices == (2, 3)  # a GQA key feeds its group
    # the Llama bridge takes its attention softmax in float32 even in a float64 model
    tol = dict(rtol=1e-5, atol=1e-6) if family == "llama" else dict(rtol=1e-8, atol=1e-10)
    for direction in ("denoising", "noising"):
        result = hu.atp_local(model, task, comps, direction=direction)
        torch.testing.assert_close(result.values, references(model, task, comps, direction), **tol)
        frame = hu.diagnose(model, task, comps, direction=direction)
        torch.testing.assert_close(result.values, torch.tensor(frame.AtP_out.values), **tol)
    assert result.values.abs().max() > 1e-3, "all-zero values prove nothing"


def test_kinds_without_a_local_map_are_plain_atp(small64, small_task):
    identity = layer_comps(small64, small_task, IDENTITY_KINDS, layers=(1,))
    assert torch.equal(
        hu.atp_local(small64, small_task, identity).values,
        hu.atp(small64, small_task, identity).values,
    )
    mixed = identity + layer_comps(small64, small_task, LOCAL_KINDS, layers=(1,))
    values = hu.atp_local(small64, small_task, mixed).values[: len(identity)]
    torch.testing.assert_close(
        values, hu.atp(small64, small_task, identity).values, rtol=1e-12, atol=1e-14
    )


def test_pattern_map_is_linear_so_equals_atp(small64, small_task):
    comps = layer_comps(small64, small_task, ("head_pattern",))
    result = hu.atp_local(small64, small_task, comps)
    torch.testing.assert_close(
        result.values, references(small64, small_task, comps), rtol=1e-8, atol=1e-10
    )
    torch.testing.assert_close(
        result.values, hu.atp(small64, small_task, comps).values, rtol=1e-8, atol=1e-10
    )


def test_record_names_the_estimator_and_runs_it(small64, small_task):
    record = hu.atp_local_estimator()
    assert record.func is hu.atp_local and "atp_local" in hu.__all__
    assert (record.key, record.label, record.family) == (
        "atp_local",
        "AtP (exact local)",
        hu.Family.ATP_LOCAL,
    )
    noising = hu.atp_local_estimator(direction="noising")
    assert noising.label == "AtP (exact local) (noising)"
    comps = layer_comps(small64, small_task, ("head_q",), layers=(2,))
    result = record(small64, small_task, comps)
    assert result.estimator == record and result.method == "AtP (exact local)"
    torch.testing.assert_close(
        result.values, references(small64, small_task, comps), rtol=1e-8, atol=1e-10
    )


def test_chunk_size_and_a_shared_context_change_no_value(small64, small_task):
    comps = layer_comps(small64, small_task, (*LOCAL_KINDS, "head_out"), layers=(1,))
    default = hu.atp_local(small64, small_task, comps)
    assert torch.equal(
        hu.atp_local(small64, small_task, comps, chunk_size=1).values, default.values
    )
    outs = tuple(sorted({output_slice(small64, c).hook for c in comps}))
    ctx = hu.prepare(small64, small_task, comps, extra_hooks=outs)
    shared = hu.atp_local(small64, small_task, comps, context=ctx)
    torch.testing.assert_close(shared.values, default.values, rtol=1e-12, atol=1e-14)
    assert shared.cost.forward == default.cost.forward - 2
    with pytest.raises(ValueError, match="lacks"):
        hu.atp_local(small64, small_task, comps, context=hu.prepare(small64, small_task, comps))


def test_bad_components_are_refused(small64, small_task):
    no_head = Component("q@3", "head_q", get_act_name("q", 1), 1, ((1, 3),))
    with pytest.raises(ValueError, match="must select its head"):
        hu.atp_local(small64, small_task, [no_head])
    model = tiny_model()
    model.cfg.act_fn = "solu_ln"
    with pytest.raises(ValueError, match="per-neuron local map"):
        hu.atp_local(model, small_task, hu.components(model, "neuron_pre", layers=[0])[:2])
