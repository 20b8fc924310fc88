"""Exercises of notebook 05, *Multi-step HVP against Integrated Gradients*: the midpoint rule of
Integrated Gradients along one MLP's patch path, written with plain hooks and autograd; the
nodes and weights of the composite two-point Gauss-Legendre rule; and the error order as the
least-squares slope of log error against log K.

The references are ``hu.integrated_gradients``, ``ig_nodes`` of
:mod:`hvp_utils.estimators.quadrature` and ``hu.fitted_orders``; the checkers also compare
with independent ones: activation patching as K grows, ``numpy.polynomial.legendre.leggauss``
and the exact integrals of monomials, and ``numpy.polyfit`` on constructed error curves.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from hvp_utils.analysis.benchmark import fitted_orders
from hvp_utils.core.components import components
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching, integrated_gradients
from hvp_utils.estimators.quadrature import ig_nodes
from hvp_utils.exercises.framework import (
    Context,
    ExerciseFailed,
    as_values,
    call,
    exercise,
    expect_close,
    scalar,
    shape_problem,
)

#: The numbers of steps K at which the IG check runs (on the two MLPs with the largest |AP|).
IG_STEPS = (1, 2, 4)
#: The numbers of steps at which the Gauss-Legendre nodes are checked.
GAUSS_STEPS = (1, 2, 3, 5)


def mlp_hook(layer: int) -> str:
    """The hook of MLP ``layer``'s output (the ``mlp_out`` component)."""
    return f"blocks.{layer}.hook_mlp_out"


def _mlp_layers(ctx: Context) -> list[int]:
    """The two MLP layers with the largest |AP| on the context's task, largest first."""

    def pick():
        mlps = components(ctx.model, "mlp_out")
        ap = activation_patching(ctx.model, ctx.task, mlps).values
        return [mlps[i].layer for i in ap.abs().argsort(descending=True)[:2].tolist()]

    return ctx.cached("nb05_mlp_layers", pick)


# --------------------------------------------------------------------------------------------
# 1. The midpoint rule of Integrated Gradients, by hand


def midpoint_ig_reference(model: Model, task: PatchingTask, layer: int, steps: int) -> float:
    """``IG_K = sum_k g'((k + 1/2)/K) / K`` on MLP ``layer``'s patch path
    (``hu.integrated_gradients(..., steps=K)`` of that component)."""
    comp = components(model, "mlp_out", layers=[layer])[0]
    return float(integrated_gradients(model, task, [comp], steps=steps).values[0])


def ig_by_hand(
    model: Model,
    task: PatchingTask,
    layer: int,
    nodes: list[float],
    weights: list[float],
    *,
    reverse: bool = False,
    base_tokens: str = "corrupted",
) -> float:
    """``sum_j w_j g'(t_j)`` with plain hooks, ``g(t) = m(corrupted run with a <- a_r + t (a_c
    - a_r))`` at MLP ``layer``'s output; and the slips of the mistakes below: the path walked
    from the clean end (``reverse``), or the clean prompt as the base run."""
    name = mlp_hook(layer)
    with torch.no_grad():
        _, clean = model.run_with_cache(task.clean_tokens, names_filter=name)
        _, corrupted = model.run_with_cache(task.corrupted_tokens, names_filter=name)
    start, end = corrupted[name], clean[name]
    if reverse:
        start, end = end, start
    delta = end - start
    tokens = task.corrupted_tokens if base_tokens == "corrupted" else task.clean_tokens
    total = 0.0
    for t, w in zip(nodes, weights, strict=True):
        point = (start + t * delta).detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.run_with_hooks(
                tokens, fwd_hooks=[(name, lambda act, hook, point=point: point)]
            )
            (grad,) = torch.autograd.grad(task.metric(logits), point)
        total += w * float((grad * delta).sum())
    return total


def _left(steps: int) -> tuple[list[float], list[float]]:
    return [k / steps for k in range(steps)], [1.0 / steps] * steps


@exercise(
    "midpoint_ig",
    notebook="05",
    reference=midpoint_ig_reference,
    uses="hu.integrated_gradients",
    mistakes={
        "left end points": (
            lambda model, task, layer, steps: ig_by_hand(model, task, layer, *_left(steps)),
            "left",
        ),
        "no step width": (
            lambda model, task, layer, steps: ig_by_hand(
                model, task, layer, ig_nodes(steps, "midpoint")[0], [1.0] * steps
            ),
            "step width",
        ),
        "path from the clean end": (
            lambda model, task, layer, steps: ig_by_hand(
                model, task, layer, *ig_nodes(steps, "midpoint"), reverse=True
            ),
            "wrong sign",
        ),
        "the clean prompt as the base run": (
            lambda model, task, layer, steps: ig_by_hand(
                model, task, layer, *ig_nodes(steps, "midpoint"), base_tokens="clean"
            ),
            "corrupted prompt",
        ),
    },
)
def check_midpoint_ig(fn, ctx: Context) -> str:
    """IG with the midpoint rule on the patch paths of the two MLPs with the largest |AP|, at
    K = 1, 2, 4, equals ``hu.integrated_gradients`` and approaches AP as K grows."""
    __tracebackhide__ = True
    model, task = ctx.model, ctx.task
    layers = _mlp_layers(ctx)
    cases = [(layer, k) for layer in layers for k in IG_STEPS]
    labels = [f"MLP{layer}, K={k}" for layer, k in cases]
    got = torch.stack(
        [
            scalar(
                call(fn, model, task, layer, k, name="midpoint_ig"),
                f"IG of MLP{layer} at K={k}",
                task.n_prompts,
            )
            for layer, k in cases
        ]
    )

    def reference():
        mlps = {c.layer: c for c in components(model, "mlp_out")}
        comps = [mlps[layer] for layer in layers]
        by_k = {k: integrated_gradients(model, task, comps, steps=k).values for k in IG_STEPS}
        return torch.stack([by_k[k][layers.index(layer)] for layer, k in cases])

    expected = ctx.cached("nb05_ig_reference", reference)

    def by_hand(**slip):
        return lambda: torch.tensor(
            [
                ig_by_hand(model, task, layer, *ig_nodes(k, "midpoint"), **slip)
                for layer, k in cases
            ],
            dtype=torch.float64,
        )

    diff = expect_close(
        got,
        expected,
        what="IG",
        rtol=ctx.rtol,
        labels=labels,
        n_prompts=task.n_prompts,
        known={
            "that is the left Riemann sum, g' at t_k = k/K (at K = 1 it is AtP): the midpoint "
            "rule takes g' at the middle of each step, t_k = (k + 1/2)/K, which cancels the "
            "first error term": lambda: torch.tensor(
                [ig_by_hand(model, task, layer, *_left(k)) for layer, k in cases],
                dtype=torch.float64,
            ),
            "that is the sum of the K slopes without the step width: each node's g'(t_k) "
            "stands for the area of a step of width h = 1/K, so multiply by 1/K": lambda: (
                torch.tensor([float(k) for _, k in cases], dtype=torch.float64) * expected
            ),
            "that path runs through the clean prompt: the patch path of denoising runs the "
            "corrupted prompt and moves the MLP's output from a_r (t = 0) to a_c (t = 1)": (
                by_hand(base_tokens="clean")
            ),
        },
        sign_hint="the path starts at the corrupted activation, a(t) = a_r + t (a_c - a_r), and "
        "g'(t) = <grad_a m(a(t)), a_c - a_r>",
    )
    ap = ctx.cached(
        "nb05_mlp_ap",
        lambda: (
            activation_patching(
                model, task, [components(model, "mlp_out", layers=[layer])[0] for layer in layers]
            ).values
        ),
    )
    first, last = layers[0], IG_STEPS[-1]
    errors = [abs(float(got[cases.index((first, k))] - ap[0])) for k in (1, last)]
    return (
        f"IG of MLP{layers[0]} and MLP{layers[1]} at K = {', '.join(map(str, IG_STEPS))} as "
        f"hu.integrated_gradients (largest difference {diff:.1e}); against AP the error of "
        f"MLP{first} falls from {errors[0]:.1e} at K = 1 to {errors[1]:.1e} at K = {last}"
    )


# --------------------------------------------------------------------------------------------
# 2. The Gauss-Legendre nodes and weights


def gauss_legendre_reference(steps: int) -> tuple[list[float], list[float]]:
    """The composite two-point Gauss-Legendre rule on [0, 1] with K steps (``ig_nodes``)."""
    return ig_nodes(steps, "gauss")


def _gauss_slips(steps: int, slip: str) -> tuple[list[float], list[float]]:
    """Wrong versions of the rule: the Legendre nodes of [-1, 1] unmapped, weights h, the
    offset 1/(2 sqrt 3) not scaled by h."""
    h, offset = 1.0 / steps, 0.5 / math.sqrt(3)
    if slip == "unmapped":
        return [s / math.sqrt(3) for _ in range(steps) for s in (-1, 1)], [1.0] * (2 * steps)
    if slip == "weights h":
        return ig_nodes(steps, "gauss")[0], [h] * (2 * steps)
    if slip == "offset unscaled":
        nodes = [(k + 0.5) * h + s * offset for k in range(steps) for s in (-1, 1)]
        return nodes, [h / 2] * (2 * steps)
    raise ValueError(slip)


def _rule_pair(got, steps: int) -> tuple[Tensor, Tensor]:
    """The learner's (nodes, weights) as two float64 tensors [2K], or a failure saying why."""
    __tracebackhide__ = True
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ExerciseFailed(
            f"return two sequences, (nodes, weights); got {type(got).__name__}"
            + (f" of {len(got)} items" if isinstance(got, (tuple, list)) else "")
        )
    nodes, weights = (as_values(x, what) for x, what in zip(got, ("nodes", "weights"), strict=True))
    for values, what in ((nodes, "nodes"), (weights, "weights")):
        values = values.reshape(-1) if values.dim() > 1 else values
        if values.numel() == steps:
            raise ExerciseFailed(
                f"{what} at K={steps}: one entry per step ({steps} in all), as in the midpoint "
                "rule; the two-point Gauss-Legendre rule has two nodes per step, "
                f"{2 * steps} in all"
            )
        problem = shape_problem(values, torch.zeros(2 * steps), ("node",))
        if problem:
            raise ExerciseFailed(f"{what} at K={steps}: {problem}")
    return nodes.reshape(-1), weights.reshape(-1)


@exercise(
    "gauss_legendre",
    notebook="05",
    reference=gauss_legendre_reference,
    uses="ig_nodes(steps, 'gauss') of hvp_utils.estimators.quadrature",
    mistakes={
        "Legendre nodes of [-1, 1]": (lambda steps: _gauss_slips(steps, "unmapped"), "[-1, 1]"),
        "weights h": (lambda steps: _gauss_slips(steps, "weights h"), "h/2"),
        "offset not scaled by h": (
            lambda steps: _gauss_slips(steps, "offset unscaled"),
            "scaled by the step",
        ),
        "one node per step": (lambda steps: ig_nodes(steps, "midpoint"), "two nodes per step"),
    },
)
def check_gauss_legendre(fn, ctx: Context) -> str:
    """The nodes and weights of the composite two-point Gauss-Legendre rule at K = 1, 2, 3, 5
    equal ``ig_nodes(K, "gauss")`` and numpy's ``leggauss(2)`` mapped to each step, and the
    rule integrates t^d exactly for d <= 3, with the error 1/(180 K^4) on t^4."""
    __tracebackhide__ = True
    legendre, legendre_w = np.polynomial.legendre.leggauss(2)
    worst = 0.0
    for steps in GAUSS_STEPS:
        nodes, weights = _rule_pair(call(fn, steps, name="gauss_legendre"), steps)
        unscaled = torch.tensor(_gauss_slips(steps, "offset unscaled")[0], dtype=torch.float64)
        if steps > 1 and torch.allclose(nodes.sort().values, unscaled.sort().values):
            raise ExerciseFailed(
                f"nodes at K={steps}: the offset 1/(2 sqrt 3) from each step's middle must be "
                "scaled by the step width too: t = (k + 1/2 -+ 1/(2 sqrt 3)) h (at K = 1, "
                "where h = 1, the two agree)"
            )
        outside = (nodes < 0) | (nodes > 1)
        if outside.any():
            raise ExerciseFailed(
                f"nodes at K={steps}: {nodes[outside][:4].tolist()} lie outside [0, 1]; those are "
                "the Legendre nodes of [-1, 1]: map each step's +-1/sqrt(3) to "
                "t_k + h (1 +- 1/sqrt(3)) / 2 and halve the weights with the interval, to h/2"
            )
        order = nodes.argsort()
        nodes, weights = nodes[order], weights[order]
        ref_nodes, ref_weights = (
            torch.tensor(x, dtype=torch.float64) for x in ig_nodes(steps, "gauss")
        )
        h = 1.0 / steps
        mapped = torch.tensor(
            [k * h + h * (1 + x) / 2 for k in range(steps) for x in legendre], dtype=torch.float64
        )
        mapped_w = torch.tensor(
            [h * w / 2 for _ in range(steps) for w in legendre_w], dtype=torch.float64
        )
        assert torch.allclose(mapped, ref_nodes) and torch.allclose(mapped_w, ref_weights)
        factors = {
            2.0: "each weight is h/2 (a step of width h holds two nodes; the weights of one "
            "step add up to h, all of them to 1)"
        }
        if steps > 1:
            factors[float(2 * steps)] = (
                "each weight is h/2 = 1/(2K): the Legendre weights 1 of [-1, 1] shrink with "
                "the interval"
            )
        worst = max(
            worst,
            expect_close(
                nodes,
                ref_nodes,
                what=f"nodes at K={steps}",
                rtol=1e-9,
                labels=[f"node {i}" for i in range(2 * steps)],
            ),
            expect_close(
                weights,
                ref_weights,
                what=f"weights at K={steps}",
                rtol=1e-9,
                labels=[f"weight {i}" for i in range(2 * steps)],
                factors=factors,
            ),
        )
        moments = [float((weights * nodes**d).sum()) for d in range(5)]
        exact = [1 / (d + 1) for d in range(5)]
        if any(abs(m - e) > 1e-12 for m, e in zip(moments[:4], exact[:4], strict=True)):
            raise ExerciseFailed(f"the rule at K={steps} does not integrate t^0..t^3 exactly")
        quartic = exact[4] - moments[4]
        if abs(quartic - 1 / (180 * steps**4)) > 1e-12:
            raise ExerciseFailed(
                f"at K={steps} the error on t^4 is {quartic:.3e}, expected 1/(180 K^4)"
            )
    return (
        f"nodes and weights at K = {', '.join(map(str, GAUSS_STEPS))} as ig_nodes and numpy's "
        f"leggauss(2) mapped to each step (largest difference {worst:.1e}); exact on t^0..t^3, "
        "error 1/(180 K^4) on t^4"
    )


# --------------------------------------------------------------------------------------------
# 3. The error order: a least-squares slope on log-log axes


def error_order_reference(ks, errors) -> float:
    """``p = -slope`` of the least-squares line of ``log error`` against ``log K`` (the fit
    of ``hu.fitted_orders`` on the K it keeps)."""
    ks, errors = np.asarray(ks, dtype=float), np.asarray(errors, dtype=float)
    return -float(np.polyfit(np.log(ks), np.log(errors), 1)[0])


def _end_points(ks, errors) -> float:
    ks, errors = np.asarray(ks, dtype=float), np.asarray(errors, dtype=float)
    return -float(np.log(errors[-1] / errors[0]) / np.log(ks[-1] / ks[0]))


def _synthetic() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Constructed curves: exact power laws ``C K^-p`` and one with seeded log-normal noise."""
    ks = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    rng = np.random.default_rng(5)
    noise = np.exp(rng.normal(0.0, 0.3, size=ks.size))
    return [
        ("3 K^-2", ks, 3.0 * ks**-2),
        ("0.02 K^-4", ks[:4], 0.02 * ks[:4] ** -4),
        ("K^-1.5 x noise", ks, ks**-1.5 * noise),
        ("5 K^-3 x noise, K = 2..16", ks[1:], 5.0 * ks[1:] ** -3 * noise[1:]),
    ]


def _real_curve(ctx: Context) -> pd.DataFrame:
    """Error against AP at K = 1, 2, 4, 8 of the midpoint and Gauss rules on the MLP with
    the largest |AP| (``curve=`` given to check: that convergence table instead)."""
    if "curve" in ctx.extra:
        return ctx.extra["curve"]

    def build():
        layer = _mlp_layers(ctx)[0]
        comp = components(ctx.model, "mlp_out", layers=[layer])
        ap = activation_patching(ctx.model, ctx.task, comp).values
        rows = []
        for rule, order in (("midpoint", 2), ("gauss", 4)):
            for k in (1, 2, 4, 8):
                value = integrated_gradients(ctx.model, ctx.task, comp, steps=k, rule=rule)
                error = float((value.values - ap).abs().max())
                rows.append({"rule": rule, "K": k, "max_abs_error": error, "derived_order": order})
        return pd.DataFrame(rows)

    return ctx.cached("nb05_real_curve", build)


@exercise(
    "error_order",
    notebook="05",
    reference=error_order_reference,
    uses="hu.fitted_orders (numpy.polyfit on log-log axes)",
    mistakes={
        "the slope itself": (lambda ks, errors: -error_order_reference(ks, errors), "wrong sign"),
        "log10 of the errors": (
            lambda ks, errors: (
                -float(np.polyfit(np.log(np.asarray(ks, float)), np.log10(errors), 1)[0])
            ),
            "same logarithm",
        ),
        "the two end points": (_end_points, "end points"),
        "no logarithms": (
            lambda ks, errors: -float(np.polyfit(np.asarray(ks, float), errors, 1)[0]),
            "log-log",
        ),
    },
)
def check_error_order(fn, ctx: Context) -> str:
    """The error order of constructed power laws (exact and noisy) equals numpy.polyfit's
    slope on log-log axes, and on the convergence curves it equals hu.fitted_orders."""
    __tracebackhide__ = True
    cases = _synthetic()
    curve = _real_curve(ctx)
    fits = (
        fitted_orders(curve[curve.K >= 2])
        if "floor" in curve
        else fitted_orders(curve[curve.K >= 2].assign(floor=0.0))
    )
    for rule, points in curve[curve.K >= 2].groupby("rule", sort=False):
        fit = fits.loc[rule]
        if fit.n_fitted < 2:
            continue
        points = points.sort_values("K").iloc[: int(fit.n_fitted)]
        cases.append(
            (f"{rule} on the model", points.K.to_numpy(float), points.max_abs_error.to_numpy())
        )
    labels = [name for name, _, _ in cases]
    got = torch.stack(
        [
            scalar(call(fn, ks.copy(), errors.copy(), name="error_order"), f"the order of {name}")
            for name, ks, errors in cases
        ]
    )
    expected = torch.tensor(
        [error_order_reference(ks, e) for _, ks, e in cases], dtype=torch.float64
    )
    model_rows = [name.removesuffix(" on the model") for name in labels if name.endswith("model")]
    packaged = torch.tensor(
        [fits.loc[rule, "fitted_order"] for rule in model_rows], dtype=torch.float64
    )
    assert torch.allclose(expected[len(expected) - len(model_rows) :], packaged, rtol=1e-9)
    diff = expect_close(
        got,
        expected,
        what="error order",
        rtol=1e-6,
        labels=labels,
        known={
            "that is the slope through the two end points only: least squares uses every "
            "point, so one noisy K moves the order less": torch.tensor(
                [_end_points(ks, e) for _, ks, e in cases], dtype=torch.float64
            ),
            "that is a straight line through the errors themselves: a power law C K^-p is "
            "a straight line only on log-log axes, log e = log C - p log K": torch.tensor(
                [-float(np.polyfit(ks, e, 1)[0]) for _, ks, e in cases], dtype=torch.float64
            ),
        },
        factors={
            1 / math.log(10): "log10 of the errors against the natural log of K: use the same "
            "logarithm on both axes",
            math.log(10): "the natural log of the errors against log10 of K: use the same "
            "logarithm on both axes",
        },
        sign_hint="error ~ C K^-p falls with K, so the slope of log error against log K is -p: "
        "return minus the slope",
    )
    return (
        f"the orders of {len(cases)} curves (constructed power laws and "
        f"{', '.join(model_rows)} on the model) as numpy.polyfit on log-log axes and "
        f"hu.fitted_orders (largest difference {diff:.1e})"
    )
