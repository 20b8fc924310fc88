"""Head roles from evidence: copy scores, direct logit attribution and query paths against the
Hugging Face model's raw weights and plain PyTorch hooks; the role rules on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_hf_model, tiny_model
from reference import made_up
from torch import Tensor

import hvp_utils as hu
from hvp_utils.analysis import circuits, roles
from hvp_utils.core.tasks import single_token_id, usable_names

#: small64's settings (conftest): a 4-layer GPT-2, 8 heads of 4.
SMALL = dict(n_layer=4, n_head=8)


@pytest.fixture(scope="module")
def raw():
    """The Hugging Face model behind small64, built again (same seed): plain modules, eager
    attention, float64, so its hooks and weights are independent of the bridge."""
    model, _ = tiny_hf_model("gpt2", 1, **SMALL)
    model.set_attn_implementation("eager")
    return model.double().requires_grad_(False)


def layer_norm(x, module):
    """LayerNorm from its formula and the module's raw weight, bias and eps."""
    centred = x - x.mean(-1, keepdim=True)
    return (
        centred / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + module.eps) * (module.weight)
        + module.bias
    )


def head_slices(raw, layer: int, head: int):
    """(W_V, b_V, W_O) of one head, sliced from GPT-2's fused c_attn and c_proj (Conv1D:
    ``y = x @ weight + bias``; c_attn's columns are q, k, v, each heads-major)."""
    attn = raw.transformer.h[layer].attn
    d, d_head = raw.config.n_embd, raw.config.n_embd // raw.config.n_head
    cols = slice(2 * d + head * d_head, 2 * d + (head + 1) * d_head)
    rows = slice(head * d_head, (head + 1) * d_head)
    return attn.c_attn.weight[:, cols], attn.c_attn.bias[cols], attn.c_proj.weight[rows]


def reference_copy(raw, layer, head, tokens, k):
    """Copy share, negative share and margin of one head from raw weights."""
    block0 = raw.transformer.h[0]
    embedded = raw.transformer.wte.weight[tokens]
    hidden = layer_norm(embedded, block0.ln_2) @ block0.mlp.c_fc.weight + block0.mlp.c_fc.bias
    mlp = torch.nn.functional.gelu(hidden) @ block0.mlp.c_proj.weight + block0.mlp.c_proj.bias
    w_v, b_v, w_o = head_slices(raw, layer, head)
    out = (layer_norm(embedded + mlp, raw.transformer.h[layer].ln_1) @ w_v + b_v) @ w_o
    unembed = raw.lm_head.weight[tokens].T

    def scores(o):
        logits = layer_norm(o, raw.transformer.ln_f) @ unembed
        own = logits.diagonal()
        rank = (logits >= own[:, None]).sum(-1) - 1  # other names at least as high
        margin = own - (logits.sum(-1) - own) / (len(tokens) - 1)
        return float((rank < k).double().mean()), float(margin.mean())

    (share, margin), (negative, _) = scores(out), scores(-out)
    return share, negative, margin


def test_copy_scores_match_raw_hf_weights(small64, small_task, raw):
    assert torch.equal(small64.W_E, raw.transformer.wte.weight)  # the same model
    tokens = hu.name_tokens(small_task)
    heads = hu.components(small64, "head_out")
    found = hu.copy_scores(small64, heads=heads, tokens=tokens, k=3)
    frame = found.to_frame()
    assert list(frame.index) == [h.name for h in heads]
    for h in heads:
        share, negative, margin = reference_copy(raw, h.layer, h.head, tokens, 3)
        assert frame.loc[h.name, "copy share"] == pytest.approx(share)
        assert frame.loc[h.name, "negative copy share"] == pytest.approx(negative)
        assert frame.loc[h.name, "copy margin"] == pytest.approx(margin, rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="head_out components"):
        hu.copy_scores(small64, heads=hu.components(small64, "head_q"), tokens=tokens)
    with pytest.raises(ValueError, match="more than k=20"):
        hu.copy_scores(small64, heads=heads, tokens=tokens, k=20)


def test_copy_scores_of_a_hand_set_identity_head():
    """One head of a 1-layer model copies (OV = identity, unembedding = embedding), a second
    anti-copies (OV = -identity): copy share 1 and a positive margin, then the mirror image."""
    model, tokenizer = tiny_hf_model("gpt2", 2, n_layer=1, n_head=2)
    d = model.config.n_embd
    with torch.no_grad():
        block = model.transformer.h[0]
        block.mlp.c_proj.weight.zero_()
        block.mlp.c_proj.bias.zero_()
        for norm in (block.ln_1, block.ln_2, model.transformer.ln_f):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        half = d // 2
        v = block.attn.c_attn
        v.weight[:, 2 * d :] = 0
        v.bias[2 * d :] = 0
        v.weight[:half, 2 * d : 2 * d + half] = torch.eye(half)  # head 0 reads dims :half
        v.weight[half:, 2 * d + half :] = torch.eye(half)  # head 1 reads dims half:
        block.attn.c_proj.weight.zero_()
        block.attn.c_proj.weight[:half, :half] = torch.eye(half)
        block.attn.c_proj.weight[half:, half:] = -torch.eye(half)
        embedding = torch.zeros_like(model.transformer.wte.weight)
        embedding[:, :half] = torch.randn(len(embedding), half)
        embedding[:, half:] = embedding[:, :half]
        model.transformer.wte.weight.copy_(embedding)
        model.lm_head.weight.copy_(embedding)
    bridge = hu.from_hf_model(model, tokenizer, dtype="float64")
    tokens = torch.arange(10, 30)
    found = hu.copy_scores(bridge, heads=hu.components(bridge, "head_out"), tokens=tokens)
    assert found.share.tolist() == [1.0, 0.0] and found.negative_share.tolist() == [0.0, 1.0]
    assert found.margin[0] > 0 and found.margin[1] == pytest.approx(-float(found.margin[0]))


def test_copy_scores_name_the_supported_families(small64, small_task):
    llama = tiny_model("llama")
    heads = hu.components(llama, "head_out")
    with pytest.raises(hu.UnsupportedArchitectureError, match="GPT-2 models only"):
        hu.copy_scores(llama, heads=heads, tokens=hu.name_tokens(small_task))
    with pytest.raises(hu.UnsupportedArchitectureError, match="GPT2LMHeadModel"):
        hu.direct_logit_attribution(llama, small_task, heads=heads)


def hf_run(raw, tokens, *, pre=None, post=None, layer=None):
    """Logits and attentions of the plain model, with an optional forward pre-hook on block
    ``layer``'s ``attn.c_proj`` (its input: every head's output, concatenated) and an optional
    forward hook on its ``attn.c_attn`` (output: q, k, v)."""
    handles = []
    attn = raw.transformer.h[layer].attn if layer is not None else None
    if pre is not None:
        handles.append(attn.c_proj.register_forward_pre_hook(pre))
    if post is not None:
        handles.append(attn.c_attn.register_forward_hook(post))
    try:
        with torch.no_grad():
            out = raw(tokens, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    return out.logits, out.attentions


def merged_heads(raw, tokens, layer):
    """Block ``layer``'s concatenated head outputs (c_proj's input)."""
    kept = {}
    hf_run(raw, tokens, pre=lambda m, args: kept.update(z=args[0].clone()), layer=layer)
    return kept["z"]


def selectivity(attentions, task, layer, head):
    slots = circuits._slots(task)
    end = attentions[layer][:, head, -1]
    rows = torch.arange(task.n_prompts)
    return float((end[rows, slots["IO"]] - end[rows, slots["S1"]] - end[rows, slots["S2"]]).mean())


def logit_diff(logits, task):
    final = logits[:, -1]
    return float(
        (
            final.gather(1, task.answer_tokens[:, :1]) - final.gather(1, task.answer_tokens[:, 1:])
        ).mean()
    )


def test_query_path_effects_match_plain_hf_hooks(small64, small_task, raw):
    heads = {h.name: h for h in hu.components(small64, "head_out")}
    senders = [heads["L0H3"], heads["L1H5"], heads["L2H0"]]
    receivers = [heads["L1H2"], heads["L3H6"]]
    found = hu.query_path_effects(small64, small_task, senders=senders, receivers=receivers)
    clean, corrupted = small_task.clean_tokens, small_task.corrupted_tokens
    logits, attentions = hf_run(raw, clean)
    d_head = raw.config.n_embd // raw.config.n_head
    for i, sender in enumerate(senders):
        source = merged_heads(raw, corrupted, sender.layer)
        cols = slice(sender.head * d_head, (sender.head + 1) * d_head)

        def patch(module, args, cols=cols, source=source):
            z = args[0].clone()
            z[:, -1, cols] = source[:, -1, cols]
            return (z,)

        patched_logits, patched = hf_run(raw, clean, pre=patch, layer=sender.layer)
        expected = logit_diff(patched_logits, small_task) - logit_diff(logits, small_task)
        assert float(found.metric_change[i]) == pytest.approx(expected, abs=1e-10)
        for j, receiver in enumerate(receivers):
            if receiver.layer <= sender.layer:
                assert np.isnan(float(found.selectivity_change[i, j]))
                continue
            change = selectivity(patched, small_task, receiver.layer, receiver.head)
            change -= selectivity(attentions, small_task, receiver.layer, receiver.head)
            assert float(found.selectivity_change[i, j]) == pytest.approx(change, abs=1e-12)
    frame = found.to_frame()
    assert len(frame) == 4 and frame["selectivity change"].notna().all()
    assert found.largest_drop()["L2H0"] == pytest.approx(-float(found.selectivity_change[2, 1]))


@pytest.mark.parametrize("through", ["q", "k", "v"])
def test_path_patching_matches_plain_hf_hooks(small64, small_task, raw, through):
    """Wang et al.'s path patching to a receiver's END query, or its keys or values at every
    position, rebuilt with plain hooks: every other head frozen at its clean output, the sender
    corrupted, the receiver's q, k or v read off GPT-2's fused c_attn, then only those columns
    patched into a clean run."""
    heads = {h.name: h for h in hu.components(small64, "head_out")}
    sender, receiver = heads["L1H5"], heads["L3H6"]
    found = hu.path_patching(
        small64, small_task, senders=[sender], receivers=[receiver], through=through
    )
    clean, corrupted = small_task.clean_tokens, small_task.corrupted_tokens
    d, d_head = raw.config.n_embd, raw.config.n_embd // raw.config.n_head
    frozen = [merged_heads(raw, clean, layer) for layer in range(raw.config.n_layer)]
    cols = slice(sender.head * d_head, (sender.head + 1) * d_head)
    frozen[sender.layer][:, :, cols] = merged_heads(raw, corrupted, sender.layer)[:, :, cols]
    handles = [
        block.attn.c_proj.register_forward_pre_hook(lambda m, args, z=z: (z,))
        for block, z in zip(raw.transformer.h, frozen, strict=True)
    ]
    # c_attn's output: q, k, v blocks of d columns, heads-major within each
    start = {"q": 0, "k": d, "v": 2 * d}[through] + receiver.head * d_head
    patched_cols = slice(start, start + d_head)
    rows = slice(-1, None) if through == "q" else slice(None)  # END's query; all keys/values
    kept = {}
    try:
        hf_run(
            raw,
            clean,
            post=lambda m, i, out: kept.update(x=out[:, rows, patched_cols].clone()),
            layer=receiver.layer,
        )
    finally:
        for handle in handles:
            handle.remove()

    def set_input(module, inputs, out):
        out = out.clone()
        out[:, rows, patched_cols] = kept["x"]
        return out

    logits, attentions = hf_run(raw, clean)
    patched_logits, patched = hf_run(raw, clean, post=set_input, layer=receiver.layer)
    expected = selectivity(patched, small_task, receiver.layer, receiver.head)
    expected -= selectivity(attentions, small_task, receiver.layer, receiver.head)
    assert float(found.selectivity_change[0, 0]) == pytest.approx(expected, abs=1e-12)
    metric = logit_diff(patched_logits, small_task) - logit_diff(logits, small_task)
    assert float(found.metric_change[0, 0]) == pytest.approx(metric, abs=1e-10)
    assert abs(metric) > 1e-8  # the path carries something, so the check has teeth
    if through == "v":
        assert expected == pytest.approx(0.0, abs=1e-12)  # values leave the pattern alone
    assert found.method == f"path patching through {through}"


def test_path_patching_names_the_inputs(small64, small_task):
    heads = hu.components(small64, "head_out")
    with pytest.raises(ValueError, match="'q', 'k' or 'v'"):
        hu.path_patching(small64, small_task, senders=heads[:1], receivers=heads[-1:], through="z")


def test_direct_logit_attribution_matches_plain_hf_hooks(small64, small_task, raw):
    heads = hu.components(small64, "head_out")
    found = hu.direct_logit_attribution(small64, small_task, heads=heads)
    tokens, d_head = small_task.clean_tokens, raw.config.n_embd // raw.config.n_head
    final = {}
    handle = raw.transformer.ln_f.register_forward_pre_hook(
        lambda m, args: final.update(x=args[0][:, -1].clone())
    )
    try:
        hf_run(raw, tokens)
    finally:
        handle.remove()
    ln_f = raw.transformer.ln_f
    scale = torch.sqrt(final["x"].var(-1, unbiased=False, keepdim=True) + ln_f.eps)
    io, s = small_task.answer_tokens.T
    direction = raw.lm_head.weight[io] - raw.lm_head.weight[s]
    merged = [merged_heads(raw, tokens, layer)[:, -1] for layer in range(raw.config.n_layer)]
    for i, h in enumerate(heads):
        z = merged[h.layer][:, h.head * d_head : (h.head + 1) * d_head]
        out = z @ head_slices(raw, h.layer, h.head)[2]
        out = (out - out.mean(-1, keepdim=True)) / scale * ln_f.weight
        assert float(found[i]) == pytest.approx(float((out * direction).sum(-1).mean()), abs=1e-12)


def evidence(**rows):
    """A table of evidence; each row's unspecified columns are neutral (no role)."""
    neutral = {
        "AP": 0.5,
        "end selectivity": -0.2,
        "S2->S1": 0.0,
        "S2->S1+1": 0.0,
        "copy margin": 0.0,
        "DLA": 0.0,
        "inhibition": np.nan,
    }
    return pd.DataFrame({name: {**neutral, **row} for name, row in rows.items()}).T.astype(float)


def test_assign_roles_on_hand_made_evidence():
    table = evidence(
        mover={"end selectivity": 0.4, "copy margin": 2.0, "DLA": 0.3},
        negative={"end selectivity": 0.3, "copy margin": -1.5, "AP": -0.4, "DLA": -0.2},
        inhibitor={"inhibition": 0.2},
        weak_inhibitor={"inhibition": 0.01},
        duplicate={"S2->S1": 0.6},
        induction={"S2->S1+1": 0.5},
        both={"S2->S1": 0.4, "S2->S1+1": 0.4},
        # attends to IO and copies, but its direct effect lowers IO: not a name mover
        io_reader={"end selectivity": 0.4, "copy margin": 2.0, "DLA": -0.1},
        # anti-copies IO yet helps (AP and DLA positive): not a negative name mover
        odd={"end selectivity": 0.4, "copy margin": -2.0, "DLA": 0.1},
        # attends to S, not IO: copy sign alone makes no mover
        s_reader={"end selectivity": -0.5, "copy margin": 2.0, "DLA": 0.3},
        plain={},
    )
    found = hu.assign_roles(table)
    assert found.role.to_dict() == {
        "mover": "name mover",
        "negative": "negative name mover",
        "inhibitor": "S-inhibition",
        "weak_inhibitor": "other",
        "duplicate": "duplicate token",
        "induction": "induction",
        "both": "duplicate token",
        "io_reader": "other",
        "odd": "other",
        "s_reader": "other",
        "plain": "other",
    }
    assert found.loc["both", "roles"] == "duplicate token, induction"
    assert set(found.role) <= set(roles.ROLES)
    stricter = hu.assign_roles(table, min_selectivity=0.35, min_inhibition=0.005, min_duplicate=0.5)
    assert stricter.loc["negative", "role"] == "other"  # selectivity 0.3 < 0.35
    assert stricter.loc["weak_inhibitor", "role"] == "S-inhibition"
    assert stricter.loc["both", "role"] == "induction"  # S2->S1 0.4 < 0.5
    with pytest.raises(ValueError, match="lacks columns"):
        hu.assign_roles(table.drop(columns="DLA"))


def test_ioi_head_roles_assembles_the_evidence(small64, small_task):
    heads = hu.components(small64, "head_out")
    truth = made_up(torch.linspace(-1, 1, len(heads), dtype=torch.float64), [h.name for h in heads])
    found = hu.ioi_head_roles(small64, small_task, truth, min_selectivity=-1.0)
    table = found.to_frame()
    assert list(table.index) == [h.name for h in heads]
    assert np.allclose(table["copy margin"], found.copy.margin.numpy())
    assert np.allclose(table["AP"], truth.values.numpy())
    shares = circuits.attention_shares(small64, small_task)
    for column in ("end->IO", "end->S1", "end->S2", "S2->S1", "S2->IO"):
        assert np.allclose(table[column], shares[column])
    assert found.thresholds["min_selectivity"] == -1.0
    # with every selectivity allowed, the movers are the heads with positive copy and DLA
    movers = (table["copy margin"] > 0) & (table["DLA"] > 0)
    assert found.name_movers() == table.index[movers].tolist()
    assert found.query_paths is not None
    later = [h for h in heads if h.layer < max(heads[i].layer for i in np.flatnonzero(movers))]
    assert found.query_paths.senders == [h.name for h in later]
    drops = found.query_paths.largest_drop()
    assert table.loc[later[0].name, "inhibition"] == pytest.approx(drops[later[0].name])
    assert (table.loc[[h.name for h in later], "inhibition"].notna()).any()
    assert set(table.role) <= set(roles.ROLES)


def test_attention_shares_add_induction(small64, small_task):
    shares = circuits.attention_shares(small64, small_task)
    slots = circuits._slots(small_task)
    _, cache = small64.run_with_cache(small_task.clean_tokens)
    pattern = cache["blocks.2.attn.hook_pattern"][:, 5]
    rows = torch.arange(small_task.n_prompts)
    io_first = slots["IO"] < slots["S1"]
    at = pattern[rows, slots["S2"], slots["S1"] + 1]
    orders = [g for g in (io_first, ~io_first) if g.any()]
    assert shares.loc["L2H5", "S2->S1+1"] == pytest.approx(min(float(at[g].mean()) for g in orders))
    sel = pattern[rows, -1, slots["IO"]] - pattern[rows, -1, slots["S1"]]
    sel = sel - pattern[rows, -1, slots["S2"]]
    assert shares.loc["L2H5", "end selectivity"] == pytest.approx(
        min(float(sel[g].mean()) for g in orders)
    )


def hand_made_ioi(model, names: Tensor, *, s2: int, end: int, sharp: float = 40.0):
    """Set a 2-layer, 2-head GPT-2's weights to a two-head IOI circuit.

    Residual dims: a one-hot block ``T`` for the token (names only), a copy block ``C``, and
    flags (is a name, constant, position S2, position END). Layer 0 head 0 attends from END to
    the S2 position and writes that token into ``C`` (it carries S to END); layer 1 head 0's
    END query points away from the name in ``C`` and towards names, so it attends to IO, and
    writes IO's token into ``T``, which the unembedding reads. Every other weight is zero
    (norms: weight 1, bias 0).
    """
    n, d = len(names), model.config.n_embd
    block_t, block_c = slice(0, n), slice(n, 2 * n)
    name, const, at_s2, at_end = 2 * n, 2 * n + 1, 2 * n + 2, 2 * n + 3
    eye = torch.eye(n)
    first, second = model.transformer.h[0].attn, model.transformer.h[1].attn
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for block in model.transformer.h:
            block.ln_1.weight.fill_(1.0)
            block.ln_2.weight.fill_(1.0)
        model.transformer.ln_f.weight.fill_(1.0)
        model.transformer.wte.weight[names, block_t] = eye
        model.transformer.wte.weight[names, name] = 1.0
        model.lm_head.weight[names, block_t] = eye
        model.transformer.wpe.weight[:, const] = 1.0
        model.transformer.wpe.weight[s2, at_s2] = 1.0
        model.transformer.wpe.weight[end, at_end] = 1.0
        # c_attn columns: q, k, v blocks of d, head 0 first in each
        first.c_attn.weight[at_end, 0] = sharp
        first.c_attn.weight[at_s2, d] = sharp
        first.c_attn.weight[block_t, 2 * d : 2 * d + n] = eye
        first.c_proj.weight[:n, block_c] = eye
        second.c_attn.weight[block_c, :n] = -sharp * eye
        second.c_attn.weight[at_end, n] = sharp
        second.c_attn.weight[block_t, d : d + n] = eye
        second.c_attn.weight[name, d + n] = 1.0
        second.c_attn.weight[block_t, 2 * d : 2 * d + n] = eye
        second.c_proj.weight[:n, block_t] = eye
    return model


def test_a_hand_made_circuit_gets_its_roles(small64, small_task):
    """The head built to move IO comes out a name mover, the head that carries S to END comes
    out S-inhibition (its END output steers the mover's query), the zero heads other."""
    names = torch.tensor([single_token_id(small64, n) for n in usable_names(small64)])
    slots = circuits._slots(small_task)
    assert (slots["S2"] == slots["S2"][0]).all()  # one layout: S2 at one position
    model, tokenizer = tiny_hf_model("gpt2", 1, n_layer=2, n_head=2, n_embd=256)  # 2 x names + 4
    hand_made_ioi(model, names, s2=int(slots["S2"][0]), end=small_task.n_positions - 1)
    bridge = hu.from_hf_model(model, tokenizer, dtype="float64")
    heads = hu.components(bridge, "head_out")
    truth = made_up(torch.ones(len(heads), dtype=torch.float64), [h.name for h in heads])
    found = hu.ioi_head_roles(bridge, small_task, truth)
    table = found.to_frame()
    assert table.role.to_dict() == {
        "L0H0": "S-inhibition",
        "L0H1": "other",
        "L1H0": "name mover",
        "L1H1": "other",
    }
    mover = table.loc["L1H0"]
    assert mover["end selectivity"] > 0.9 and mover["copy share"] == 1.0
    assert mover["copy margin"] > 0 and mover["DLA"] > 0
    assert table.loc["L0H0", "end->S2"] > 0.9 and table.loc["L0H0", "inhibition"] > 0.5
    assert found.query_paths.metric_change[0] < -1.0  # corrupting it at END breaks the task
