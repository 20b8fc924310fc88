"""Second-order results on any attention kernel: the attention implementation is recorded when a
model is bridged, second-order passes of an ``"sdpa"`` model run SDPA's math backend (the fused
kernels have no double backward), and any other implementation is refused with the fix."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from conftest import TINY_FAMILIES, tiny_hf_model

import hvp_utils as hu
from hvp_utils.core import engine

#: A tiny OPT: its TransformerLens bridge hands attention to the Hugging Face module, so an
#: ``"sdpa"`` model really calls ``scaled_dot_product_attention`` (the GPT-2 and Llama bridges
#: compute attention themselves, whatever the implementation).
OPT = (
    "OPTForCausalLM",
    "OPTConfig",
    dict(
        num_hidden_layers=2,
        hidden_size=32,
        word_embed_proj_dim=32,
        num_attention_heads=4,
        ffn_dim=64,
        max_position_embeddings=32,
        dropout=0.0,
        attention_dropout=0.0,
    ),
)
FAMILIES = ["gpt2", "llama", "opt"]


@pytest.fixture(scope="module", autouse=True)
def tiny_opt():
    """``tiny_hf_model("opt")`` for this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(TINY_FAMILIES, "opt", OPT)
        yield


def bridged(family: str, attn_implementation: str | None):
    """The same float64 weights of ``family`` (seed 1), bridged with ``attn_implementation``."""
    hf_model, tokenizer = tiny_hf_model(family)
    return hu.from_hf_model(
        hf_model, tokenizer, dtype="float64", attn_implementation=attn_implementation
    )


def fused_kernels_enabled() -> bool:
    """Whether SDPA may pick a fused kernel (flash, memory-efficient, cuDNN) right now; the
    global switches that ``torch.nn.attention.sdpa_kernel`` sets, on CPU builds too."""
    flags = torch.backends.cuda
    return (
        flags.flash_sdp_enabled() or flags.mem_efficient_sdp_enabled() or flags.cudnn_sdp_enabled()
    )


@contextmanager
def backends_seen(model):
    """Within the context, ``(grad enabled, fused kernels enabled, math enabled)`` at every
    forward pass of ``model`` (read as the pass reaches the final norm)."""
    seen = []

    def spy(module, args):
        seen.append(
            (
                torch.is_grad_enabled(),
                fused_kernels_enabled(),
                torch.backends.cuda.math_sdp_enabled(),
            )
        )

    handle = model.ln_final.register_forward_pre_hook(spy)
    try:
        yield seen
    finally:
        handle.remove()


def second_order_results(model, task, comps) -> list[torch.Tensor]:
    """g''(0) by one direction per component (path derivatives) and by one shared direction
    (hook Hessian-vector products), and a multi-step HVP."""
    return [
        hu.hvp_correction(model, task, comps, mode="diag").second,
        hu.hvp_correction(model, task, comps, mode="joint").second,
        hu.multistep_hvp(model, task, comps, steps=2, rule="taylor").values,
    ]


def test_the_attention_implementation_is_recorded_when_a_model_is_bridged(toy64):
    assert hu.attention_implementation(toy64) == "eager"  # TransformerLens boots eager
    hf_model, tokenizer = tiny_hf_model("gpt2", attn_implementation="sdpa")
    assert hu.attention_implementation(hu.from_hf_model(hf_model, tokenizer)) == "eager"
    sdpa = bridged("gpt2", "sdpa")
    assert hu.attention_implementation(sdpa) == "sdpa"
    assert sdpa.original_model.config._attn_implementation == "sdpa"
    loaded = hu.load_model("toy-ioi", attn_implementation="sdpa")
    assert hu.attention_implementation(loaded) == "sdpa"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_sdpa_gives_the_eager_second_order_values(family):
    eager, sdpa = bridged(family, "eager"), bridged(family, "sdpa")
    task = hu.ioi_dataset(eager, n_prompts=4, perturbation="random_token", seed=3)
    heads = hu.components(eager, "head_out")
    results, references = (second_order_results(m, task, heads) for m in (sdpa, eager))
    for result, reference in zip(results, references, strict=True):
        assert reference.abs().max() > 1e-4  # not vacuous
        torch.testing.assert_close(result, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_sdpa_second_order_values_match_autograd_and_finite_differences():
    """On OPT, where SDPA itself runs: g''(0) against ``torch.autograd.functional.hvp`` and
    finite differences of g' (float64, 1e-6), and against the eager model, whose Hugging Face
    softmax is float32 (so 1e-4)."""
    eager, sdpa = bridged("opt", "eager"), bridged("opt", "sdpa")
    task = hu.ioi_dataset(sdpa, n_prompts=4, perturbation="random_token", seed=3)
    heads = hu.components(sdpa, "head_out", layers=[0])
    estimate = hu.hvp_correction(sdpa, task, heads)
    hu.check_second_order(sdpa, task, heads, estimate)  # raises on a disagreement
    reference = hu.hvp_correction(eager, task, heads).second
    torch.testing.assert_close(estimate.second, reference, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_the_local_curvature_of_an_sdpa_model_is_computed():
    """``diagnose`` differentiates the attention of the query's layer twice in forward mode,
    which the fused kernels cannot either."""
    model = bridged("opt", "sdpa")
    task = hu.ioi_dataset(model, n_prompts=4, perturbation="random_token", seed=3)
    queries = hu.components(model, "head_q", layers=[1], n_positions=task.n_positions)
    frame = hu.diagnose(model, task, queries)
    assert frame["second_local"].abs().max() > 1e-3 and frame.notna().all().all()


@pytest.mark.parametrize(
    "family", [f if f == "opt" else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES]
)
def test_second_order_passes_of_an_sdpa_model_run_the_math_backend(family):
    model = bridged(family, "sdpa")
    task = hu.ioi_dataset(model, n_prompts=4, perturbation="random_token", seed=3)
    heads = hu.components(model, "head_out")
    with backends_seen(model) as first_order:
        hu.atp(model, task, heads)
    with backends_seen(model) as second_order:
        hu.hvp_correction(model, task, heads, mode="diag")
        hu.hvp_correction(model, task, heads, mode="joint")
    graph_passes = [seen for seen in second_order if seen[0]]
    assert graph_passes and all(seen == (True, False, True) for seen in graph_passes)
    assert all(fused for _, fused, _ in first_order)  # the guard is for second order only
    assert fused_kernels_enabled()  # and is lifted afterwards


def test_an_sdpa_model_calls_the_kernel_in_its_math_backend(monkeypatch):
    """On OPT the bridge calls the Hugging Face attention, so SDPA itself runs."""
    model = bridged("opt", "sdpa")
    task = hu.ioi_dataset(model, n_prompts=4, perturbation="random_token", seed=3)
    kernel, calls = torch.nn.functional.scaled_dot_product_attention, []

    def spy(*args, **kwargs):
        calls.append((torch.is_grad_enabled(), fused_kernels_enabled()))
        return kernel(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    hu.hvp_correction(model, task, hu.components(model, "head_out"))
    assert (True, False) in calls and (True, True) not in calls


def test_an_attention_without_double_backward_is_refused():
    """At the engine's second-order point (flex attention has no CPU forward to run first)."""
    model = bridged("llama", "flex_attention")
    assert hu.attention_implementation(model) == "flex_attention"
    fix = 'attn_implementation="eager"'
    with pytest.raises(hu.UnsupportedAttentionError, match=f"'flex_attention'.*{fix}"):
        engine.second_order_attention(model)
    with torch.no_grad():
        with pytest.raises(hu.UnsupportedAttentionError, match=fix):
            with engine.autograd_pass(model, order=2):
                pytest.fail("the pass ran")
        assert not torch.is_grad_enabled()  # the refused pass changed nothing
        with engine.autograd_pass(model, order=1):  # first order needs no double backward
            assert torch.is_grad_enabled()


def test_an_unknown_attention_implementation_is_refused(monkeypatch, toy64):
    monkeypatch.setattr(engine, "attention_implementation", lambda model: None)
    with pytest.raises(hu.UnsupportedAttentionError, match="unknown implementation.*eager"):
        engine.second_order_attention(toy64)
