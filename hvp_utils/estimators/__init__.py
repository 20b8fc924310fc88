"""Estimators of the patching effect ``Delta_c = g_c(1) - g_c(0)``, one per module.

Every estimator has the signature ``estimator(model, task, comps, *, options...)`` and
returns an :class:`~hvp_utils.core.results.Attribution`; each is registered once in
:data:`~hvp_utils.estimators.registry.ESTIMATORS` with its label and family, so tables,
plots and the benchmark never special-case a method.

    name         function                 family
    ap           activation_patching      AP (ground truth, one forward pass per component)
    atp          atp                      AtP (first order, one backward pass)
    atp_star     atp_star                 AtP* (QK fix and GradDrop, Kramar et al. 2024)
    atp_local    atp_local                AtP (exact local): AtP after the exact local map
    hvp          hvp_correction           HVP (second-order Taylor, diag/joint/hutchinson)
    multistep    multistep_hvp            multi-step HVP (quadrature with g' and g'')
    ig           integrated_gradients     IG, or IG joint (quadrature with g' only)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hvp_utils.estimators.atp import atp
from hvp_utils.estimators.atp_star import atp_star
from hvp_utils.estimators.local_exact import atp_local
from hvp_utils.estimators.patching import activation_patching
from hvp_utils.estimators.quadrature import ERROR_ORDER, integrated_gradients, multistep_hvp
from hvp_utils.estimators.registry import (
    ESTIMATORS,
    EstimatorSpec,
    describe,
    estimator,
    register,
)
from hvp_utils.estimators.second_order import hvp_correction


def _hvp_label(o: Mapping[str, Any]) -> str:
    return f"HVP {o['mode']}" + (f" S={o['n_probes']}" if o["mode"] == "hutchinson" else "")


def _ig_label(o: Mapping[str, Any]) -> str:
    joint = " joint" if o["mode"] == "joint" else ""
    gauss = " gauss" if o["rule"] == "gauss" else ""
    return f"IG{joint}{gauss} K={o['steps']}"


def _noising(label: str, o: Mapping[str, Any]) -> str:
    return label if o.get("direction", "denoising") == "denoising" else f"{label} (noising)"


register("ap", activation_patching, lambda o: _noising("AP", o), "AP")
register("atp", atp, lambda o: _noising("AtP", o), "AtP")
register(
    "atp_star",
    atp_star,
    lambda o: _noising("AtP*" if o["graddrop"] else "AtP* (QK fix)", o),
    "AtP*",
)
register("atp_local", atp_local, lambda o: _noising("AtP (exact local)", o), "AtP (exact local)")
register("hvp", hvp_correction, lambda o: _noising(_hvp_label(o), o), "HVP (one point)")
register(
    "multistep",
    multistep_hvp,
    lambda o: _noising(f"multistep {o['rule']} K={o['steps']}", o),
    "multi-step HVP",
)
register(
    "ig",
    integrated_gradients,
    lambda o: _noising(_ig_label(o), o),
    lambda o: "IG (joint per hook)" if o["mode"] == "joint" else "IG (per component)",
)

__all__ = [
    "ERROR_ORDER",
    "ESTIMATORS",
    "EstimatorSpec",
    "activation_patching",
    "atp",
    "atp_local",
    "atp_star",
    "describe",
    "estimator",
    "hvp_correction",
    "integrated_gradients",
    "multistep_hvp",
    "register",
]
