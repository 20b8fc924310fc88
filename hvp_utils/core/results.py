"""What estimators return: typed results, the estimator record each carries, and their cost.

- :class:`Cost`: seconds and pass counts (optionally per stage), from a :class:`CostMeter`.
- :class:`Estimator`: the record of an estimator (key, label, family, bound options), declared
  beside its function; calling it runs the function with those options.
- :class:`Attribution`: per-component estimates of ``Delta_c = g_c(1) - g_c(0)`` with their
  names, kinds, the :class:`Estimator` that made them and their :class:`Cost`. Results that
  carry more than a value extend it with typed fields: :class:`SecondOrderAttribution`
  (``g'(0)``, ``g''(0)``), :class:`AtPStarAttribution`, :class:`IntervalAttribution` (an
  interval per component), :class:`ReliabilityAttribution` and :class:`ScreenFlagFixResult`.
- :class:`FlagReasons`: why first order cannot be trusted, one bool tensor per reason.

Each converts to pandas (``to_frame()``).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from hvp_utils.core.components import Component
from hvp_utils.core.types import Family

Vector = Float[Tensor, "n_components"]  # noqa: F821
Mask = Bool[Tensor, "n_components"]  # noqa: F821

#: The reasons of :class:`FlagReasons`.
REASONS = ("flag_score", "flag_sign", "flag_threshold")
#: The pass counts of a :class:`Cost`, in units of one pass over the prompt batch.
PASSES = ("forward", "backward", "hvp", "third_order")


@dataclass(frozen=True)
class Cost:
    """Wall time and pass counts of one computation.

    Passes are counted in units of one pass over the task's prompt batch: a forward pass
    over ``k`` replicated copies of the batch counts ``k`` forwards. ``hvp`` counts
    second-order (Hessian-vector-product) passes, ``third_order`` third-derivative passes.
    ``stages`` holds the cost of each stage of a multi-stage workflow (the totals are their
    sums).
    """

    seconds: float = 0.0
    forward: int = 0
    backward: int = 0
    hvp: int = 0
    third_order: int = 0
    stages: Mapping[str, Cost] = field(default_factory=dict)

    @classmethod
    def of_stages(cls, stages: Mapping[str, Cost]) -> Cost:
        """The total of ``stages`` (seconds and every pass count added up), keeping each."""
        totals = {k: sum(getattr(s, k) for s in stages.values()) for k in ("seconds", *PASSES)}
        return cls(**totals, stages=MappingProxyType(dict(stages)))

    def __add__(self, other: Cost) -> Cost:
        """Seconds and pass counts added up (stages are not kept)."""
        return Cost(**{k: getattr(self, k) + getattr(other, k) for k in ("seconds", *PASSES)})

    def as_row(self) -> dict[str, float]:
        """``{"seconds": ..., "forward": ..., "backward": ..., "hvp": ..., "third_order": ...}``."""
        return {k: getattr(self, k) for k in ("seconds", *PASSES)}

    def to_frame(self) -> pd.DataFrame:
        """One row per stage (index ``stage``), then the ``total`` (only it without stages)."""
        rows = {name: cost.as_row() for name, cost in self.stages.items()}
        rows["total"] = self.as_row()
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("stage")


class CostMeter:
    """Counts the passes of one computation and measures its wall time (:meth:`cost`)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.counts = dict.fromkeys(PASSES, 0)

    def add(self, **counts: int) -> None:
        """Add passes, e.g. ``meter.add(forward=2, backward=1)``."""
        unknown = set(counts) - set(PASSES)
        if unknown:
            raise ValueError(f"unknown pass kinds {sorted(unknown)}; use {PASSES}")
        for key, n in counts.items():
            self.counts[key] += int(n)

    def cost(self) -> Cost:
        """The passes counted so far and the seconds since the meter was made."""
        return Cost(seconds=time.perf_counter() - self.start, **self.counts)


@dataclass(frozen=True)
class Estimator:
    """The record of an estimator: declared once beside its function, carried by its results.

    Attributes:
        name: the estimator's short name (``"hvp"``), the same for every set of options.
        key: stable identifier for tables and dictionaries (the function's short name, then
            the options that differ from its defaults, e.g. ``hvp[mode=joint]``).
        label: the name people read (``"HVP joint"``).
        family: what kind of estimator it is (:class:`~hvp_utils.core.types.Family`).
        func: the estimator function, ``func(model, task, comps, **options) -> Attribution``
            (None for a result that no estimator function makes, such as a pooled one).
        options: every keyword option of ``func`` (its defaults, updated with the bound ones).
    """

    name: str
    key: str
    label: str
    family: Family
    func: Callable[..., Attribution] | None = field(default=None, compare=False, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_ground_truth(self) -> bool:
        """Exact activation patching (ours or a peer's): what every estimate is measured against."""
        return self.family in (Family.AP, Family.AP_PEER)

    def __call__(self, model, task, comps: list[Component], **runtime: Any) -> Attribution:
        """Run the estimator: ``func(model, task, comps, **options, **runtime)``, where
        ``runtime`` holds options that change how, not what (``chunk_size``, ``context``)."""
        if self.func is None:
            raise TypeError(f"{self.label!r} names a result, not a function to run")
        return self.func(model, task, comps, **{**self.options, **runtime})


#: Options that change how an estimate is computed, not what it is: left out of keys.
RUNTIME_OPTIONS = frozenset({"chunk_size", "context"})
#: What a label adds for each patching direction.
DIRECTION_SUFFIX = MappingProxyType({"denoising": "", "noising": " (noising)"})


def declare(name: str, func: Callable, label: str, family: Family, **options: Any) -> Estimator:
    """The record of ``func`` with ``options`` bound (every other keyword option at its
    default): its key is :func:`option_key` of the options that are not
    :data:`RUNTIME_OPTIONS`, against ``func``'s keyword defaults."""
    parameters = inspect.signature(func).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(
            f"{name} has no option(s) {sorted(unknown)}; its options: {sorted(defaults)}"
        )
    meaning = {k: v for k, v in options.items() if k not in RUNTIME_OPTIONS}
    key = option_key(name, meaning, defaults)
    return Estimator(name, key, label, family, func, MappingProxyType({**defaults, **options}))


def option_key(name: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """``name`` followed by the options that differ from ``defaults``, sorted by option name:
    ``option_key("hvp", {"mode": "joint"}, {"mode": "diag"}) == "hvp[mode=joint]"``."""
    shown = {k: v for k, v in sorted(options.items()) if defaults.get(k) != v}
    if not shown:
        return name
    return f"{name}[{','.join(f'{k}={v}' for k, v in shown.items())}]"


@dataclass(frozen=True)
class Attribution:
    """Per-component estimates of the patching effect, who made them and what they cost.

    ``values[i]`` estimates ``Delta_c = g_c(1) - g_c(0)`` for component ``names[i]`` of kind
    ``kinds[i]``; ``estimator`` is the record of the estimator that made it, ``cost`` its cost.
    """

    values: Vector
    names: list[str]
    kinds: list[str]
    estimator: Estimator
    cost: Cost

    @classmethod
    def build(
        cls,
        values: Tensor,
        comps: list[Component],
        estimator: Estimator,
        cost: Cost | CostMeter,
        **terms: Any,
    ):
        """The result of ``estimator`` on ``comps`` (tensors detached), with the further typed
        fields ``terms`` of a subclass, and the cost measured by a meter (or given)."""
        detached = {k: v.detach() if isinstance(v, Tensor) else v for k, v in terms.items()}
        return cls(
            values=values.detach(),
            names=[c.name for c in comps],
            kinds=[c.kind for c in comps],
            estimator=estimator,
            cost=cost.cost() if isinstance(cost, CostMeter) else cost,
            **detached,
        )

    @property
    def method(self) -> str:
        """The estimator's label (the ``method`` column of every table)."""
        return self.estimator.label

    @property
    def key(self) -> str:
        """The estimator's key."""
        return self.estimator.key

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, name: str) -> float:
        return float(self.values[self.names.index(name)])

    def to_frame(self) -> pd.DataFrame:
        """One row per component: component, kind, method, key, family, value, and one
        column per further per-component field of the result; the cost in ``attrs``."""
        frame = pd.DataFrame(
            {
                "component": self.names,
                "kind": self.kinds,
                "method": self.method,
                "key": self.key,
                "family": self.estimator.family.value,
                "value": self.values.double().cpu().numpy(),
            }
        )
        for name, column in self.columns().items():
            frame[name] = column
        frame.attrs["cost"] = self.cost.as_row()
        return frame

    def columns(self) -> dict[str, Any]:
        """The per-component fields beyond ``values``, as arrays (for :meth:`to_frame`)."""
        out = {}
        base = {f.name for f in fields(Attribution)}
        for f in (f for f in fields(self) if f.name not in base):
            value = getattr(self, f.name)
            if isinstance(value, Tensor) and value.shape == self.values.shape:
                as_array = value if value.dtype == torch.bool else value.double()
                out[f.name] = as_array.cpu().numpy()
            elif isinstance(value, FlagReasons):
                out |= {k: v for k, v in value.to_frame().items() if k != "component"}
        return out

    def __repr__(self) -> str:
        c = self.cost
        return (
            f"{type(self).__name__}(method={self.method!r}, n={len(self)}, "
            f"seconds={c.seconds:.3f}, forward={c.forward}, backward={c.backward}, hvp={c.hvp})"
        )


@dataclass(frozen=True, repr=False)
class SecondOrderAttribution(Attribution):
    """``values = first + second / 2``: the second-order Taylor estimate, with its terms
    ``first = g'(0)`` (AtP) and ``second``, the estimate of ``g''(0)`` used."""

    first: Vector
    second: Vector


@dataclass(frozen=True, repr=False)
class AtPStarAttribution(Attribution):
    """AtP*: ``qk_fixed`` (AtP with the exact attention pattern for queries and keys) and,
    with GradDrop, ``graddrop`` (its magnitude averaged over dropped layers; else None)."""

    qk_fixed: Vector
    graddrop: Vector | None


@dataclass(frozen=True)
class FlagReasons:
    """Why first order cannot be trusted, per component: one mask per reason and the score.

    ``flag_score``: ``r_c > tau``; ``flag_sign``: first and second order disagree in sign;
    ``flag_threshold``: the Lagrange interval straddles the circuit threshold; ``scores``:
    the reliability score ``r_c``. A component is flagged (:attr:`flags`) when any holds.
    """

    scores: Vector
    flag_score: Mask
    flag_sign: Mask
    flag_threshold: Mask

    @property
    def flags(self) -> Mask:
        """Flagged for any reason."""
        return self.flag_score | self.flag_sign | self.flag_threshold

    @classmethod
    def concat(cls, parts: list[FlagReasons]) -> FlagReasons:
        """The reasons of several component sets, one after the other."""
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def to_frame(self) -> pd.DataFrame:
        """Columns ``scores``, ``flags`` and one per reason."""
        return pd.DataFrame(
            {
                "scores": self.scores.double().cpu().numpy(),
                "flags": self.flags.cpu().numpy(),
                **{k: getattr(self, k).cpu().numpy() for k in REASONS},
            }
        )


@dataclass(frozen=True, repr=False)
class IntervalAttribution(Attribution):
    """A Taylor estimate with an interval ``[lower, upper] = values -+ radius`` from the
    Lagrange remainder of its order (see :func:`hvp_utils.error_bounds`).

    ``max_derivative`` is the estimated maximum behind ``radius`` (``max_sampled``: the same
    from the nodes alone); ``first``, ``second`` are ``g'(0)``, ``g''(0)``; ``max_second``
    is ``M2_hat``, the estimate of ``max |g''|`` behind the Lagrange interval of AtP, which
    ``first_order_lower``/``first_order_upper`` hold for an order-2 result (else None).
    """

    lower: Vector
    upper: Vector
    radius: Vector
    max_derivative: Vector
    max_sampled: Vector
    first: Vector
    second: Vector
    max_second: Vector
    first_order_lower: Vector | None = None
    first_order_upper: Vector | None = None


@dataclass(frozen=True, repr=False)
class ReliabilityAttribution(Attribution):
    """AtP (``values = first``) with the reliability flags; ``second = g''(0)``; with a
    threshold, the Lagrange interval ``lower``/``upper`` from ``max_second`` (else None)."""

    first: Vector
    second: Vector
    reasons: FlagReasons
    lower: Vector | None = None
    upper: Vector | None = None
    max_second: Vector | None = None


@dataclass(frozen=True, repr=False)
class ScreenFlagFixResult(Attribution):
    """Screen-Flag-Fix: AtP where not fixed, the fix elsewhere (``values``).

    ``first``: the screen (AtP, ``g'(0)``); ``second``: its Hutchinson estimate of
    ``g''(0)``; ``reasons``: why each component was flagged; ``fixed``: the flagged
    components that were fixed (within the budget). ``cost.stages`` holds ``screen_flag``
    and, when anything was fixed, ``fix``.
    """

    first: Vector
    second: Vector
    reasons: FlagReasons
    fixed: Mask
