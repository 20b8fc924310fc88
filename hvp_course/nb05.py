"""Exercises of notebook 05, *Multi-step HVP against Integrated Gradients*: the midpoint rule of
Integrated Gradients along one MLP's patch path, written with plain hooks and autograd; the
nodes and weights of the composite two-point Gauss-Legendre rule; and the weights of a
Hermite rule (f and f' at a step's start, f at a second node), derived from its moment
equations, which give the package's Hermite-Radau rule at the node 3/4.

The references are ``hu.integrated_gradients``, ``ig_nodes`` of
:mod:`hvp_utils.estimators.quadrature` and a linear solve of the moment equations; the pass
lines also compare with independent ones: activation patching as K grows,
``numpy.polynomial.legendre.leggauss``, the exact integrals of monomials and the package's
``RULES["radau"]``.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
from torch import Tensor

from hvp_course.exercise import Call, Case, Context, Exercise, Mistake, Result
from hvp_course.explain import ExerciseFailed, as_values, items, shape_problem
from hvp_utils.core.components import components
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching, integrated_gradients
from hvp_utils.estimators.quadrature import RULES, ig_nodes

#: The numbers of steps K at which the IG check runs (on the two MLPs with the largest |AP|).
IG_STEPS = (1, 2, 4)
#: The numbers of steps at which the Gauss-Legendre nodes are checked.
GAUSS_STEPS = (1, 2, 3, 5)
#: The second nodes tau at which the Hermite weights are checked.
HERMITE_TAUS = (0.5, 2 / 3, 0.75, 1.0)


def mlp_hook(layer: int) -> str:
    """The hook of MLP ``layer``'s output (the ``mlp_out`` component)."""
    return f"blocks.{layer}.hook_mlp_out"


def mlp_layers(ctx: Context) -> list[int]:
    """The two MLP layers with the largest |AP| on the context's task, largest first."""

    def pick():
        mlps = components(ctx.model, kind="mlp_out")
        ap = activation_patching(ctx.model, ctx.task, mlps).values
        return [mlps[i].layer for i in ap.abs().argsort(descending=True)[:2].tolist()]

    return ctx.cached("mlp_layers", pick)


# --------------------------------------------------------------------------------------------
# 1. The midpoint rule of Integrated Gradients, by hand


def midpoint_ig_reference(model: Model, task: PatchingTask, layer: int, steps: int) -> float:
    """``IG_K = sum_k g'((k + 1/2)/K) / K`` on MLP ``layer``'s patch path
    (``hu.integrated_gradients(..., steps=K)`` of that component)."""
    comp = components(model, kind="mlp_out", layers=[layer])[0]
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


def _midpoints(steps: int) -> tuple[list[float], list[float]]:
    return ig_nodes(steps, rule="midpoint")


def _left(steps: int) -> tuple[list[float], list[float]]:
    return [k / steps for k in range(steps)], [1.0 / steps] * steps


def _midpoint_ig_passed(r: Result) -> str:
    model, task = r.ctx.model, r.ctx.task
    layers = mlp_layers(r.ctx)
    comp = components(model, kind="mlp_out", layers=[layers[0]])[0]
    ap = float(activation_patching(model, task, [comp]).values[0])
    by_case = {case.args[2:]: float(g) for case, g in zip(r.cases, r.got, strict=True)}
    last = IG_STEPS[-1]
    errors = [abs(by_case[(layers[0], k)] - ap) for k in (1, last)]
    return (
        f"IG of MLP{layers[0]} and MLP{layers[1]} at K = {', '.join(map(str, IG_STEPS))} as "
        f"hu.integrated_gradients (largest difference {r.diff:.1e}); against AP the error of "
        f"MLP{layers[0]} falls from {errors[0]:.1e} at K = 1 to {errors[1]:.1e} at K = {last}"
    )


MIDPOINT_IG = Exercise(
    name="midpoint_ig",
    notebook="05",
    summary="IG with the midpoint rule on the patch paths of the two MLPs with the largest "
    "|AP|, at K = 1, 2, 4, equals hu.integrated_gradients and approaches AP as K grows.",
    reference=midpoint_ig_reference,
    uses="hu.integrated_gradients",
    what="IG",
    cases=lambda ctx: [
        Case(f"MLP{layer}, K={k}", (ctx.model, ctx.task, layer, k))
        for layer in mlp_layers(ctx)
        for k in IG_STEPS
    ],
    prompt_hints=True,
    mistakes=(
        Mistake(
            "that is the left Riemann sum, g' at t_k = k/K (at K = 1 it is AtP): the midpoint "
            "rule takes g' at the middle of each step, t_k = (k + 1/2)/K, which cancels the "
            "first error term",
            wrong=lambda model, task, layer, steps: ig_by_hand(model, task, layer, *_left(steps)),
        ),
        Mistake(
            "that is the sum of the K slopes without the step width: each node's g'(t_k) "
            "stands for the area of a step of width h = 1/K, so multiply by 1/K",
            wrong=lambda model, task, layer, steps: ig_by_hand(
                model, task, layer, _midpoints(steps)[0], [1.0] * steps
            ),
        ),
        Mistake(
            "wrong sign: the path starts at the corrupted activation, a(t) = a_r + t (a_c - "
            "a_r), and g'(t) = <grad_a m(a(t)), a_c - a_r>",
            wrong=lambda model, task, layer, steps: ig_by_hand(
                model, task, layer, *_midpoints(steps), reverse=True
            ),
        ),
        Mistake(
            "that path runs through the clean prompt: the patch path of denoising runs the "
            "corrupted prompt and moves the MLP's output from a_r (t = 0) to a_c (t = 1)",
            wrong=lambda model, task, layer, steps: ig_by_hand(
                model, task, layer, *_midpoints(steps), base_tokens="clean"
            ),
        ),
    ),
    passed=_midpoint_ig_passed,
)


# --------------------------------------------------------------------------------------------
# 2. The Gauss-Legendre nodes and weights


def gauss_legendre_reference(steps: int) -> tuple[list[float], list[float]]:
    """The composite two-point Gauss-Legendre rule on [0, 1] with K steps (``ig_nodes``)."""
    return ig_nodes(steps, rule="gauss")


def _gauss_slip(steps: int, slip: str) -> tuple[list[float], list[float]]:
    """Wrong versions of the rule: the Legendre nodes of [-1, 1] unmapped, weights h, weights
    1, the offset 1/(2 sqrt 3) not scaled by h."""
    h, offset = 1.0 / steps, 0.5 / math.sqrt(3)
    nodes = gauss_legendre_reference(steps)[0]
    if slip == "unmapped":
        return [s / math.sqrt(3) for _ in range(steps) for s in (-1, 1)], [1.0] * (2 * steps)
    if slip == "weights h":
        return nodes, [h] * (2 * steps)
    if slip == "weights 1":
        return nodes, [1.0] * (2 * steps)
    if slip == "offset unscaled":
        unscaled = [(k + 0.5) * h + s * offset for k in range(steps) for s in (-1, 1)]
        return unscaled, [h / 2] * (2 * steps)
    raise ValueError(slip)


def _read_rule(output, case: Case) -> Tensor:
    """The learner's (nodes, weights) as a ``[2, 2K]`` tensor sorted by node, or a failure
    saying why not."""
    __tracebackhide__ = True
    (steps,) = case.args
    parts = items(output, ("nodes", "weights"), f"K={steps}")
    rule = []
    for got, what in zip(parts, ("nodes", "weights"), strict=True):
        values = as_values(got, what)
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
        rule.append(values.reshape(-1))
    order = rule[0].argsort(stable=True)
    return torch.stack([rule[0][order], rule[1][order]])


def _outside_unit(calls: list[Call]) -> bool:
    """Some node lies outside [0, 1]."""
    for call in calls:
        try:
            nodes = as_values(call.output[0], "nodes")
        except (ExerciseFailed, TypeError, IndexError, KeyError):
            continue
        if bool(((nodes < 0) | (nodes > 1)).any()):
            return True
    return False


def _gauss_passed(r: Result) -> str:
    legendre, legendre_w = np.polynomial.legendre.leggauss(2)
    for case, (nodes, weights) in zip(r.cases, r.expected, strict=True):
        (steps,) = case.args
        h = 1.0 / steps
        mapped = torch.tensor(
            sorted(k * h + h * (1 + x) / 2 for k in range(steps) for x in legendre),
            dtype=torch.float64,
        )
        mapped_w = torch.tensor([h * w / 2 for _ in range(steps) for w in legendre_w])
        assert torch.allclose(mapped, nodes) and torch.allclose(mapped_w.double(), weights)
        moments = [float((weights * nodes**d).sum()) for d in range(5)]
        assert all(abs(moments[d] - 1 / (d + 1)) < 1e-12 for d in range(4)), moments
        assert abs((1 / 5 - moments[4]) - 1 / (180 * steps**4)) < 1e-12, moments
    return (
        f"nodes and weights at K = {', '.join(map(str, GAUSS_STEPS))} as ig_nodes and numpy's "
        f"leggauss(2) mapped to each step (largest difference {r.diff:.1e}); exact on t^0..t^3, "
        "error 1/(180 K^4) on t^4"
    )


GAUSS_LEGENDRE = Exercise(
    name="gauss_legendre",
    notebook="05",
    summary="The nodes and weights of the composite two-point Gauss-Legendre rule at K = 1, 2, "
    "3, 5 equal ig_nodes(K, 'gauss') and numpy's leggauss(2) mapped to each step, and the rule "
    "integrates t^d exactly for d <= 3, with the error 1/(180 K^4) on t^4.",
    reference=gauss_legendre_reference,
    uses="ig_nodes(steps, 'gauss') of hvp_utils.estimators.quadrature",
    what="(nodes, weights)",
    cases=lambda ctx: [
        Case(
            f"K={k}",
            (k,),
            labels=tuple(
                f"{what} {i} at K={k}" for what in ("node", "weight") for i in range(2 * k)
            ),
        )
        for k in GAUSS_STEPS
    ],
    read=_read_rule,
    rtol=1e-9,
    mistakes=(
        Mistake(
            "the offset 1/(2 sqrt 3) from each step's middle must be scaled by the step width "
            "too: t = (k + 1/2 -+ 1/(2 sqrt 3)) h (at K = 1, where h = 1, the two agree)",
            wrong=lambda steps: _gauss_slip(steps, "offset unscaled"),
        ),
        Mistake(
            "some nodes lie outside [0, 1]: those are the Legendre nodes of [-1, 1]. Map each "
            "step's -+1/sqrt(3) to t_k + h (1 -+ 1/sqrt(3)) / 2 and halve the weights with the "
            "interval, to h/2",
            wrong=lambda steps: _gauss_slip(steps, "unmapped"),
            seen=_outside_unit,
        ),
        Mistake(
            "each weight is h/2 (a step of width h holds two nodes; the weights of one step "
            "add up to h, all of them to 1)",
            wrong=lambda steps: _gauss_slip(steps, "weights h"),
        ),
        Mistake(
            "each weight is h/2 = 1/(2K): the Legendre weights 1 of [-1, 1] shrink with the "
            "interval",
            wrong=lambda steps: _gauss_slip(steps, "weights 1"),
        ),
        Mistake(
            "the two-point Gauss-Legendre rule has two nodes per step",
            wrong=partial(ig_nodes, rule="midpoint"),
        ),
    ),
    passed=_gauss_passed,
)


# --------------------------------------------------------------------------------------------
# 3. The weights of a Hermite rule, from its moment equations


def hermite_weights_reference(tau: float) -> tuple[float, float, float]:
    """The weights ``(w0, w1, w2)`` of ``int_0^1 f ~ w0 f(0) + w1 f'(0) + w2 f(tau)`` that
    integrate ``f = t^d`` exactly for ``d = 0, 1, 2``: the moment equations
    ``w0 [d = 0] + w1 [d = 1] + w2 tau^d = 1 / (d + 1)``, solved as a linear system."""
    rows = [[1.0 if d == 0 else 0.0, 1.0 if d == 1 else 0.0, tau**d] for d in range(3)]
    weights = np.linalg.solve(np.array(rows), np.array([1 / (d + 1) for d in range(3)]))
    return tuple(float(w) for w in weights)


def _hermite_slip(tau: float, slip: str) -> tuple[float, float, float]:
    """Wrong weights: exact for t^3 instead of t^2, right-hand sides 1 instead of 1/(d+1),
    w2 from w2 tau = 1/3, w1 with its sign flipped, the weights in another order."""
    if slip == "cubic":
        w2 = 1 / (4 * tau**3)
        return 1 - w2, 0.5 - w2 * tau, w2
    if slip == "ones":
        w2 = 1 / tau**2
        return 1 - w2, 1 - w2 * tau, w2
    if slip == "tau":
        w2 = 1 / (3 * tau)
        return 1 - w2, 0.5 - w2 * tau, w2
    w0, w1, w2 = hermite_weights_reference(tau)
    if slip == "sign":
        return w0, -w1, w2
    if slip == "order":
        return w0, w2, w1
    raise ValueError(slip)


def _hermite_passed(r: Result) -> str:
    cubic = []
    for case, weights in zip(r.cases, r.expected, strict=True):
        (tau,) = case.args
        w0, w1, w2 = (float(w) for w in weights)
        for d in range(3):  # the moment equations, as sums of the rule on t^d
            rule = w0 * (d == 0) + w1 * (d == 1) + w2 * tau**d
            assert abs(rule - 1 / (d + 1)) < 1e-12, (tau, d)
        cubic.append(f"{1 / 4 - w2 * tau**3:+.3f}")
    radau = RULES["radau"]
    at_radau = hermite_weights_reference(radau.nodes[1])
    expected = (radau.first_weights[0], radau.second_weights[0], radau.first_weights[1])
    assert np.allclose(at_radau, expected, rtol=0, atol=1e-12), (at_radau, expected)
    taus = ", ".join(f"{t:.3g}" for t in HERMITE_TAUS)
    return (
        f"weights at tau = {taus} solve the moment equations of 1, t, t^2 (largest difference "
        f"{r.diff:.1e}); on t^3 the rule misses 1/4 - w2 tau^3 = {', '.join(cubic)}: at "
        "tau = 3/4 the weights are 11/27, 1/18, 16/27, hu's Hermite-Radau rule"
    )


HERMITE_WEIGHTS = Exercise(
    name="hermite_weights",
    notebook="05",
    summary="The weights of int_0^1 f ~ w0 f(0) + w1 f'(0) + w2 f(tau) at tau = 1/2, 2/3, 3/4, "
    "1 solve the moment equations of 1, t, t^2, and at tau = 3/4 they are the Hermite-Radau "
    "rule's.",
    reference=hermite_weights_reference,
    uses="a linear solve of the moment equations (numpy)",
    what="(w0, w1, w2)",
    cases=lambda ctx: [
        Case(
            f"tau={tau:.3g}",
            (tau,),
            labels=tuple(f"{w} at tau={tau:.3g}" for w in ("w0", "w1", "w2")),
        )
        for tau in HERMITE_TAUS
    ],
    rtol=1e-9,
    mistakes=(
        Mistake(
            "those weights integrate t^3 exactly but not t^2: three weights answer three "
            "equations, those of 1, t and t^2, for any tau; t^3 is the extra condition that "
            "picks tau (at tau = 3/4 the two agree)",
            wrong=lambda tau: _hermite_slip(tau, "cubic"),
        ),
        Mistake(
            "each moment equation's right-hand side is the exact integral int_0^1 t^d dt = "
            "1/(d+1), not 1",
            wrong=lambda tau: _hermite_slip(tau, "ones"),
        ),
        Mistake(
            "on f = t^2 the node tau contributes w2 tau^2 (f(tau) = tau^2), so w2 = 1/(3 tau^2)",
            wrong=lambda tau: _hermite_slip(tau, "tau"),
        ),
        Mistake(
            "the sign of w1: the equation of f = t is w1 + w2 tau = 1/2 (f'(0) = 1, f(0) = 0), "
            "so w1 = 1/2 - w2 tau",
            wrong=lambda tau: _hermite_slip(tau, "sign"),
        ),
        Mistake(
            "return the weights in the rule's order: w0 for f(0), w1 for f'(0), w2 for f(tau)",
            wrong=lambda tau: _hermite_slip(tau, "order"),
        ),
    ),
    passed=_hermite_passed,
)


EXERCISES = (MIDPOINT_IG, GAUSS_LEGENDRE, HERMITE_WEIGHTS)
