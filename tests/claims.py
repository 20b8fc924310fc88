"""Reading the findings a notebook recorded, for the per-notebook claim tests.

Each ``tests/test_claims_NN.py`` recomputes every number notebook NN's prose states from the
tables the notebook recorded beside it (:class:`hvp_utils.Findings`), for the committed
notebook and, when ``HVP_CLAIMS_RUNS`` names a folder of papermill reruns (``make test`` sets
it to ``runs/ci``: another perturbation, seed and size), for the rerun too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from hvp_utils.analysis.findings import recorded_outputs

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def notebook_paths(number: str) -> list[Path]:
    """The committed notebook ``number`` and, if present, its reruns."""
    paths = sorted(NOTEBOOKS.glob(f"{number}_*.ipynb"))
    assert len(paths) == 1, f"expected one notebook {number}_*.ipynb, found {paths}"
    runs = os.environ.get("HVP_CLAIMS_RUNS")
    if runs:
        rerun = ROOT / runs / paths[0].name
        assert rerun.exists(), f"HVP_CLAIMS_RUNS={runs} but {rerun} is missing: run make rerun-test"
        paths.append(rerun)
    return paths


def params(number: str):
    """pytest parametrisation over :func:`notebook_paths`, with readable ids."""
    paths = notebook_paths(number)
    return pytest.mark.parametrize("path", paths, ids=[p.parent.name for p in paths])


class Recorded:
    """All findings of one notebook merged: values, tables (as DataFrames), verdicts, sentences."""

    def __init__(self, path: Path):
        self.path = path
        self.values: dict = {}
        self.tables: dict[str, pd.DataFrame] = {}
        self.verdicts_recorded: list[dict] = []
        self.sentences: list[str] = []
        self.markdown: list[str] = []
        for data, markdown in recorded_outputs(path):
            for key, value in data["values"].items():
                assert key not in self.values, f"{path.name}: value {key!r} recorded twice"
                self.values[key] = value
            for key, rows in data["tables"].items():
                assert key not in self.tables, f"{path.name}: table {key!r} recorded twice"
                self.tables[key] = pd.DataFrame(rows)
            self.verdicts_recorded += data["findings"]
            self.sentences += data["sentences"]
            self.markdown.append(markdown)
        assert self.sentences, f"{path.name} records no findings (hu.Findings)"

    def verdicts(self, *keys: str, **match) -> list[tuple[str, dict]]:
        """(key, values) of every verdict with one of ``keys`` whose values include ``match``."""
        return [
            (v["key"], v["values"])
            for v in self.verdicts_recorded
            if v["key"] in keys and all(v["values"].get(k) == x for k, x in match.items())
        ]

    def only(self, *keys: str, **match) -> tuple[str, dict]:
        """The one verdict among ``keys`` matching ``match``: (its key, its values)."""
        found = self.verdicts(*keys, **match)
        assert len(found) == 1, f"{self.path.name}: one of {keys} with {match}? {found}"
        return found[0]

    def __getitem__(self, key: str):
        assert key in self.values, f"{self.path.name} does not record {key!r}"
        return self.values[key]

    def table(self, key: str) -> pd.DataFrame:
        assert key in self.tables, f"{self.path.name} does not record table {key!r}"
        return self.tables[key]

    def says(self, fragment: str) -> bool:
        """Whether some recorded sentence contains ``fragment``."""
        return any(fragment in s for s in self.sentences)


def close(recorded: float, recomputed: float, rel: float = 1e-4, abs_: float = 1e-6) -> bool:
    """Equal up to the 6-significant-digit rounding of recorded values and tables."""
    return abs(recorded - recomputed) <= max(abs_, rel * max(abs(recorded), abs(recomputed)))
