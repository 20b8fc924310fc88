"""AP against TransformerLens's own patching functions; AtP against finite differences."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from transformer_lens import patching

import hvp_utils
from hvp_utils import activation_patching, atp, components


def tl_reference(model, task, kind):
    """The same patches through transformer_lens.patching, as effects (patched - corrupted)."""
    _, clean_cache = model.run_with_cache(task.clean_tokens)
    corrupted = task.corrupted_tokens
    base = task.metric(model(corrupted)).item()
    metric = task.metric
    if kind == "head_out":
        out = patching.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache, metric)
    elif kind == "head_out_pos":  # TL: [layer, pos, head]; ours: layer, head, pos
        out = patching.get_act_patch_attn_head_out_by_pos(model, corrupted, clean_cache, metric)
        out = out.permute(0, 2, 1)
    elif kind == "head_q":
        out = patching.get_act_patch_attn_head_q_all_pos(model, corrupted, clean_cache, metric)
    elif kind == "head_k":
        out = patching.get_act_patch_attn_head_k_all_pos(model, corrupted, clean_cache, metric)
    elif kind == "head_pattern":
        out = patching.get_act_patch_attn_head_pattern_all_pos(
            model, corrupted, clean_cache, metric
        )
    elif kind == "resid_pos":
        out = patching.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
    elif kind == "mlp_out":
        out = patching.generic_activation_patch(
            model,
            corrupted,
            clean_cache,
            metric,
            whole_activation_setter,
            "mlp_out",
            index_axis_names=["layer"],
        )
    else:
        raise ValueError(kind)
    return out.flatten().double() - base


def whole_activation_setter(corrupted_activation, index, clean_activation):
    corrupted_activation[...] = clean_activation
    return corrupted_activation


def neuron_setter(corrupted_activation, index, clean_activation):
    _, neuron = index
    corrupted_activation[..., neuron] = clean_activation[..., neuron]
    return corrupted_activation


KINDS_WITH_TL_REFERENCE = [
    "head_out",
    "head_out_pos",
    "head_q",
    "head_k",
    "head_pattern",
    "resid_pos",
    "mlp_out",
]
#: Every kind on the tiny model, and on the embedded one (slow) every kind but head_out_pos,
#: whose one forward pass per head and position the tiny model already checks (slow too; TL's
#: sweep of the embedded model's 768 head-positions took 47 s).
TL_CASES = [
    pytest.param(
        kind, which, marks=[pytest.mark.slow] if which == "toy" or kind == "head_out_pos" else []
    )
    for which in ("tiny", "toy")
    for kind in KINDS_WITH_TL_REFERENCE
    if (kind, which) != ("head_out_pos", "toy")
]


@pytest.mark.parametrize(("kind", "which"), TL_CASES)
def test_activation_patching_matches_transformer_lens(
    kind, which, toy64, tiny64, toy_task, tiny_task
):
    model, task = (toy64, toy_task) if which == "toy" else (tiny64, tiny_task)
    comps = components(model, kind, n_positions=task.n_positions)
    ours = activation_patching(model, task, comps, chunk_size=7)
    reference = tl_reference(model, task, kind)
    assert ours.values.shape == reference.shape
    torch.testing.assert_close(ours.values, reference, atol=1e-5, rtol=0)
    assert reference.abs().max() > 1e-3, "degenerate reference: nothing to compare"


@pytest.mark.slow
def test_neuron_patching_matches_transformer_lens(small64, small_task):
    comps = components(small64, "neuron", layers=[1])[:40]
    ours = activation_patching(small64, small_task, comps)
    _, clean_cache = small64.run_with_cache(small_task.clean_tokens)
    import pandas as pd

    index_df = pd.DataFrame({"layer": [1] * 40, "neuron": list(range(40))})
    reference = patching.generic_activation_patch(
        small64,
        small_task.corrupted_tokens,
        clean_cache,
        small_task.metric,
        neuron_setter,
        "post",
        index_df=index_df,
    )
    base = small_task.metric(small64(small_task.corrupted_tokens)).item()
    torch.testing.assert_close(ours.values, reference.double() - base, atol=1e-5, rtol=0)


def path_metric(model, task, comp, t: float, direction: str = "denoising") -> float:
    """g_c(t) by a plain hook (independent of the engine): a <- a_b + t (a_s - a_b) on c, with
    base b = corrupted and source s = clean when denoising (the reverse when noising)."""
    base_tokens, source_tokens = (
        (task.corrupted_tokens, task.clean_tokens)
        if direction == "denoising"
        else (task.clean_tokens, task.corrupted_tokens)
    )
    _, source_cache = model.run_with_cache(source_tokens, names_filter=comp.hook)
    _, base_cache = model.run_with_cache(base_tokens, names_filter=comp.hook)
    source, base = source_cache[comp.hook], base_cache[comp.hook]
    index = [slice(None)] * source.dim()
    for axis, i in comp.select:
        index[axis] = i
    index = tuple(index)

    def hook(act, hook):
        act = act.clone()
        act[index] = base[index] + t * (source[index] - base[index])
        return act

    logits = model.run_with_hooks(base_tokens, fwd_hooks=[(comp.hook, hook)])
    return task.metric(logits).item()


@pytest.mark.parametrize(
    "kind",
    [
        "head_out",
        "head_out_pos",
        "mlp_out",
        "neuron",
        "resid_pos",
        "head_q",
        "head_k",
        "head_pattern",
        "neuron_pre",
    ],
)
@pytest.mark.parametrize("which", ["tiny", pytest.param("toy", marks=pytest.mark.slow)])
def test_atp_is_derivative_at_zero(kind, which, toy64, tiny64, toy_task, tiny_task):
    model, task = (toy64, toy_task) if which == "toy" else (tiny64, tiny_task)
    comps = components(model, kind, n_positions=task.n_positions)
    estimate = atp(model, task, comps)
    step = 1e-4
    picks = sorted(set(torch.linspace(0, len(comps) - 1, 5).round().long().tolist()))
    for i in picks:
        comp = comps[i]
        finite = (path_metric(model, task, comp, step) - path_metric(model, task, comp, -step)) / (
            2 * step
        )
        assert abs(estimate.values[i].item() - finite) < 1e-6, (
            comp.name,
            estimate.values[i],
            finite,
        )
    assert estimate.values.abs().max() > 1e-4


def test_atp_costs_one_backward(small64, small_task):
    comps = components(small64, "neuron")
    estimate = atp(small64, small_task, comps)
    assert estimate.cost.backward == 1 and estimate.cost.hvp == 0
    assert estimate.cost.forward == 3  # clean, corrupted, base with gradient
    ap = activation_patching(small64, small_task, components(small64, "head_out"))
    assert ap.cost.forward == 2 + 32 and ap.cost.backward == 0


@pytest.mark.slow  # about 1.5 s: the unit tier keeps its minute
def test_noising_direction_matches_transformer_lens(small64, small_task):
    """Noising patches corrupted activations into the clean run: TransformerLens's patching
    with the corrupted cache on clean tokens, and finite differences along that path."""
    comps = components(small64, "mlp_out") + components(small64, "head_out", layers=[2])[:3]
    noising = activation_patching(small64, small_task, comps, direction="noising")
    _, corrupted_cache = small64.run_with_cache(small_task.corrupted_tokens)
    reference = patching.generic_activation_patch(
        small64,
        small_task.clean_tokens,
        corrupted_cache,
        small_task.metric,
        whole_activation_setter,
        "mlp_out",
        index_axis_names=["layer"],
    )
    base = small_task.metric(small64(small_task.clean_tokens)).item()
    n_mlp = small64.cfg.n_layers
    torch.testing.assert_close(noising.values[:n_mlp], reference.double() - base, atol=1e-5, rtol=0)
    for i, comp in enumerate(comps):
        ap = path_metric(small64, small_task, comp, 1.0, "noising") - base
        assert float(noising.values[i]) == pytest.approx(ap, abs=1e-9), comp.name
    denoising = activation_patching(small64, small_task, comps)
    assert (noising.values + denoising.values).abs().max() > 1e-3, "noising = -denoising"
    slopes = atp(small64, small_task, comps, direction="noising")
    step = 1e-4
    for i, comp in enumerate(comps):
        up, down = (path_metric(small64, small_task, comp, s, "noising") for s in (step, -step))
        assert float(slopes.values[i]) == pytest.approx((up - down) / (2 * step), abs=1e-6)


def test_result_frame(small64, small_task):
    result = atp(small64, small_task, components(small64, "head_out"))
    frame = result.to_frame()
    assert list(frame.columns[:3]) == ["component", "kind", "method"]
    assert {"key", "family", "value"} <= set(frame.columns)
    assert len(frame) == small64.cfg.n_layers * small64.cfg.n_heads
    assert set(frame.method) == {"AtP"} and set(frame.kind) == {"head_out"}
    assert frame.attrs["cost"]["backward"] == 1
    assert result["L0H0"] == pytest.approx(frame.value.iloc[0])
    assert list(frame.value) == result.values.tolist()


@pytest.mark.slow
def test_a_shared_context_gives_the_same_values_and_saves_its_passes(small64, small_task):
    comps = components(small64, "head_out", layers=[1, 2])
    context = hvp_utils.prepare(small64, small_task, comps)
    for estimator in (
        atp,
        partial(hvp_utils.hvp_correction, mode="diag"),
        partial(hvp_utils.hvp_correction, mode="hutchinson", n_probes=3),
        activation_patching,
    ):
        alone = estimator(small64, small_task, comps)
        shared = estimator(small64, small_task, comps, context=context)
        torch.testing.assert_close(shared.values, alone.values, rtol=1e-12, atol=1e-12)
        assert shared.cost.forward == alone.cost.forward - 2
        assert shared.key == alone.key
    subset = atp(small64, small_task, comps[10:13], context=context)
    torch.testing.assert_close(subset.values, atp(small64, small_task, comps[10:13]).values)


def test_a_shared_context_that_does_not_fit_is_refused(small64, small_task):
    heads = components(small64, "head_out", layers=[1])
    context = hvp_utils.prepare(small64, small_task, heads)
    with pytest.raises(ValueError, match=r"lacks \['blocks.2.hook_mlp_out', 'residual stream"):
        atp(small64, small_task, components(small64, "mlp_out", layers=[2]), context=context)
    with pytest.raises(ValueError, match="prepared for 'denoising', not 'noising'"):
        activation_patching(small64, small_task, heads, direction="noising", context=context)
    queries = components(small64, "head_q", layers=[1])
    without_patterns = hvp_utils.prepare(small64, small_task, queries)
    with pytest.raises(ValueError, match="blocks.1.attn.hook_pattern"):
        hvp_utils.atp_star(small64, small_task, queries, context=without_patterns)


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_joint_patching_of_one_component_is_its_activation_patching(small64, small_task, direction):
    comps = [components(small64, kind)[i] for kind, i in [("head_out", 3), ("mlp_out", 1)]]
    comps.append(components(small64, "neuron", layers=[0])[5])
    separate = activation_patching(small64, small_task, comps, direction=direction).values
    for c, effect in zip(comps, separate, strict=True):
        joint = hvp_utils.joint_patching(small64, small_task, [c], direction=direction)
        assert joint == pytest.approx(effect.item(), rel=1e-9, abs=1e-12), c.name


def test_joint_patching_of_every_head_and_mlp_restores_the_whole_gap(small64, small_task):
    """With every head's and every MLP's output clean, the final position's residual stream
    is the clean one (its token is the same in both prompts), so the metric is the clean
    metric: the joint effect is the whole gap, m(clean) - m(corrupted)."""
    final = small_task.clean_tokens[:, -1]
    assert torch.equal(final, small_task.corrupted_tokens[:, -1])
    every = components(small64, "head_out") + components(small64, "mlp_out")
    baseline = hvp_utils.task_baseline(small64, small_task)
    gap = baseline["clean_metric"] - baseline["corrupted_metric"]
    assert hvp_utils.joint_patching(small64, small_task, every) == pytest.approx(gap, rel=1e-9)
    separate = activation_patching(small64, small_task, every).values.sum().item()
    assert abs(separate - gap) > 1e-3  # the separate effects do not add up to it
