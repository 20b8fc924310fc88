"""Exercises of notebook 01, *Activation patching versus attribution patching*: AtP of every
MLP neuron of one layer from one gradient, the Taylor remainder AP - AtP as an integral of
the path's curvature, and the normalised mean absolute error (NMAE) of an estimate.

Each reference is the package's own implementation (``hu.atp``, ``hu.path_derivative``,
``hu.compare``); the checkers also compare with closed forms (AP - AtP for the remainder).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_utils.analysis.checks import path_derivative, path_function
from hvp_utils.core.components import Component, components
from hvp_utils.core.metrics import compare
from hvp_utils.core.results import Attribution
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching, atp
from hvp_utils.exercises.framework import (
    ATP_MAX_FORWARDS,
    Context,
    ExerciseFailed,
    call,
    corrupted_gradient,
    counting_forward_passes,
    exercise,
    expect_close,
    scalar,
)

#: Midpoint nodes of the remainder's quadrature in the check (each costs one g'').
CHECK_NODES = 3


# --------------------------------------------------------------------------------------------
# 1. AtP of every neuron of one layer from one gradient


def neuron_components(model: Model, layer: int, kind: str = "neuron") -> list[Component]:
    """The neurons of one layer (``hook_post``; ``kind="neuron_pre"``: ``hook_pre``)."""
    return components(model, kind, layers=[layer])


def atp_neurons_reference(model: Model, task: PatchingTask, layer: int) -> Tensor:
    """``AtP[n] = <grad_post m(x_r)[..., n], post_c[..., n] - post_r[..., n]>`` (``hu.atp``)."""
    return atp(model, task, neuron_components(model, layer)).values


def _atp_neurons_by_hand(
    model: Model, task: PatchingTask, layer: int, hook: str = "post", reduce: str = "sum"
) -> Tensor:
    """AtP of the neurons with plain hooks, with the slips of the mistakes below: another
    hook (``pre``), and another reduction (``per_prompt``: no sum over the batch;
    ``final``: the final position only)."""
    name = get_act_name(hook, layer)
    with torch.no_grad():
        _, clean = model.run_with_cache(task.clean_tokens, names_filter=name)
    corrupted, grad = corrupted_gradient(model, task, name)
    terms = grad * (clean[name] - corrupted)  # [batch pos d_mlp]
    if reduce == "per_prompt":
        return terms.sum(1)
    if reduce == "final":
        return terms[:, -1].sum(0)
    return terms.sum((0, 1))


def _atp_neurons_many_passes(model: Model, task: PatchingTask, layer: int) -> Tensor:
    for _ in range(ATP_MAX_FORWARDS + 1):
        model(task.corrupted_tokens)
    return atp_neurons_reference(model, task, layer)


@exercise(
    "atp_neurons",
    notebook="01",
    reference=atp_neurons_reference,
    uses="hu.atp",
    mistakes={
        "the pre-activation": (
            lambda model, task, layer: _atp_neurons_by_hand(model, task, layer, hook="pre"),
            "hook_pre",
        ),
        "delta = corrupted - clean": (
            lambda model, task, layer: -atp_neurons_reference(model, task, layer),
            "wrong sign",
        ),
        "mean over prompts": (
            lambda model, task, layer: atp_neurons_reference(model, task, layer) / task.n_prompts,
            "a mean over prompts where the sum belongs",
        ),
        "one value per prompt": (
            lambda model, task, layer: _atp_neurons_by_hand(
                model, task, layer, reduce="per_prompt"
            ),
            "one entry per prompt",
        ),
        "the final position only": (
            lambda model, task, layer: _atp_neurons_by_hand(model, task, layer, reduce="final"),
            "every position",
        ),
        "one pass per neuron": (_atp_neurons_many_passes, "forward passes"),
    },
)
def check_atp_neurons(fn, ctx: Context) -> str:
    """AtP of every neuron of the notebook's neuron layer and of the last layer, ``[d_mlp]``,
    equals ``hu.atp`` on the neuron components, in at most four forward passes each."""
    __tracebackhide__ = True
    model, task = ctx.model, ctx.task
    given = ctx.extra.get("layer", ctx.n_layers // 2)
    layers = sorted({int(given), ctx.n_layers - 1})
    most = 0
    worst = 0.0
    for layer in layers:
        comps = neuron_components(model, layer)
        with counting_forward_passes(model) as passes:
            got = call(fn, model, task, layer, name="atp_neurons")
        expected = atp_neurons_reference(model, task, layer)
        worst = max(
            worst,
            expect_close(
                got,
                expected,
                what=f"AtP of the neurons of layer {layer}",
                rtol=ctx.rtol,
                labels=[c.name for c in comps],
                axes=("d_mlp",),
                n_prompts=task.n_prompts,
                known={
                    "these are the AtP values of the pre-activations (mlp.hook_pre); the neuron "
                    "kind patches the activation after the GELU, mlp.hook_post": lambda lay=layer: (
                        _atp_neurons_by_hand(model, task, lay, hook="pre")
                    ),
                    "that is AtP at the final position only; a neuron component covers every "
                    "position: sum the products over the batch and every position": (
                        lambda lay=layer: _atp_neurons_by_hand(model, task, lay, reduce="final")
                    ),
                    "the gradient was taken on the clean run; AtP linearises the corrupted "
                    "run, where the patch starts": lambda c=comps: (
                        -atp(model, task, c, direction="noising").values
                    ),
                },
                sign_hint="delta = post(clean) - post(corrupted), the gradient taken on the "
                "corrupted run",
            ),
        )
        if passes[0] > ATP_MAX_FORWARDS:
            raise ExerciseFailed(
                f"the values are right, but the function ran {passes[0]} forward passes for "
                f"layer {layer}. AtP needs a cache of the clean run and ONE corrupted run with "
                "a zero leaf added at hook_post: one gradient gives every neuron at once"
            )
        most = max(most, passes[0])
    where = " and ".join(str(layer) for layer in layers)
    return (
        f"AtP of the {model.cfg.d_mlp} neurons of layer {where} as hu.atp "
        f"(largest difference {worst:.1e}), in at most {most} forward passes"
    )


# --------------------------------------------------------------------------------------------
# 2. The Taylor remainder as an integral of g''


def midpoints(n_nodes: int) -> list[float]:
    """The nodes ``t_k = (k + 1/2) / n`` of the midpoint rule on [0, 1]."""
    return [(k + 0.5) / n_nodes for k in range(n_nodes)]


def taylor_remainder_reference(g, n_nodes: int) -> float:
    """``int_0^1 (1 - t) g''(t) dt`` by the midpoint rule with ``n_nodes`` nodes, each
    ``g''(t_k)`` by autograd twice (``hu.path_derivative``)."""
    return sum((1 - t) * path_derivative(g, t, 2) for t in midpoints(n_nodes)) / n_nodes


def _remainder_weighted(g, n_nodes: int, weight, nodes=None) -> float:
    nodes = midpoints(n_nodes) if nodes is None else nodes
    return sum(weight(t) * path_derivative(g, t, 2) for t in nodes) / n_nodes


@exercise(
    "taylor_remainder",
    notebook="01",
    reference=taylor_remainder_reference,
    uses="hu.path_derivative",
    mistakes={
        "weight t": (lambda g, n: _remainder_weighted(g, n, lambda t: t), "weight t"),
        "no weight": (lambda g, n: _remainder_weighted(g, n, lambda t: 1.0), "g'(1) - g'(0)"),
        "g''(0)/2": (lambda g, n: path_derivative(g, 0.0, 2) / 2, "g''(0)/2"),
        "a sum, not a mean": (
            lambda g, n: n * taylor_remainder_reference(g, n),
            "the width 1/n",
        ),
        "left end points": (
            lambda g, n: _remainder_weighted(
                g, n, lambda t: 1 - t, nodes=[k / n for k in range(n)]
            ),
            "midpoints",
        ),
    },
)
def check_taylor_remainder(fn, ctx: Context) -> str:
    """``int (1 - t) g''(t) dt`` by the midpoint rule on the paths of the largest MLP and head
    effects equals ``hu.path_derivative``'s, and approaches AP - AtP."""
    __tracebackhide__ = True
    model, task = ctx.model, ctx.task
    mlps = components(model, "mlp_out")
    mlp_ap = ctx.cached("mlp_ap", lambda: activation_patching(model, task, mlps))
    mlp = mlps[int(mlp_ap.values.abs().argmax())]
    layer, head = ctx.top_heads(1)[0]
    comps = [mlp, ctx.head(layer, head)]
    n = CHECK_NODES
    paths = {
        c.name: ctx.cached(f"path_{c.name}", lambda c=c: path_function(model, task, c))
        for c in comps
    }
    got = torch.stack(
        [
            scalar(
                call(fn, paths[c.name], n, name="taylor_remainder"), f"the remainder of {c.name}"
            )
            for c in comps
        ]
    )

    def g2(c: Component, t: float) -> float:
        """g''(t) on the path of ``c`` (kept: the known mistakes reuse the same nodes)."""
        return ctx.cached(f"g2_{c.name}_{t!r}", lambda: path_derivative(paths[c.name], t, 2))

    def rule(weight, nodes) -> Tensor:
        return torch.tensor(
            [sum(weight(t) * g2(c, t) for t in nodes) / n for c in comps], dtype=torch.float64
        )

    mids, lefts = midpoints(n), [k / n for k in range(n)]
    expected = rule(lambda t: 1 - t, mids)
    diff = expect_close(
        got,
        expected,
        what=f"int_0^1 (1 - t) g''(t) dt with {n} midpoint nodes",
        rtol=ctx.rtol,
        labels=[c.name for c in comps],
        known={
            "that is the integral with weight t: the remainder of the expansion around t = 1. "
            "Expanding around t = 0 (where AtP takes its slope) weighs g''(t) by (1 - t)": (
                lambda: rule(lambda t: t, mids)
            ),
            "that is int g''(t) dt = g'(1) - g'(0), the change of the slope along the path; the "
            "remainder weighs g''(t) by (1 - t)": lambda: rule(lambda t: 1.0, mids),
            "that is g''(0)/2, the second-order Taylor term at t = 0; the remainder integrates "
            "(1 - t) g''(t) over the whole path, sampled at the midpoints": lambda: torch.tensor(
                [g2(c, 0.0) / 2 for c in comps], dtype=torch.float64
            ),
            "the nodes are the left end points k/n; use the midpoints t_k = (k + 1/2)/n": (
                lambda: rule(lambda t: 1 - t, lefts)
            ),
        },
        factors={
            float(n): f"{n} is the number of nodes: multiply the sum by the width 1/n of each "
            "interval of the midpoint rule",
        },
        sign_hint="the remainder is + int (1 - t) g''(t) dt, with 1 - t >= 0 on [0, 1]",
    )
    ap = torch.tensor(
        [float(mlp_ap.values[mlps.index(mlp)]), float(ctx.head_ap()[comps[1].name])],
        dtype=torch.float64,
    )
    first = ctx.cached(f"atp_{mlp.name}_{comps[1].name}", lambda: atp(model, task, comps).values)
    gap = float((expected - (ap - first)).abs().max())
    return (
        f"the remainders of {', '.join(c.name for c in comps)} as hu.path_derivative's "
        f"(largest difference {diff:.1e}); with {n} nodes they are within {gap:.1e} of AP - AtP"
    )


# --------------------------------------------------------------------------------------------
# 3. NMAE


def nmae_reference(estimate: Tensor, truth: Tensor) -> float:
    """``mean |estimate - truth| / mean |truth|`` (the ``nmae`` column of ``hu.compare``)."""
    return float((estimate - truth).abs().mean() / truth.abs().mean())


def _nmae_cases(ctx: Context) -> dict[str, tuple[Tensor, Tensor]]:
    """(estimate, truth) pairs: AtP of every head against AP, and a small example with one
    tiny effect (which a mean of relative errors would let dominate)."""

    def build():
        ap = ctx.head_ap().values.double()
        est = atp(ctx.model, ctx.task, ctx.heads).values.double()
        truth = torch.tensor([2.0, -1.0, 0.5, 0.02, 0.25], dtype=torch.float64)
        guess = torch.tensor([1.5, -1.25, 0.75, 0.1, 0.25], dtype=torch.float64)
        return {"AtP of the heads": (est, ap), "a small example": (guess, truth)}

    return ctx.cached("nmae_cases", build)


def _mean_relative_error(estimate: Tensor, truth: Tensor) -> float:
    return float(((estimate - truth).abs() / truth.abs()).mean())


@exercise(
    "nmae",
    notebook="01",
    reference=nmae_reference,
    uses="hu.compare",
    mistakes={
        "mean relative error": (_mean_relative_error, "relative errors"),
        "normalised by the estimate": (
            lambda est, truth: float((est - truth).abs().mean() / est.abs().mean()),
            "normalised by the estimate",
        ),
        "signed errors": (
            lambda est, truth: float((est - truth).mean() / truth.abs().mean()),
            "absolute value",
        ),
        "no normalisation": (
            lambda est, truth: float((est - truth).abs().mean()),
            "divide by",
        ),
    },
)
def check_nmae(fn, ctx: Context) -> str:
    """NMAE of AtP of every head against AP (and of a small example) equals
    ``hu.compare``'s ``nmae``."""
    __tracebackhide__ = True
    cases = _nmae_cases(ctx)
    labels = list(cases)
    got = torch.stack(
        [
            scalar(call(fn, est.clone(), truth.clone(), name="nmae"), f"NMAE of {label}")
            for label, (est, truth) in cases.items()
        ]
    )
    expected = torch.tensor([nmae_reference(e, t) for e, t in cases.values()], dtype=torch.float64)
    # the reference is the package's own column
    est, ap = cases["AtP of the heads"]
    names = [c.name for c in ctx.heads]
    package = compare(
        Attribution(est, names, "AtP", {}), Attribution(ap, names, "AP", {})
    ).nmae.iloc[0]
    assert abs(package - float(expected[0])) < 1e-12, (package, float(expected[0]))

    def each(rule):
        return lambda: torch.tensor([rule(e, t) for e, t in cases.values()], dtype=torch.float64)

    diff = expect_close(
        got,
        expected,
        what="NMAE",
        rtol=ctx.rtol,
        labels=labels,
        known={
            "that is the mean of the relative errors |est - AP| / |AP|, which small effects "
            "dominate (a zero effect makes it infinite); NMAE divides the mean absolute error "
            "by the mean |AP|": each(_mean_relative_error),
            "the error is normalised by the estimate's mean |est|; NMAE divides by the mean "
            "|AP| of the truth, so that every estimate is measured on the same scale": each(
                lambda e, t: float((e - t).abs().mean() / e.abs().mean())
            ),
            "the signed errors were averaged, so over- and underestimates cancel; take the "
            "absolute value of each error first": each(
                lambda e, t: float((e - t).mean() / t.abs().mean())
            ),
            "that is the mean absolute error itself, in logits; divide by the mean |AP| to "
            "compare kinds whose effects have different sizes": each(
                lambda e, t: float((e - t).abs().mean())
            ),
        },
        sign_hint="NMAE is a ratio of two means of absolute values, never negative",
    )
    return (
        f"NMAE of {', '.join(labels)} as hu.compare ({float(expected[0]):.4f} for the heads; "
        f"largest difference {diff:.1e})"
    )
