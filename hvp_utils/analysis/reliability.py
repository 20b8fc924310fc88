"""When to distrust attribution patching: a per-component reliability score, the Lagrange
interval of AtP, and a detector of the AtP errors that matter.

**Reliability score.** The second-order Taylor term is the part of the estimated effect that
first order (AtP) misses; its share is

    r_c = |g_c''(0) / 2| / (|g_c'(0)| + |g_c''(0) / 2| + eps)   in [0, 1).

**The Lagrange interval.** Taylor's theorem with the Lagrange remainder on the patch path,
with ``Delta_c = g_c(1) - g_c(0)`` (activation patching), gives ``Delta_c - g'(0) =
g''(xi) / 2`` for some ``xi`` in (0, 1); with ``M_2 = max_[0,1] |g''|``,

    |Delta_c - AtP_c| <= M_2 / 2.

``M_2`` is unknown. It is *estimated* from samples of the path (below) as ``M2_hat``, and the
**Lagrange interval** of component ``c`` is

    I_c = [AtP_c - M2_hat / 2,  AtP_c + M2_hat / 2].

It would be a guaranteed bound if ``M2_hat >= M_2``; an estimate from samples can fall below
``M_2`` (a peak of ``|g''|`` that no sample sees), so ``I_c`` estimates the bound and its
coverage of AP is a measured property, not a promise. This one interval is what the package
means by *the* interval: the ``flag_threshold`` reason of :func:`flag_reasons`, the band of
the patch-path explorer (:mod:`hvp_utils.analysis.paths`: ``AtP t -+ M2_hat t^2 / 2`` on
``[0, t]``) and the Screen-Flag-Fix flags (which estimate ``M2_hat`` from a single sample at
``t = 0``, see :mod:`hvp_utils.analysis.screen_flag_fix`) all use it. The same construction
one order up, ``|Delta_c - g'(0) - g''(0)/2| <= M_3 / 6`` around the second-order estimate,
is ``error_bounds(order=2)``.

**Flags.** A component is *flagged* when any of three reasons holds (each kept as its own
mask of :class:`~hvp_utils.core.results.FlagReasons`):

- ``flag_score``: ``r_c > tau``;
- ``flag_sign``: first and second order disagree in sign, ``g'(0) (g'(0) + g''(0)/2) < 0``;
- ``flag_threshold``: the Lagrange interval straddles the circuit selection threshold
  ``theta``, i.e. contains effects both above and below ``|x| = theta``, so the interval
  cannot tell whether the component belongs in the circuit.

**Estimating a maximum from path samples.** The derivatives are sampled at ``K``
(``n_nodes``) evenly spaced nodes including both end points (``t_k = k/(K-1)``). A maximum
read off the nodes alone is a *lower* estimate: it misses a peak between two nodes. The same
sweep also knows, exactly, the mean of the derivative over every interval, because
``int_a^b g^(j+1) = g^(j)(b) - g^(j)(a)``. With ``refine=True`` (default) each interval's
maximum is that of the quadratic ``q`` matching ``f = g^(j+1)`` at both nodes and its exact
mean (with ``u = (t - a)/h``):

    q(u) = f(a) + (f(b) - f(a)) u + c u (1 - u),   c = 6 (mean - (f(a) + f(b)) / 2),

whose maximum modulus is at least ``|mean|`` (a guaranteed lower bound on ``max |f|`` by the
mean-value theorem) and catches a single interior bump that the two node values miss. The
Lagrange interval needs ``g'`` and ``g''`` at the nodes (``K`` second-order passes per
component); the order-2 interval needs ``g''`` and ``g'''`` (third-order passes).

**Which AtP errors matter.** A relative error alone calls a miss of several logits on a large
effect fine and a miss of 0.003 on a near-zero effect bad. :func:`bad_estimates` labels an
estimate *bad* when its error ``e = |AtP - AP|`` is

- large for the component and not negligible for its kind:
  ``e > max_rel_error |AP|`` and ``e > negligible_share S``, or
- large for its kind whatever the component's size: ``e > threshold_share S``, an error
  that can carry a component across a circuit cut at ``threshold_share`` of the largest
  effect,

with ``S`` the largest ``|AP|`` of the component's kind. :func:`detector_report` measures the
reliability score and the flags as detectors of these labels.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from hvp_utils.core.components import Component, components
from hvp_utils.core.engine import (
    EngineRun,
    PatchContext,
    PathDerivatives,
    path_derivatives,
    path_derivatives_at,
)
from hvp_utils.core.metrics import auroc
from hvp_utils.core.results import (
    CostMeter,
    Estimator,
    FlagReasons,
    IntervalAttribution,
    ReliabilityAttribution,
)
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import SAMPLINGS, Direction, Family, Model, Sampling, check_choice

Vector = Float[Tensor, "n_components"]  # noqa: F821


def reliability_score(first: Vector, second: Vector, *, eps: float = 1e-12) -> Vector:
    """``r = |g''/2| / (|g'| + |g''/2| + eps)``: share of the estimate first order misses."""
    half = (second / 2).abs()
    return half / (first.abs() + half + eps)


def sign_change(first: Vector, second: Vector) -> Tensor:
    """First order ``g'`` and second order ``g' + g''/2`` have strictly opposite signs."""
    return first * (first + second / 2) < 0


def straddles(lower: Vector, upper: Vector, threshold: float | Vector) -> Tensor:
    """The interval ``[lower, upper]`` holds effects with ``|x| > threshold`` and with
    ``|x| <= threshold``: it crosses ``+threshold`` or ``-threshold``."""
    return ((lower < threshold) & (upper > threshold)) | (
        (lower < -threshold) & (upper > -threshold)
    )


def lagrange_interval(first: Vector, max_second: Vector) -> tuple[Vector, Vector]:
    """The Lagrange interval ``[g'(0) - M2_hat / 2, g'(0) + M2_hat / 2]`` of AtP, with
    ``max_second = M2_hat`` an estimate of ``max_[0,1] |g''|`` (see the module docstring)."""
    half = max_second.abs() / 2
    return first - half, first + half


def flag_reasons(
    first: Vector,
    second: Vector,
    *,
    tau: float,
    max_second: Vector | None = None,
    threshold: float | Vector | None = None,
    eps: float = 1e-12,
) -> FlagReasons:
    """Why first order cannot be trusted, per component (see the module docstring):

    ``flag_score`` = ``r_c > tau``; ``flag_sign`` = :func:`sign_change`; ``flag_threshold`` =
    the Lagrange interval of :func:`lagrange_interval` (from ``max_second``, the estimate of
    ``max |g''|``) straddles ``threshold`` (a number, or one per component; all False without
    a threshold); ``scores`` = ``r_c``; ``flags`` (a property) = any of the three.
    """
    scores = reliability_score(first, second, eps=eps)
    near = torch.zeros(len(first), dtype=torch.bool)
    if threshold is not None:
        if max_second is None:
            raise ValueError(
                "a threshold needs the Lagrange interval: pass max_second= (max|g''| estimated)"
            )
        lower, upper = lagrange_interval(first, max_second)
        near = straddles(lower, upper, threshold)
    return FlagReasons(
        scores=scores,
        flag_score=scores > tau,
        flag_sign=sign_change(first, second),
        flag_threshold=near,
    )


#: Each flag reason of :func:`flag_reasons` and its short name for people.
REASON_NAMES = {"flag_score": "r>tau", "flag_sign": "sign", "flag_threshold": "threshold"}


def reasons_text(row) -> str:
    """``"flagged: r>tau, sign"`` from a row (or mapping) holding the flag reason columns of
    :func:`flag_reasons`; ``"ok"`` when none holds."""
    on = [short for column, short in REASON_NAMES.items() if bool(row[column])]
    return "flagged: " + ", ".join(on) if on else "ok"


def path_nodes(n_nodes: int) -> list[float]:
    """``K = n_nodes`` evenly spaced nodes ``t_k = k / (K - 1)`` on [0, 1], ends included."""
    if n_nodes < 2:
        raise ValueError(f"n_nodes must be at least 2 (both end points of the path), got {n_nodes}")
    return [k / (n_nodes - 1) for k in range(n_nodes)]


def interval_maximum(
    f: Float[Tensor, "nodes n_components"],
    integrals: Float[Tensor, "intervals n_components"],
    h: float,
) -> Vector:
    """Largest ``|q|`` over all intervals, ``q`` the quadratic with the node values ``f`` at
    both ends and mean ``integrals / h`` (see the module docstring); never below the nodes'."""
    f_a, f_b = f[:-1], f[1:]
    c = 6 * (integrals / h - (f_a + f_b) / 2)
    safe_c = torch.where(c == 0, torch.ones_like(c), c)
    vertex = (0.5 + (f_b - f_a) / (2 * safe_c)).clamp(0, 1)
    q_vertex = f_a + (f_b - f_a) * vertex + c * vertex * (1 - vertex)
    interior = torch.where(c == 0, f_a.abs(), q_vertex.abs()).amax(0)
    return torch.maximum(interior, f.abs().amax(0))


def derivative_maximum(
    pieces: list[PathDerivatives], derivative: int, h: float, *, refine: bool = True
) -> tuple[Vector, Vector]:
    """Estimated ``max_t |g^(derivative)(t)|`` from the samples: (refined, sampled only)."""
    key, below = f"d{derivative}", f"d{derivative - 1}"
    f = torch.stack([getattr(p, key) for p in pieces])
    sampled = f.abs().amax(0)
    if not refine:
        return sampled, sampled
    lower = torch.stack([getattr(p, below) for p in pieces])
    return interval_maximum(f, lower[1:] - lower[:-1], h), sampled


def _bounds(pieces: list[PathDerivatives], order: int, refine: bool) -> dict[str, Tensor]:
    """Centre, radius and the maxima behind it, for the order-1 or order-2 remainder."""
    h = 1.0 / (len(pieces) - 1)
    start = pieces[0]
    maximum, sampled = derivative_maximum(pieces, order + 1, h, refine=refine)
    factor = 0.5 if order == 1 else 1.0 / 6.0
    centre = start.d1 if order == 1 else start.d1 + start.d2 / 2
    return {
        "values": centre,
        "radius": factor * maximum,
        "max_derivative": maximum,
        "max_sampled": sampled,
        "first": start.d1,
        "second": start.d2,
    }


def error_bounds(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    order: Literal[1, 2] = 1,
    n_nodes: int = 3,
    refine: bool = True,
    direction: Direction = "denoising",
    chunk_size: int | None = None,
    context: PatchContext | None = None,
) -> IntervalAttribution:
    """Taylor estimate of order 1 (AtP) or 2 with its interval from the Lagrange remainder.

    ``order=1`` (default): ``values = g'(0)`` and the **Lagrange interval**
    ``values -+ M2_hat / 2`` of the module docstring; ``order=2``: ``values = g'(0) +
    g''(0)/2`` and ``values -+ M3_hat / 6``. The maxima are estimated from ``n_nodes`` evenly
    spaced nodes on [0, 1]: estimates, so the intervals are estimates of the bounds.

    Args:
        model, task, comps: as for every estimator (see :func:`hvp_utils.atp`).
        order: 1 (the Lagrange interval of AtP) or 2 (of the second-order estimate).
        n_nodes: nodes ``K >= 2`` on [0, 1]; each costs one pass of order ``order + 1``.
        refine: estimate each interval's maximum with the quadratic through its node values
            and exact mean (True), or take the node maximum only (False).
        direction: ``"denoising"`` (default) or ``"noising"``.
        chunk_size: replicates of the prompt batch per pass; the values do not depend on it.
        context: a :class:`~hvp_utils.core.engine.PatchContext` shared with other estimators.

    Returns:
        :class:`IntervalAttribution`: ``lower``, ``upper``, ``radius``,
        ``max_derivative`` (the maximum used), ``max_sampled`` (the node maximum),
        ``first`` = g'(0), ``second`` = g''(0), ``max_second`` = ``M2_hat`` (the estimate
        of ``max |g''|`` behind the Lagrange interval); with ``order=2`` also the Lagrange
        interval ``first_order_lower``, ``first_order_upper`` from the same sweep.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    run = EngineRun.start(
        model, task, comps, direction=direction, chunk_size=chunk_size, context=context
    )
    pieces = path_derivatives_at(run, comps, nodes=path_nodes(n_nodes), order=order + 1)
    parts = _bounds(pieces, order, refine)
    values, radius = parts.pop("values"), parts["radius"]
    if order == 1:
        parts["max_second"] = parts["max_derivative"]
    else:
        order1 = _bounds(pieces, 1, refine)
        parts["max_second"] = order1["max_derivative"]
        parts["first_order_lower"], parts["first_order_upper"] = lagrange_interval(
            order1["values"], order1["max_derivative"]
        )
    label = f"bounds order {order} K={n_nodes}"
    key = f"bounds[order={order},n_nodes={n_nodes}]"
    record = Estimator("bounds", key, label, Family.BOUNDS)
    return IntervalAttribution.build(
        values, comps, record, run.meter, lower=values - radius, upper=values + radius, **parts
    )


def reliability(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    tau: float = 0.3,
    threshold: float | None = None,
    eps: float = 1e-12,
    n_nodes: int = 3,
    bounds: IntervalAttribution | None = None,
    direction: Direction = "denoising",
    chunk_size: int | None = None,
    context: PatchContext | None = None,
) -> ReliabilityAttribution:
    """AtP estimates with the reliability score ``r_c`` and the flags of :func:`flag_reasons`.

    Args:
        model, task, comps: as for every estimator (see :func:`hvp_utils.atp`).
        tau: flag components whose score ``r_c`` exceeds it.
        threshold: the circuit selection threshold on ``|effect|``; with one, also flag the
            components whose Lagrange interval straddles it (None: no such flag).
        eps: added to the score's denominator.
        n_nodes: nodes of the sweep that estimates ``max |g''|`` for the Lagrange interval
            (see :func:`error_bounds`).
        bounds: an :func:`error_bounds` result (either order) on the same components; it
            supplies g'(0), g''(0) and ``max |g''|`` at no further cost.
        direction, chunk_size, context: as for :func:`error_bounds`.

    Returns:
        :class:`ReliabilityAttribution` with ``values = g'(0)`` (AtP), its ``reasons``
        (:class:`~hvp_utils.core.results.FlagReasons`), ``first``, ``second`` and, with a
        ``threshold`` or ``bounds``, the Lagrange interval ``lower``/``upper`` and its
        ``max_second``. Without a threshold (and without
        ``bounds``) the cost is one second-order pass per component; with one, ``n_nodes``.
    """
    meter = CostMeter()
    if bounds is not None:
        first, second, max_second = bounds.first, bounds.second, bounds.max_second
    else:
        run = EngineRun.start(
            model, task, comps, direction=direction, chunk_size=chunk_size, context=context
        )
        meter = run.meter
        first, second, max_second = _derivatives_and_maximum(
            run, comps, threshold=threshold, n_nodes=n_nodes
        )
    reasons = flag_reasons(
        first, second, tau=tau, max_second=max_second, threshold=threshold, eps=eps
    )
    interval = {}
    if max_second is not None:
        lower, upper = lagrange_interval(first, max_second)
        interval = {"lower": lower, "upper": upper, "max_second": max_second}
    record = Estimator("reliability", "reliability", "reliability", Family.RELIABILITY)
    return ReliabilityAttribution.build(
        first, comps, record, meter, first=first, second=second, reasons=reasons, **interval
    )


def _derivatives_and_maximum(
    run: EngineRun, comps: list[Component], *, threshold: float | None, n_nodes: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """g'(0), g''(0) and (with a threshold) the estimate of max |g''| on [0, 1]."""
    if threshold is None:
        start = path_derivatives(run, comps, t=0.0, order=2)
        return start.d1, start.d2, None
    pieces = path_derivatives_at(run, comps, nodes=path_nodes(n_nodes), order=2)
    maximum, _ = derivative_maximum(pieces, 2, 1.0 / (n_nodes - 1))
    return pieces[0].d1, pieces[0].d2, maximum


def bad_estimates(
    estimate: Tensor,
    truth: Tensor,
    *,
    max_rel_error: float = 0.5,
    negligible_share: float = 0.02,
    threshold_share: float | None = 0.1,
    scale: float | Tensor | None = None,
) -> Tensor:
    """Which estimates miss AP by an error that matters (see the module docstring):

    ``e > max_rel_error |AP|`` and ``e > negligible_share * S``, or
    ``e > threshold_share * S``,
    with ``e = |estimate - AP|`` and ``S = scale`` (default: the largest ``|AP|`` of
    ``truth``; pass one value per component when ``truth`` pools several kinds).
    ``negligible_share=0, threshold_share=None`` gives the relative error alone.
    """
    error = (estimate - truth).abs()
    size = truth.abs().max() if scale is None else torch.as_tensor(scale, dtype=error.dtype)
    bad = (error > max_rel_error * truth.abs()) & (error > negligible_share * size)
    if threshold_share is not None:
        bad = bad | (error > threshold_share * size)
    return bad


def detector_report(
    reasons: FlagReasons,
    *,
    first: Vector,
    truth: Vector,
    max_rel_error: float = 0.5,
    tau: float | None = None,
    negligible_share: float = 0.02,
    threshold_share: float | None = 0.1,
    scale: float | Tensor | None = None,
) -> pd.DataFrame:
    """The reliability score as a detector of bad AtP estimates (:func:`bad_estimates` of
    ``first`` against the AP values ``truth``): AUROC of ``reasons.scores``; precision and
    recall of ``reasons.flags`` (or of ``scores > tau``); ``caught`` counts the bad
    estimates flagged.

    Undefined quantities are NaN, not 0: AUROC without both classes, precision when nothing
    is flagged, recall when no estimate is bad (there is nothing to catch).
    """
    positive = bad_estimates(
        first,
        truth,
        max_rel_error=max_rel_error,
        negligible_share=negligible_share,
        threshold_share=threshold_share,
        scale=scale,
    )
    flags = reasons.flags if tau is None else reasons.scores > tau
    hits, n_flagged, n_positive = (
        int((flags & positive).sum()),
        int(flags.sum()),
        int(positive.sum()),
    )
    row = {
        "n": len(truth),
        "positives": n_positive,
        "flagged": n_flagged,
        "caught": hits,
        "auroc": auroc(reasons.scores, positive),
        "precision": hits / n_flagged if n_flagged else float("nan"),
        "recall": hits / n_positive if n_positive else float("nan"),
    }
    return pd.DataFrame([row])


def coverage_report(*, lower: Vector, upper: Vector, truth: Vector) -> pd.DataFrame:
    """Measured coverage of an interval (the share of AP effects ``truth`` inside
    ``[lower, upper]``: the intervals are estimates, so this is measured, not guaranteed) and
    its width relative to ``|AP|`` (median), beside the median width and the largest miss
    outside the interval."""
    inside = (lower <= truth) & (truth <= upper)
    width = upper - lower
    miss = torch.clamp(torch.maximum(lower - truth, truth - upper), min=0)
    row = {
        "n": len(truth),
        "coverage": float(inside.double().mean()),
        "median_rel_width": float((width / truth.abs()).median()),
        "median_width": float(width.median()),
        "median_abs_AP": float(truth.abs().median()),
        "max_miss": float(miss.max()),
    }
    return pd.DataFrame([row])


def sample_components(
    comps: list[Component], *, k: int | None, seed: int = 0, how: Sampling = "random"
) -> list[Component]:
    """A subset of ``k`` components in their original order (all if ``k`` is None or not
    smaller): keeps per-component sweeps over a layer's neurons affordable.

    ``how="random"``: a seeded random subset; ``"spaced"``: ``k`` evenly spaced components
    (indices ``floor(i n / k)``; no randomness); ``"stratified"``: each layer keeps a share of
    ``k`` in proportion to its component count (largest remainders, at least one per layer
    while ``k`` allows), a random subset within it (seeded with ``seed`` plus the layer).
    """
    check_choice(how, SAMPLINGS, "sampling")
    if k is None or k >= len(comps):
        return list(comps)
    if k < 1:
        raise ValueError(f"k must be at least 1 (got {k}); pass k=None for every component")
    if how == "spaced":
        keep = [i * len(comps) // k for i in range(k)]
    elif how == "stratified":
        keep = _stratified(comps, k, seed)
    else:
        keep = _random_subset(list(range(len(comps))), k, seed)
    return [comps[i] for i in sorted(keep)]


def describe_sample(
    every: list[Component],
    kept: list[Component],
    *,
    how: Sampling,
    seed: int = 0,
    noun: str | None = None,
) -> str:
    """One line naming a sample: ``"64 of 3072 neuron components (layer 6), stratified by
    layer, seed 0"`` (``"all 3072 ..."`` when nothing was left out); ``noun`` replaces
    ``"<kind> components"``."""
    layers = sorted({c.layer for c in kept})
    where = f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"
    noun = noun or "/".join(dict.fromkeys(c.kind for c in kept)) + " components"
    if len(kept) >= len(every):
        return f"all {len(every)} {noun} ({where})"
    label = {"random": "random", "spaced": "evenly spaced", "stratified": "stratified by layer"}
    return f"{len(kept)} of {len(every)} {noun} ({where}), {label[how]}, seed {seed}"


def sample_heads(
    model: Model, *, k: int | None, seed: int = 0, how: Sampling = "stratified"
) -> list[tuple[int, int]] | None:
    """``k`` attention heads as ``(layer, head)`` pairs, one sample shared by every per-head
    kind (pass it as ``components(..., heads=...)``); None when ``k`` is None or covers every
    head. The heads are :func:`sample_components` of the ``head_out`` components with the same
    ``how`` and ``seed`` (``"stratified"``: each layer keeps its share of ``k``)."""
    every = components(model, "head_out")
    if k is None or k >= len(every):
        return None
    return [(c.layer, c.head) for c in sample_components(every, k=k, seed=seed, how=how)]


def describe_heads(
    model: Model, heads: list[tuple[int, int]] | None, *, how: Sampling, seed: int = 0
) -> str:
    """One line naming a head sample (:func:`sample_heads`) with :func:`describe_sample`:
    ``"24 of 144 heads (layers 0-11), stratified by layer, seed 0"``."""
    every = components(model, "head_out")
    kept = every if heads is None else components(model, "head_out", heads=heads)
    return describe_sample(every, kept, how=how, seed=seed, noun="heads")


def layer_quotas(sizes: dict[int, int], k: int) -> dict[int, int]:
    """``k`` split over layers in proportion to their ``sizes`` (largest remainders), every
    layer getting at least one while ``k`` covers them all, none more than its size."""
    total = sum(sizes.values())
    floor = min(1, k // len(sizes))
    quotas = {layer: max(floor, k * n // total) for layer, n in sizes.items()}
    by_remainder = sorted(sizes, key=lambda layer: -(k * sizes[layer] % total))
    while sum(quotas.values()) < k:
        for layer in by_remainder:
            if sum(quotas.values()) < k and quotas[layer] < sizes[layer]:
                quotas[layer] += 1
    while sum(quotas.values()) > k:
        largest = max(quotas, key=quotas.get)
        quotas[largest] -= 1
    return quotas


def _stratified(comps: list[Component], k: int, seed: int) -> list[int]:
    """Indices of a seeded random subset of each layer, sized by :func:`layer_quotas`."""
    by_layer: dict[int, list[int]] = {}
    for i, c in enumerate(comps):
        by_layer.setdefault(c.layer, []).append(i)
    quotas = layer_quotas({layer: len(ix) for layer, ix in by_layer.items()}, k)
    return [
        i for layer, ix in by_layer.items() for i in _random_subset(ix, quotas[layer], seed + layer)
    ]


def _random_subset(indices: list[int], k: int, seed: int) -> list[int]:
    """``k`` of ``indices``, chosen by a permutation seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return [indices[i] for i in torch.randperm(len(indices), generator=generator)[:k].tolist()]
