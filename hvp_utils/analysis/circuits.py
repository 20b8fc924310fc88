"""Circuits: reference circuits, recovery of a circuit from any estimator, faithfulness.

- Reference circuit of the embedded model: the components whose activation-patching effect is
  at least ``threshold_share`` of the largest (:func:`ap_circuit`). For ``gpt2-small``: the
  published IOI head classes of Wang et al. 2022 (``data/ioi/gpt2_small_ioi_heads.csv``).
- Recovery (:func:`circuit_recovery`): rank components by |estimate|; precision and recall of
  the top-|reference| set, and the ROC curve over every cut-off with its area (AUROC).
- Faithfulness (:func:`faithfulness`): keep the top-k components, mean-ablate every other one
  (replace it by its mean over the clean prompts, position by position), and report
  ``m(circuit) / m(full model)`` on the clean prompts, for each k.
- The neuron layer (:func:`mlp_gap_shares`): the layer whose MLP output, patched alone,
  restores the largest share of the clean-corrupted gap; the notebooks take their neurons
  from it.
- Attention (:func:`attention_shares`): what each head attends to at the final position and at
  S2, per name order, with induction attention and END selectivity; the roles read from this
  and other evidence are in :mod:`hvp_utils.analysis.roles`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_utils.core.components import Component, check_components, components, group_by_hook
from hvp_utils.core.engine import progress, replicate_chunks, replicated_metric
from hvp_utils.core.ioi_text import DATA_DIR
from hvp_utils.core.metrics import auroc
from hvp_utils.core.results import Attribution
from hvp_utils.core.tasks import PatchingTask, metric_per_prompt, task_baseline
from hvp_utils.core.types import Model
from hvp_utils.estimators.patching import activation_patching

PUBLISHED_HEADS_FILE = DATA_DIR / "ioi" / "gpt2_small_ioi_heads.csv"


def published_ioi_heads() -> pd.DataFrame:
    """Wang et al. 2022's IOI head classes for gpt2-small: columns class, layer, head, name."""
    frame = pd.read_csv(PUBLISHED_HEADS_FILE, comment="#")
    frame["name"] = [
        f"L{layer}H{head}" for layer, head in zip(frame["layer"], frame["head"], strict=True)
    ]
    return frame


def ap_circuit(truth: Attribution, *, threshold_share: float = 0.1) -> list[str]:
    """Components with |AP| >= ``threshold_share`` * max |AP| (the embedded model's reference)."""
    values = truth.values.abs()
    return [
        n
        for n, v in zip(truth.names, values.tolist(), strict=True)
        if v >= threshold_share * float(values.max())
    ]


def roc_curve(scores: Tensor, positive: Tensor) -> pd.DataFrame:
    """False- and true-positive rates at every cut-off of ``scores`` (descending)."""
    order = scores.double().argsort(descending=True)
    hits = positive[order].double()
    tpr = torch.cat([torch.zeros(1), hits.cumsum(0) / max(1.0, float(hits.sum()))])
    fpr = torch.cat([torch.zeros(1), (1 - hits).cumsum(0) / max(1.0, float((1 - hits).sum()))])
    return pd.DataFrame({"fpr": fpr.numpy(), "tpr": tpr.numpy(), "k": np.arange(len(tpr))})


@dataclass(frozen=True)
class CircuitRecovery:
    """How well ranking by ``|estimate|`` recovers a reference circuit of ``k`` components.

    ``precision``, ``recall``: of the top-``k`` set; ``auroc``: over every cut-off;
    ``missed``: reference components outside the top ``k``; ``false_positives``: top-``k``
    components outside the reference; ``roc``: the ROC curve (:func:`roc_curve`).
    """

    method: str
    precision: float
    recall: float
    auroc: float
    missed: list[str]
    false_positives: list[str]
    roc: pd.DataFrame = field(repr=False)

    def as_row(self) -> dict:
        """The numbers and the two lists (comma-separated), without the curve."""
        return {
            "method": self.method,
            "precision": self.precision,
            "recall": self.recall,
            "auroc": self.auroc,
            "missed": ", ".join(self.missed),
            "false_positives": ", ".join(self.false_positives),
        }

    def to_frame(self) -> pd.DataFrame:
        """:meth:`as_row` as a one-row frame indexed by method."""
        return pd.DataFrame([self.as_row()]).set_index("method")


def circuit_recovery(estimate: Attribution, reference: list[str]) -> CircuitRecovery:
    """Precision and recall at the reference size, AUROC, and the ROC curve, ranking by |value|."""
    unknown = set(reference) - set(estimate.names)
    if unknown:
        raise ValueError(f"reference components {sorted(unknown)[:5]} are not in the estimate")
    if not reference:
        raise ValueError("empty reference circuit")
    scores = estimate.values.abs()
    positive = torch.tensor([n in set(reference) for n in estimate.names])
    k = len(reference)
    top = set(scores.argsort(descending=True)[:k].tolist())
    hits = sum(bool(positive[i]) for i in top)
    return CircuitRecovery(
        method=estimate.method,
        precision=hits / k,
        recall=hits / int(positive.sum()),
        auroc=auroc(scores, positive),
        missed=[estimate.names[i] for i in range(len(scores)) if positive[i] and i not in top],
        false_positives=[estimate.names[i] for i in sorted(top) if not positive[i]],
        roc=roc_curve(scores, positive),
    )


def recovery_table(estimates: list[Attribution], reference: list[str]) -> pd.DataFrame:
    """One row per estimator: precision, recall, AUROC, and the components it gets wrong."""
    rows = [circuit_recovery(estimate, reference).as_row() for estimate in estimates]
    return pd.DataFrame(rows).set_index("method")


@dataclass(frozen=True)
class MLPGapShares:
    """How much of the clean-corrupted gap each layer's MLP output carries, and the largest.

    ``effects[l]`` is AP of ``mlp_out`` at layer ``layers[l]`` (denoising: the clean MLP output
    patched into the corrupted run), ``gap = m(clean) - m(corrupted)``, ``shares = effects /
    gap``, and ``layer`` the layer of the largest ``|effects|`` (the first one on a tie).
    """

    layer: int
    layers: list[int]
    names: list[str]
    effects: Float[Tensor, "n_layers"]  # noqa: F821
    gap: float

    @property
    def shares(self) -> Float[Tensor, "n_layers"]:  # noqa: F821
        """``AP(mlp_out_l) / (m(clean) - m(corrupted))`` per layer."""
        return self.effects / self.gap

    @property
    def share(self) -> float:
        """The share of the gap carried by the MLP of :attr:`layer`."""
        return float(self.shares[self.layers.index(self.layer)])

    def describe(self) -> str:
        """``"layer 3, whose MLP carries 41% of the clean-corrupted gap (largest of 6 MLPs)"``."""
        return (
            f"layer {self.layer}, whose MLP carries {self.share:.0%} of the clean-corrupted "
            f"gap (largest of {len(self.layers)} MLPs)"
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per MLP (index ``component``): ``layer``, ``AP``, ``share`` of the gap and
        ``largest`` (True for :attr:`layer`); the gap in ``attrs``."""
        frame = pd.DataFrame(
            {
                "component": self.names,
                "layer": self.layers,
                "AP": self.effects.double().cpu().numpy(),
                "share": self.shares.double().cpu().numpy(),
                "largest": [layer == self.layer for layer in self.layers],
            }
        ).set_index("component")
        frame.attrs["gap"] = self.gap
        return frame


def mlp_gap_shares(
    model: Model, task: PatchingTask, *, chunk_size: int | None = None
) -> MLPGapShares:
    """Each layer's MLP output patched alone (activation patching, denoising), as a share of
    the clean-corrupted gap, and the layer that carries the most: the neuron layer.

        layer* = argmax_l |AP(mlp_out_l)|,    share_l = AP(mlp_out_l) / (m(clean) - m(corrupted))

    with ``AP(mlp_out_l) = m(corrupted with mlp_out_l <- clean) - m(corrupted)``. The layer is
    found on ``task``, not fixed in advance: its neurons are where the MLPs matter most.

    Args:
        model: a model with an MLP in every layer.
        task: the prompts and metric the shares are measured on.
        chunk_size: patched copies of the prompt batch per forward pass (as for
            :func:`~hvp_utils.activation_patching`); the values do not depend on it.

    Returns:
        :class:`MLPGapShares`; costs ``n_layers + 4`` forward passes over the batch.
    """
    hooks = [get_act_name("mlp_out", layer) for layer in range(model.cfg.n_layers)]
    if getattr(model.cfg, "attn_only", False) or not set(hooks) <= set(model.hook_dict):
        raise ValueError(
            f"{getattr(model.cfg, 'model_name', 'this model')} has no MLP in every layer "
            "(attention-only?), so there is no neuron layer to find; leave the neuron kinds "
            "out (e.g. kinds=['head_out']) or use a model with MLPs"
        )
    baseline = task_baseline(model, task)
    gap = baseline["clean_metric"] - baseline["corrupted_metric"]
    if gap == 0:
        raise ValueError(
            "the clean and corrupted prompts give the same metric (gap 0), so no MLP carries "
            "a share of it; use a perturbation that changes the answer (e.g. 'name_swap')"
        )
    mlps = components(model, "mlp_out")
    effects = activation_patching(model, task, mlps, chunk_size=chunk_size).values
    layers = [c.layer for c in mlps]
    return MLPGapShares(
        layer=layers[int(effects.abs().argmax())],
        layers=layers,
        names=[c.name for c in mlps],
        effects=effects,
        gap=float(gap),
    )


def mean_activations(model: Model, task: PatchingTask, hooks: list[str]) -> dict:
    """Mean over the clean prompts of each hook's activation, position by position."""
    with torch.no_grad():
        _, cache = model.run_with_cache(task.clean_tokens, names_filter=lambda n: n in set(hooks))
    return {h: cache[h].mean(0, keepdim=True) for h in hooks}


def faithfulness(
    model: Model,
    task: PatchingTask,
    ranking: Attribution | list[Component],
    comps: list[Component],
    *,
    sizes: list[int] | None = None,
    chunk_size: int | None = None,
) -> pd.DataFrame:
    """``m(top-k kept, the rest of comps mean-ablated) / m(full model)`` on the clean prompts.

    Args:
        model, task: the model and the task (its clean prompts and metric).
        ranking: an estimate (components ranked by |value|) or an explicit ordered list.
        comps: the components that are kept or ablated.
        sizes: the circuit sizes ``k`` (default: about 16 sizes from 0 to ``len(comps)``).
        chunk_size: sizes per forward pass (None: the engine's token budget).

    Returns:
        One row per size: ``size``, ``metric`` (of the ablated model) and ``faithfulness``.
        Each size is one replicate of :func:`~hvp_utils.core.engine.replicated_metric`.
    """
    check_components(comps)
    order = _order(ranking, comps)
    sizes = sizes or sorted({0, *range(1, len(comps) + 1, max(1, len(comps) // 16)), len(comps)})
    hooks = list(group_by_hook(comps))
    means = mean_activations(model, task, hooks)
    kept = {h: torch.zeros((len(sizes), *means[h].shape[1:]), dtype=means[h].dtype) for h in hooks}
    for r, k in enumerate(sizes):
        for i in order[:k]:
            c = comps[i]
            kept[c.hook][r : r + 1] = torch.maximum(
                kept[c.hook][r : r + 1], c.mask(means[c.hook].shape, dtype=means[c.hook].dtype)
            )
    rows = task.clean_tokens.numel()
    chunks = replicate_chunks(
        [0] * len(sizes),
        rows_per_replicate=rows,
        order=0,
        chunk_size=chunk_size,
        cfg=model.cfg,
    )
    with torch.no_grad():
        full = metric_per_prompt(model, task, task.clean_tokens).mean()
        kept_metric = torch.cat(
            [
                replicated_metric(
                    model,
                    task,
                    task.clean_tokens,
                    replicates=len(chunk),
                    fwd_hooks=_ablation(kept, means, chunk),
                )
                for chunk in progress(chunks, "faithfulness")
            ]
        )
    return pd.DataFrame(
        {
            "size": sizes,
            "metric": kept_metric.double().cpu().numpy(),
            "faithfulness": (kept_metric / full).double().cpu().numpy(),
        }
    )


def _ablation(kept: dict[str, Tensor], means: dict[str, Tensor], chunk: list[int]) -> list:
    """Forward hooks that mean-ablate, in replicate ``r`` of the chunk, every entry outside
    the kept mask of size ``chunk[r]``: ``act <- mean + kept * (act - mean)``."""

    def ablate(act, hook, name):  # name bound per hook: a bridge's hook.name is its own
        replicates = len(chunk)
        act = act.view(replicates, -1, *act.shape[1:])
        mask = kept[name][chunk].unsqueeze(1).to(act.device)
        mean = means[name].unsqueeze(0)
        return (mean + mask * (act - mean)).view(-1, *act.shape[2:])

    return [(hook, partial(ablate, name=hook)) for hook in kept]


def _order(ranking: Attribution | list[Component], comps: list[Component]) -> list[int]:
    names = [c.name for c in comps]
    if isinstance(ranking, Attribution):
        if ranking.names != names:
            raise ValueError("the ranking estimate must cover comps in the same order")
        return ranking.values.abs().argsort(descending=True).tolist()
    return [names.index(c.name) for c in ranking]


def _slots(task: PatchingTask) -> dict[str, Tensor]:
    """Per prompt, the positions of IO, S1, S2 (from the answer tokens)."""
    tokens, io, s = task.clean_tokens, task.answer_tokens[:, 0], task.answer_tokens[:, 1]
    is_s = tokens == s[:, None]
    s1 = is_s.float().argmax(1)
    s2 = tokens.shape[1] - 1 - is_s.flip(1).float().argmax(1)
    return {"IO": (tokens == io[:, None]).float().argmax(1), "S1": s1, "S2": s2}


def attention_shares(model: Model, task: PatchingTask) -> pd.DataFrame:
    """Per head, where the final position (END) and the repeated name (S2) attend, on the
    clean prompts.

    Columns (index: the head's name ``L{l}H{h}``; ``layer``, ``head``): ``end->IO``,
    ``end->S1``, ``end->S2``, ``S2->S1`` (duplicate-token attention), ``S2->IO``,
    ``S2->S1+1`` (induction: the token after the first mention of S), and
    ``end selectivity`` = ``A(END->IO) - A(END->S1) - A(END->S2)``.

    Each is the mean over the prompts of each name order (IO before S1, S1 before IO), and the
    smaller of the two means is reported: a head that attends to a fixed position, whichever
    name is there, then scores low on the names that move between the orders.
    """
    slots = _slots(task)
    slots["S1+1"] = slots["S1"] + 1
    io_first = slots["IO"] < slots["S1"]
    orders = [group for group in (io_first, ~io_first) if bool(group.any())]
    rows_index = torch.arange(task.n_prompts)
    with torch.no_grad():
        _, cache = model.run_with_cache(
            task.clean_tokens, names_filter=lambda n: n.endswith("hook_pattern")
        )

    def smaller(per_prompt: Tensor) -> float:
        """Smaller over the name orders of the mean over their prompts."""
        return min(float(per_prompt[group].mean()) for group in orders)

    rows = []
    for layer in range(model.cfg.n_layers):
        pattern: Float[Tensor, "batch head q k"] = cache[get_act_name("pattern", layer)]
        end = pattern[:, :, -1, :]
        at_s2 = pattern[rows_index, :, slots["S2"], :]
        for head in range(model.cfg.n_heads):
            to = {slot: end[rows_index, head, slots[slot]] for slot in ("IO", "S1", "S2")}
            row = {"head": f"L{layer}H{head}", "layer": layer, "head_index": head}
            row.update({f"end->{slot}": smaller(value) for slot, value in to.items()})
            row["end selectivity"] = smaller(to["IO"] - to["S1"] - to["S2"])
            for slot in ("S1", "IO", "S1+1"):
                row[f"S2->{slot}"] = smaller(at_s2[rows_index, head, slots[slot]])
            rows.append(row)
    return pd.DataFrame(rows).set_index("head")
