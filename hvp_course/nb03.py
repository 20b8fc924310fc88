"""Exercises of notebook 03, *Reliability scores and the Lagrange interval*: the reliability
score ``r_c`` from ``g'(0)`` and ``g''(0)``, the Lagrange interval of AtP from an estimate of
``max |g''|``, and the three flag reasons.

The references are the package's :func:`hvp_utils.reliability_score`,
:func:`hvp_utils.lagrange_interval` and :func:`hvp_utils.flag_reasons`. Each checker runs on
the derivatives of a small sweep on the notebook's model and task (the MLP outputs and the
queries of the last layer, :func:`hvp_utils.error_bounds` with three nodes) and on a few
synthetic cases chosen so that every registered mistake shows (a component with
``g'(0) = g''(0) = 0``, a curvature that flips the sign of the estimate, intervals crossing
``+theta`` and ``-theta``); the interval is also compared with ``error_bounds``' own
``lower``/``upper`` and with activation patching (how many AP effects it holds).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hvp_utils.analysis.reliability import (
    error_bounds,
    flag_reasons,
    lagrange_interval,
    reliability_score,
    straddles,
)
from hvp_utils.core.components import Component, components
from hvp_utils.core.results import Attribution
from hvp_utils.estimators import activation_patching
from hvp_utils.exercises.framework import (
    Context,
    ExerciseFailed,
    as_values,
    call,
    exercise,
    expect_close,
    shape_problem,
    tensor_pair,
)

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


def _sweep(ctx: Context) -> Attribution:
    """:func:`error_bounds` (order 1, three nodes) of the MLP outputs and of the queries of
    the last layer: g'(0), g''(0), the estimate of max |g''| and the Lagrange interval."""
    return ctx.cached(
        "nb03_sweep",
        lambda: error_bounds(ctx.model, ctx.task, _sweep_components(ctx), n_nodes=CHECK_NODES),
    )


def _sweep_components(ctx: Context) -> list[Component]:
    """The MLP outputs and the queries of the last layer."""
    return components(ctx.model, "mlp_out") + components(
        ctx.model, "head_q", layers=[ctx.n_layers - 1]
    )


def _cases(ctx: Context) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """g'(0), g''(0) and max |g''| of the sweep, then of the synthetic cases, with labels."""
    sweep = _sweep(ctx)
    synthetic = torch.tensor(list(SYNTHETIC.values()), dtype=torch.float64)
    first = torch.cat([sweep.first, synthetic[:, 0]])
    second = torch.cat([sweep.second, synthetic[:, 1]])
    maximum = torch.cat([sweep.max_second, synthetic[:, 2]])
    return first, second, maximum, list(sweep.names) + list(SYNTHETIC)


def _thresholds(ctx: Context) -> tuple[dict[str, float], Tensor]:
    """theta of the sweep (``SELECTION_SHARE`` of its largest |AtP|, per kind as in the
    notebook) and the per-case thresholds (the synthetic ones use ``SYNTHETIC_THRESHOLD``)."""
    sweep = _sweep(ctx)
    kinds = sweep.kinds
    per_kind = {
        kind: SELECTION_SHARE * float(sweep.first[[k == kind for k in kinds]].abs().max())
        for kind in dict.fromkeys(kinds)
    }
    theta = torch.tensor([per_kind[k] for k in kinds], dtype=torch.float64)
    return per_kind, torch.cat([theta, torch.full((len(SYNTHETIC),), SYNTHETIC_THRESHOLD)])


# --------------------------------------------------------------------------------------------
# 1. The reliability score


def reliability_score_reference(first: Tensor, second: Tensor) -> Tensor:
    """``r = |g''/2| / (|g'| + |g''/2| + eps)`` (``hu.reliability_score``)."""
    return reliability_score(first, second)


def _score_unhalved(first: Tensor, second: Tensor) -> Tensor:
    return second.abs() / (first.abs() + second.abs() + 1e-12)


def _score_ratio(first: Tensor, second: Tensor) -> Tensor:
    return (second / 2).abs() / (first.abs() + 1e-12)


def _score_first_share(first: Tensor, second: Tensor) -> Tensor:
    return first.abs() / (first.abs() + (second / 2).abs() + 1e-12)


def _score_signed(first: Tensor, second: Tensor) -> Tensor:
    return (second / 2) / (first + second / 2 + 1e-12)


def _score_no_eps(first: Tensor, second: Tensor) -> Tensor:
    half = (second / 2).abs()
    return half / (first.abs() + half)


@exercise(
    "reliability_score",
    notebook="03",
    reference=reliability_score_reference,
    uses="hu.reliability_score",
    mistakes={
        "g'' not halved": (_score_unhalved, "g''(0)/2"),
        "divided by |g'| alone": (_score_ratio, "lies in [0, 1)"),
        "the share first order keeps": (_score_first_share, "1 - r"),
        "no absolute values": (_score_signed, "absolute values"),
        "no eps": (_score_no_eps, "eps"),
    },
)
def check_reliability_score(fn, ctx: Context) -> str:
    """r_c of the MLP outputs and last-layer queries (from their g'(0), g''(0)) and of
    synthetic cases (g' = 0, g'' = 0, both 0) equals ``hu.reliability_score``."""
    __tracebackhide__ = True
    first, second, _, labels = _cases(ctx)
    got = as_values(call(fn, first.clone(), second.clone(), name="reliability_score"), "r_c")
    expected = reliability_score(first, second)
    problem = shape_problem(got, expected, ("component",))
    if problem:
        raise ExerciseFailed(f"r_c: {problem}")
    got = got.reshape(expected.shape)
    bad = ~torch.isfinite(got)
    if bad.any():
        where = [labels[i] for i in bad.nonzero().flatten().tolist()]
        both_zero = (first == 0) & (second == 0)
        if bool(bad[both_zero].all()) and not bool(bad[~both_zero].any()):
            raise ExerciseFailed(
                f"r_c is NaN at {', '.join(where)}, where g'(0) = g''(0) = 0: 0 / 0. Add the "
                "small eps (1e-12) to the denominator, so that a flat path scores 0"
            )
        raise ExerciseFailed(
            f"r_c is NaN or inf at {', '.join(where[:4])}, where g'(0) = 0: the score divides "
            "by |g'| + |g''/2| + eps, never by |g'| alone, so that it lies in [0, 1)"
        )
    diff = expect_close(
        got,
        expected,
        what="r_c",
        rtol=ctx.rtol,
        labels=labels,
        axes=("component",),
        known={
            "the whole g''(0) was used; the second-order Taylor term is g''(0)/2, and the "
            "score is its share |g''/2| / (|g'| + |g''/2| + eps)": _score_unhalved(first, second),
            "that is |g''/2| / |g'|, which is unbounded (infinite where g' = 0); divide by the "
            "sum |g'| + |g''/2| + eps, so that the score lies in [0, 1)": _score_ratio(
                first, second
            ),
            "that is |g'| / (|g'| + |g''/2|), the share first order keeps, i.e. 1 - r; the "
            "score is the share it misses, |g''/2| on top": _score_first_share(first, second),
            "the signs were kept: the score is a share of absolute values, |g''/2| / (|g'| + "
            "|g''/2| + eps), never negative": _score_signed(first, second),
        },
        sign_hint="the score is a share of absolute values, in [0, 1)",
    )
    n_model = len(_sweep(ctx))
    return (
        f"r_c of {n_model} components of the model and {len(SYNTHETIC)} synthetic cases as "
        f"hu.reliability_score (largest difference {diff:.1e})"
    )


# --------------------------------------------------------------------------------------------
# 2. The Lagrange interval


def lagrange_interval_reference(first: Tensor, max_second: Tensor) -> tuple[Tensor, Tensor]:
    """``[g'(0) - M2_hat / 2, g'(0) + M2_hat / 2]`` (``hu.lagrange_interval``)."""
    return lagrange_interval(first, max_second)


@exercise(
    "lagrange_interval",
    notebook="03",
    reference=lagrange_interval_reference,
    uses="hu.lagrange_interval",
    mistakes={
        "M2 not halved": (lambda first, m2: (first - m2, first + m2), "M2_hat / 2"),
        "the interval of the error": (lambda first, m2: (-m2 / 2, m2 / 2), "add AtP"),
        "centre and radius": (lambda first, m2: (first, m2 / 2), "(centre, radius)"),
        "upper first": (lambda first, m2: (first + m2 / 2, first - m2 / 2), "swapped"),
    },
)
def check_lagrange_interval(fn, ctx: Context) -> str:
    """The Lagrange interval of the MLP outputs and last-layer queries (from AtP and the
    estimated max |g''|, refined and node-only) and of synthetic cases equals
    ``hu.lagrange_interval`` and ``hu.error_bounds``' lower/upper."""
    __tracebackhide__ = True
    sweep = _sweep(ctx)
    first, _, maximum, labels = _cases(ctx)
    n_model = len(sweep)
    # the node maximum too: the same function gives the notebook's node-only interval
    first = torch.cat([first, sweep.first])
    maximum = torch.cat([maximum, sweep.max_sampled])
    labels = labels + [f"{name} (node maximum)" for name in sweep.names]
    got = call(fn, first.clone(), maximum.clone(), name="lagrange_interval")
    got = tensor_pair(got, ("lower", "upper"), len(first))
    expected = torch.stack(lagrange_interval(first, maximum))
    half = maximum / 2
    diff = expect_close(
        got,
        expected,
        what="(lower, upper)",
        rtol=ctx.rtol,
        labels=[f"{end} of {name}" for end in ("lower", "upper") for name in labels],
        axes=("end", "component"),
        known={
            "the half-width is M2_hat: the Lagrange remainder is g''(xi)/2, so |Delta - AtP| "
            "<= M2_hat / 2 and the interval is AtP -+ M2_hat / 2": torch.stack(
                [first - maximum, first + maximum]
            ),
            "that is the interval of the error Delta - AtP, [-M2_hat/2, +M2_hat/2]; the "
            "interval of the effect itself is centred on AtP: add AtP to both ends": (
                torch.stack([-half, half])
            ),
            "that is (centre, radius) = (AtP, M2_hat / 2); return the two ends, "
            "(AtP - M2_hat / 2, AtP + M2_hat / 2)": torch.stack([first, half]),
            "lower and upper are swapped: return (AtP - M2_hat / 2, AtP + M2_hat / 2), the "
            "lower end first": torch.stack([first + half, first - half]),
        },
        sign_hint="lower = AtP - M2_hat / 2, upper = AtP + M2_hat / 2",
    )
    # the package's own interval from the same sweep
    ours = torch.stack([sweep.lower, sweep.upper])
    package_gap = float((got[:, :n_model] - ours).abs().max())
    assert package_gap <= ctx.rtol * max(1.0, float(ours.abs().max())), package_gap
    ap = ctx.cached(
        "nb03_sweep_ap",
        lambda: activation_patching(ctx.model, ctx.task, _sweep_components(ctx)),
    ).values
    inside = int(((got[0, :n_model] <= ap) & (ap <= got[1, :n_model])).sum())
    return (
        f"the Lagrange intervals of {n_model} components (refined and node maximum) and "
        f"{len(SYNTHETIC)} synthetic cases as hu.lagrange_interval and hu.error_bounds "
        f"(largest difference {diff:.1e}); they hold AP for {inside} of the {n_model}"
    )


# --------------------------------------------------------------------------------------------
# 3. The flags


REASONS = ("flag_score", "flag_sign", "flag_threshold")


def flag_components_reference(
    first: Tensor, second: Tensor, max_second: Tensor, tau: float, threshold
) -> dict[str, Tensor]:
    """The three flag reasons of ``hu.flag_reasons``."""
    reasons = flag_reasons(first, second, tau=tau, max_second=max_second, threshold=threshold)
    return {key: reasons[key] for key in REASONS}


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


def _reasons_of(got, n: int) -> dict[str, Tensor]:
    """The learner's flags as ``{reason: [n] float tensor of 0/1}``, or a failure saying why."""
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
    out = {}
    for key in REASONS:
        if not (isinstance(got[key], Tensor) and got[key].dtype == torch.bool):
            kind = got[key].dtype if isinstance(got[key], Tensor) else type(got[key]).__name__
            raise ExerciseFailed(
                f"{key} is {kind}; return a boolean tensor (a comparison such as score > tau), "
                "so that the notebook can combine the reasons with |"
            )
        values = as_values(got[key], key)
        problem = shape_problem(values, torch.zeros(n), ("component",))
        if problem:
            raise ExerciseFailed(f"{key}: {problem}")
        values = values.reshape(n)
        if not bool(((values == 0) | (values == 1)).all()):
            raise ExerciseFailed(
                f"{key} holds values other than True/False: return a boolean tensor "
                "(a comparison such as score > tau), not the score itself"
            )
        out[key] = values
    return out


@exercise(
    "flag_components",
    notebook="03",
    reference=flag_components_reference,
    uses="hu.flag_reasons",
    mistakes={
        "sign of g' against g''": (
            lambda f, s, m, tau, th: _flags_variant(f, s, m, tau, th, sign="derivatives"),
            "the two estimates",
        ),
        "only +theta": (
            lambda f, s, m, tau, th: _flags_variant(f, s, m, tau, th, cross="positive"),
            "-theta",
        ),
        "the interval reaches above theta": (
            lambda f, s, m, tau, th: _flags_variant(f, s, m, tau, th, cross="above"),
            "both sides",
        ),
    },
)
def check_flag_components(fn, ctx: Context) -> str:
    """The three flag reasons of the MLP outputs and last-layer queries (theta a tenth of the
    largest |AtP| of each kind) and of synthetic cases equal ``hu.flag_reasons``."""
    __tracebackhide__ = True
    sweep = _sweep(ctx)
    n_model = len(sweep)
    first, second, maximum, labels = _cases(ctx)
    per_kind, theta = _thresholds(ctx)
    # one call per threshold: the sweep's kinds, then the synthetic cases
    groups = [[i for i, k in enumerate(sweep.kinds) if k == kind] for kind in per_kind]
    groups.append(list(range(n_model, len(first))))
    got = {key: torch.zeros(len(first), dtype=torch.float64) for key in REASONS}
    for rows in groups:
        index = torch.tensor(rows)
        cut = float(theta[rows[0]])
        part = call(
            fn,
            first[index].clone(),
            second[index].clone(),
            maximum[index].clone(),
            TAU,
            cut,
            name="flag_components",
        )
        for key, values in _reasons_of(part, len(rows)).items():
            got[key][index] = values
    expected = flag_reasons(first, second, tau=TAU, max_second=maximum, threshold=theta)

    def variant(**kw):
        return _flags_variant(first, second, maximum, TAU, theta, **kw)

    messages = {
        "flag_sign": {
            "flag_sign compares the signs of g'(0) and g''(0); it compares the two estimates, "
            "AtP = g'(0) and the second-order g'(0) + g''(0)/2: flag when "
            "g'(0) (g'(0) + g''(0)/2) < 0": variant(sign="derivatives")["flag_sign"],
        },
        "flag_threshold": {
            "flag_threshold tests only +theta; an effect can be negative, so the interval "
            "also straddles the threshold when it crosses -theta": variant(cross="positive")[
                "flag_threshold"
            ],
            "flag_threshold flags intervals that reach above theta; the interval straddles the "
            "threshold only when it holds effects on both sides of |x| = theta (lower < theta "
            "< upper, or the same at -theta)": variant(cross="above")["flag_threshold"],
        },
    }
    for key in REASONS:
        expect_close(
            got[key],
            expected[key].double(),
            what=key,
            rtol=ctx.rtol,
            labels=labels,
            axes=("component",),
            known=messages.get(key),
            sign_hint="flags are True where the reason holds",
        )
    counts = ", ".join(f"{int(got[key][:n_model].sum())} {key}" for key in REASONS)
    return (
        f"the flags of {n_model} components of the model ({counts}) and of "
        f"{len(SYNTHETIC)} synthetic cases as hu.flag_reasons"
    )
