"""Exercises of notebook 06, *Recovering the IOI circuit*: the AUROC of a ranking against the
reference circuit from ranks (the Mann-Whitney identity, derived by the learner; a pairwise
comparison is caught by the size of the tensors it makes), and one point of a faithfulness
curve written with mean-ablation hooks.

The references are the package's :func:`hvp_utils.auroc` (as
:func:`hvp_utils.circuit_recovery` uses it) and :func:`hvp_utils.faithfulness`. Each check
runs on the notebook's own results when they are passed (``truth=``, ``estimates=``,
``reference=``) and otherwise on the small task; the AUROC also runs on a small synthetic
case (tied scores, large negative scores), so that mistakes that the model's numbers happen
not to expose are still caught.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor

from hvp_course.exercise import Case, Context, Exercise, Mistake, Result, too_large
from hvp_course.explain import scalar
from hvp_course.nb01 import ordinal_ranks
from hvp_utils.analysis.circuits import ap_circuit, circuit_recovery, faithfulness
from hvp_utils.core.components import Component, components
from hvp_utils.core.metrics import auroc, average_ranks
from hvp_utils.core.results import Attribution
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import atp, hvp_correction

#: The reference circuit's default fraction (the notebook's ``threshold_share``).
DEFAULT_THRESHOLD_SHARE = 0.1


def reference_circuit(ctx: Context) -> list[str]:
    """The notebook's reference circuit (``reference=``), or AP's at the default fraction."""
    if ctx.reference:
        return list(ctx.reference)
    return ap_circuit(ctx.head_ap(), threshold_share=DEFAULT_THRESHOLD_SHARE)


# --------------------------------------------------------------------------------------------
# 2. AUROC of a ranking against the circuit


def auroc_from_ranks_reference(scores: Tensor, in_circuit: Tensor) -> float:
    """P(|score| of a random circuit component > that of a random other one), ties 1/2
    (``hu.auroc`` of ``|scores|``, as ``hu.circuit_recovery`` computes it)."""
    return auroc(scores.abs(), in_circuit.bool())


def _pairs(scores: Tensor, in_circuit: Tensor) -> tuple[Tensor, Tensor]:
    size, mask = scores.abs().double(), in_circuit.bool()
    return size[mask][:, None], size[~mask][None, :]


def _auroc_every_pair(scores: Tensor, in_circuit: Tensor) -> float:
    """The definition itself: the mean over every (circuit, other) pair (independent)."""
    pos, neg = _pairs(scores, in_circuit)
    return float(((pos > neg).double() + 0.5 * (pos == neg).double()).mean())


def _from_ranks(
    scores: Tensor,
    in_circuit: Tensor,
    *,
    ranks: Callable[[Tensor], Tensor] = average_ranks,
    own: Callable[[int], float] = lambda n: n * (n - 1) / 2,
) -> float:
    """(R_C - own(n_C)) / (n_C n_other), with R_C the circuit's sum of ranks from 0: the pairs
    the circuit wins once its n_C (n_C - 1) / 2 pairs with itself are taken out; and the slips
    (ties broken by position; nothing taken out, with ranks from 1; the 1-based correction on
    ranks from 0)."""
    mask = in_circuit.bool()
    n_circuit, n_other = int(mask.sum()), int((~mask).sum())
    rank_sum = float(ranks(scores.abs().double())[mask].sum())
    return (rank_sum - own(n_circuit)) / (n_circuit * n_other)


#: Synthetic scores: a tie between a circuit component and two others (0.5), a large negative
#: score outside the circuit (-0.95) and one inside (-0.8).
SYNTHETIC_SCORES = (0.9, -0.8, 0.5, 0.5, -0.5, 0.1, 0.0, -0.95)
SYNTHETIC_IN_CIRCUIT = (True, True, True, False, False, False, False, False)
#: A large synthetic ranking: every pair of its circuit and the rest would be a tensor of
#: LARGE_CIRCUIT * (LARGE_N - LARGE_CIRCUIT) entries, a ranking needs a few of LARGE_N.
LARGE_N, LARGE_CIRCUIT = 3000, 600
ENTRIES_PER_COMPONENT = 16


def _estimates(ctx: Context) -> list[Attribution]:
    """The notebook's estimates (``estimates=``), or AtP and HVP joint of every head."""
    if ctx.estimates is not None:
        return list(ctx.estimates)
    return ctx.cached(
        "AtP and HVP joint of the heads",
        lambda: [
            atp(ctx.model, ctx.task, ctx.heads),
            hvp_correction(ctx.model, ctx.task, ctx.heads, mode="joint"),
        ],
    )


def _large_case() -> Case:
    """Rounded normal scores (many ties), the circuit drawn with a shift towards large |s|."""
    generator = torch.Generator().manual_seed(0)
    in_circuit = torch.zeros(LARGE_N, dtype=torch.bool)
    in_circuit[torch.randperm(LARGE_N, generator=generator)[:LARGE_CIRCUIT]] = True
    noise = torch.randn(LARGE_N, generator=generator, dtype=torch.float64)
    scores = ((noise + 1.5 * in_circuit) * torch.sign(noise)).mul(4).round() / 4
    label = f"{LARGE_N} synthetic components, {LARGE_CIRCUIT} in the circuit (ties)"
    return Case(label, (scores, in_circuit), max_entries=ENTRIES_PER_COMPONENT * LARGE_N)


def _auroc_cases(ctx: Context) -> list[Case]:
    reference = set(reference_circuit(ctx))
    cases = [
        Case(
            estimate.method,
            (
                estimate.values.detach().double(),
                torch.tensor([n in reference for n in estimate.names]),
            ),
        )
        for estimate in _estimates(ctx)
    ]
    synthetic = (
        torch.tensor(SYNTHETIC_SCORES, dtype=torch.float64),
        torch.tensor(SYNTHETIC_IN_CIRCUIT),
    )
    return [*cases, Case("synthetic (ties, negative scores)", synthetic), _large_case()]


def _auroc_passed(r: Result) -> str:
    estimates = _estimates(r.ctx)
    reference = reference_circuit(r.ctx)
    for estimate, value in zip(estimates, r.expected, strict=False):
        recovered = circuit_recovery(estimate, reference).auroc
        assert abs(recovered - float(value)) < 1e-12, (estimate.method, recovered, float(value))
    pairwise = torch.tensor([_auroc_every_pair(*c.args) for c in r.cases], dtype=torch.float64)
    gap = float((torch.stack(r.expected).double() - pairwise).abs().max())
    largest = max(c.largest for c in r.calls if c.case.max_entries is not None)
    return (
        f"AUROC of {len(estimates)} estimators' rankings as hu.circuit_recovery, of a synthetic "
        f"case with ties and of {LARGE_N} components (largest difference {r.diff:.1e}; the "
        f"definition over every pair agrees to {gap:.1e}), with no tensor above {largest} "
        f"entries where every pair would take {LARGE_CIRCUIT * (LARGE_N - LARGE_CIRCUIT)}"
    )


AUROC_FROM_RANKS = Exercise(
    name="auroc_from_ranks",
    notebook="06",
    summary="The AUROC of every estimator's ranking against the reference circuit, computed "
    "from ranks, equals hu.circuit_recovery's (hu.auroc of |scores|), and so on synthetic "
    "cases with ties and negative scores, without a tensor of every (circuit, other) pair.",
    reference=auroc_from_ranks_reference,
    uses="hu.auroc",
    what="AUROC",
    cases=_auroc_cases,
    read=lambda output, case: scalar(output, f"AUROC of {case.label}"),
    rtol=1e-9,
    mistakes=(
        Mistake(
            "that is the AUROC of the signed scores: rank by |score|, since a head that pushes "
            "the answer away from IO (a negative effect) is as much part of the circuit",
            wrong=lambda scores, in_circuit: auroc(scores, in_circuit.bool()),
        ),
        Mistake(
            "right without ties, wrong with them: ties were broken by position (argsort of "
            "argsort). Tied values must share the mean of the positions they occupy, so that a "
            "tie between a circuit component and another adds exactly 1/2",
            wrong=partial(_from_ranks, ranks=ordinal_ranks),
        ),
        Mistake(
            "the circuit's rank sum also counts the pairs of circuit components with each other "
            "(and each with itself): n_C (n_C + 1) / 2 of it, to subtract before dividing by "
            "the n_C n_other pairs",
            wrong=partial(_from_ranks, own=lambda n: -n),
        ),
        Mistake(
            "off by 1/n_other: the ranks were counted from 0. A component of rank r (from 1) "
            "is above r - 1 others, and n_C (n_C + 1) / 2 is the rank sum of a circuit ranked "
            "below everything else with ranks from 1",
            wrong=partial(_from_ranks, own=lambda n: n * (n + 1) / 2),
        ),
        Mistake(
            "that is 1 - AUROC, the share of pairs in which the OTHER component ranks higher: "
            "rank from the smallest |score| (rank 1) to the largest",
            wrong=lambda scores, in_circuit: 1 - auroc_from_ranks_reference(scores, in_circuit),
        ),
        Mistake(
            "the value is right, but your function compared every circuit component with every "
            "other one (a tensor of n_C x n_other entries): that grows with the square of the "
            "components (every head at every position, every neuron). Derive it from the ranks "
            "of |scores|, one sort: what does the circuit's rank sum count?",
            wrong=_auroc_every_pair,
            seen=too_large,
        ),
    ),
    passed=_auroc_passed,
)


# --------------------------------------------------------------------------------------------
# 3. One faithfulness point, with mean-ablation hooks


def _head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def faithfulness_of_reference(model: Model, task: PatchingTask, kept: list) -> float:
    """``m(clean run with every head outside kept mean-ablated) / m(clean run)``
    (``hu.faithfulness`` at ``k = len(kept)``)."""
    heads = components(model, kind="head_out")
    names = [c.name for c in heads]
    ranking: list[Component] = [heads[names.index(_head_name(*pair))] for pair in kept]
    frame = faithfulness(model, task, ranking, heads, sizes=[len(ranking)])
    return float(frame["faithfulness"].iloc[0])


def _ablated(
    model: Model,
    task: PatchingTask,
    kept: list,
    *,
    source: str = "clean",
    over_positions: bool = False,
    zero: bool = False,
    invert: bool = False,
    ratio: bool = True,
) -> float:
    """Mean ablation written with plain hooks, with the switches of the common mistakes."""
    keep = {tuple(pair) for pair in kept}
    hooks = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    tokens = task.clean_tokens if source == "clean" else task.corrupted_tokens
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in set(hooks))
        means = {}
        for h in hooks:
            mean = cache[h].mean(0, keepdim=True)
            if over_positions:
                mean = mean.mean(1, keepdim=True)
            means[h] = torch.zeros_like(mean) if zero else mean

        def ablate(z, hook, layer):
            out = means[hooks[layer]].expand_as(z).clone()
            for head in range(model.cfg.n_heads):
                if ((layer, head) in keep) != invert:
                    out[:, :, head] = z[:, :, head]
            return out

        fwd = [(h, partial(ablate, layer=layer)) for layer, h in enumerate(hooks)]
        ablated = float(task.metric(model.run_with_hooks(task.clean_tokens, fwd_hooks=fwd)))
        full = float(task.metric(model(task.clean_tokens)))
    return ablated / full if ratio else ablated


def _kept_cases(ctx: Context) -> list[Case]:
    """The reference circuit, AP's top two heads (when not the same) and no head at all."""
    names = [c.name for c in ctx.heads]
    reference = [divmod(names.index(n), ctx.n_heads) for n in reference_circuit(ctx)]
    top2 = ctx.top_heads(2)
    sets: Sequence[tuple[str, list]] = [("the reference circuit", reference)]
    if set(reference) != set(top2):
        sets = [*sets, ("AP's top 2 heads", top2)]
    return [
        Case(f"faithfulness of {label}", (ctx.model, ctx.task, list(kept)))
        for label, kept in [*sets, ("no head", [])]
    ]


def _faithfulness_passed(r: Result) -> str:
    shown = ", ".join(
        f"{case.label.removeprefix('faithfulness of ')} ({float(v):.3f})"
        for case, v in zip(r.cases, r.expected, strict=True)
    )
    return f"faithfulness of {shown} as hu.faithfulness (largest difference {r.diff:.1e})"


FAITHFULNESS_OF = Exercise(
    name="faithfulness_of",
    notebook="06",
    summary="The faithfulness of the reference circuit, of AP's top two heads and of no head "
    "at all equals hu.faithfulness at that size.",
    reference=faithfulness_of_reference,
    uses="hu.faithfulness",
    what="faithfulness",
    cases=_kept_cases,
    read=lambda output, case: scalar(output, case.label),
    mistakes=(
        Mistake(
            "the heads were replaced by their mean over the corrupted prompts; mean ablation "
            "uses the clean prompts' mean (the circuit is judged on the clean task)",
            wrong=partial(_ablated, source="corrupted"),
        ),
        Mistake(
            "the heads were set to zero: zero ablation throws the head's average output away "
            "too; replace it by its mean over the clean prompts",
            wrong=partial(_ablated, zero=True),
        ),
        Mistake(
            "the mean was also taken over the positions; take it over the prompts only, "
            "position by position (z.mean(0), shape [1 pos head d_head])",
            wrong=partial(_ablated, over_positions=True),
        ),
        Mistake(
            "you ablated the kept heads and kept the others: keep the heads in `kept` and "
            "replace every other head by its mean",
            wrong=partial(_ablated, invert=True),
        ),
        Mistake(
            "that is m(ablated model) itself; divide by the full model's metric on the clean "
            "prompts, m(clean)",
            wrong=partial(_ablated, ratio=False),
        ),
    ),
    passed=_faithfulness_passed,
)

EXERCISES = (AUROC_FROM_RANKS, FAITHFULNESS_OF)
