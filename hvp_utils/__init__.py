"""hvp_utils: when attribution patching lies, and how to check and correct it.

The helper package behind the notebook suite: models, the IOI task, components, activation
patching (ground truth), attribution patching and its corrections, and their evaluation.
"""

import warnings

# transformer-lens 3.x announces HookedTransformer's removal in 4.0 on every model build;
# the suite pins transformer-lens<4, so the notice is noise (and would land in notebook stderr).
warnings.filterwarnings(
    "ignore", message="HookedTransformer is deprecated", category=DeprecationWarning
)

from hvp_utils.atp_star import atp_star  # noqa: E402
from hvp_utils.components import KINDS, Component, components  # noqa: E402
from hvp_utils.estimators import atp  # noqa: E402
from hvp_utils.metrics import compare, pearson, spearman  # noqa: E402
from hvp_utils.models import (  # noqa: E402
    ModelWeightsUnavailableError,
    UnknownModelError,
    load_model,
    resolve_dtype,
)
from hvp_utils.patching import activation_patching  # noqa: E402
from hvp_utils.quadrature import ERROR_ORDER, integrated_gradients, multistep_hvp  # noqa: E402
from hvp_utils.results import Attribution, CostMeter  # noqa: E402
from hvp_utils.second_order import hvp_correction  # noqa: E402
from hvp_utils.tasks import PatchingTask, TaskError, ioi_dataset, task_baseline  # noqa: E402

__all__ = [
    "ERROR_ORDER",
    "KINDS",
    "Attribution",
    "Component",
    "CostMeter",
    "ModelWeightsUnavailableError",
    "PatchingTask",
    "TaskError",
    "UnknownModelError",
    "activation_patching",
    "atp",
    "atp_star",
    "compare",
    "components",
    "hvp_correction",
    "integrated_gradients",
    "ioi_dataset",
    "load_model",
    "multistep_hvp",
    "pearson",
    "resolve_dtype",
    "spearman",
    "task_baseline",
]

# diagnosis and reliability (issue 4)
from hvp_utils.diagnosis import diagnose, error_shares  # noqa: E402
from hvp_utils.explorer import PathCurves, explore, path_curves, static_path_figure  # noqa: E402
from hvp_utils.reliability import (  # noqa: E402
    auroc,
    coverage_report,
    detector_report,
    error_bounds,
    reliability,
    reliability_score,
    sample_components,
)

__all__ += [
    "PathCurves",
    "auroc",
    "coverage_report",
    "detector_report",
    "diagnose",
    "error_bounds",
    "error_shares",
    "explore",
    "path_curves",
    "reliability",
    "reliability_score",
    "sample_components",
    "static_path_figure",
]

# circuits, Screen-Flag-Fix, model sources (issues 5 and 6)
from hvp_utils.circuits import (  # noqa: E402
    ap_circuit,
    circuit_recovery,
    faithfulness,
    head_roles,
    published_ioi_heads,
    recovery_table,
)
from hvp_utils.models import (  # noqa: E402
    LowPrecisionWarning,
    UnsupportedArchitectureError,
    load_local_checkpoint,
)
from hvp_utils.workflow import screen_flag_fix  # noqa: E402

__all__ += [
    "LowPrecisionWarning",
    "UnsupportedArchitectureError",
    "ap_circuit",
    "circuit_recovery",
    "faithfulness",
    "head_roles",
    "load_local_checkpoint",
    "published_ioi_heads",
    "recovery_table",
    "screen_flag_fix",
]
