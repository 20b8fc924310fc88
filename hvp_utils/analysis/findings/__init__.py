"""Findings: the verdicts a notebook states, decided by rules of the analysis layer.

- :mod:`.record`: :class:`Finding` (a verdict and its values) and :class:`Findings` (the
  verdicts of one notebook section with the tables behind them, displayed as markdown);
- :mod:`.wording`: the sentence of every verdict, in one place;
- one module of rules per notebook topic (:mod:`.diagnosis` for notebook 02, :mod:`.circuits`
  for 06, :mod:`.workflow` for 07, :mod:`.takeaways` for 08, ...).
"""

from hvp_utils.analysis.findings import circuits, diagnosis, takeaways, workflow
from hvp_utils.analysis.findings.record import RECORD_KEY, Finding, Findings
from hvp_utils.analysis.findings.wording import count_phrase

__all__ = [
    "RECORD_KEY",
    "Finding",
    "Findings",
    "circuits",
    "count_phrase",
    "diagnosis",
    "takeaways",
    "workflow",
]
