"""``chunk_size`` changes how replicates are batched into passes, never a value or a pass count.

Every batched pass runs through ``engine.replicated_metric``; a spy on it counts the passes
(chunks) and the replicates each carries.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

import hvp_utils as hu
from hvp_utils.core import engine

#: name -> (estimator, whether chunk_size=1 splits its replicates into more passes)
ESTIMATORS = {
    "ap": (hu.activation_patching, True),
    "atp": (hu.atp, False),
    "atp_star": (hu.atp_star, True),  # the GradDrop layers are replicates
    "atp_star qk": (partial(hu.atp_star, graddrop=False), False),
    "hvp diag": (partial(hu.hvp_correction, mode="diag"), True),
    "hvp joint": (partial(hu.hvp_correction, mode="joint"), False),
    "hvp hutchinson": (partial(hu.hvp_correction, mode="hutchinson", n_probes=3), True),
    "multistep taylor": (partial(hu.multistep_hvp, steps=2, rule="taylor"), True),
    "multistep trapezoid": (partial(hu.multistep_hvp, steps=2, rule="trapezoid"), True),
    "multistep radau": (partial(hu.multistep_hvp, steps=1, rule="radau"), True),
    "ig midpoint": (partial(hu.integrated_gradients, steps=2), True),
    "ig gauss": (partial(hu.integrated_gradients, steps=1, rule="gauss"), True),
    "ig joint": (partial(hu.integrated_gradients, steps=3, mode="joint"), True),
    "ig joint gauss": (
        partial(hu.integrated_gradients, steps=1, rule="gauss", mode="joint"),
        True,
    ),
}
PASS_COUNTS = ("forward", "backward", "hvp", "third_order")


@pytest.fixture(scope="module")
def small(small64):
    """Four heads of layer 1 (plus their queries, for AtP*'s QK fix) on three prompts."""
    task = hu.ioi_dataset(small64, n_prompts=3, perturbation="name_swap", seed=0)
    heads = hu.components(small64, "head_out", layers=[1])[:4]
    return task, heads + hu.components(small64, "head_q", layers=[1])[:2]


def run_counting_passes(monkeypatch, estimator, *args, **kwargs):
    """The estimator's result and the replicates of each replicated pass it ran."""
    passes = []
    original = engine.replicated_metric

    def spy(model, task, start, *, replicates, fwd_hooks, layer=None):
        passes.append(replicates)
        return original(model, task, start, replicates=replicates, fwd_hooks=fwd_hooks, layer=layer)

    with monkeypatch.context() as patch:
        patch.setattr(engine, "replicated_metric", spy)
        result = estimator(*args, **kwargs)
    return result, passes


#: One estimator per engine path in the unit tier (patching, path derivatives at several nodes,
#: the hook gradients' second-order pass, plain gradients); the rest in the slow tier.
UNIT_ESTIMATORS = ("ap", "multistep trapezoid", "hvp diag", "ig gauss")


@pytest.mark.parametrize(
    "name",
    [n if n in UNIT_ESTIMATORS else pytest.param(n, marks=pytest.mark.slow) for n in ESTIMATORS],
)
def test_chunk_size_changes_passes_not_values(name, small64, small, monkeypatch):
    estimator, splits = ESTIMATORS[name]
    task, comps = small
    default, default_passes = run_counting_passes(monkeypatch, estimator, small64, task, comps)
    single, single_passes = run_counting_passes(
        monkeypatch, estimator, small64, task, comps, chunk_size=1
    )
    scale = float(default.values.abs().max())
    assert scale > 1e-3, "all-zero values prove nothing"
    torch.testing.assert_close(single.values, default.values, rtol=1e-12, atol=1e-12 * scale)
    singles = single.columns()
    for key, column in default.columns().items():
        expected = torch.as_tensor(column)
        torch.testing.assert_close(
            torch.as_tensor(singles[key]), expected, rtol=1e-12, atol=1e-12 * scale
        )
    passes = {k: getattr(single.cost, k) for k in PASS_COUNTS}
    assert passes == {k: getattr(default.cost, k) for k in PASS_COUNTS}
    # every counted forward is a replicate of a pass through replicated_metric (besides the
    # two caching runs and AtP*'s single-layer pattern passes)
    local = 1 if name.startswith("atp_star") else 0
    assert sum(default_passes) == sum(single_passes) == default.cost.forward - 2 - local
    assert set(single_passes) == {1}
    if splits:
        assert len(single_passes) > len(default_passes)
    else:
        assert len(single_passes) == len(default_passes)


def test_the_chunks_follow_the_token_budget_and_the_layers():
    budget = engine.TOKENS_PER_PASS[2]
    chunks = engine.replicate_chunks([1, 0, 1, 1, 0], rows_per_replicate=budget // 2, order=2)
    assert chunks == [[1, 4], [0, 2], [3]]
    assert engine.replicate_chunks([0] * 5, rows_per_replicate=10, order=1, chunk_size=2) == [
        [0, 1],
        [2, 3],
        [4],
    ]
    with pytest.raises(ValueError, match="chunk_size"):
        engine.replicate_chunks([0], rows_per_replicate=10, order=1, chunk_size=0)


def test_a_wide_model_gets_fewer_tokens_per_pass(small64):
    """GPT-2 small's shape: a token holds 8 (12 (8 x 768 + 2 x 3072) + 2 x 50257) bytes of
    activations in float64, so its passes take a share of the token budget that keeps them
    near PASS_MEMORY_BYTES; the embedded model keeps the whole budget."""
    from types import SimpleNamespace

    wide = SimpleNamespace(n_layers=12, d_model=768, d_mlp=3072, d_vocab=50257, dtype=torch.float64)
    assert engine.token_bytes(wide) == 8 * (12 * (8 * 768 + 2 * 3072) + 2 * 50257)
    for order, budget in engine.TOKENS_PER_PASS.items():
        tokens = engine.pass_tokens(wide, order)
        share = budget / engine.TOKENS_PER_PASS[0]
        assert tokens * engine.token_bytes(wide) <= engine.PASS_MEMORY_BYTES * share
        assert (tokens + 1) * engine.token_bytes(wide) > engine.PASS_MEMORY_BYTES * share * 0.99
    every = [engine.pass_tokens(small64.cfg, order) for order in engine.TOKENS_PER_PASS]
    assert every == list(engine.TOKENS_PER_PASS.values())
    wide32 = SimpleNamespace(**{**vars(wide), "dtype": torch.float32})  # 270 tokens at order 2
    chunks = engine.replicate_chunks([0] * 9, rows_per_replicate=100, order=2, cfg=wide32)
    assert [len(c) for c in chunks] == [2, 2, 2, 2, 1]
