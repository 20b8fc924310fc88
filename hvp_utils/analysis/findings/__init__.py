"""Findings: the verdicts a notebook states, decided by rules of the analysis layer.

- :mod:`.record`: :class:`Finding` (a verdict and its values) and :class:`Findings` (the
  verdicts of one notebook section with the tables behind them, displayed as markdown);
- :mod:`.wording`: the sentence of every verdict, in one place;
- one module of rules per notebook topic: :mod:`.by_hand` (notebook 00),
  :mod:`.attribution` (01), :mod:`.diagnosis` (02), :mod:`.reliability` (03), ...
"""

from hvp_utils.analysis.findings import attribution, by_hand, diagnosis, reliability
from hvp_utils.analysis.findings.record import RECORD_KEY, Finding, Findings
from hvp_utils.analysis.findings.wording import count_phrase

__all__ = [
    "RECORD_KEY",
    "Finding",
    "Findings",
    "attribution",
    "by_hand",
    "count_phrase",
    "diagnosis",
    "reliability",
]
