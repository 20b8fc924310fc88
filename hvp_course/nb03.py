"""Exercises of notebook 03, *Reliability scores and the Lagrange interval*: the largest
``|g''|`` between two nodes of the path (the quadratic through both node values with the
interval's exact mean: the learner derives its coefficient and decides where its maximum
modulus lies), and the three flag reasons.

The references are the package's ``interval_maximum`` (behind :func:`hvp_utils.error_bounds`'
``max_second``) and :func:`hvp_utils.flag_reasons`. Each check runs on the derivatives of a
small sweep on the notebook's model and task (the MLP outputs and the queries of the last
layer, three nodes) and on synthetic cases chosen so that every known mistake shows (a bump
the nodes miss, a dip, straight pieces, a vertex outside the interval; a curvature that flips
the sign of the estimate, intervals crossing ``+theta`` and ``-theta``); the maximum's pass
line also compares, per component, with ``error_bounds``' own ``max_second``.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from hvp_course.exercise import Case, Context, Exercise, Mistake, Result
from hvp_course.explain import ExerciseFailed, booleans
from hvp_utils.analysis.reliability import (
    error_bounds,
    flag_reasons,
    interval_maximum,
    lagrange_interval,
    path_nodes,
    reliability_score,
    straddles,
)
from hvp_utils.core.components import Component, components
from hvp_utils.core.engine import EngineRun, path_derivatives_at

#: Nodes of the check's sweep (the notebook's default).
CHECK_NODES = 3
#: The notebook's defaults for the flags: tau, and theta as a share of the largest |AtP|.
TAU, SELECTION_SHARE = 0.3, 0.1

#: Synthetic g'(0), g''(0) and estimates of max |g''|, with names saying what each shows.
SYNTHETIC = {
    "flat path (g' = g'' = 0)": (0.0, 0.0, 0.0),
    "all curvature (g' = 0)": (0.0, 2.0, 2.5),
    "straight path (g'' = 0)": (-1.5, 0.0, 0.4),
    "curvature flips the estimate": (1.0, -3.0, 3.0),
    "curvature against g', same sign": (1.0, -1.0, 1.2),
    "large and curved": (2.0, 1.0, 1.0),
    "negative, crosses -theta": (-1.0, 0.3, 0.6),
    "crosses +theta": (1.1, 0.1, 0.4),
    "above theta, clear of it": (2.0, 0.1, 0.2),
}
#: theta for the synthetic cases.
SYNTHETIC_THRESHOLD = 1.0


def _sweep_components(ctx: Context) -> list[Component]:
    """The MLP outputs and the queries of the last layer."""
    return components(ctx.model, kind="mlp_out") + components(
        ctx.model, kind="head_q", layers=[ctx.n_layers - 1]
    )


def _sweep(ctx: Context) -> dict:
    """:func:`error_bounds` (order 1, three nodes) of :func:`_sweep_components`: names and
    kinds, g'(0), g''(0), the estimate of max |g''|, the node maximum and the interval."""

    def run() -> dict:
        bounds = error_bounds(ctx.model, ctx.task, _sweep_components(ctx), n_nodes=CHECK_NODES)
        columns = ("first", "second", "max_second", "max_sampled", "lower", "upper")
        return {
            "names": list(bounds.names),
            "kinds": list(bounds.kinds),
            **{c: getattr(bounds, c).detach().double().cpu() for c in columns},
        }

    return ctx.cached("nb03_sweep", run)


def _columns(ctx: Context) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """g'(0), g''(0) and max |g''| of the sweep, then of the synthetic cases, with labels."""
    sweep = _sweep(ctx)
    synthetic = torch.tensor(list(SYNTHETIC.values()), dtype=torch.float64)
    first = torch.cat([sweep["first"], synthetic[:, 0]])
    second = torch.cat([sweep["second"], synthetic[:, 1]])
    maximum = torch.cat([sweep["max_second"], synthetic[:, 2]])
    return first, second, maximum, sweep["names"] + list(SYNTHETIC)


# --------------------------------------------------------------------------------------------
# 1. The largest |g''| between two nodes


def _pieces(ctx: Context) -> dict:
    """g' and g'' of :func:`_sweep_components` at the sweep's nodes (``[node component]``)."""

    def run() -> dict:
        engine = EngineRun.start(ctx.model, ctx.task, _sweep_components(ctx), direction="denoising")
        pieces = path_derivatives_at(
            engine, _sweep_components(ctx), nodes=path_nodes(CHECK_NODES), order=2
        )
        return {
            "d1": torch.stack([p.d1 for p in pieces]).detach().double().cpu(),
            "d2": torch.stack([p.d2 for p in pieces]).detach().double().cpu(),
        }

    return ctx.cached("nb03_pieces", run)


def bump_maximum_reference(f_start: Tensor, f_end: Tensor, mean: Tensor) -> Tensor:
    """``max over u in [0, 1] of |q(u)|``, ``q(u) = f_start + (f_end - f_start) u + c u (1 - u)``
    with ``c = 6 (mean - (f_start + f_end) / 2)`` (``hu``'s ``interval_maximum`` on one
    interval of length 1)."""
    return interval_maximum(torch.stack([f_start, f_end]), mean[None], 1.0)


def _quadratic(f_start: Tensor, f_end: Tensor, c: Tensor, u: Tensor) -> Tensor:
    return f_start + (f_end - f_start) * u + c * u * (1 - u)


def _bump_variant(
    f_start: Tensor,
    f_end: Tensor,
    mean: Tensor,
    *,
    factor: float = 6.0,
    clamp: bool = True,
    vertex: str = "solved",
    modulus: bool = True,
) -> Tensor:
    """The maximum with the slips of the mistakes below: another ``factor`` in ``c``, the
    vertex not clamped to [0, 1], the vertex at ``u = 1/2`` or not looked at (``vertex``),
    the signed maximum instead of the modulus."""
    c = factor * (mean - (f_start + f_end) / 2)
    ends = torch.stack([f_start, f_end])
    if vertex == "none":
        return ends.abs().amax(0)
    if vertex == "middle":
        u = torch.full_like(c, 0.5)
    else:
        u = 0.5 + (f_end - f_start) / (2 * c)
        u = u.clamp(0, 1) if clamp else u
    values = torch.cat([ends, _quadratic(f_start, f_end, c, u)[None]])
    return values.abs().amax(0) if modulus else values.amax(0)


#: Synthetic (f(a), f(b), mean over [a, b]), with names saying what each shows.
SYNTHETIC_PIECES = {
    "a bump the nodes miss": (0.0, 0.0, 1.0),
    "a dip below both nodes": (-1.0, -1.0, -2.0),
    "straight, c = 0": (1.0, 3.0, 2.0),
    "flat, c = 0": (0.5, 0.5, 0.5),
    "a lopsided bump": (0.0, 1.0, 0.9),
    "vertex left of the interval": (-5.0, -2.0, -11.0 / 3.0),
    "vertex right of the interval": (1.0, -2.0, -2.0 / 3.0),
    "sign change inside": (1.0, -1.0, -0.4),
}


def _bump_cases(ctx: Context) -> list[Case]:
    """Every interval between two nodes of the sweep (g'' at both nodes, the mean of g''
    from g'), then the synthetic cases."""
    pieces, names = _pieces(ctx), _sweep(ctx)["names"]
    h = 1.0 / (CHECK_NODES - 1)
    f, d1 = pieces["d2"], pieces["d1"]
    mean = (d1[1:] - d1[:-1]) / h
    nodes = path_nodes(CHECK_NODES)
    labels = [
        f"{name}, t in [{nodes[k]:g}, {nodes[k + 1]:g}]"
        for k in range(CHECK_NODES - 1)
        for name in names
    ]
    synthetic = torch.tensor(list(SYNTHETIC_PIECES.values()), dtype=torch.float64)
    args = (
        torch.cat([f[:-1].flatten(), synthetic[:, 0]]),
        torch.cat([f[1:].flatten(), synthetic[:, 1]]),
        torch.cat([mean.flatten(), synthetic[:, 2]]),
    )
    return [Case("the sweep and the synthetic cases", args, labels=(*labels, *SYNTHETIC_PIECES))]


def _bump_passed(r: Result) -> str:
    sweep = _sweep(r.ctx)
    n_model = len(sweep["names"])
    per_interval = r.got[0][: n_model * (CHECK_NODES - 1)].reshape(CHECK_NODES - 1, n_model)
    node_max = _pieces(r.ctx)["d2"].abs().amax(0)
    yours = torch.maximum(per_interval.amax(0), node_max)
    gap = float((yours - sweep["max_second"]).abs().max())
    assert gap <= r.ctx.rtol * max(1.0, float(sweep["max_second"].abs().max())), gap
    above = int((yours > node_max * (1 + 1e-9)).sum())
    return (
        f"the largest |q| on {n_model * (CHECK_NODES - 1)} intervals of the model and "
        f"{len(SYNTHETIC_PIECES)} synthetic ones (largest difference {r.diff:.1e}); per "
        f"component it is hu.error_bounds' max_second, above the node maximum for {above} of "
        f"the {n_model}"
    )


BUMP_MAXIMUM = Exercise(
    name="bump_maximum",
    notebook="03",
    summary="The largest |q| on every interval between two nodes of the MLP outputs and "
    "last-layer queries, and on synthetic intervals (bumps, dips, straight pieces, a vertex "
    "outside), equals the package's; per component it gives hu.error_bounds' max_second.",
    reference=bump_maximum_reference,
    uses="the package's estimate of max |g''|",
    what="the largest |q|",
    cases=_bump_cases,
    axes=("interval",),
    mistakes=(
        Mistake(
            "c is off by a constant factor: the mean of q over [0, 1] is (f(a) + f(b)) / 2 + "
            "c / 6, because the integral of u (1 - u) over [0, 1] is 1/6; so c = 6 (mean - "
            "(f(a) + f(b)) / 2)",
            wrong=partial(_bump_variant, factor=1.0),
        ),
        Mistake(
            "that is the node maximum, max(|f(a)|, |f(b)|): the quadratic's vertex can lie "
            "between the nodes, and there |q| can be larger (a bump the nodes miss)",
            wrong=partial(_bump_variant, vertex="none"),
        ),
        Mistake(
            "the vertex was put at u = 1/2; that holds only when f(a) = f(b). Solve q'(u) = 0: "
            "u* = 1/2 + (f(b) - f(a)) / (2 c)",
            wrong=partial(_bump_variant, vertex="middle"),
        ),
        Mistake(
            "the vertex u* was used outside [0, 1]: the maximum is over the interval only, so "
            "clamp u* to [0, 1] (or skip it when it lies outside)",
            wrong=partial(_bump_variant, clamp=False),
        ),
        Mistake(
            "that is the largest value of q, not of |q|: a dip below zero counts as much as a "
            "bump above it; take the modulus of the end values and of q(u*)",
            wrong=partial(_bump_variant, modulus=False),
        ),
        Mistake(
            "a straight piece has c = 0 and no vertex: u* = ... / (2 c) divides by zero there. "
            "When c = 0, q is linear and its largest |q| is at an end",
            wrong=_bump_variant,
        ),
    ),
    passed=_bump_passed,
)


# --------------------------------------------------------------------------------------------
# 3. The flags


REASONS = ("flag_score", "flag_sign", "flag_threshold")


def flag_components_reference(
    first: Tensor, second: Tensor, max_second: Tensor, tau: float, threshold
) -> dict[str, Tensor]:
    """The three flag reasons of ``hu.flag_reasons``."""
    reasons = flag_reasons(first, second, tau=tau, max_second=max_second, threshold=threshold)
    return {key: getattr(reasons, key) for key in REASONS}


def _flags_variant(
    first: Tensor,
    second: Tensor,
    max_second: Tensor,
    tau: float,
    threshold,
    *,
    sign: str = "estimates",
    cross: str = "both",
) -> dict[str, Tensor]:
    """The flags with the slips of the mistakes below: ``sign="derivatives"`` (g' g'' < 0),
    ``cross="positive"`` (only +theta) or ``cross="above"`` (the interval reaches above
    theta)."""
    lower, upper = lagrange_interval(first, max_second)
    if sign == "derivatives":
        flag_sign = first * second < 0
    else:
        flag_sign = first * (first + second / 2) < 0
    if cross == "positive":
        near = (lower < threshold) & (upper > threshold)
    elif cross == "above":
        near = upper.abs() > threshold
    else:
        near = straddles(lower, upper, threshold)
    return {
        "flag_score": reliability_score(first, second) > tau,
        "flag_sign": flag_sign,
        "flag_threshold": near,
    }


def _read_reasons(got, case: Case) -> Tensor:
    """The learner's flags as a ``[reason component]`` tensor of 0/1, or a failure saying why."""
    __tracebackhide__ = True
    if not isinstance(got, dict):
        raise ExerciseFailed(
            f"return a dict {{'flag_score': ..., 'flag_sign': ..., 'flag_threshold': ...}} of "
            f"boolean tensors; got a {type(got).__name__}"
        )
    missing = [key for key in REASONS if key not in got]
    if missing:
        raise ExerciseFailed(
            f"the dict lacks {', '.join(missing)}; return the keys {', '.join(REASONS)}"
        )
    n = len(case.args[0])
    return torch.stack([booleans(got[key], n, key, strict=True) for key in REASONS])


def _flag_cases(ctx: Context) -> list[Case]:
    """One call per threshold: each kind of the sweep (theta a tenth of its largest |AtP|,
    as in the notebook), then the synthetic cases."""
    sweep = _sweep(ctx)
    first, second, maximum, labels = _columns(ctx)
    groups = {
        kind: [i for i, k in enumerate(sweep["kinds"]) if k == kind]
        for kind in dict.fromkeys(sweep["kinds"])
    }
    thetas = {
        kind: SELECTION_SHARE * float(first[rows].abs().max()) for kind, rows in groups.items()
    }
    groups["synthetic"] = list(range(len(sweep["names"]), len(first)))
    thetas["synthetic"] = SYNTHETIC_THRESHOLD
    cases = []
    for kind, rows in groups.items():
        index = torch.tensor(rows)
        names = [labels[i] for i in rows]
        cases.append(
            Case(
                f"{kind} (theta {thetas[kind]:.3g})",
                (first[index], second[index], maximum[index], TAU, thetas[kind]),
                labels=tuple(f"{key} of {n}" for key in REASONS for n in names),
            )
        )
    return cases


def _flag_passed(r: Result) -> str:
    n_model = len(_sweep(r.ctx)["names"])
    model_rows = torch.cat(
        [g for g, c in zip(r.got, r.cases, strict=True) if "synthetic" not in c.label], dim=1
    )
    counts = ", ".join(f"{int(model_rows[i].sum())} {key}" for i, key in enumerate(REASONS))
    return (
        f"the flags of {n_model} components of the model ({counts}) and of "
        f"{len(SYNTHETIC)} synthetic cases as hu.flag_reasons"
    )


FLAG_COMPONENTS = Exercise(
    name="flag_components",
    notebook="03",
    summary="The three flag reasons of the MLP outputs and last-layer queries (theta a tenth "
    "of the largest |AtP| of each kind) and of synthetic cases equal hu.flag_reasons.",
    reference=flag_components_reference,
    uses="hu.flag_reasons",
    what="the flags",
    cases=_flag_cases,
    read=_read_reasons,
    axes=("reason", "component"),
    boolean=True,
    mistakes=(
        Mistake(
            "flag_sign compares the signs of g'(0) and g''(0); it compares the two estimates, "
            "AtP = g'(0) and the second-order g'(0) + g''(0)/2: flag when "
            "g'(0) (g'(0) + g''(0)/2) < 0",
            wrong=partial(_flags_variant, sign="derivatives"),
        ),
        Mistake(
            "flag_threshold tests only +theta; an effect can be negative, so the interval "
            "also straddles the threshold when it crosses -theta",
            wrong=partial(_flags_variant, cross="positive"),
        ),
        Mistake(
            "flag_threshold flags intervals that reach above theta; the interval straddles the "
            "threshold only when it holds effects on both sides of |x| = theta (lower < theta "
            "< upper, or the same at -theta)",
            wrong=partial(_flags_variant, cross="above"),
        ),
    ),
    passed=_flag_passed,
)

EXERCISES = (BUMP_MAXIMUM, FLAG_COMPONENTS)
