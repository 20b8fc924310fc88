"""The IOI task: shapes, perturbations, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch
from reference import BAD_OPTION_ERRORS

import hvp_utils
from hvp_utils import TaskError, components, ioi_dataset


@pytest.mark.parametrize("perturbation", ["name_swap", "random_token"])
def test_ioi_dataset_shapes_and_alignment(toy32, perturbation):
    task = ioi_dataset(toy32, n_prompts=16, perturbation=perturbation, seed=5)
    assert task.clean_tokens.shape == task.corrupted_tokens.shape == (16, task.n_positions)
    assert task.answer_tokens.shape == (16, 2)
    assert (task.clean_tokens[:, 0] == toy32.tokenizer.bos_token_id).all()
    changed = task.clean_tokens != task.corrupted_tokens
    # only the three name slots change (a random token may coincide with the name by chance)
    assert changed.any(0).sum() == 3 and changed.sum(1).le(3).all()
    assert task.position_labels[-1] == "end" and {"N1", "N2", "S2"} <= set(task.position_labels)
    io, s = task.answer_tokens[:, 0], task.answer_tokens[:, 1]
    assert (task.clean_tokens == io[:, None]).sum(1).eq(1).all()
    assert (task.clean_tokens == s[:, None]).sum(1).eq(2).all()


def test_ioi_dataset_is_seeded(toy32):
    a = ioi_dataset(toy32, n_prompts=8, perturbation="random_token", seed=1)
    b = ioi_dataset(toy32, n_prompts=8, perturbation="random_token", seed=1)
    c = ioi_dataset(toy32, n_prompts=8, perturbation="random_token", seed=2)
    assert torch.equal(a.corrupted_tokens, b.corrupted_tokens)
    assert not torch.equal(a.clean_tokens, c.clean_tokens)


def test_name_swap_removes_the_answer(toy32):
    task = ioi_dataset(toy32, n_prompts=32, perturbation="name_swap")
    clean, corrupted = (
        task.metric(toy32(task.clean_tokens)),
        task.metric(toy32(task.corrupted_tokens)),
    )
    assert clean > 2.0 and abs(corrupted) < 0.5 * clean


def test_multi_token_names_are_rejected(toy32):
    with pytest.raises(TaskError, match="not single tokens"):
        ioi_dataset(toy32, n_prompts=4, names=["Mary", "John", "Alice", "Bob", "Zebedee"])


def test_misaligned_tokens_are_rejected():
    with pytest.raises(TaskError, match="aligned positions"):
        hvp_utils.PatchingTask(
            torch.zeros(2, 5, dtype=torch.long),
            torch.zeros(2, 6, dtype=torch.long),
            torch.zeros(2, 2, dtype=torch.long),
        )


def test_wrong_answer_shape_is_rejected():
    with pytest.raises(TaskError, match="answer_tokens"):
        hvp_utils.PatchingTask(
            torch.zeros(2, 5, dtype=torch.long),
            torch.zeros(2, 5, dtype=torch.long),
            torch.zeros(2, 3, dtype=torch.long),
        )


def test_nan_metric_is_an_error(toy32):
    task = ioi_dataset(toy32, n_prompts=4)
    logits = toy32(task.clean_tokens)
    logits[0, -1, 0] = float("nan")
    logits[:, -1, :] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        task.metric(logits)

    def nan_hook(act, hook):
        return act * float("nan")

    toy32.add_hook("blocks.3.hook_resid_post", nan_hook)
    try:
        with pytest.raises(FloatingPointError, match="not finite"):
            hvp_utils.activation_patching(toy32, task, components(toy32, "mlp_out"))
    finally:
        toy32.reset_hooks()


def test_empty_component_set_is_an_error(toy32):
    task = ioi_dataset(toy32, n_prompts=4)
    with pytest.raises(ValueError, match="empty component set"):
        hvp_utils.atp(toy32, task, [])
    with pytest.raises(ValueError, match="empty component set"):
        hvp_utils.activation_patching(toy32, task, [])


def test_unknown_perturbation_and_kind(toy32):
    with pytest.raises((TaskError, *BAD_OPTION_ERRORS)):
        ioi_dataset(toy32, perturbation="shuffle")
    with pytest.raises(BAD_OPTION_ERRORS):
        components(toy32, "heads")
    with pytest.raises(ValueError, match="n_positions"):
        components(toy32, "head_out_pos")


def test_component_names(toy32):
    assert components(toy32, "head_out")[9].name == "L1H1"
    assert components(toy32, "head_out_pos", positions=[7])[0].name == "L0H0@7"
    assert components(toy32, "mlp_out")[1].name == "MLP1"
    assert components(toy32, "neuron", layers=[1])[45].name == "L1N45"
    assert components(toy32, "resid_pos", layers=[2], positions=[3])[0].name == "R2@3"
    assert components(toy32, "head_q")[0].name == "L0H0.q"
    assert components(toy32, "neuron_pre", layers=[0])[2].name == "L0N2.pre"


def hand_indexed(cache, comp):
    """The component's entries indexed by hand, from TransformerLens's activation layouts
    (z, q, k: batch pos head d_head; pattern: batch head q_pos k_pos; post, pre: batch pos
    d_mlp; mlp_out, resid_pre: batch pos d_model)."""
    block, head, pos, neuron = f"blocks.{comp.layer}", comp.head, comp.position, comp.neuron
    return {
        "head_out": lambda: cache[f"{block}.attn.hook_z"][:, :, head],
        "head_out_pos": lambda: cache[f"{block}.attn.hook_z"][:, pos, head],
        "head_q": lambda: cache[f"{block}.attn.hook_q"][:, :, head],
        "head_k": lambda: cache[f"{block}.attn.hook_k"][:, :, head],
        "head_pattern": lambda: cache[f"{block}.attn.hook_pattern"][:, head],
        "mlp_out": lambda: cache[f"{block}.hook_mlp_out"],
        "neuron": lambda: cache[f"{block}.mlp.hook_post"][..., neuron],
        "neuron_pre": lambda: cache[f"{block}.mlp.hook_pre"][..., neuron],
        "resid_pos": lambda: cache[f"{block}.hook_resid_pre"][:, pos],
    }[comp.kind]()


@pytest.mark.parametrize("kind", hvp_utils.KINDS)
def test_components_carry_their_layer_head_position_and_neuron(kind, toy32, toy_task):
    _, cache = toy32.run_with_cache(toy_task.clean_tokens[:2])
    comps = components(toy32, kind, n_positions=toy_task.n_positions)
    for c in comps[:: max(1, len(comps) // 7)]:
        assert torch.equal(c.take(cache[c.hook]), hand_indexed(cache, c)), c.name
        if c.head is not None:
            assert c.name.startswith(f"L{c.layer}H{c.head}")
        if c.neuron is not None:
            assert c.name.startswith(f"L{c.layer}N{c.neuron}")
    has = {"head": kind.startswith("head"), "neuron": kind.startswith("neuron")}
    has["position"] = kind in ("head_out_pos", "resid_pos")
    for field, expected in has.items():
        assert all((getattr(c, field) is not None) == expected for c in comps), field


def test_grouped_query_key_components_carry_their_kv_head():
    from conftest import tiny_model

    model = tiny_model("llama", seed=3)
    tokens = model.to_tokens("When Mary and John went to the store")
    _, cache = model.run_with_cache(tokens)
    keys = components(model, "head_k", layers=[1])
    assert [c.head for c in keys] == list(range(model.cfg.n_key_value_heads))
    for c in keys:
        assert torch.equal(c.take(cache[c.hook]), cache["blocks.1.attn.hook_k"][:, :, c.head])
