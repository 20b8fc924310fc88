"""Exercises of notebook 06, *Recovering the IOI circuit*: the reference-circuit rule, the
AUROC of a ranking against that circuit, and one point of a faithfulness curve written with
mean-ablation hooks.

The references are the package's :func:`hvp_utils.ap_circuit`, :func:`hvp_utils.auroc` (as
:func:`hvp_utils.circuit_recovery` uses it) and :func:`hvp_utils.faithfulness`. Each checker
runs on the notebook's own results when they are passed (``truth=``, ``estimates=``,
``reference=``) and otherwise on the small cached task; the first two also run on small
synthetic cases (ties exactly at the threshold, tied scores, large negative effects), so that
mistakes that the model's numbers happen not to expose are still caught.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor

from hvp_utils.analysis.circuits import ap_circuit, circuit_recovery, faithfulness
from hvp_utils.core.components import Component, components
from hvp_utils.core.metrics import auroc
from hvp_utils.core.results import Attribution
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import atp, hvp_correction
from hvp_utils.exercises.framework import (
    Context,
    ExerciseFailed,
    as_values,
    call,
    exercise,
    expect_close,
)

#: The reference circuit's default fraction (the notebook's ``reference_fraction``).
DEFAULT_FRACTION = 0.1


def _attribution(values: Tensor, names: Sequence[str], method: str = "given") -> Attribution:
    return Attribution(values=values.detach().double(), names=list(names), method=method, cost={})


def _head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def _layer_head(name: str) -> tuple[int, int]:
    """``"L1H6"`` -> ``(1, 6)``."""
    layer, head = name[1:].split("H")
    return int(layer), int(head)


# --------------------------------------------------------------------------------------------
# 1. The reference circuit


def ap_circuit_reference(effects: Tensor, names: list[str], fraction: float) -> list[str]:
    """The components with ``|effect| >= fraction * max |effect|`` (``hu.ap_circuit``)."""
    return ap_circuit(_attribution(effects, names), fraction)


def _circuit_signed(effects: Tensor, names: list[str], fraction: float) -> list[str]:
    cut = fraction * float(effects.max())
    return [n for n, v in zip(names, effects.tolist(), strict=True) if v >= cut]


def _circuit_strict(effects: Tensor, names: list[str], fraction: float) -> list[str]:
    size = effects.abs()
    cut = fraction * float(size.max())
    return [n for n, v in zip(names, size.tolist(), strict=True) if v > cut]


def _circuit_of_sum(effects: Tensor, names: list[str], fraction: float) -> list[str]:
    size = effects.abs()
    cut = fraction * float(size.sum())
    return [n for n, v in zip(names, size.tolist(), strict=True) if v >= cut]


#: Synthetic effects: exact ties at the threshold (0.25 of 4.0 is exactly 1.0), large negative
#: effects, and a near miss just below the threshold.
SYNTHETIC_EFFECTS = (4.0, -2.0, 1.0, -1.0, 0.5, 0.0, 3.0, -0.999)
SYNTHETIC_FRACTION = 0.25


def _as_names(got, what: str, names: list[str]) -> set[str]:
    """The learner's circuit as a set of component names, or a failure saying why not."""
    __tracebackhide__ = True
    if got is None:
        raise ExerciseFailed(f"{what} is None: the function has no `return` (or returns None)")
    if isinstance(got, str):
        raise ExerciseFailed(f"{what} is one string {got!r}; return a list of names")
    if isinstance(got, Tensor):
        raise ExerciseFailed(
            f"{what} is a tensor; return the names of the circuit's components (a list of "
            "str such as ['L0H3', 'L1H6']), not a mask or indices"
        )
    try:
        items = list(got)
    except TypeError as err:
        raise ExerciseFailed(f"{what} is a {type(got).__name__}; return a list of names") from err
    if not all(isinstance(x, str) for x in items):
        raise ExerciseFailed(
            f"{what} holds {type(next(x for x in items if not isinstance(x, str))).__name__} "
            "entries; return the names (str) of the components, e.g. names[i], not indices i"
        )
    unknown = sorted(set(items) - set(names))
    if unknown:
        raise ExerciseFailed(f"{what} names components that do not exist: {unknown[:4]}")
    if len(set(items)) != len(items):
        raise ExerciseFailed(f"{what} names some components twice")
    return set(items)


@exercise(
    "ap_circuit",
    notebook="06",
    reference=ap_circuit_reference,
    uses="hu.ap_circuit",
    mistakes={
        "signed effects": (_circuit_signed, "negative effect"),
        "strictly above the threshold": (_circuit_strict, "exactly at the threshold"),
        "a fraction of the sum": (_circuit_of_sum, "fraction of the largest"),
    },
)
def check_ap_circuit(fn, ctx: Context) -> str:
    """The reference circuit, at the notebook's fraction and at 0.05 and 0.3 of AP's effects
    and on a synthetic case with ties at the threshold, equals ``hu.ap_circuit``."""
    __tracebackhide__ = True
    truth = ctx.extra.get("truth")
    truth = ctx.head_ap() if truth is None else truth
    fraction = float(ctx.extra.get("fraction", DEFAULT_FRACTION))
    cases = [
        (f"AP's effects, fraction {f:g}", truth.values, truth.names, f)
        for f in dict.fromkeys((fraction, 0.05, 0.3))
    ]
    synthetic = torch.tensor(SYNTHETIC_EFFECTS, dtype=torch.float64)
    cases.append(
        (
            f"the effects {list(SYNTHETIC_EFFECTS)}, fraction {SYNTHETIC_FRACTION:g}",
            synthetic,
            [f"c{i}" for i in range(len(synthetic))],
            SYNTHETIC_FRACTION,
        )
    )
    hints = (
        (
            _circuit_signed,
            "it drops the components with a large negative effect: the rule compares "
            "|effect| (a head that pushes the answer away from IO matters as much)",
        ),
        (
            _circuit_strict,
            "a component exactly at the threshold belongs to the circuit (>=, not >)",
        ),
        (
            _circuit_of_sum,
            "the threshold is a fraction of the largest |effect|, not of their sum",
        ),
    )
    for what, effects, names, f in cases:
        got = _as_names(
            call(fn, effects.clone(), list(names), f, name="ap_circuit"),
            f"the circuit of {what}",
            names,
        )
        expected = set(ap_circuit_reference(effects, names, f))
        if got == expected:
            continue
        order = {n: i for i, n in enumerate(names)}
        missing = sorted(expected - got, key=order.get)
        extra = sorted(got - expected, key=order.get)
        lines = [
            f"the circuit of {what} is wrong:",
            f"  missing: {', '.join(missing) or 'none'}",
            f"  extra:   {', '.join(extra) or 'none'}",
        ]
        for wrong, hint in hints:
            if got == set(wrong(effects, names, f)):
                lines.append(f"  hint: {hint}")
                break
        raise ExerciseFailed("\n".join(lines))
    n = len(ap_circuit_reference(truth.values, truth.names, fraction))
    return (
        f"{n} of {len(truth.names)} heads at fraction {fraction:g} (and {len(cases) - 1} more "
        "cases) as hu.ap_circuit"
    )


# --------------------------------------------------------------------------------------------
# 2. AUROC of a ranking against the circuit


def auroc_from_scores_reference(scores: Tensor, in_circuit: Tensor) -> float:
    """P(|score| of a random circuit component > that of a random other one), ties 1/2
    (``hu.auroc`` of ``|scores|``, as ``hu.circuit_recovery`` computes it)."""
    return auroc(scores.abs(), in_circuit.bool())


def _pairs(scores: Tensor, in_circuit: Tensor) -> tuple[Tensor, Tensor]:
    size, mask = scores.abs().double(), in_circuit.bool()
    return size[mask][:, None], size[~mask][None, :]


def _auroc_ties_win(scores: Tensor, in_circuit: Tensor) -> float:
    pos, neg = _pairs(scores, in_circuit)
    return float((pos >= neg).double().mean())


def _auroc_ties_lose(scores: Tensor, in_circuit: Tensor) -> float:
    pos, neg = _pairs(scores, in_circuit)
    return float((pos > neg).double().mean())


#: Synthetic scores: a tie between a circuit component and two others (0.5), a large negative
#: score outside the circuit (-0.95) and one inside (-0.8).
SYNTHETIC_SCORES = (0.9, -0.8, 0.5, 0.5, -0.5, 0.1, 0.0, -0.95)
SYNTHETIC_IN_CIRCUIT = (True, True, True, False, False, False, False, False)


def _default_estimates(ctx: Context) -> list[Attribution]:
    """AtP and HVP joint of every head on the check's small task."""
    return ctx.cached(
        "nb06_estimates",
        lambda: [
            atp(ctx.model, ctx.task, ctx.heads),
            hvp_correction(ctx.model, ctx.task, ctx.heads, mode="joint"),
        ],
    )


def _reference_of(ctx: Context) -> list[str]:
    reference = ctx.extra.get("reference")
    return list(reference) if reference else ap_circuit(ctx.head_ap(), DEFAULT_FRACTION)


@exercise(
    "auroc_from_scores",
    notebook="06",
    reference=auroc_from_scores_reference,
    uses="hu.auroc",
    mistakes={
        "signed scores": (lambda scores, in_circuit: auroc(scores, in_circuit.bool()), "|score|"),
        "ties counted as wins": (_auroc_ties_win, "counts 1/2"),
        "ties counted as losses": (_auroc_ties_lose, "counts 1/2"),
        "1 - AUROC": (
            lambda scores, in_circuit: 1 - auroc_from_scores_reference(scores, in_circuit),
            "1 - AUROC",
        ),
    },
)
def check_auroc_from_scores(fn, ctx: Context) -> str:
    """The AUROC of every estimator's ranking against the reference circuit equals
    ``hu.circuit_recovery``'s (``hu.auroc`` of ``|scores|``), and so on a synthetic case with
    ties and negative scores."""
    __tracebackhide__ = True
    given = ctx.extra.get("estimates")
    estimates = list(_default_estimates(ctx) if given is None else given)
    reference = _reference_of(ctx)
    cases: list[tuple[str, Tensor, Tensor]] = []
    for estimate in estimates:
        mask = torch.tensor([n in set(reference) for n in estimate.names])
        cases.append((estimate.method, estimate.values.double(), mask))
    cases.append(
        (
            "synthetic (ties, negative scores)",
            torch.tensor(SYNTHETIC_SCORES, dtype=torch.float64),
            torch.tensor(SYNTHETIC_IN_CIRCUIT),
        )
    )
    labels = [label for label, _, _ in cases]
    got = []
    for label, scores, mask in cases:
        value = as_values(
            call(fn, scores.clone(), mask.clone(), name="auroc_from_scores"), f"AUROC of {label}"
        )
        if value.numel() != 1:
            raise ExerciseFailed(
                f"AUROC of {label}: got {tuple(value.shape)} values; return one number, the "
                "share of (circuit, other) pairs in which the circuit component ranks higher"
            )
        got.append(value.reshape(()))
    expected = torch.tensor(
        [auroc_from_scores_reference(scores, mask) for _, scores, mask in cases],
        dtype=torch.float64,
    )
    for estimate, value in zip(estimates, expected.tolist(), strict=False):
        recovered = circuit_recovery(estimate, reference)["auroc"]
        assert abs(recovered - value) < 1e-12, (estimate.method, recovered, value)

    def mistaken(wrong):
        return lambda: torch.tensor([wrong(s, m) for _, s, m in cases], dtype=torch.float64)

    diff = expect_close(
        torch.stack(got),
        expected,
        what="AUROC",
        rtol=1e-9,
        labels=labels,
        known={
            "that is the AUROC of the signed scores: rank by |score|, since a head that pushes "
            "the answer away from IO (a negative effect) is as much part of the circuit": mistaken(
                lambda s, m: auroc(s, m.bool())
            ),
            "ties were counted as wins: a tie between a circuit component and another one "
            "counts 1/2": mistaken(_auroc_ties_win),
            "ties were counted as losses: a tie between a circuit component and another one "
            "counts 1/2": mistaken(_auroc_ties_lose),
            "that is 1 - AUROC, the share of pairs in which the OTHER component ranks higher: "
            "count the pairs where the circuit component's |score| is the larger": mistaken(
                lambda s, m: 1 - auroc_from_scores_reference(s, m)
            ),
        },
    )
    return (
        f"AUROC of {len(estimates)} estimators' rankings as hu.circuit_recovery, and of a "
        f"synthetic case with ties (largest difference {diff:.1e})"
    )


# --------------------------------------------------------------------------------------------
# 3. One faithfulness point, with mean-ablation hooks


def faithfulness_of_reference(model: Model, task: PatchingTask, kept: list) -> float:
    """``m(clean run with every head outside kept mean-ablated) / m(clean run)``
    (``hu.faithfulness`` at ``k = len(kept)``)."""
    heads = components(model, "head_out")
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


def _kept_sets(ctx: Context) -> list[tuple[str, list[tuple[int, int]]]]:
    reference = [_layer_head(n) for n in _reference_of(ctx)]
    top2 = ctx.top_heads(2)
    sets = [("the reference circuit", reference), ("AP's top 2 heads", top2)]
    if set(reference) == set(top2):
        sets = sets[:1]
    return [*sets, ("no head", [])]


@exercise(
    "faithfulness_of",
    notebook="06",
    reference=faithfulness_of_reference,
    uses="hu.faithfulness",
    mistakes={
        "the corrupted mean": (partial(_ablated, source="corrupted"), "corrupted"),
        "zero ablation": (partial(_ablated, zero=True), "zero"),
        "one mean for all positions": (
            partial(_ablated, over_positions=True),
            "position by position",
        ),
        "the kept heads ablated": (partial(_ablated, invert=True), "ablated the kept heads"),
        "the metric, not the ratio": (partial(_ablated, ratio=False), "divide by"),
    },
)
def check_faithfulness_of(fn, ctx: Context) -> str:
    """The faithfulness of the reference circuit, of AP's top two heads and of no head at all
    equals ``hu.faithfulness`` at that size."""
    __tracebackhide__ = True
    model, task = ctx.model, ctx.task
    sets = _kept_sets(ctx)
    labels = [label for label, _ in sets]
    got = []
    for label, kept in sets:
        value = as_values(
            call(fn, model, task, list(kept), name="faithfulness_of"), f"faithfulness of {label}"
        )
        if value.numel() != 1:
            raise ExerciseFailed(
                f"faithfulness of {label}: got {tuple(value.shape)} values; return one number, "
                "m(ablated) / m(full model), each the mean over the clean prompts"
            )
        got.append(value.reshape(()))
    expected = torch.tensor(
        [faithfulness_of_reference(model, task, kept) for _, kept in sets], dtype=torch.float64
    )
    with torch.no_grad():
        full = float(task.metric(model(task.clean_tokens)))

    def variant(**switches):
        return lambda: torch.tensor(
            [_ablated(model, task, kept, **switches) for _, kept in sets], dtype=torch.float64
        )

    diff = expect_close(
        torch.stack(got),
        expected,
        what="faithfulness",
        rtol=ctx.rtol,
        labels=labels,
        known={
            "the heads were replaced by their mean over the corrupted prompts; mean ablation "
            "uses the clean prompts' mean (the circuit is judged on the clean task)": variant(
                source="corrupted"
            ),
            "the heads were set to zero: zero ablation throws the head's average output away "
            "too; replace it by its mean over the clean prompts": variant(zero=True),
            "the mean was also taken over the positions; take it over the prompts only, "
            "position by position (z.mean(0), shape [1 pos head d_head])": variant(
                over_positions=True
            ),
            "you ablated the kept heads and kept the others: keep the heads in `kept` "
            "and replace every other head by its mean": variant(invert=True),
        },
        factors={
            full: "that is m(ablated model) itself; divide by the full model's metric on the "
            "clean prompts, m(clean)",
        },
    )
    shown = ", ".join(f"{lab} ({v:.3f})" for lab, v in zip(labels, expected.tolist(), strict=True))
    return f"faithfulness of {shown} as hu.faithfulness (largest difference {diff:.1e})"
