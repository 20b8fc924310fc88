"""Plots (seaborn on matplotlib) and the patch-path explorer; they take results and frames,
never models. Imported on demand (``from hvp_utils import viz``) so that importing
:mod:`hvp_utils` does not import pyplot."""

from hvp_utils.viz.explorer import (
    draw_path_panel,
    explore,
    flag_text,
    overshoot_figure,
    static_path_figure,
)
from hvp_utils.viz.plots import (
    accuracy_compute_plot,
    convergence_plot,
    error_share_bars,
    error_terms_scatter,
    estimate_vs_truth_frame,
    faithfulness_plot,
    head_grid,
    head_heatmaps,
    interval_plot,
    pareto_plot,
    roc_plot,
    scatter_vs_truth,
    score_vs_error,
    set_style,
)

__all__ = [
    "overshoot_figure",
    "accuracy_compute_plot",
    "convergence_plot",
    "draw_path_panel",
    "error_share_bars",
    "error_terms_scatter",
    "estimate_vs_truth_frame",
    "explore",
    "faithfulness_plot",
    "flag_text",
    "head_grid",
    "head_heatmaps",
    "interval_plot",
    "pareto_plot",
    "roc_plot",
    "scatter_vs_truth",
    "score_vs_error",
    "set_style",
    "static_path_figure",
]
