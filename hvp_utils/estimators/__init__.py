"""Estimators of the patching effect ``Delta_c = g_c(1) - g_c(0)``, one per module.

Every estimator has the signature ``estimator(model, task, comps, *, options...)`` and
returns an :class:`~hvp_utils.core.results.Attribution` that carries its record (an
:class:`~hvp_utils.core.results.Estimator`: key, label, family, options). Beside each function
its record function gives the record for a set of options, e.g. ``ig_estimator(steps=4)``;
calling a record runs the estimator, so tables, plots and the benchmark iterate over records
and never special-case a method.

    function                 record                 family
    activation_patching      ap_estimator           AP (ground truth, a forward pass per component)
    atp                      atp_estimator          AtP (first order, one backward pass)
    atp_star                 atp_star_estimator     AtP* (QK fix and GradDrop, Kramar et al. 2024)
    atp_local                atp_local_estimator    AtP (exact local): AtP after the local map
    hvp_correction           hvp_estimator          HVP (second-order Taylor, diag/joint/hutchinson)
    multistep_hvp            multistep_estimator    multi-step HVP (quadrature with g' and g'')
    integrated_gradients     ig_estimator           IG, or IG joint (quadrature with g' only)
"""

from hvp_utils.estimators.atp import atp, atp_estimator
from hvp_utils.estimators.atp_star import atp_star, atp_star_estimator
from hvp_utils.estimators.local_exact import atp_local, atp_local_estimator
from hvp_utils.estimators.patching import activation_patching, ap_estimator, joint_patching
from hvp_utils.estimators.quadrature import (
    RULES,
    QuadratureRule,
    apply_rule,
    composite_rule,
    ig_estimator,
    integrated_gradients,
    multistep_estimator,
    multistep_hvp,
)
from hvp_utils.estimators.second_order import hvp_correction, hvp_estimator

__all__ = [
    "RULES",
    "QuadratureRule",
    "activation_patching",
    "ap_estimator",
    "apply_rule",
    "atp",
    "atp_estimator",
    "atp_local",
    "atp_local_estimator",
    "atp_star",
    "atp_star_estimator",
    "composite_rule",
    "hvp_correction",
    "hvp_estimator",
    "ig_estimator",
    "integrated_gradients",
    "joint_patching",
    "multistep_estimator",
    "multistep_hvp",
]
