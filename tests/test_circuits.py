"""Circuit recovery and faithfulness against closed forms and plain-hook references."""

from __future__ import annotations

import itertools
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace

import pytest
import torch
from reference import made_up

import hvp_utils as hu
from hvp_utils import components
from hvp_utils.analysis import circuits


def test_auroc_matches_brute_force_pairs():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.5, 0.3, 0.8])
    positive = torch.tensor([True, False, True, False, False, True])
    pairs = [
        (p, n) for p, n in itertools.product(range(6), range(6)) if positive[p] and not positive[n]
    ]
    expected = sum(
        1.0 if scores[p] > scores[n] else 0.5 if scores[p] == scores[n] else 0.0 for p, n in pairs
    ) / len(pairs)
    assert hu.auroc(scores, positive) == pytest.approx(expected)
    roc = circuits.roc_curve(scores, positive)
    assert roc.tpr.iloc[-1] == 1.0 and roc.fpr.iloc[-1] == 1.0


def test_recovery_counts_hits_at_the_reference_size():
    est = made_up(torch.tensor([3.0, -2.5, 0.1, 1.0]), ["a", "b", "c", "d"])
    found = circuits.circuit_recovery(est, ["a", "d"])
    assert found.precision == 0.5 and found.missed == ["d"] and found.false_positives == ["b"]
    assert found.auroc == pytest.approx(0.75)
    assert found.to_frame().loc["X"].tolist() == [0.5, 0.5, found.auroc, "d", "b"]
    with pytest.raises(ValueError, match="not in the estimate"):
        circuits.circuit_recovery(est, ["z"])


def test_published_gpt2_heads_file():
    heads = circuits.published_ioi_heads()
    assert len(heads) == 26 and heads.name.is_unique
    assert set(heads[heads["class"] == "name mover"].name) == {"L9H9", "L9H6", "L10H0"}


def test_faithfulness_endpoints_against_plain_mean_ablation(small64, small_task):
    heads = components(small64, "head_out")
    truth = hu.activation_patching(small64, small_task, heads)
    curve = circuits.faithfulness(small64, small_task, truth, heads, sizes=[0, 1, len(heads)])
    assert curve.faithfulness.iloc[-1] == pytest.approx(1.0)
    # size 0: every head output replaced by its clean mean, by a plain hook per layer
    _, cache = small64.run_with_cache(small_task.clean_tokens)
    hooks = [
        (
            f"blocks.{layer}.attn.hook_z",
            lambda act, hook, layer=layer: (
                cache[f"blocks.{layer}.attn.hook_z"]
                .mean(0, keepdim=True)
                .expand_as(act)
                .contiguous()
            ),  # GPT-2's Conv1D views its input
        )
        for layer in range(small64.cfg.n_layers)
    ]
    ablated = small_task.metric(small64.run_with_hooks(small_task.clean_tokens, fwd_hooks=hooks))
    assert curve.metric.iloc[0] == pytest.approx(float(ablated), rel=1e-9)
    # size 1: keep only the top head
    top = heads[int(truth.values.abs().argmax())]
    keep = [(h, f) for h, f in hooks if h != top.hook]

    def keep_one(act, hook):
        mean = cache[top.hook].mean(0, keepdim=True).expand_as(act).clone()
        head = dict(top.select)[2]
        mean[:, :, head] = act[:, :, head]
        return mean

    one = small_task.metric(
        small64.run_with_hooks(small_task.clean_tokens, fwd_hooks=keep + [(top.hook, keep_one)])
    )
    assert curve.metric.iloc[1] == pytest.approx(float(one), rel=1e-9)


def test_attention_shares_read_attention(small64, small_task):
    heads = components(small64, "head_out")
    roles = circuits.attention_shares(small64, small_task)
    assert list(roles.index) == [h.name for h in heads]
    attention = roles[["end->IO", "end->S1", "end->S2", "S2->S1", "S2->IO", "S2->S1+1"]]
    assert ((attention >= 0) & (attention <= 1)).all().all()
    # each share: the smaller of its means over the two name orders, from a plain cache
    _, cache = small64.run_with_cache(small_task.clean_tokens)
    tokens, io, s = small_task.clean_tokens, *small_task.answer_tokens.T
    rows = range(len(tokens))
    io_pos = [int((tokens[b] == io[b]).nonzero()[0]) for b in rows]
    s_pos = [(tokens[b] == s[b]).nonzero().flatten().tolist() for b in rows]
    orders = [
        [b for b in rows if io_pos[b] < s_pos[b][0]],
        [b for b in rows if io_pos[b] > s_pos[b][0]],
    ]
    orders = [group for group in orders if group]
    for name in ("L0H3", "L1H6", "L3H2"):
        layer, head = map(int, name[1:].split("H"))
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, head]
        end_io = min(sum(float(pattern[b, -1, io_pos[b]]) for b in g) / len(g) for g in orders)
        s2_s1 = min(
            sum(float(pattern[b, s_pos[b][-1], s_pos[b][0]]) for b in g) / len(g) for g in orders
        )
        assert roles.loc[name, "end->IO"] == pytest.approx(end_io)
        assert roles.loc[name, "S2->S1"] == pytest.approx(s2_s1)


@contextmanager
def mlp_scaled(model, layer: int, factor: float):
    """The model with layer ``layer``'s MLP output (its ``c_proj`` weight and bias) times
    ``factor``, restored on exit."""
    proj = model.original_model.transformer.h[layer].mlp.c_proj._original_component
    saved = [p.detach().clone() for p in (proj.weight, proj.bias)]
    with torch.no_grad():
        proj.weight.mul_(factor)
        proj.bias.mul_(factor)
    try:
        yield model
    finally:
        with torch.no_grad():
            proj.weight.copy_(saved[0])
            proj.bias.copy_(saved[1])


def mlp_shares_by_hooks(model, task) -> list[float]:
    """Per layer, ``(m(corrupted with hook_mlp_out <- clean) - m(corrupted)) / (m(clean) -
    m(corrupted))``, by plain TransformerLens hooks."""
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(task.clean_tokens)
        clean = float(task.metric(clean_logits))
        corrupted = float(task.metric(model(task.corrupted_tokens)))
        shares = []
        for layer in range(model.cfg.n_layers):
            hook = f"blocks.{layer}.hook_mlp_out"
            patched = model.run_with_hooks(
                task.corrupted_tokens, fwd_hooks=[(hook, lambda act, hook, h=hook: cache[h])]
            )
            shares.append((float(task.metric(patched)) - corrupted) / (clean - corrupted))
    return shares


def test_mlp_gap_shares_match_plain_hooks(small64, small_task):
    found = hu.mlp_gap_shares(small64, small_task, chunk_size=2)
    reference = mlp_shares_by_hooks(small64, small_task)
    assert found.shares.tolist() == pytest.approx(reference, rel=1e-9, abs=1e-12)
    assert found.layer == max(range(len(reference)), key=lambda i: abs(reference[i]))
    frame = found.to_frame()
    assert list(frame.index) == [f"MLP{layer}" for layer in range(small64.cfg.n_layers)]
    assert frame.share.tolist() == pytest.approx(reference, rel=1e-9, abs=1e-12)
    assert frame.largest.sum() == 1 and frame.largest[f"MLP{found.layer}"]


@pytest.mark.parametrize("kept", [1, 3])
def test_mlp_gap_shares_find_the_only_mlp_left(small64, small_task, kept):
    """Every other MLP's output zeroed: only the kept one can carry any of the gap."""
    with ExitStack() as zeroed:
        for layer in range(small64.cfg.n_layers):
            if layer != kept:
                zeroed.enter_context(mlp_scaled(small64, layer, 0.0))
        found = hu.mlp_gap_shares(small64, small_task)
        reference = mlp_shares_by_hooks(small64, small_task)
    assert found.layer == kept
    assert found.share == pytest.approx(reference[kept], rel=1e-9) and abs(found.share) > 0.01
    assert found.describe() == (
        f"layer {kept}, whose MLP carries {reference[kept]:.0%} of the clean-corrupted gap "
        "(largest of 4 MLPs)"
    )


def test_mlp_gap_shares_rank_by_magnitude(small64, small_task, monkeypatch):
    """A negative effect that is the largest in magnitude wins over larger positive values."""
    made_up = torch.tensor([0.5, -2.0, 1.0, 0.1], dtype=torch.float64)

    def patched(model, task, comps, **options):
        return SimpleNamespace(values=made_up[[c.layer for c in comps]])

    monkeypatch.setattr(circuits, "activation_patching", patched)
    found = hu.mlp_gap_shares(small64, small_task)
    gap = float(small_task.metric(small64(small_task.clean_tokens))) - float(
        small_task.metric(small64(small_task.corrupted_tokens))
    )
    assert found.layer == 1
    assert found.shares.tolist() == pytest.approx((made_up / gap).tolist(), rel=1e-9)


def test_mlp_gap_shares_needs_mlps(small_task):
    attention_only = SimpleNamespace(
        cfg=SimpleNamespace(n_layers=2, attn_only=True, model_name="attn-only"), hook_dict={}
    )
    with pytest.raises(ValueError, match="leave the neuron kinds out"):
        hu.mlp_gap_shares(attention_only, small_task)


def test_mlp_gap_shares_refuses_a_task_without_a_gap(small64, small_task):
    same = hu.PatchingTask(
        small_task.clean_tokens, small_task.clean_tokens, small_task.answer_tokens
    )
    with pytest.raises(ValueError, match="gap 0"):
        hu.mlp_gap_shares(small64, same)
