"""A notebook's findings: verdicts with the numbers they state and the tables behind them.

A rule of the analysis layer (e.g. :func:`hvp_utils.analysis.findings.diagnosis.dominance`)
turns a notebook's table into :class:`Finding` s: a sentence key of
:mod:`~hvp_utils.analysis.findings.wording` (the verdict) and the values the sentence states.
A :class:`Findings` collects them with the tables they were computed from::

    found = Findings("02", "Which term dominates")
    found.table("diagnosis", frame)                      # the rows the verdicts come from
    found.state("diagnosis.dominance", kind="head_q", down_share=0.3, ...)
    found                                                # shows the sentences as markdown

Displayed, a :class:`Findings` is markdown only (a bullet list), so JupyterLab and the site
render it as text; the record (values, tables, verdicts) rides in the output's metadata under
:data:`RECORD_KEY`, where a claim test reads it back (:func:`recorded_outputs`) and recomputes
every verdict. A table is stored there as one line of compressed text (:func:`packed_table`),
a few kilobytes where a list of records took tens.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hvp_utils.analysis.findings.wording import sentence

#: Significant digits kept for recorded numbers: enough to recompute a claim, few enough that
#: the last-bit differences between CPUs never reach the recorded text.
RECORDED_DIGITS = 6
#: The output-metadata key under which a displayed :class:`Findings` keeps its record.
RECORD_KEY = "hvp_utils/findings"


def recorded_outputs(notebook: str | Path) -> list[tuple[dict[str, Any], str]]:
    """Every :class:`Findings` an executed notebook displayed, in cell order: its record (the
    output metadata under :data:`RECORD_KEY`: values, tables, findings, sentences) and the
    markdown it showed."""
    import nbformat

    found = []
    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get(RECORD_KEY)
            if record is not None:
                tables = {key: unpacked_table(t) for key, t in record.get("tables", {}).items()}
                record = {**record, "tables": tables}
                found.append((record, output.get("data", {}).get("text/markdown", "")))
    return found


def packed_table(rows: list[dict[str, Any]]) -> str:
    """``rows`` (records with the same keys) as one line of text: the JSON
    ``{"columns": [...], "data": [[...], ...]}``, zlib-compressed and base64-encoded (a third
    of the JSON's size; the record is for the claim tests, not for a reader)."""
    columns = list(rows[0]) if rows else []
    data = [[row[c] for c in columns] for row in rows]
    text = json.dumps({"columns": columns, "data": data}, separators=(",", ":"))
    return base64.b64encode(zlib.compress(text.encode(), 9)).decode("ascii")


def unpacked_table(table: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of a :func:`packed_table` string (a list of records is returned as is)."""
    if isinstance(table, list):
        return table
    packed = json.loads(zlib.decompress(base64.b64decode(table)))
    return [dict(zip(packed["columns"], row, strict=True)) for row in packed["data"]]


def plain(value: Any, digits: int = RECORDED_DIGITS) -> Any:
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
        return {str(k): plain(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return [plain(v, digits) for v in list(value)]
    raise TypeError(f"cannot record a {type(value).__name__}; pass a number, string, list or dict")


@dataclass(frozen=True)
class Finding:
    """One verdict: the sentence ``key`` of the wording table and the ``values`` it states."""

    key: str
    values: dict[str, Any]

    @property
    def sentence(self) -> str:
        return sentence(self.key, self.values)

    def as_record(self) -> dict[str, Any]:
        return {"key": self.key, "values": plain(self.values)}


@dataclass
class Findings:
    """The conclusions of one notebook section, with the numbers and tables behind them."""

    notebook: str
    title: str = "What the numbers say"
    values: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sentences: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def state(self, key: str, **values: Any) -> Finding:
        """Add the verdict ``key`` with the values its sentence states."""
        finding = Finding(key, values)
        self.findings.append(finding)
        self.sentences.append(finding.sentence)
        return finding

    def record(self, key: str, value: Any) -> Any:
        """Store ``value`` under ``key`` (rounded for the record) and return it unchanged."""
        if key in self.values:
            raise KeyError(f"finding {key!r} is recorded twice; give the second one its own key")
        self.values[key] = plain(value)
        return value

    def table(self, key: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Store the rows a verdict is computed from (index included) and return ``frame``."""
        if key in self.tables:
            raise KeyError(f"table {key!r} is recorded twice")
        flat = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
        self.tables[key] = [
            {str(k): plain(v) for k, v in row.items()} for row in flat.to_dict("records")
        ]
        return frame

    def say(self, text: str) -> None:
        """Add one sentence written in the notebook (from recorded values)."""
        self.sentences.append(text.strip())

    def as_dict(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "title": self.title,
            "values": self.values,
            "tables": {key: packed_table(rows) for key, rows in self.tables.items()},
            "sentences": self.sentences,
            "findings": [f.as_record() for f in self.findings],
        }

    def markdown(self) -> str:
        bullets = "\n".join(f"- {s}" for s in self.sentences)
        return f"**{self.title}**\n\n{bullets}" if self.title else bullets

    def _repr_mimebundle_(self, include=None, exclude=None):
        text = self.markdown()
        return {"text/markdown": text, "text/plain": text}, {RECORD_KEY: self.as_dict()}
