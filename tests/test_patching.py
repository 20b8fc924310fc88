"""AP against TransformerLens's own patching functions; AtP against finite differences."""

from __future__ import annotations

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


@pytest.mark.parametrize("kind", KINDS_WITH_TL_REFERENCE)
@pytest.mark.parametrize("which", ["toy", "tiny"])
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


def test_neuron_patching_matches_transformer_lens(toy64, toy_task):
    comps = components(toy64, "neuron", layers=[1])[:40]
    ours = activation_patching(toy64, toy_task, comps)
    _, clean_cache = toy64.run_with_cache(toy_task.clean_tokens)
    import pandas as pd

    index_df = pd.DataFrame({"layer": [1] * 40, "neuron": list(range(40))})
    reference = patching.generic_activation_patch(
        toy64,
        toy_task.corrupted_tokens,
        clean_cache,
        toy_task.metric,
        neuron_setter,
        "post",
        index_df=index_df,
    )
    base = toy_task.metric(toy64(toy_task.corrupted_tokens)).item()
    torch.testing.assert_close(ours.values, reference.double() - base, atol=1e-5, rtol=0)


def path_metric(model, task, comp, t: float) -> float:
    """g_c(t) by a plain hook (independent of the engine): a <- a_r + t (a_c - a_r) on c."""
    _, clean_cache = model.run_with_cache(task.clean_tokens, names_filter=comp.hook)
    _, corrupt_cache = model.run_with_cache(task.corrupted_tokens, names_filter=comp.hook)
    clean, corrupt = clean_cache[comp.hook], corrupt_cache[comp.hook]
    index = [slice(None)] * clean.dim()
    for axis, i in comp.select:
        index[axis] = i
    index = tuple(index)

    def hook(act, hook):
        act = act.clone()
        act[index] = corrupt[index] + t * (clean[index] - corrupt[index])
        return act

    logits = model.run_with_hooks(task.corrupted_tokens, fwd_hooks=[(comp.hook, hook)])
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
@pytest.mark.parametrize("which", ["toy", "tiny"])
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


def test_atp_costs_one_backward(toy64, toy_task):
    comps = components(toy64, "neuron")
    estimate = atp(toy64, toy_task, comps)
    assert estimate.cost["backward"] == 1 and estimate.cost["hvp"] == 0
    assert estimate.cost["forward"] == 3  # clean, corrupted, base with gradient
    ap = activation_patching(toy64, toy_task, components(toy64, "head_out"))
    assert ap.cost["forward"] == 2 + 32 and ap.cost["backward"] == 0


def test_noising_direction_patches_corrupted_into_clean(toy64, toy_task):
    comps = components(toy64, "mlp_out")
    noising = activation_patching(toy64, toy_task, comps, direction="noising")
    swapped = hvp_utils.PatchingTask(
        toy_task.corrupted_tokens, toy_task.clean_tokens, toy_task.answer_tokens
    )
    denoising_of_swapped = activation_patching(toy64, swapped, comps)
    torch.testing.assert_close(noising.values, denoising_of_swapped.values)


def test_result_frame(toy64, toy_task):
    result = atp(toy64, toy_task, components(toy64, "head_out"))
    frame = result.to_frame()
    assert list(frame.columns[:4]) == ["component", "kind", "method", "value"]
    assert len(frame) == toy64.cfg.n_layers * toy64.cfg.n_heads
    assert frame.attrs["cost"]["backward"] == 1
    assert result["L0H0"] == pytest.approx(frame.value.iloc[0])
