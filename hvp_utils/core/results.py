"""One result type for every estimator, and the cost meter that fills its ``cost``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import pandas as pd
from jaxtyping import Float
from torch import Tensor

from hvp_utils.core.components import Component


@runtime_checkable
class Described(Protocol):
    """What a result needs to know about the estimator that made it (an ``EstimatorSpec``)."""

    key: str
    label: str
    family: str


class CostMeter:
    """Wall time and pass counts of one estimator call.

    Passes are counted in units of one pass over the task's prompt batch: a forward pass
    over ``k`` replicated copies of the batch counts ``k`` forwards. ``hvp`` counts
    second-order (Hessian-vector-product) passes, ``third_order`` third-derivative passes.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.counts = {"forward": 0, "backward": 0, "hvp": 0, "third_order": 0}

    def add(self, **counts: int) -> None:
        for key, n in counts.items():
            self.counts[key] = self.counts.get(key, 0) + int(n)

    def as_dict(self) -> dict:
        return {"seconds": time.perf_counter() - self.start, **self.counts}


@dataclass
class Attribution:
    """Per-component estimates of the patching effect, their names and what they cost.

    ``method`` is the label for people, ``key`` the stable identifier (unique per estimator
    and options, see :mod:`hvp_utils.estimators.registry`), ``family`` the estimator family.
    ``values[i]`` estimates ``Delta_c = g_c(1) - g_c(0)`` for component ``names[i]``;
    ``extras`` holds further per-component tensors (e.g. ``lower``/``upper`` bounds).
    """

    values: Float[Tensor, "n_components"]  # noqa: F821
    names: list[str]
    method: str
    cost: dict
    kinds: list[str] = field(default_factory=list)
    extras: dict[str, Tensor] = field(default_factory=dict)
    key: str = ""
    family: str = "other"

    @classmethod
    def build(
        cls,
        values: Tensor,
        comps: list[Component],
        spec: Described | str,
        meter: CostMeter,
        **extras: Tensor,
    ) -> Attribution:
        """The result of an estimator described by ``spec`` (a registry spec, or a plain
        label for an ad-hoc method), with the cost measured by ``meter``."""
        if isinstance(spec, str):
            method, key, family = spec, spec, "other"
        else:
            method, key, family = spec.label, spec.key, spec.family
        return cls(
            values=values.detach(),
            names=[c.name for c in comps],
            method=method,
            cost=meter.as_dict(),
            kinds=[c.kind for c in comps],
            extras={k: v.detach() for k, v in extras.items()},
            key=key,
            family=family,
        )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, name: str) -> float:
        return float(self.values[self.names.index(name)])

    def __getattr__(self, key: str):
        extras = self.__dict__.get("extras", {})
        if key in extras:
            return extras[key]
        raise AttributeError(key)

    def to_frame(self) -> pd.DataFrame:
        """One row per component: component, kind, method, value and any extras."""
        frame = pd.DataFrame(
            {
                "component": self.names,
                "kind": self.kinds or [""] * len(self.names),
                "method": self.method,
                "key": self.key,
                "family": self.family,
                "value": self.values.double().cpu().numpy(),
            }
        )
        for key, tensor in self.extras.items():
            if tensor.shape == self.values.shape:
                frame[key] = tensor.double().cpu().numpy()
        frame.attrs["cost"] = dict(self.cost)
        return frame

    def cost_frame(self) -> pd.DataFrame:
        """The cost as a one-row DataFrame indexed by method."""
        return pd.DataFrame([self.cost], index=pd.Index([self.method], name="method"))

    def __repr__(self) -> str:
        return (
            f"Attribution(method={self.method!r}, n={len(self)}, "
            f"seconds={self.cost.get('seconds', float('nan')):.3f}, "
            f"forward={self.cost.get('forward')}, backward={self.cost.get('backward')}, "
            f"hvp={self.cost.get('hvp')})"
        )
