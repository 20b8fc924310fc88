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
