"""Markdown tables for the reports the command-line tools write (no ``tabulate`` needed)."""

from __future__ import annotations

import pandas as pd


def to_markdown(frame: pd.DataFrame, floatfmt: str | None = None) -> str:
    """A DataFrame as a Markdown table (its columns; floats formatted with ``floatfmt``)."""

    def cell(value) -> str:
        if floatfmt is not None and isinstance(value, float):
            return format(value, floatfmt)
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1]]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)
