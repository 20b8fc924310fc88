"""hvp_utils: when attribution patching lies, and how to check and correct it.

The helper package behind the notebook suite, in layers (each imports only those above it):

    core/        components, tasks (IOI prompts, corruptions, metric), results, the patch-path
                 engine, models, accuracy metrics, the Literal option types
    estimators/  AP, AtP, AtP*, HVP correction, multi-step HVP, IG, and their registry
    analysis/    diagnosis (E_down / E_local), reliability and bounds, patch paths,
                 Screen-Flag-Fix, circuits, accuracy-against-compute runs, reference checks
    viz/         plots and the patch-path explorer (imports matplotlib; ``from hvp_utils
                 import viz``)
    exercises/   the course's exercises: ``hu.exercises.check(name, fn)`` compares a learner's
                 function with the package's reference and says what is wrong
    cli/         command-line tools (bench, rerun, scaling, notebook refresh, toy-model
                 training); notebooks never import them

Everything a notebook needs is importable from here (``import hvp_utils as hu``) or from
:mod:`hvp_utils.viz`.
"""

from hvp_utils import exercises
from hvp_utils.analysis.benchmark import (
    convergence,
    decision_table,
    fitted_orders,
    pareto_frontier,
    run_estimators,
)
from hvp_utils.analysis.checks import check_second_order, path_derivative, path_function
from hvp_utils.analysis.circuits import (
    ap_circuit,
    circuit_recovery,
    faithfulness,
    head_roles,
    published_ioi_heads,
    recovery_table,
)
from hvp_utils.analysis.diagnosis import diagnose, error_shares
from hvp_utils.analysis import findings
from hvp_utils.analysis.findings import Findings, count_phrase
from hvp_utils.analysis.paths import PathCurves, PathSource, path_curves
from hvp_utils.analysis.reliability import (
    bad_estimates,
    coverage_report,
    detector_report,
    error_bounds,
    flag_reasons,
    lagrange_interval,
    reliability,
    reliability_score,
    sample_components,
)
from hvp_utils.analysis.screen_flag_fix import screen_flag_fix
from hvp_utils.core.components import Component, components
from hvp_utils.core.engine import PatchContext, prepare
from hvp_utils.core.metrics import auroc, compare, pearson, spearman
from hvp_utils.core.models import (
    LowPrecisionWarning,
    ModelWeightsUnavailableError,
    UnknownModelError,
    UnsupportedArchitectureError,
    from_hf_model,
    load_local_checkpoint,
    load_model,
    resolve_dtype,
)
from hvp_utils.core.results import Attribution, CostMeter
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
    Fix,
    HVPMode,
    IGMode,
    IGRule,
    Kind,
    MultistepRule,
    Perturbation,
)
from hvp_utils.estimators import (
    ERROR_ORDER,
    ESTIMATORS,
    EstimatorSpec,
    activation_patching,
    atp,
    atp_local,
    atp_star,
    estimator,
    hvp_correction,
    integrated_gradients,
    multistep_hvp,
)

__all__ = [
    "ERROR_ORDER",
    "ESTIMATORS",
    "KINDS",
    "Attribution",
    "Component",
    "CostMeter",
    "Direction",
    "EstimatorSpec",
    "Findings",
    "Fix",
    "HVPMode",
    "IGMode",
    "IGRule",
    "Kind",
    "LowPrecisionWarning",
    "ModelWeightsUnavailableError",
    "MultistepRule",
    "PatchContext",
    "PatchingTask",
    "PathCurves",
    "PathSource",
    "Perturbation",
    "TaskError",
    "TaskPerformanceWarning",
    "UnknownModelError",
    "UnsupportedArchitectureError",
    "activation_patching",
    "ap_circuit",
    "atp",
    "atp_local",
    "atp_star",
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
    "detector_report",
    "diagnose",
    "error_bounds",
    "error_shares",
    "estimator",
    "exercises",
    "faithfulness",
    "findings",
    "fitted_orders",
    "from_hf_model",
    "flag_reasons",
    "head_roles",
    "hvp_correction",
    "integrated_gradients",
    "ioi_dataset",
    "lagrange_interval",
    "load_local_checkpoint",
    "load_model",
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
    "spearman",
    "task_baseline",
    "task_report",
]
