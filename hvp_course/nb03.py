"""Exercises of notebook 03, *Reliability scores and the Lagrange interval*: the reliability
score ``r_c`` from ``g'(0)`` and ``g''(0)``, the Lagrange interval of AtP from an estimate of
``max |g''|``, and the three flag reasons.

The references are the package's :func:`hvp_utils.reliability_score`,
:func:`hvp_utils.lagrange_interval` and :func:`hvp_utils.flag_reasons`. Each check runs on the
derivatives of a small sweep on the notebook's model and task (the MLP outputs and the queries
of the last layer, :func:`hvp_utils.error_bounds` with three nodes) and on a few synthetic
cases chosen so that every known mistake shows (a component with ``g'(0) = g''(0) = 0``, a
curvature that flips the sign of the estimate, intervals crossing ``+theta`` and ``-theta``);
the interval's pass line also compares with ``error_bounds``' own ``lower``/``upper`` and with
activation patching (how many AP effects it holds).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from hvp_course.exercise import Call, Case, Context, Exercise, Mistake, Result
from hvp_course.explain import ExerciseFailed, as_values, booleans, tensor_pair
from hvp_utils.analysis.reliability import (
    error_bounds,
    flag_reasons,
    lagrange_interval,
    reliability_score,
    straddles,
)
from hvp_utils.core.components import Component, components
from hvp_utils.estimators import activation_patching

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
# 1. The reliability score


def reliability_score_reference(first: Tensor, second: Tensor) -> Tensor:
    """``r = |g''/2| / (|g'| + |g''/2| + eps)`` (``hu.reliability_score``)."""
    return reliability_score(first, second)


def _score_unhalved(first: Tensor, second: Tensor) -> Tensor:
    return second.abs() / (first.abs() + second.abs() + 1e-12)


def _score_ratio(first: Tensor, second: Tensor) -> Tensor:
    return (second / 2).abs() / first.abs()


def _score_first_share(first: Tensor, second: Tensor) -> Tensor:
    return first.abs() / (first.abs() + (second / 2).abs() + 1e-12)


def _score_signed(first: Tensor, second: Tensor) -> Tensor:
    return (second / 2) / (first + second / 2 + 1e-12)


def _score_no_eps(first: Tensor, second: Tensor) -> Tensor:
    half = (second / 2).abs()
    return half / (first.abs() + half)


def _unbounded(calls: list[Call]) -> bool:
    """Some score lies above 1 (or is infinite), none below 0: a share of absolute values
    divided by |g'| alone."""
    for call in calls:
        try:
            values = as_values(call.output, "r_c")
        except ExerciseFailed:
            continue
        values = values[~values.isnan()]
        if bool((values >= 0).all()) and bool((values > 1).any()):
            return True
    return False


def _score_cases(ctx: Context) -> list[Case]:
    first, second, _, labels = _columns(ctx)
    return [Case("the sweep and the synthetic cases", (first, second), labels=tuple(labels))]


RELIABILITY_SCORE = Exercise(
    name="reliability_score",
    notebook="03",
    summary="r_c of the MLP outputs and last-layer queries (from their g'(0), g''(0)) and of "
    "synthetic cases (g' = 0, g'' = 0, both 0) equals hu.reliability_score.",
    reference=reliability_score_reference,
    uses="hu.reliability_score",
    what="r_c",
    cases=_score_cases,
    axes=("component",),
    mistakes=(
        Mistake(
            "the whole g''(0) was used; the second-order Taylor term is g''(0)/2, and the "
            "score is its share |g''/2| / (|g'| + |g''/2| + eps)",
            wrong=_score_unhalved,
        ),
        Mistake(
            "that is |g''/2| / |g'|, which is unbounded (infinite where g' = 0); divide by the "
            "sum |g'| + |g''/2| + eps, so that the score lies in [0, 1)",
            wrong=_score_ratio,
            seen=_unbounded,
        ),
        Mistake(
            "that is |g'| / (|g'| + |g''/2|), the share first order keeps, i.e. 1 - r; the "
            "score is the share it misses, |g''/2| on top",
            wrong=_score_first_share,
        ),
        Mistake(
            "the signs were kept: the score is a share of absolute values, |g''/2| / (|g'| + "
            "|g''/2| + eps), never negative",
            wrong=_score_signed,
        ),
        Mistake(
            "r_c is NaN where g'(0) = g''(0) = 0: 0 / 0. Add the small eps (1e-12) to the "
            "denominator, so that a flat path scores 0",
            wrong=_score_no_eps,
        ),
    ),
    passed=lambda r: (
        f"r_c of {len(_sweep(r.ctx)['names'])} components of the model and {len(SYNTHETIC)} "
        f"synthetic cases as hu.reliability_score (largest difference {r.diff:.1e})"
    ),
)


# --------------------------------------------------------------------------------------------
# 2. The Lagrange interval


def lagrange_interval_reference(first: Tensor, max_second: Tensor) -> tuple[Tensor, Tensor]:
    """``[g'(0) - M2_hat / 2, g'(0) + M2_hat / 2]`` (``hu.lagrange_interval``)."""
    return lagrange_interval(first, max_second)


def _interval_cases(ctx: Context) -> list[Case]:
    """The sweep with its refined maximum and with its node maximum (the notebook's
    node-only interval), and the synthetic cases."""
    sweep = _sweep(ctx)
    first, _, maximum, labels = _columns(ctx)
    first = torch.cat([first, sweep["first"]])
    maximum = torch.cat([maximum, sweep["max_sampled"]])
    labels = labels + [f"{name} (node maximum)" for name in sweep["names"]]
    ends = tuple(f"{end} of {name}" for end in ("lower", "upper") for name in labels)
    return [Case("the sweep and the synthetic cases", (first, maximum), labels=ends)]


def _interval_passed(r: Result) -> str:
    sweep = _sweep(r.ctx)
    n_model = len(sweep["names"])
    got = r.got[0]
    ours = torch.stack([sweep["lower"], sweep["upper"]])
    package_gap = float((got[:, :n_model] - ours).abs().max())
    assert package_gap <= r.ctx.rtol * max(1.0, float(ours.abs().max())), package_gap
    ap = activation_patching(r.ctx.model, r.ctx.task, _sweep_components(r.ctx)).values
    inside = int(((got[0, :n_model] <= ap) & (ap <= got[1, :n_model])).sum())
    return (
        f"the Lagrange intervals of {n_model} components (refined and node maximum) and "
        f"{len(SYNTHETIC)} synthetic cases as hu.lagrange_interval and hu.error_bounds "
        f"(largest difference {r.diff:.1e}); they hold AP for {inside} of the {n_model}"
    )


LAGRANGE_INTERVAL = Exercise(
    name="lagrange_interval",
    notebook="03",
    summary="The Lagrange interval of the MLP outputs and last-layer queries (from AtP and the "
    "estimated max |g''|, refined and node-only) and of synthetic cases equals "
    "hu.lagrange_interval and hu.error_bounds' lower/upper.",
    reference=lagrange_interval_reference,
    uses="hu.lagrange_interval",
    what="(lower, upper)",
    cases=_interval_cases,
    read=lambda output, case: tensor_pair(output, ("lower", "upper"), len(case.args[0])),
    axes=("end", "component"),
    mistakes=(
        Mistake(
            "the half-width is M2_hat: the Lagrange remainder is g''(xi)/2, so |Delta - AtP| "
            "<= M2_hat / 2 and the interval is AtP -+ M2_hat / 2",
            wrong=lambda first, m2: (first - m2, first + m2),
        ),
        Mistake(
            "that is the interval of the error Delta - AtP, [-M2_hat/2, +M2_hat/2]; the "
            "interval of the effect itself is centred on AtP: add AtP to both ends",
            wrong=lambda first, m2: (-m2 / 2, m2 / 2),
        ),
        Mistake(
            "that is (centre, radius) = (AtP, M2_hat / 2); return the two ends, "
            "(AtP - M2_hat / 2, AtP + M2_hat / 2)",
            wrong=lambda first, m2: (first, m2 / 2),
        ),
        Mistake(
            "lower and upper are swapped: return (AtP - M2_hat / 2, AtP + M2_hat / 2), the "
            "lower end first",
            wrong=lambda first, m2: (first + m2 / 2, first - m2 / 2),
        ),
    ),
    passed=_interval_passed,
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

EXERCISES = (RELIABILITY_SCORE, LAGRANGE_INTERVAL, FLAG_COMPONENTS)
