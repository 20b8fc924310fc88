"""The closed vocabularies of the package as ``Literal`` types.

Public functions annotate their options with these, so a typo such as ``mode="diagonal"``
fails at the call (beartype checks every annotation in the test suite) and an editor can
offer the valid values. Each tuple beside a type lists the same values at run time.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

from transformer_lens.model_bridge import TransformerBridge

#: The model every function takes: a TransformerLens 4 bridge in compatibility mode
#: (:func:`hvp_utils.core.models.load_model`).
Model = TransformerBridge

#: Denoising patches clean activations into the corrupted run; noising the reverse.
Direction = Literal["denoising", "noising"]
#: How the second-order term is estimated: one HVP direction per component (exact g''(0)),
#: one for the whole set (cross terms included), or random-sign probes (cross terms cancel).
HVPMode = Literal["diag", "joint", "hutchinson"]
#: Quadrature rules of the multi-step HVP estimator.
MultistepRule = Literal["taylor", "trapezoid", "radau"]
#: Quadrature rules of Integrated Gradients.
IGRule = Literal["midpoint", "gauss"]
#: Integrated Gradients along each component's own path, or along one path per hook point.
IGMode = Literal["per_component", "joint"]
#: Corruptions of the IOI prompts.
Perturbation = Literal["name_swap", "random_token"]
#: What Screen-Flag-Fix uses on the flagged components.
Fix = Literal["patch", "hvp", "multistep"]
#: How :func:`~hvp_utils.sample_components` picks ``k`` components: a seeded random subset,
#: evenly spaced ones, or a seeded random subset of each layer, sized in proportion to it.
Sampling = Literal["random", "spaced", "stratified"]
#: Component kinds (see :mod:`hvp_utils.core.components`).
Kind = Literal[
    "head_out",
    "head_out_pos",
    "mlp_out",
    "neuron",
    "resid_pos",
    "head_q",
    "head_k",
    "head_pattern",
    "neuron_pre",
]


class Family(StrEnum):
    """What kind of estimator made a result (its value is the name shown in tables)."""

    AP = "AP"
    AP_PEER = "AP (transformer_lens.patching)"
    ATP = "AtP"
    ATP_STAR = "AtP*"
    ATP_LOCAL = "AtP (exact local)"
    HVP = "HVP (one point)"
    MULTISTEP = "multi-step HVP"
    IG = "IG (per component)"
    IG_JOINT = "IG (joint per hook)"
    IG_PEER = "IG joint (Captum)"
    SFF = "SFF"
    BOUNDS = "bounds"
    RELIABILITY = "reliability"


DIRECTIONS: tuple[str, ...] = get_args(Direction)
HVP_MODES: tuple[str, ...] = get_args(HVPMode)
MULTISTEP_RULES: tuple[str, ...] = get_args(MultistepRule)
IG_RULES: tuple[str, ...] = get_args(IGRule)
IG_MODES: tuple[str, ...] = get_args(IGMode)
PERTURBATIONS: tuple[str, ...] = get_args(Perturbation)
FIXES: tuple[str, ...] = get_args(Fix)
SAMPLINGS: tuple[str, ...] = get_args(Sampling)
KINDS: tuple[str, ...] = get_args(Kind)


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; use one of {choices}")
    return value
