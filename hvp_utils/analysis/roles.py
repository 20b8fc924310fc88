"""Head roles in IOI from evidence, not from layers (Wang et al. 2022's classes).

Every role is read off measurements of the head itself:

- :func:`copy_scores`: what the head's OV circuit writes about a name it attends to, through
  the unembedding (name movers copy, negative name movers anti-copy);
- :func:`direct_logit_attribution`: what its final-position output adds to
  ``logit(IO) - logit(S)`` directly;
- :func:`~hvp_utils.analysis.circuits.attention_shares`: where END and S2 attend;
- :func:`query_path_effects` and :func:`path_patching`: whether corrupting the head moves a
  later head's END attention or the answer, through that head's query (S-inhibition), keys or
  values;
- :func:`assign_roles`: the rules, on a table of that evidence; :func:`ioi_head_roles` runs it
  all on a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_utils.analysis.circuits import _slots, attention_shares
from hvp_utils.core.components import Component, components
from hvp_utils.core.engine import progress, replicate_chunks
from hvp_utils.core.models import UnsupportedArchitectureError
from hvp_utils.core.readout import run_with_answer_logits
from hvp_utils.core.results import Attribution
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model

#: Hugging Face classes whose blocks :func:`copy_scores` and :func:`direct_logit_attribution`
#: know: sequential pre-LayerNorm blocks (ln_1, attention, ln_2, MLP), a final LayerNorm, one
#: value head per query head.
SUPPORTED_ARCHITECTURES = ("GPT2LMHeadModel",)

#: Roles, in the order the first matching one is the head's ``role``.
ROLES = (
    "name mover",
    "negative name mover",
    "S-inhibition",
    "duplicate token",
    "induction",
    "other",
)


def check_architecture(model: Model, what: str) -> None:
    """Raise :class:`UnsupportedArchitectureError` unless the model is a supported family."""
    name = type(model.original_model).__name__
    if name not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"{what} supports GPT-2 models only ({', '.join(SUPPORTED_ARCHITECTURES)}: "
            f"sequential LayerNorm blocks, one value head per query head); got {name}. Load a "
            "GPT-2 model (gpt2-small, toy-ioi), or use the attention evidence "
            "(attention_shares) and query_path_effects, which work on every model."
        )


def check_heads(heads: list[Component], what: str) -> None:
    """Raise unless every component is a whole head's output (kind ``head_out``)."""
    other = sorted({h.kind for h in heads} - {"head_out"})
    if other:
        raise ValueError(
            f"{what} takes head_out components (a head's output at every position); got "
            f"kinds {other}. Pass components(model, 'head_out') or a selection of them."
        )


def name_tokens(task: PatchingTask) -> Int[Tensor, "names"]:  # noqa: F821
    """The distinct answer tokens of the task (its IO and S names), sorted."""
    return task.answer_tokens.flatten().unique().cpu()


@dataclass(frozen=True)
class CopyScores:
    """Per head, how its OV circuit maps a name onto the logits of the names.

    ``share``: share of names whose own token is among the ``k`` largest name logits;
    ``negative_share``: the same for the negated OV output (anti-copying);
    ``margin``: mean over names of ``logit(t) - mean_{t' != t} logit(t')`` (signed: negative
    for a head that writes against the name it reads).
    """

    heads: list[str]
    k: int
    share: Float[Tensor, "head"]  # noqa: F821
    negative_share: Float[Tensor, "head"]  # noqa: F821
    margin: Float[Tensor, "head"]  # noqa: F821

    def to_frame(self) -> pd.DataFrame:
        """Columns ``copy share``, ``negative copy share``, ``copy margin``; index: head."""
        return pd.DataFrame(
            {
                "copy share": self.share.numpy(),
                "negative copy share": self.negative_share.numpy(),
                "copy margin": self.margin.numpy(),
            },
            index=pd.Index(self.heads, name="head"),
        )


def copy_scores(
    model: Model,
    *,
    heads: list[Component],
    tokens: Int[Tensor, "names"],  # noqa: F821
    k: int = 5,
) -> CopyScores:
    """The OV copy score of each head (Wang et al. 2022, appendix), on unprocessed weights.

    For each name token ``t`` (no position embedding, as in the paper):

        r_t    = W_E[t] + MLP_0(LN2_0(W_E[t]))                 (the name after the first MLP)
        o_t    = (LN1_l(r_t) W_V[l,h] + b_V[l,h]) W_O[l,h]     (the head's OV output; no b_O,
                                                                which every head shares)
        L[t,:] = LN_final(o_t) W_U[:, names] + b_U[names]      (the logits of the names)

    ``share`` = mean_t [#{t' != t : L[t,t'] >= L[t,t]} < k] (t among the top k, ties
    counted against it, so a head that writes nothing scores 0); ``negative_share`` the same
    with ``-o_t``;
    ``margin`` = mean_t (L[t,t] - mean_{t' != t} L[t,t']), in which the biases of LN_final and
    the unembedding cancel. Layer norms, MLP and unembedding are the model's own modules and
    weights (the bridge's, which are the Hugging Face model's: no folding, no centring).

    Args:
        model: a GPT-2 bridge (:data:`SUPPORTED_ARCHITECTURES`).
        heads: ``head_out`` components (their ``layer`` and ``head``).
        tokens: the name tokens (e.g. :func:`name_tokens`), at least ``k + 1``.
        k: the top-k cut.

    Returns:
        A :class:`CopyScores`, one entry per head.
    """
    check_architecture(model, "copy_scores")
    check_heads(heads, "copy_scores")
    if len(tokens) <= k:
        raise ValueError(f"copy_scores needs more than k={k} name tokens (got {len(tokens)})")
    with torch.no_grad():
        names = _names_after_mlp0(model, tokens)
        out = torch.stack([_ov_output(model, head, names) for head in heads])
        columns = tokens.to(out.device)

        def logits(o: Tensor) -> Float[Tensor, "head names names"]:
            return model.ln_final(o) @ model.W_U[:, columns] + model.b_U[columns]

        positive, negative = logits(out), logits(-out)
    diagonal = positive.diagonal(dim1=-2, dim2=-1)
    others = (positive.sum(-1) - diagonal) / (len(tokens) - 1)
    return CopyScores(
        [h.name for h in heads],
        k,
        _top_k_share(positive, k),
        _top_k_share(negative, k),
        (diagonal - others).mean(-1).double().cpu(),
    )


def _names_after_mlp0(model: Model, tokens: Tensor) -> Float[Tensor, "names d_model"]:
    """``r_t = W_E[t] + MLP_0(LN2_0(W_E[t]))`` for each name token."""
    block = model.blocks[0]
    embedded = model.W_E[tokens.to(model.W_E.device)]
    return embedded + block.mlp(block.ln2(embedded))


def _ov_output(
    model: Model, head: Component, names: Float[Tensor, "names d_model"]
) -> Float[Tensor, "names d_model"]:
    """``o_t = (LN1_l(r_t) W_V[l,h] + b_V[l,h]) W_O[l,h]`` for each name."""
    attn = model.blocks[head.layer].attn
    values = model.blocks[head.layer].ln1(names) @ attn.W_V[head.head] + attn.b_V[head.head]
    return values @ attn.W_O[head.head]


def _top_k_share(logits: Float[Tensor, "head names names"], k: int) -> Float[Tensor, "head"]:  # noqa: F821
    """Per head, the share of names ``t`` with fewer than ``k`` other names at least as high as
    ``L[t, t]`` (ties count against ``t``)."""
    own = logits.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)
    rivals = (logits >= own).sum(-1) - 1
    return (rivals < k).double().mean(-1).cpu()


def direct_logit_attribution(
    model: Model, task: PatchingTask, *, heads: list[Component]
) -> Float[Tensor, "head"]:  # noqa: F821
    """Each head's direct effect at END on ``logit(IO) - logit(S)``, on the clean prompts.

        o_b    = z_b[END, h] W_O[l, h]                              (the head's END output)
        DLA    = mean_b ((o_b - mean(o_b)) / s_b * w_f) . (W_U[:, IO_b] - W_U[:, S_b])

    with ``s_b`` the final LayerNorm's scale at END in the clean run (frozen) and ``w_f`` its
    weight: the final norm's linear part, so the DLAs of all components add up to the logit
    difference minus the biases.
    """
    check_architecture(model, "direct_logit_attribution")
    check_heads(heads, "direct_logit_attribution")
    hooks = {get_act_name("z", h.layer) for h in heads} | {"ln_final.hook_scale"}
    with torch.no_grad():
        _, cache = model.run_with_cache(task.clean_tokens, names_filter=lambda n: n in hooks)
    scale = cache["ln_final.hook_scale"][:, -1]  # [batch, 1]
    weight = model.ln_final.original_component.weight
    io, s = task.answer_tokens[:, 0], task.answer_tokens[:, 1]
    direction = (model.W_U[:, io] - model.W_U[:, s]).T  # [batch, d_model]
    values = []
    for h in heads:
        attn = model.blocks[h.layer].attn
        out = cache[get_act_name("z", h.layer)][:, -1, h.head] @ attn.W_O[h.head]
        centred = out - out.mean(-1, keepdim=True)
        values.append(float(((centred / scale * weight) * direction).sum(-1).mean()))
    return torch.tensor(values, dtype=torch.float64)


@dataclass(frozen=True)
class QueryPathEffects:
    """Effects of corrupting each sender head's output on later receiver heads' END attention.

    ``selectivity_change[i, j]``: change of receiver ``j``'s END selectivity (attention to IO
    minus to S1 and S2, mean over prompts) when sender ``i`` is patched (NaN where the
    receiver is not in a later layer); ``metric_change[i]``: change of the task metric;
    ``clean_selectivity[j]``: the receiver's selectivity on the clean prompts (a plain mean
    over the prompts, where :func:`~hvp_utils.analysis.circuits.attention_shares` reports the
    smaller of the two name orders' means); ``method``:
    ``"end-only patch"`` or ``"path patching through q"`` (``k``, ``v``).
    """

    senders: list[str]
    receivers: list[str]
    selectivity_change: Float[Tensor, "sender receiver"]
    metric_change: Float[Tensor, "sender *receiver"]  # noqa: F821
    clean_selectivity: Float[Tensor, "receiver"]  # noqa: F821
    method: str = "end-only patch"
    clean_metric: float = field(default=float("nan"))

    def to_frame(self) -> pd.DataFrame:
        """Long format: one row per (sender, receiver) in a later layer."""
        metric = self.metric_change
        if metric.dim() == 1:  # one metric change per sender (end-only patch)
            metric = metric[:, None].expand_as(self.selectivity_change)
        rows = [
            {
                "sender": sender,
                "receiver": receiver,
                "selectivity change": float(self.selectivity_change[i, j]),
                "clean selectivity": float(self.clean_selectivity[j]),
                "metric change": float(metric[i, j]),
            }
            for i, sender in enumerate(self.senders)
            for j, receiver in enumerate(self.receivers)
            if not self.selectivity_change[i, j].isnan()
        ]
        return pd.DataFrame(rows)

    def largest_drop(self) -> dict[str, float]:
        """Per sender, the largest drop of a receiver's selectivity (``-min change``, NaN when
        no receiver is later)."""
        drops = {}
        for i, sender in enumerate(self.senders):
            row = self.selectivity_change[i]
            later = row[~row.isnan()]
            drops[sender] = float(-later.min()) if len(later) else float("nan")
        return drops


def end_selectivity(
    pattern: Float[Tensor, "rows head q k"], slots: dict[str, Tensor], head: int
) -> Float[Tensor, "rows"]:  # noqa: F821
    """``A[END->IO] - A[END->S1] - A[END->S2]`` of one head, per row (rows: replicates of the
    prompts, replicate-major, like ``slots``' prompts repeated)."""
    rows = pattern.shape[0]
    reps = rows // len(slots["IO"])
    index = torch.arange(rows, device=pattern.device)
    end = pattern[:, head, -1, :]
    at = {slot: end[index, slots[slot].repeat(reps).to(end.device)] for slot in ("IO", "S1", "S2")}
    return at["IO"] - at["S1"] - at["S2"]


def query_path_effects(
    model: Model,
    task: PatchingTask,
    *,
    senders: list[Component],
    receivers: list[Component],
    chunk_size: int | None = None,
) -> QueryPathEffects:
    """Patch each sender's END output with its corrupted value; read later heads' END attention.

    For sender ``A`` (a ``head_out`` component) the clean run is repeated with

        z_A[b, END] <- z_A^corrupted[b, END]        (every other activation recomputed)

    and for each receiver ``B`` in a later layer

        selectivity_change[A, B] = mean_b sel_B^patched(b) - mean_b sel_B^clean(b),
        sel_B(b) = A_B[b, END->IO_b] - A_B[b, END->S1_b] - A_B[b, END->S2_b],

    with ``metric_change[A] = m(patched) - m(clean)``. A causal model's earlier positions never
    see END, so ``B``'s keys and values are untouched: the change reaches ``B``'s END attention
    through its query only (directly, or through heads and MLPs between them at END; for the
    direct path alone see :func:`path_patching`). Senders share forward passes (replicated
    batches, chunked like the engine's).
    """
    if not senders or not receivers:
        raise ValueError("query_path_effects needs at least one sender and one receiver")
    check_heads([*senders, *receivers], "query_path_effects")
    slots = _slots(task)
    layers = sorted({r.layer for r in receivers})
    z_hooks = sorted({s.hook for s in senders})
    with torch.no_grad():
        _, corrupted = model.run_with_cache(task.corrupted_tokens, names_filter=list(z_hooks))
        clean_metric, clean_pattern = _patched_run(model, task, 1, [], layers)
        clean_sel = _selectivities(clean_pattern, slots, receivers, 1)[0]
        chunks = replicate_chunks(
            [0] * len(senders),
            rows_per_replicate=task.clean_tokens.numel(),
            order=0,
            chunk_size=chunk_size,
            cfg=model.cfg,
        )
        metric, selectivity = [], []
        for chunk in progress(chunks, "query paths"):
            hooks = _end_patch_hooks([senders[i] for i in chunk], corrupted, task.n_prompts)
            m, patterns = _patched_run(model, task, len(chunk), hooks, layers)
            metric.append(m - clean_metric)
            selectivity.append(_selectivities(patterns, slots, receivers, len(chunk)) - clean_sel)
    change = torch.cat(selectivity)
    later = torch.tensor([[r.layer > s.layer for r in receivers] for s in senders])
    change = change.masked_fill(~later, float("nan"))
    return QueryPathEffects(
        senders=[s.name for s in senders],
        receivers=[r.name for r in receivers],
        selectivity_change=change,
        metric_change=torch.cat(metric),
        clean_selectivity=clean_sel,
        method="end-only patch",
        clean_metric=float(clean_metric[0]),
    )


def _patched_run(
    model: Model,
    task: PatchingTask,
    replicates: int,
    hooks: list,
    layers: list[int],
    also_cache: tuple[str, ...] = (),
) -> tuple[Float[Tensor, "replicates"], dict[str, Tensor]]:  # noqa: F821
    """One pass over ``replicates`` copies of the clean prompts with ``hooks``: the metric of
    each copy and the attention patterns of ``layers`` (and the activations ``also_cache``)."""
    answers = task.answers_for(replicates * task.n_prompts)
    cache = (*(get_act_name("pattern", layer) for layer in layers), *also_cache)
    logits, patterns = run_with_answer_logits(
        model, task.clean_tokens.repeat(replicates, 1), answers, fwd_hooks=hooks, cache=cache
    )
    metric = task.answer_metric(logits).view(replicates, task.n_prompts).mean(1)
    return metric.double().cpu(), patterns


def _selectivities(
    patterns: dict[str, Tensor], slots: dict[str, Tensor], receivers: list[Component], reps: int
) -> Float[Tensor, "replicates receiver"]:
    """Mean over the prompts of each receiver's END selectivity, per replicate."""
    columns = []
    for r in receivers:
        pattern = patterns[get_act_name("pattern", r.layer)]
        columns.append(end_selectivity(pattern, slots, r.head).view(reps, -1).mean(1))
    return torch.stack(columns, 1).double().cpu()


def _end_patch_hooks(senders: list[Component], corrupted, n_prompts: int) -> list:
    """Hooks setting, in replicate ``r``, sender ``r``'s END output to its corrupted value."""
    hooks = []
    for hook in sorted({s.hook for s in senders}):
        mine = [(r, s.head) for r, s in enumerate(senders) if s.hook == hook]

        def patch(act, hook=None, mine=mine, source=corrupted[hook]):
            act = act.clone(memory_format=torch.contiguous_format)
            act = act.view(-1, n_prompts, *act.shape[1:])
            for r, head in mine:
                act[r, :, -1, head] = source[:, -1, head]
            return act.view(-1, *act.shape[2:])

        hooks.append((hook, patch))
    return hooks


#: What :func:`path_patching` patches in each receiver: its query (``"q"``), keys or values.
PathInput = Literal["q", "k", "v"]


def path_patching(
    model: Model,
    task: PatchingTask,
    *,
    senders: list[Component],
    receivers: list[Component],
    through: PathInput = "q",
) -> QueryPathEffects:
    """Path patching of sender -> receiver's queries, keys or values (Wang et al. 2022), direct
    path only.

    1. Corrupted run: ``z_A^c``. Clean run: every head's ``z`` and the metric.
    2. Clean tokens with ``z_A <- z_A^c`` at every position and every other head's ``z``
       frozen to its clean value (MLPs and norms recomputed): record each receiver's input
       ``x_B^*`` of kind ``through`` (``hook_q``, ``hook_k`` or ``hook_v``).
    3. Clean run with only that input of the receiver patched, everything else clean:

       - ``through="q"``: ``q_B[END] <- q_B^*[END]`` (END's query; the selectivity and the
         metric read END only);
       - ``through="k"``: ``k_B[p] <- k_B^*[p]`` at every position ``p`` (END attends to all);
       - ``through="v"``: ``v_B[p] <- v_B^*[p]`` at every position (the pattern is unchanged,
         so ``selectivity_change`` is 0 and only ``metric_change`` moves);

        selectivity_change[A, B] = mean_b sel_B(b) in run 3 - mean_b sel_B^clean(b)
        metric_change[A, B]      = m(run 3) - m(clean)

    with ``sel_B(b) = A_B[b, END->IO_b] - A_B[b, END->S1_b] - A_B[b, END->S2_b]``. Receivers in
    the sender's layer or before are NaN. Each input is patched after its projection
    (``q = LN1(resid) W_Q + b_Q``, likewise ``k`` and ``v``), which depends on the residual
    only: the bridge's ``hook_q_input`` would need ``use_split_qkv_input``, and patching ``q``
    is the same path. One forward pass per sender and per (sender, receiver) pair; meant for a
    few heads.

    Args:
        model, task: the model and the IOI task (clean and corrupted prompts).
        senders, receivers: ``head_out`` components.
        through: the receivers' input the sender's effect is traced through.

    Returns:
        A :class:`QueryPathEffects` (``method``: ``"path patching through q"``, ``k`` or ``v``).
    """
    if through not in ("q", "k", "v"):
        raise ValueError(f"through must be 'q', 'k' or 'v' (the receivers' input); got {through!r}")
    check_heads([*senders, *receivers], "path_patching")
    slots = _slots(task)
    later = torch.tensor([[r.layer > s.layer for r in receivers] for s in senders])
    z_hooks = [get_act_name("z", layer) for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, corrupted = model.run_with_cache(task.corrupted_tokens, names_filter=list(z_hooks))
        layers = sorted({r.layer for r in receivers})
        clean_metric, clean = _patched_run(model, task, 1, [], layers, tuple(z_hooks))
        clean_sel = _selectivities(clean, slots, receivers, 1)[0]
        change = torch.full((len(senders), len(receivers)), float("nan"), dtype=torch.float64)
        metric = change.clone()
        for i, sender in enumerate(senders):
            inputs = _frozen_inputs(model, task, sender, receivers, clean, corrupted, through)
            for j, receiver in enumerate(receivers):
                if not later[i, j]:
                    continue
                name = get_act_name(through, receiver.layer)
                hook = (name, _set_input(receiver, inputs[name], end_only=through == "q"))
                m, patterns = _patched_run(model, task, 1, [hook], [receiver.layer])
                metric[i, j] = float(m[0] - clean_metric[0])
                sel = _selectivities(patterns, slots, [receiver], 1)[0, 0]
                change[i, j] = float(sel - clean_sel[j])
    return QueryPathEffects(
        senders=[s.name for s in senders],
        receivers=[r.name for r in receivers],
        selectivity_change=change,
        metric_change=metric,
        clean_selectivity=clean_sel,
        method=f"path patching through {through}",
        clean_metric=float(clean_metric[0]),
    )


def _frozen_inputs(
    model: Model,
    task: PatchingTask,
    sender: Component,
    receivers: list[Component],
    clean,
    corrupted,
    through: PathInput,
) -> dict[str, Tensor]:
    """Step 2 of :func:`path_patching`: the receivers' inputs (``hook_{through}``) with the
    sender corrupted and every other head frozen to its clean output."""
    hooks, inputs = [], {}
    for layer in range(model.cfg.n_layers):
        name = get_act_name("z", layer)
        frozen = clean[name].clone()
        if layer == sender.layer:
            frozen[:, :, sender.head] = corrupted[name][:, :, sender.head]
        hooks.append((name, lambda act, hook, frozen=frozen: frozen))
    for layer in sorted({r.layer for r in receivers}):
        name = get_act_name(through, layer)
        hooks.append((name, lambda act, hook, name=name: inputs.__setitem__(name, act.clone())))
    run_with_answer_logits(model, task.clean_tokens, task.answer_tokens, fwd_hooks=hooks)
    return inputs


def _set_input(receiver: Component, value: Tensor, *, end_only: bool):
    """A hook replacing the receiver head's entries by ``value``'s, at END or everywhere."""
    positions = slice(-1, None) if end_only else slice(None)

    def patch(act, hook=None):
        act = act.clone()
        act[:, positions, receiver.head] = value[:, positions, receiver.head]
        return act

    return patch


#: The evidence columns :func:`assign_roles` reads.
EVIDENCE_COLUMNS = (
    "AP",
    "end selectivity",
    "S2->S1",
    "S2->S1+1",
    "copy margin",
    "DLA",
    "inhibition",
)


def assign_roles(
    evidence: pd.DataFrame,
    *,
    min_selectivity: float = 0.0,
    min_copy_margin: float = 0.0,
    min_inhibition: float = 0.05,
    min_duplicate: float = 0.3,
    min_induction: float = 0.3,
) -> pd.DataFrame:
    """Roles from evidence only (no layer enters), per row of ``evidence``.

    A head matches (``sel`` = ``end selectivity``, the smaller over the name orders of the mean
    of ``A[END->IO] - A[END->S1] - A[END->S2]``):

    - ``name mover``: ``sel > min_selectivity`` and ``copy margin > min_copy_margin`` and
      ``DLA > 0`` (END attends to IO, and what it moves raises IO's logit);
    - ``negative name mover``: ``sel > min_selectivity`` and ``copy margin < -min_copy_margin``
      and (``AP < 0`` or ``DLA < 0``);
    - ``S-inhibition``: ``inhibition >= min_inhibition``, where ``inhibition`` is the largest
      drop of a name mover's END selectivity when this head's END output is corrupted
      (:func:`query_path_effects`; NaN when no name mover is later);
    - ``duplicate token``: ``S2->S1 >= min_duplicate``;
    - ``induction``: ``S2->S1+1 >= min_induction``.

    Args:
        evidence: one row per head with :data:`EVIDENCE_COLUMNS`.
        min_selectivity, min_copy_margin, min_inhibition, min_duplicate, min_induction: the
            thresholds above (defaults: 0, 0, 0.05, 0.3, 0.3).

    Returns:
        ``evidence`` with ``roles`` (every match, comma-separated, in :data:`ROLES` order) and
        ``role`` (the first match, else ``other``).
    """
    missing = [c for c in EVIDENCE_COLUMNS if c not in evidence.columns]
    if missing:
        raise ValueError(
            f"evidence lacks columns {missing}; build it with ioi_head_roles or give "
            f"every one of {list(EVIDENCE_COLUMNS)}"
        )
    sel, copy = evidence["end selectivity"], evidence["copy margin"]
    moves_io = sel > min_selectivity
    tests = {
        "name mover": moves_io & (copy > min_copy_margin) & (evidence["DLA"] > 0),
        "negative name mover": moves_io
        & (copy < -min_copy_margin)
        & ((evidence["AP"] < 0) | (evidence["DLA"] < 0)),
        "S-inhibition": evidence["inhibition"].fillna(-np.inf) >= min_inhibition,
        "duplicate token": evidence["S2->S1"] >= min_duplicate,
        "induction": evidence["S2->S1+1"] >= min_induction,
    }
    matches = pd.DataFrame(tests)
    out = evidence.copy()
    out["roles"] = [", ".join(r for r in tests if row[r]) for _, row in matches.iterrows()]
    out["role"] = [next((r for r in tests if row[r]), "other") for _, row in matches.iterrows()]
    return out


@dataclass(frozen=True)
class HeadRoles:
    """Evidence and roles of every head (:func:`ioi_head_roles`).

    ``table``: one row per head, the evidence columns and ``roles``/``role``;
    ``copy``: the :class:`CopyScores`; ``query_paths``: the :class:`QueryPathEffects` of
    every head on the name movers (None when no name mover has a head in an earlier layer);
    ``thresholds``: the keyword arguments of :func:`assign_roles` the roles were read with.
    """

    table: pd.DataFrame
    copy: CopyScores
    query_paths: QueryPathEffects | None
    thresholds: dict[str, float] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """The table."""
        return self.table

    def name_movers(self) -> list[str]:
        """Heads whose role is ``name mover``."""
        return self.table.index[self.table["role"] == "name mover"].tolist()


def ioi_head_roles(
    model: Model,
    task: PatchingTask,
    truth: Attribution,
    *,
    k: int = 5,
    min_selectivity: float = 0.0,
    min_copy_margin: float = 0.0,
    min_inhibition: float = 0.05,
    min_duplicate: float = 0.3,
    min_induction: float = 0.3,
) -> HeadRoles:
    """Every head's IOI evidence and the role it implies (:func:`assign_roles`).

    Columns: ``layer``, ``AP`` (from ``truth``, a head-level estimate), the attention shares of
    :func:`~hvp_utils.analysis.circuits.attention_shares`, ``copy share``, ``negative copy
    share``, ``copy margin`` (:func:`copy_scores` over the task's names, top-``k``), ``DLA``
    (:func:`direct_logit_attribution`), ``inhibition`` (largest drop of a name mover's END
    selectivity under the head's END-only corruption, :func:`query_path_effects`), then
    ``roles`` and ``role``. Name movers are found first (they need no query paths), then every
    head in an earlier layer than some name mover is patched.
    """
    thresholds = dict(
        min_selectivity=min_selectivity,
        min_copy_margin=min_copy_margin,
        min_inhibition=min_inhibition,
        min_duplicate=min_duplicate,
        min_induction=min_induction,
    )
    heads = components(model, "head_out")
    copy = copy_scores(model, heads=heads, tokens=name_tokens(task), k=k)
    effects = dict(zip(truth.names, truth.values.tolist(), strict=True))
    table = attention_shares(model, task).drop(columns="head_index")
    table.insert(1, "AP", [effects.get(name, np.nan) for name in table.index])
    table = table.join(copy.to_frame())
    table["DLA"] = direct_logit_attribution(model, task, heads=heads).numpy()
    table["inhibition"] = np.nan
    movers = assign_roles(table, **thresholds)["role"] == "name mover"
    receivers = [h for h in heads if movers[h.name]]
    senders = [h for h in heads if receivers and h.layer < max(r.layer for r in receivers)]
    paths = None
    if senders:
        paths = query_path_effects(model, task, senders=senders, receivers=receivers)
        table["inhibition"] = pd.Series(paths.largest_drop())
    return HeadRoles(assign_roles(table, **thresholds), copy, paths, thresholds)
