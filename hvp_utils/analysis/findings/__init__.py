"""Findings: the verdicts a notebook states, decided by rules of the analysis layer.

- :mod:`.record`: :class:`Finding` (a verdict and its values) and :class:`Findings` (the
  verdicts of one notebook section with the tables behind them, displayed as markdown);
- :mod:`.wording`: the sentence of every verdict, in one place;
- one module of rules per notebook: :mod:`.by_hand` (00), :mod:`.attribution` (01),
  :mod:`.diagnosis` (02), :mod:`.reliability` (03), :mod:`.second_order` (04),
  :mod:`.quadrature` (05), :mod:`.circuits` (06), :mod:`.workflow` (07),
  :mod:`.takeaways` (08), :mod:`.paper` (08, the seed paper's claims judged) and
  :mod:`.spread` (08, the key numbers of 01, 04, 06 and 07 across prompt samples).
"""

from hvp_utils.analysis.findings import (
    attribution,
    by_hand,
    circuits,
    diagnosis,
    paper,
    quadrature,
    reliability,
    second_order,
    spread,
    takeaways,
    workflow,
)
from hvp_utils.analysis.findings.record import RECORD_KEY, Finding, Findings, recorded_outputs
from hvp_utils.analysis.findings.wording import count_phrase

__all__ = [
    "RECORD_KEY",
    "Finding",
    "Findings",
    "recorded_outputs",
    "attribution",
    "by_hand",
    "circuits",
    "count_phrase",
    "diagnosis",
    "paper",
    "quadrature",
    "reliability",
    "second_order",
    "spread",
    "takeaways",
    "workflow",
]
