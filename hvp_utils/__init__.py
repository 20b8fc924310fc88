"""hvp_utils: when attribution patching lies, and how to check and correct it.

The helper package behind the notebook suite, in layers (each imports only those above it):

    core/        components, tasks (IOI prompts, corruptions, metric), results, the patch-path
                 engine, models, accuracy metrics, the Literal option types
    estimators/  AP, AtP, AtP*, HVP correction, multi-step HVP, IG, each with its record,
                 and the table of quadrature rules
    analysis/    diagnosis (E_down / E_local), reliability and bounds, patch paths,
                 Screen-Flag-Fix, circuits, accuracy-against-compute runs, reference checks
    viz/         plots and the patch-path explorer (imports matplotlib; ``from hvp_utils
                 import viz``)
    cli/         command-line tools (bench, rerun, scaling, notebook refresh, toy-model
                 training); notebooks never import them

Everything a notebook needs is importable from here (``import hvp_utils as hu``) or from
:mod:`hvp_utils.viz`.
"""

from hvp_utils.analysis import findings
from hvp_utils.analysis.benchmark import (
    convergence,
    decision_table,
    default_estimators,
    fitted_orders,
    pareto_frontier,
    run_estimators,
)
from hvp_utils.analysis.checks import check_second_order, path_derivative, path_function
from hvp_utils.analysis.circuits import (
    CircuitRecovery,
    ap_circuit,
    circuit_recovery,
    faithfulness,
    head_roles,
    published_ioi_heads,
    recovery_table,
)
from hvp_utils.analysis.diagnosis import diagnose, error_shares
from hvp_utils.analysis.findings import Findings, count_phrase
from hvp_utils.analysis.paths import PathCurves, PathSource, path_curves
from hvp_utils.analysis.reliability import (
    bad_estimates,
    coverage_report,
    describe_sample,
    detector_report,
    error_bounds,
    flag_reasons,
    lagrange_interval,
    reliability,
    reliability_score,
    sample_components,
)
from hvp_utils.analysis.screen_flag_fix import screen_flag_fix, sff_estimator
from hvp_utils.core.components import Component, components
from hvp_utils.core.engine import PatchContext, UnsupportedAttentionError, prepare
from hvp_utils.core.metrics import auroc, compare, pearson, spearman
from hvp_utils.core.models import (
    LowPrecisionWarning,
    ModelWeightsUnavailableError,
    UnknownModelError,
    UnsupportedArchitectureError,
    attention_implementation,
    from_hf_model,
    load_local_checkpoint,
    load_model,
    resolve_dtype,
)
from hvp_utils.core.results import (
    AtPStarAttribution,
    Attribution,
    Cost,
    CostMeter,
    Estimator,
    FlagReasons,
    IntervalAttribution,
    ReliabilityAttribution,
    ScreenFlagFixResult,
    SecondOrderAttribution,
)
from hvp_utils.core.tasks import (
    PatchingTask,
    TaskError,
    TaskPerformanceWarning,
    ioi_dataset,
    task_baseline,
    task_report,
)
from hvp_utils.core.types import (
    KINDS,
    Direction,
    Family,
    Fix,
    HVPMode,
    IGMode,
    IGRule,
    Kind,
    MultistepRule,
    Perturbation,
)
from hvp_utils.estimators import (
    RULES,
    QuadratureRule,
    activation_patching,
    ap_estimator,
    apply_rule,
    atp,
    atp_estimator,
    atp_local,
    atp_local_estimator,
    atp_star,
    atp_star_estimator,
    hvp_correction,
    hvp_estimator,
    ig_estimator,
    integrated_gradients,
    multistep_estimator,
    multistep_hvp,
)

__all__ = [
    "KINDS",
    "RULES",
    "AtPStarAttribution",
    "Attribution",
    "CircuitRecovery",
    "Component",
    "Cost",
    "CostMeter",
    "Direction",
    "Estimator",
    "Family",
    "Findings",
    "FlagReasons",
    "Fix",
    "HVPMode",
    "IGMode",
    "IGRule",
    "IntervalAttribution",
    "Kind",
    "LowPrecisionWarning",
    "ModelWeightsUnavailableError",
    "MultistepRule",
    "PatchContext",
    "PatchingTask",
    "PathCurves",
    "PathSource",
    "Perturbation",
    "QuadratureRule",
    "ReliabilityAttribution",
    "ScreenFlagFixResult",
    "SecondOrderAttribution",
    "TaskError",
    "TaskPerformanceWarning",
    "UnknownModelError",
    "UnsupportedArchitectureError",
    "UnsupportedAttentionError",
    "activation_patching",
    "ap_circuit",
    "ap_estimator",
    "apply_rule",
    "atp",
    "atp_estimator",
    "atp_local",
    "atp_local_estimator",
    "atp_star",
    "atp_star_estimator",
    "attention_implementation",
    "auroc",
    "bad_estimates",
    "check_second_order",
    "circuit_recovery",
    "compare",
    "components",
    "convergence",
    "count_phrase",
    "coverage_report",
    "decision_table",
    "default_estimators",
    "describe_sample",
    "detector_report",
    "diagnose",
    "error_bounds",
    "error_shares",
    "faithfulness",
    "findings",
    "fitted_orders",
    "from_hf_model",
    "flag_reasons",
    "head_roles",
    "hvp_correction",
    "hvp_estimator",
    "ig_estimator",
    "integrated_gradients",
    "ioi_dataset",
    "lagrange_interval",
    "load_local_checkpoint",
    "load_model",
    "multistep_estimator",
    "multistep_hvp",
    "pareto_frontier",
    "path_curves",
    "path_derivative",
    "path_function",
    "pearson",
    "prepare",
    "published_ioi_heads",
    "recovery_table",
    "reliability",
    "reliability_score",
    "resolve_dtype",
    "run_estimators",
    "sample_components",
    "screen_flag_fix",
    "sff_estimator",
    "spearman",
    "task_baseline",
    "task_report",
]
