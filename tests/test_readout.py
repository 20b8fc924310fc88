"""The metric from the final residual stream equals the metric from the full logits, and no
pass of the package computes the full unembedding."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_FAMILIES, tiny_model

import hvp_utils as hu
from hvp_utils.core.readout import answer_logits, final_normalized, run_with_answer_logits


@pytest.fixture(scope="module", params=sorted(TINY_FAMILIES))
def family_model(request):
    model = tiny_model(request.param, seed=3)
    return model, hu.ioi_dataset(model, n_prompts=5, perturbation="random_token", seed=2)


def test_answer_logits_equal_the_full_logits(family_model):
    model, task = family_model
    with torch.no_grad():
        full = model(task.clean_tokens)[:, -1]
        picked, _ = run_with_answer_logits(model, task.clean_tokens, task.answer_tokens)
    expected = full.gather(1, task.answer_tokens)
    torch.testing.assert_close(picked, expected, rtol=1e-10, atol=1e-10)


def test_gemma_soft_cap_is_applied():
    model = tiny_model("gemma2", seed=3)
    assert model.cfg.output_logits_soft_cap == 30.0
    tokens = model.to_tokens("When Mary and John went to the store")
    with torch.no_grad():
        normalized = final_normalized(model, tokens)
        uncapped = normalized[:, -1] @ model.W_U
        every = torch.arange(model.cfg.d_vocab).unsqueeze(0)
        capped = answer_logits(model, normalized, every)
    torch.testing.assert_close(capped, 30.0 * torch.tanh(uncapped / 30.0), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(capped, model(tokens)[:, -1], rtol=1e-10, atol=1e-10)


def test_started_at_a_layer_with_hooks_the_readout_is_exact(toy64, toy_task):
    layer, hook = 2, "blocks.2.attn.hook_z"
    _, cache = toy64.run_with_cache(toy_task.corrupted_tokens)
    double = lambda act, hook: 2 * act  # noqa: E731
    with torch.no_grad():
        full = toy64.run_with_hooks(
            cache["blocks.2.hook_resid_pre"], start_at_layer=layer, fwd_hooks=[(hook, double)]
        )[:, -1]
        picked, _ = run_with_answer_logits(
            toy64,
            cache["blocks.2.hook_resid_pre"],
            toy_task.answer_tokens,
            fwd_hooks=[(hook, double)],
            layer=layer,
        )
    torch.testing.assert_close(picked, full.gather(1, toy_task.answer_tokens), rtol=0, atol=1e-10)


def test_no_estimator_computes_the_full_unembedding(toy64, toy_task):
    fired = []
    toy64.add_hook("unembed.hook_out", lambda act, hook: fired.append(act.shape))
    try:
        comps = hu.components(toy64, "head_out", layers=[3])[:2]
        for spec in (
            hu.ap_estimator(),
            hu.atp_estimator(),
            hu.hvp_estimator(),
            hu.ig_estimator(steps=2, mode="joint"),
        ):
            spec(toy64, toy_task, comps)
        hu.task_report(toy64, toy_task)
        assert fired == []
        toy64(toy_task.clean_tokens[:1])  # the spy itself works
        assert fired
    finally:
        toy64.reset_hooks()


def test_a_model_that_does_not_do_the_task_is_said_so():
    model = tiny_model(seed=4)  # random weights: no IOI
    task = hu.ioi_dataset(model, n_prompts=6, perturbation="name_swap", seed=0)
    with pytest.warns(hu.TaskPerformanceWarning, match="does not perform the task"):
        frame = hu.task_report(model, {"name_swap": task})
    assert not frame.performs_task.any()
    assert frame.gap.iloc[0] == pytest.approx(
        frame.clean_metric.iloc[0] - frame.corrupted_metric.iloc[0]
    )


def test_the_toy_model_does_the_task_without_a_warning(toy64, toy_task, recwarn):
    frame = hu.task_report(toy64, toy_task)
    # 16 prompts here; the held-out quality over hundreds of prompts is tested in test_models
    assert frame.performs_task.all() and frame.clean_accuracy.iloc[0] >= 0.8
    assert not [w for w in recwarn if issubclass(w.category, hu.TaskPerformanceWarning)]


def test_skipping_the_blocks_before_the_start_layer_changes_nothing(family_model):
    from hvp_utils.core import readout

    model, task = family_model
    assert readout.skipping_is_exact(model)
    name = "blocks.1.hook_resid_pre"
    _, cache = model.run_with_cache(task.clean_tokens, names_filter=name)
    first = model.blocks[0].original_component
    with torch.no_grad():
        plain = model.run_with_hooks(cache[name], start_at_layer=1)
        with readout.blocks_skipped_before(model, 1):
            assert first.forward is readout._pass_through
            skipped = model.run_with_hooks(cache[name], start_at_layer=1)
    assert first.forward is not readout._pass_through  # restored
    assert torch.equal(plain, skipped)


def test_off_a_verified_release_nothing_is_skipped(monkeypatch):
    from hvp_utils.core import readout

    model = tiny_model("gpt2", seed=5)
    monkeypatch.setattr(readout, "SKIPPING_VERIFIED_ON", ())
    assert not readout.skipping_is_exact(model)
    first = model.blocks[0].original_component
    with readout.blocks_skipped_before(model, 1):
        assert "forward" not in vars(first)  # the Hugging Face layer computes as usual
    assert not [key for key in vars(model) if "skipping" in key]  # nothing kept on the model
