"""Prose generated from the numbers it states.

A notebook's conclusions are sentences about its own outputs ("AtP underestimates every head
effect", "Radau's fitted order is 4.0"). Written by hand they drift when the notebook is rerun
with another model, perturbation or seed. :class:`Findings` keeps each number beside the
sentence that states it, chooses the wording from the number, and records the raw table the
number was computed from, so that a test can recompute every claim from the notebook's own
output::

    found = hu.Findings("01")
    found.table("errors", frame[["component", "AP", "AtP"]])
    n_under = found.record("n_underestimated", int((frame.AtP < frame.AP).sum()))
    found.say(f"AtP underestimates {hu.count_phrase(n_under, len(frame), 'effect')}.")
    found          # shows the sentences; also carries the values and tables as JSON

Displayed, a :class:`Findings` is a markdown bullet list; its ``application/json`` output holds
``{"notebook", "title", "values", "tables", "sentences"}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: Significant digits kept for recorded numbers: enough to recompute a claim, few enough that
#: the last-bit differences between CPUs never reach the recorded text.
RECORDED_DIGITS = 6


def _plain(value: Any, digits: int = RECORDED_DIGITS) -> Any:
    """A JSON-ready copy of ``value``: floats rounded to ``digits`` significant digits."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return None
        return float(f"{value:.{digits}g}")
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return [_plain(v, digits) for v in list(value)]
    raise TypeError(f"cannot record a {type(value).__name__}; pass a number, string, list or dict")


@dataclass
class Findings:
    """Sentences of a notebook's conclusions, with the numbers and tables behind them."""

    notebook: str
    title: str = "What the numbers say"
    values: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sentences: list[str] = field(default_factory=list)

    def record(self, key: str, value: Any) -> Any:
        """Store ``value`` under ``key`` (rounded for the record) and return it unchanged."""
        if key in self.values:
            raise KeyError(f"finding {key!r} is recorded twice; give the second one its own key")
        self.values[key] = _plain(value)
        return value

    def table(self, key: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Store the rows a claim is computed from (index included) and return ``frame``."""
        if key in self.tables:
            raise KeyError(f"table {key!r} is recorded twice")
        flat = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
        self.tables[key] = [
            {str(k): _plain(v) for k, v in row.items()} for row in flat.to_dict("records")
        ]
        return frame

    def say(self, sentence: str) -> None:
        """Add one sentence (build it from recorded values with an f-string)."""
        self.sentences.append(sentence.strip())

    def as_dict(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "title": self.title,
            "values": self.values,
            "tables": self.tables,
            "sentences": self.sentences,
        }

    def markdown(self) -> str:
        bullets = "\n".join(f"- {s}" for s in self.sentences)
        return f"**{self.title}**\n\n{bullets}" if self.title else bullets

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        text = self.markdown()
        return {"text/markdown": text, "text/plain": text, "application/json": self.as_dict()}


def count_phrase(n: int, total: int, noun: str, plural: str | None = None) -> str:
    """'all 32 heads', 'none of the 32 heads', 'the one head', '31 of 32 heads'."""
    many = plural or f"{noun}s"
    if total == 1:
        return f"the one {noun}" if n == 1 else f"not the one {noun}"
    if n == total:
        return f"all {total} {many}"
    if n == 0:
        return f"none of the {total} {many}"
    return f"{n} of {total} {many}" if n > 1 else f"1 of {total} {many}"
