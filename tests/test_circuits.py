"""Circuit recovery and faithfulness against closed forms and plain-hook references."""

from __future__ import annotations

import itertools

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


def test_head_roles_reads_attention(small64, small_task):
    heads = components(small64, "head_out")
    roles = circuits.head_roles(
        small64, small_task, hu.activation_patching(small64, small_task, heads)
    )
    assert len(roles) == len(heads)
    attention = roles[["end->IO", "end->S1", "end->S2", "S2->S1", "S2->IO"]]
    assert ((attention >= 0) & (attention <= 1)).all().all()
    assert roles[roles.layer == 0].role.isin(circuits.ROLES_LAYER0).all()
    assert roles[roles.layer > 0].role.isin(circuits.ROLES_LATER).all()
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


def test_role_rules_depend_on_the_layer():
    row = {"AP": 1.0, "end->IO": 0.6, "end->S1": 0.1, "end->S2": 0.1, "S2->S1": 0.0, "S2->IO": 0.0}
    assert circuits._role({**row, "layer": 3}, 0.3) == "name mover"
    assert circuits._role({**row, "layer": 0}, 0.3) == "copies IO to end"
    reader = {**row, "end->IO": 0.0, "end->S2": 0.5}
    assert circuits._role({**reader, "layer": 2}, 0.3) == "S2 reader"
    assert circuits._role({**reader, "layer": 0}, 0.3) == "copies S to end"
    duplicate = {**reader, "end->S2": 0.0, "S2->S1": 0.4}
    assert circuits._role({**duplicate, "layer": 0}, 0.3) == "duplicate token"
    assert circuits._role({**row, "AP": -0.1, "layer": 0}, 0.3) == "negative"
