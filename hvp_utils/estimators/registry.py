"""The estimator registry: every estimator described once, as data.

An :class:`EstimatorSpec` is an estimator function with some of its keyword options bound.
It knows its stable ``key`` (for tables and dictionaries), its ``label`` (for people) and its
``family`` (for colours), all derived from the options, so no code ever parses a label back
into a meaning. Every estimator function has the signature

    estimator(model, task, comps, *, <its options>, direction=..., context=...) -> Attribution

and builds its result through :func:`describe`, so a result made by calling the function
directly and one made through a spec carry the same key, label and family.

    >>> ig4 = estimator("ig", steps=4)
    >>> ig4.key, ig4.label, ig4.family
    ('ig[steps=4]', 'IG K=4', 'IG')
    >>> result = ig4(model, task, comps)          # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: Options that change how an estimate is computed, not what it is: left out of keys/labels.
RUNTIME_OPTIONS = frozenset({"chunk_size", "context"})


@dataclass(frozen=True)
class EstimatorSpec:
    """An estimator function with bound options, and its key, label and family.

    Attributes:
        name: registry name of the estimator (``"atp"``, ``"hvp"``, ``"ig"``, ...).
        func: the estimator, ``func(model, task, comps, **options) -> Attribution``.
        label_of: the label for a complete set of options.
        family_of: the family for a complete set of options.
        defaults: the function's keyword-only defaults (read from its signature).
        options: the bound options that differ from ``defaults``.
    """

    name: str
    func: Callable
    label_of: Callable[[Mapping[str, Any]], str]
    family_of: Callable[[Mapping[str, Any]], str]
    defaults: Mapping[str, Any]
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        """Every option of the estimator: its defaults updated with the bound options."""
        return {**self.defaults, **self.options}

    @property
    def key(self) -> str:
        """Stable identifier: the name, then the non-default options, e.g. ``hvp[mode=joint]``."""
        shown = {k: v for k, v in sorted(self.options.items()) if k not in RUNTIME_OPTIONS}
        if not shown:
            return self.name
        return f"{self.name}[{','.join(f'{k}={v}' for k, v in shown.items())}]"

    @property
    def label(self) -> str:
        return self.label_of(self.settings)

    @property
    def family(self) -> str:
        return self.family_of(self.settings)

    def bind(self, **options: Any) -> EstimatorSpec:
        """The same estimator with more options bound (unknown option names are an error)."""
        unknown = set(options) - set(self.defaults)
        if unknown:
            raise TypeError(
                f"estimator {self.name!r} has no option(s) {sorted(unknown)}; "
                f"its options are {sorted(self.defaults)}"
            )
        merged = {**self.options, **options}
        kept = {k: v for k, v in merged.items() if self.defaults.get(k, _MISSING) != v}
        return EstimatorSpec(
            self.name, self.func, self.label_of, self.family_of, self.defaults, kept
        )

    def __call__(self, model, task, comps, **runtime: Any):
        """Run the estimator: ``func(model, task, comps, **options, **runtime)``."""
        return self.func(model, task, comps, **{**self.options, **runtime})

    def __repr__(self) -> str:
        return f"EstimatorSpec({self.key!r}, label={self.label!r}, family={self.family!r})"


_MISSING = object()
ESTIMATORS: dict[str, EstimatorSpec] = {}


def keyword_defaults(func: Callable) -> dict[str, Any]:
    """The keyword-only parameters of ``func`` and their defaults."""
    parameters = inspect.signature(func).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def register(
    name: str,
    func: Callable,
    label: str | Callable[[Mapping[str, Any]], str],
    family: str | Callable[[Mapping[str, Any]], str],
) -> EstimatorSpec:
    """Add an estimator to :data:`ESTIMATORS`; ``label``/``family`` are fixed strings or
    functions of the complete options."""
    label_of = label if callable(label) else (lambda options, text=label: text)
    family_of = family if callable(family) else (lambda options, text=family: text)
    spec = EstimatorSpec(name, func, label_of, family_of, MappingProxyType(keyword_defaults(func)))
    ESTIMATORS[name] = spec
    return spec


def estimator(name: str, **options: Any) -> EstimatorSpec:
    """The registered estimator ``name`` with ``options`` bound, e.g.
    ``estimator("hvp", mode="hutchinson", n_probes=32)``."""
    if name not in ESTIMATORS:
        raise KeyError(f"no estimator {name!r}; registered: {sorted(ESTIMATORS)}")
    return ESTIMATORS[name].bind(**options)


def describe(name: str, **options: Any) -> EstimatorSpec:
    """What an estimator function passes to :meth:`Attribution.build` about itself: the
    spec of ``name`` with the options it was called with (runtime options dropped)."""
    return estimator(name, **{k: v for k, v in options.items() if k not in RUNTIME_OPTIONS})
