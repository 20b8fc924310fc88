"""Accuracy of an estimate against activation patching (the ground truth)."""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from hvp_utils.core.results import Attribution


def average_ranks(x: Tensor) -> Tensor:
    """Ranks from 0 (the smallest value) to n - 1, tied values sharing the mean of the positions
    they occupy, as Spearman's correlation and the Mann-Whitney AUROC need: one sort."""
    _, which, counts = torch.unique(x, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).to(x.dtype) - 1  # the highest position of each distinct value
    return (last - (counts.to(x.dtype) - 1) / 2)[which]


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2
    (the Mann-Whitney statistic from average ranks). NaN without both classes."""
    labels = labels.bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores.double())
    return float((ranks[labels].sum() - n_pos * (n_pos - 1) / 2) / (n_pos * n_neg))


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation; NaN when either side is constant."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denominator = (x.norm() * y.norm()).item()
    return float((x @ y).item() / denominator) if denominator > 0 else float("nan")


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman rank correlation: Pearson correlation of the ranks."""
    return pearson(average_ranks(x.double()), average_ranks(y.double()))


def compare(
    estimate: Attribution,
    truth: Attribution,
    *,
    top_k: int | None = None,
    sign_threshold: float = 0.05,
) -> pd.DataFrame:
    """One-row DataFrame of accuracy against the ground truth on the same components.

    - ``nmae`` = mean|est - AP| / mean|AP|
    - ``sign_agreement``: share of components with |AP| > ``sign_threshold`` * max|AP|
      whose estimate has AP's sign
    - ``topk_recall``: share of AP's top-k components (by |AP|) in the estimate's top-k;
      k defaults to max(1, n // 10)
    """
    if estimate.names != truth.names:
        raise ValueError("estimate and truth must cover the same components in the same order")
    est, ap = estimate.values.double().cpu(), truth.values.double().cpu()
    k = top_k or max(1, len(ap) // 10)
    big = ap.abs() > sign_threshold * ap.abs().max()
    top_true = set(ap.abs().topk(k).indices.tolist())
    top_est = set(est.abs().topk(k).indices.tolist())
    row = {
        "method": estimate.method,
        "n": len(ap),
        "pearson": pearson(est, ap),
        "spearman": spearman(est, ap),
        "nmae": float((est - ap).abs().mean() / ap.abs().mean()),
        "sign_agreement": float((est[big].sign() == ap[big].sign()).double().mean()),
        "topk_recall": len(top_true & top_est) / k,
        "seconds": estimate.cost.seconds,
    }
    return pd.DataFrame([row]).set_index("method")
