"""Exercises of notebook 05, *Multi-step HVP against Integrated Gradients*: the midpoint rule of
Integrated Gradients along one MLP's patch path, written with plain hooks and autograd; the
weights of a Hermite rule (f and f' at a step's start, f at a second node), derived from its
moment equations, which give the package's Hermite-Radau rule at the node 3/4; and an
a-posteriori error estimate of a quadrature rule (Richardson): the observed order and the error
of the finest of three estimates at K, 2K and 4K, from the estimates alone.

The references are ``hu.integrated_gradients``, a linear solve of the moment equations and the
closed form of the error estimate; the pass lines also compare with independent ones:
activation patching as K grows, the exact integrals of monomials and the package's
``RULES["radau"]``, the order and error of sequences ``I + C K^-p`` and the true error of IG
and multi-step HVP against activation patching.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from hvp_course.exercise import Call, Case, Context, Exercise, Mistake, Result
from hvp_course.explain import ExerciseFailed, close, scale_of, tensor_pair
from hvp_utils.core.components import components
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching, integrated_gradients, multistep_hvp
from hvp_utils.estimators.quadrature import RULES, ig_nodes

#: The numbers of steps K at which the IG check runs (on the two MLPs with the largest |AP|).
IG_STEPS = (1, 2, 4)
#: The second nodes tau at which the Hermite weights are checked.
HERMITE_TAUS = (0.5, 2 / 3, 0.75, 1.0)
#: The three numbers of steps K, 2K, 4K of the error estimate's check on the model.
RICHARDSON_STEPS = (2, 4, 8)


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
# 2. The weights of a Hermite rule, from its moment equations


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


# --------------------------------------------------------------------------------------------
# 3. An a-posteriori error estimate (Richardson), without activation patching

#: Sequences ``I_K = I + C K^-p`` of the check, as ``(I, C, p)``: both signs of C, integer
#: and fractional orders; the estimate recovers p and ``|C (4K)^-p|`` from them exactly.
POWER_LAWS = (
    (1.0, 0.5, 1.0),
    (-0.3, -3.0, 2.0),
    (0.2, 2.0, 4.0),
    (2.0, 0.8, 2.5),
    (0.7, -0.05, 3.0),
)
#: The steps K, 2K, 4K of the power laws.
POWER_STEPS = (1, 2, 4)
#: The edge cases of the contract, as the rows ``I_K, I_2K, I_4K`` (dyadic numbers, so that
#: the differences are exact): converged (d2 = 0, with d1 = 0 or not), then not yet
#: asymptotic (|d1| < |d2|, |d1| = |d2|, d1 and d2 of opposite signs).
EDGE_CASES = {
    "constant": (0.375, 0.375, 0.375),
    "exact from 2K": (0.625, 0.5, 0.5),
    "growing": (0.0, 0.125, 0.375),
    "even": (0.0, 0.25, 0.5),
    "oscillating": (1.0, 0.5, 0.75),
}
CONVERGED, UNTRUSTED = ("constant", "exact from 2K"), ("growing", "even", "oscillating")
POWER_LABEL, EDGE_LABEL = "I + C K^-p", "edge cases"
#: The estimators of the check on the model: label -> (rule, estimator).
RICHARDSON_RULES = {
    "IG midpoint": ("midpoint", integrated_gradients),
    "multi-step HVP taylor": ("taylor", multistep_hvp),
}


def _richardson(estimates: Tensor, slip: str | None = None) -> tuple[Tensor, Tensor]:
    """The observed order and the estimated error of the finest estimate, columnwise, and the
    slips of the mistakes below (``slip``).

    Under ``e(K) = I_K - I = C K^-p``: ``d1 = I_2K - I_K = C K^-p (2^-p - 1)`` and
    ``d2 = I_4K - I_2K = 2^-p d1``, so ``p = log2(|d1| / |d2|)``; ``d2 = e(4K) - e(2K) =
    (1 - 2^p) e(4K)``, so ``|e(4K)| = |d2| / (2^p - 1)``. Converged (``d2 = 0``): order nan,
    error 0; not yet asymptotic (``|d1| <= |d2|`` or ``d1 d2 < 0``: a power law's differences
    shrink and keep one sign): order nan, error inf."""
    d1, d2 = estimates[1] - estimates[0], estimates[2] - estimates[1]
    ratio = d1.abs() / d2.abs()  # 2^p
    order = torch.log2(ratio)
    error = d2.abs() / (2**order - 1)
    # the wrong orders (the error stays right) and the wrong errors
    wrong_order = {"ratio": ratio, "ln": torch.log(ratio), "inverted": torch.log2(1 / ratio)}
    wrong_error = {
        "over 2^p": d2.abs() / 2**order,
        "last change": d2.abs(),
        "middle": d1.abs() / (2**order - 1),
        "coarsest": 2**order * d1.abs() / (2**order - 1),
        "signed": -d2 / (2**order - 1),
        "plus one": d2.abs() / (2**order + 1),
    }
    order = wrong_order.get(slip, order)
    error = wrong_error.get(slip, error)
    shrinking, one_sign = d1.abs() > d2.abs(), d1 * d2 >= 0
    untrusted = {
        "no guard": torch.zeros_like(shrinking),
        "no sign guard": ~shrinking,
        "no magnitude guard": ~one_sign,
    }.get(slip, ~(shrinking & one_sign))
    converged = d2 == 0
    if slip == "converged late":  # the pre-asymptotic test first: the constant column fails it
        converged = converged & ~untrusted
    untrusted = untrusted & ~converged
    unmeasured = {"untrusted order": converged, "converged order": untrusted}.get(
        slip, converged | untrusted
    )
    order = torch.where(unmeasured, torch.full_like(order, math.nan), order)
    refused = torch.full_like(error, math.nan if slip == "untrusted nan" else math.inf)
    error = torch.where(converged, torch.zeros_like(error), torch.where(untrusted, refused, error))
    return order, error


def estimated_error_reference(estimates: Tensor) -> tuple[Tensor, Tensor]:
    """The observed order ``p = log2(|d1| / |d2|)`` and the estimated error of the finest
    estimate ``|d2| / (2^p - 1)`` of the rows ``I_K, I_2K, I_4K`` (``d1 = I_2K - I_K``,
    ``d2 = I_4K - I_2K``); nan and 0 where ``d2 = 0``, nan and inf where ``|d1| <= |d2|``
    or ``d1 d2 < 0``."""
    return _richardson(estimates)


def _columns(rows: list[tuple[float, float, float]]) -> Tensor:
    """Columns of ``(I_K, I_2K, I_4K)`` as the ``[3, n]`` input."""
    return torch.tensor(rows, dtype=torch.float64).T.contiguous()


def power_law_estimates() -> Tensor:
    """``I + C K^-p`` at ``K = 1, 2, 4`` for every :data:`POWER_LAWS` entry, ``[3, n]``."""
    return _columns([tuple(i + c * k**-p for k in POWER_STEPS) for i, c, p in POWER_LAWS])


def richardson_model(ctx: Context) -> dict:
    """On the two MLPs with the largest |AP| of the context: their names, AP, and the
    estimates ``[3, 2]`` of each :data:`RICHARDSON_RULES` entry at :data:`RICHARDSON_STEPS`."""

    def compute():
        comps = [components(ctx.model, kind="mlp_out", layers=[m])[0] for m in mlp_layers(ctx)]
        estimates = {
            label: torch.stack(
                [
                    fn(ctx.model, ctx.task, comps, steps=k, rule=rule).values.detach()
                    for k in RICHARDSON_STEPS
                ]
            )
            for label, (rule, fn) in RICHARDSON_RULES.items()
        }
        ap = activation_patching(ctx.model, ctx.task, comps).values.detach()
        return {"names": [c.name for c in comps], "ap": ap, "estimates": estimates}

    return ctx.cached("richardson_model", compute)


def _richardson_labels(names: list[str]) -> tuple[str, ...]:
    return tuple(f"{what} of {name}" for what in ("order", "error") for name in names)


def _richardson_cases(ctx: Context) -> list[Case]:
    power = [f"p={p:g}, C={c:+g}" for _, c, p in POWER_LAWS]
    cases = [
        Case(POWER_LABEL, (power_law_estimates(),), labels=_richardson_labels(power)),
        Case(
            EDGE_LABEL,
            (_columns(list(EDGE_CASES.values())),),
            labels=_richardson_labels(list(EDGE_CASES)),
        ),
    ]
    model = richardson_model(ctx)
    steps = ", ".join(map(str, RICHARDSON_STEPS))
    for label, estimates in model["estimates"].items():
        names = [f"{name} ({label})" for name in model["names"]]
        cases.append(
            Case(f"{label}, K = {steps}", (estimates.clone(),), labels=_richardson_labels(names))
        )
    return cases


def _read_estimate(output, case: Case) -> Tensor:
    """The learner's (order, error) as a ``[2, n]`` tensor, or a failure saying why not."""
    __tracebackhide__ = True
    return tensor_pair(output, ("order", "error"), case.args[0].shape[1])


def _pair(call: Call) -> Tensor | None:
    """What a call returned as ``[2, n]`` (None when it raised or returned something else)."""
    if call.error is not None:
        return None
    try:
        got = _read_estimate(call.output, call.case)
    except (ExerciseFailed, TypeError, ValueError, RuntimeError, IndexError):
        return None
    return got if tuple(got.shape) == (2, call.case.args[0].shape[1]) else None


def _agree(got: Tensor, expected: Tensor) -> bool:
    """Equal to float rounding, nan with nan and inf with inf."""
    return close(got, expected, 1e-6, scale_of(expected))


def _same_row(row: int, slip: str) -> Callable[[list[Call]], bool]:
    """A predicate: where the estimate is trusted (finite, nonzero error), the learner's
    ``row`` (0 the order, 1 the error) is the slip's on every case."""

    def seen(calls: list[Call]) -> bool:
        compared = False
        for call in calls:
            got = _pair(call)
            if got is None:
                return False
            (estimates,) = call.case.args
            expected = _richardson(estimates)[1]
            trusted = torch.isfinite(expected) & (expected != 0)
            wrong = _richardson(estimates, slip)[row].double()
            if not _agree(got[row][trusted], wrong[trusted]):
                return False
            compared = compared or bool(trusted.any())
        return compared

    return seen


def _signed(calls: list[Call]) -> bool:
    """The error's size is right where it is trusted, but some entries are negative."""
    negative = False
    for call in calls:
        got = _pair(call)
        if got is None:
            return False
        expected = _richardson(call.case.args[0])[1].double()
        trusted = torch.isfinite(expected) & (expected != 0)
        if not _agree(got[1][trusted].abs(), expected[trusted]):
            return False
        negative = negative or bool((got[1][trusted] < 0).any())
    return negative


def _edge(calls: list[Call]) -> dict[str, tuple[float, float]] | None:
    """The learner's (order, error) of every edge case, by name (None when unreadable)."""
    for call in calls:
        if call.case.label == EDGE_LABEL:
            got = _pair(call)
            if got is None:
                return None
            return {name: (float(o), float(e)) for name, o, e in zip(EDGE_CASES, *got, strict=True)}
    return None


def _edge_seen(test: Callable[[dict[str, tuple[float, float]]], bool]):
    """A predicate on the learner's edge cases."""

    def seen(calls: list[Call]) -> bool:
        edge = _edge(calls)
        return edge is not None and test(edge)

    return seen


def _differences_text(name: str) -> str:
    """``d1 = ..., d2 = ...`` of edge case ``name``."""
    coarse, middle, fine = EDGE_CASES[name]
    return f"d1 = {middle - coarse:+g}, d2 = {fine - middle:+g}"


def _finite(edge: dict, name: str) -> bool:
    return math.isfinite(edge[name][1])


def _other_values(calls: list[Call]) -> bool:
    """The edge cases are right (nan, 0 and inf where the reference has them) but some order
    or error where the estimate is trusted is not."""
    differs = False
    for call in calls:
        got = _pair(call)
        if got is None:
            return False
        expected = torch.stack(_richardson(call.case.args[0])).double()
        trusted = torch.isfinite(expected[1]) & (expected[1] != 0)
        if not _agree(got[:, ~trusted], expected[:, ~trusted]):
            return False
        differs = differs or not _agree(got[:, trusted], expected[:, trusted])
    return differs


def _estimate_text(rule: str, name: str, order: float, error: float, true: float) -> str:
    if error == math.inf:
        return f"{rule} on {name}: not yet asymptotic (true error {true:.1e})"
    if error == 0:
        return f"{rule} on {name}: converged (true error {true:.1e})"
    return f"{rule} on {name}: order {order:.2f}, error {error:.1e} (true {true:.1e})"


def _richardson_passed(r: Result) -> str:
    # the closed forms: on I + C K^-p the estimate recovers p and |C (4K)^-p| exactly
    order, error = _richardson(power_law_estimates())
    finest = POWER_STEPS[-1]
    for j, (_, c, p) in enumerate(POWER_LAWS):
        assert math.isclose(float(order[j]), p, rel_tol=1e-9), (p, float(order[j]))
        assert math.isclose(float(error[j]), abs(c) * finest**-p, rel_tol=1e-9), (c, p)
    order, error = _richardson(_columns(list(EDGE_CASES.values())))
    assert bool(order.isnan().all()), order
    assert error.tolist() == [0.0] * len(CONVERGED) + [math.inf] * len(UNTRUSTED), error
    diff = max(
        float((g - e)[torch.isfinite(e)].abs().max()) if bool(torch.isfinite(e).any()) else 0.0
        for g, e in zip(r.got, r.expected, strict=True)
    )
    model = richardson_model(r.ctx)
    parts = []
    for label, estimates in model["estimates"].items():
        order, error = _richardson(estimates)
        true = (estimates[-1] - model["ap"]).abs()
        parts += [
            _estimate_text(label, name, float(o), float(e), float(t))
            for name, o, e, t in zip(model["names"], order, error, true, strict=True)
        ]
    steps = ", ".join(map(str, RICHARDSON_STEPS))
    return (
        f"the order and error of {len(POWER_LAWS)} sequences I + C K^-p are their closed forms "
        f"(largest difference {diff:.1e}) and the edge cases follow the contract; on this model "
        f"at K = {steps}, against the true error from AP: " + "; ".join(parts)
    )


ESTIMATED_ERROR = Exercise(
    name="estimated_error",
    notebook="05",
    summary="The observed order and the estimated error of the finest of three estimates at K, "
    "2K, 4K: exact on sequences I + C K^-p, nan and 0 when converged, nan and inf when not yet "
    "asymptotic; on IG and multi-step HVP of the two MLPs with the largest |AP| at K = 2, 4, 8 "
    "the pass line sets the estimate beside the true error against AP.",
    reference=estimated_error_reference,
    uses="the closed form of the Richardson estimate",
    what="(order, error)",
    cases=_richardson_cases,
    read=_read_estimate,
    axes=("(order, error)", "column"),
    mistakes=(
        Mistake(
            "your order is the ratio |d1| / |d2| itself: under e(K) = C K^-p that ratio is 2^p "
            "(each doubling of K divides the differences by 2^p), so the order is its base-2 "
            "logarithm, torch.log2(|d1| / |d2|)",
            wrong=lambda estimates: _richardson(estimates, "ratio"),
            seen=_same_row(0, "ratio"),
        ),
        Mistake(
            "your order is the natural logarithm of |d1| / |d2|: K doubles from row to row, so "
            "the ratio is 2^p and p is its base-2 logarithm (torch.log2, or log / log 2)",
            wrong=lambda estimates: _richardson(estimates, "ln"),
            seen=_same_row(0, "ln"),
        ),
        Mistake(
            "your orders are negative: the ratio is upside down. In the asymptotic regime the "
            "differences shrink as K grows, |d2| < |d1|, and p = log2(|d1| / |d2|) > 0",
            wrong=lambda estimates: _richardson(estimates, "inverted"),
            seen=_same_row(0, "inverted"),
        ),
        Mistake(
            "your error is |d2| / 2^p: but d2 is not the error of I_2K. It is e(4K) - e(2K), and "
            "e(2K) = 2^p e(4K), so d2 = (1 - 2^p) e(4K): divide |d2| by 2^p - 1",
            wrong=lambda estimates: _richardson(estimates, "over 2^p"),
            seen=_same_row(1, "over 2^p"),
        ),
        Mistake(
            "your error is the last change |d2|: that is 2^p - 1 times the error of I_4K (3 "
            "times too large at order 2, 15 at order 4). Write d2 = e(4K) - e(2K) with e(2K) = "
            "2^p e(4K) and solve for e(4K)",
            wrong=lambda estimates: _richardson(estimates, "last change"),
            seen=_same_row(1, "last change"),
        ),
        Mistake(
            "your error is |d1| / (2^p - 1), the error of the middle estimate I_2K: the one "
            "asked for is that of the finest, I_4K, which comes from d2 (2^p times smaller)",
            wrong=lambda estimates: _richardson(estimates, "middle"),
            seen=_same_row(1, "middle"),
        ),
        Mistake(
            "your error is that of the coarsest estimate I_K: the one asked for is that of the "
            "finest, I_4K, 4^p times smaller; it comes from d2 = e(4K) - e(2K)",
            wrong=lambda estimates: _richardson(estimates, "coarsest"),
            seen=_same_row(1, "coarsest"),
        ),
        Mistake(
            "some of your errors are negative: return the size |I_4K - I|. The signed "
            "e(4K) = -d2 / (2^p - 1) is what extrapolation subtracts, I ~ I_4K + d2 / (2^p - 1)",
            wrong=lambda estimates: _richardson(estimates, "signed"),
            seen=_signed,
        ),
        Mistake(
            "no guard for the pre-asymptotic cases: when |d1| <= |d2| (the estimates move more "
            "from 2K to 4K than from K to 2K) or d1 and d2 have opposite signs (they overshoot "
            "and come back), no C K^-p with p > 0 fits the three estimates, whose differences "
            "shrink and keep one sign. Return order nan and error inf there: the formula's "
            "number would be a guess",
            wrong=lambda estimates: _richardson(estimates, "no guard"),
            seen=_edge_seen(lambda e: _finite(e, "growing") and _finite(e, "oscillating")),
        ),
        Mistake(
            f"the oscillating column ({_differences_text('oscillating')}) got a finite error: "
            "|d1| > |d2|, but the estimates overshoot and come back, and the differences of "
            "C K^-p keep one sign. Test d1 d2 < 0 too (order nan, error inf)",
            wrong=lambda estimates: _richardson(estimates, "no sign guard"),
            seen=_edge_seen(lambda e: _finite(e, "oscillating")),
        ),
        Mistake(
            f"the growing column ({_differences_text('growing')}) got a finite error: the "
            "estimates move more from 2K to 4K than from K to 2K, so p_hat <= 0 and "
            "|d2| / (2^p - 1) is negative or infinite. Test |d1| <= |d2| too (order nan, error "
            "inf)",
            wrong=lambda estimates: _richardson(estimates, "no magnitude guard"),
            seen=_edge_seen(lambda e: _finite(e, "growing")),
        ),
        Mistake(
            "where the estimate cannot be trusted the contract asks for an error of inf (no "
            "bound at all), not nan: math.inf or torch.inf",
            wrong=lambda estimates: _richardson(estimates, "untrusted nan"),
            seen=_edge_seen(lambda e: any(math.isnan(e[n][1]) for n in UNTRUSTED)),
        ),
        Mistake(
            "where the estimate cannot be trusted (|d1| <= |d2| or opposite signs) no order was "
            "observed either: return nan for the order there, not log2(|d1| / |d2|)",
            wrong=lambda estimates: _richardson(estimates, "untrusted order"),
            seen=_edge_seen(lambda e: not all(math.isnan(e[n][0]) for n in UNTRUSTED)),
        ),
        Mistake(
            "the constant column (I_K = I_2K = I_4K) has converged: its error is 0. With "
            "d1 = d2 = 0 it also meets the pre-asymptotic condition |d1| <= |d2|, so test "
            "d2 == 0 first, as the contract lists it",
            wrong=lambda estimates: _richardson(estimates, "converged late"),
            seen=_edge_seen(lambda e: any(e[n][1] != 0 for n in CONVERGED)),
        ),
        Mistake(
            "where d2 == 0 the error is 0 but no order can be measured (log2 of |d1| / 0 is "
            "inf, of 0 / 0 nan): the contract asks for nan there",
            wrong=lambda estimates: _richardson(estimates, "converged order"),
            seen=_edge_seen(lambda e: not all(math.isnan(e[n][0]) for n in CONVERGED)),
        ),
        Mistake(
            "your edge cases are right, but where the estimate is trusted your order or error "
            "is not the one the assumption gives. Write d1 and d2 with e(K) = C K^-p: each is "
            "C K^-p times a factor, and the two factors differ by 2^-p; then d2 = e(4K) - e(2K) "
            "with e(2K) = 2^p e(4K)",
            wrong=lambda estimates: _richardson(estimates, "plus one"),
            seen=_other_values,
        ),
    ),
    passed=_richardson_passed,
)


EXERCISES = (MIDPOINT_IG, HERMITE_WEIGHTS, ESTIMATED_ERROR)
