"""The wording of every verdict, in one place.

A rule of the analysis layer decides a verdict (a key of :data:`SENTENCES`) and the values it
states; this module turns the two into a sentence. Rewording a verdict is an edit here alone:
the rules and the claim tests speak of keys and values, never of words.

A sentence is a :meth:`str.format` template over the verdict's values, or, where the wording
depends on the values (a list, a count), a function of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def count_phrase(n: int, total: int, noun: str, plural: str | None = None) -> str:
    """'all 32 heads', 'none of the 32 heads', 'the one head', '31 of 32 heads'."""
    many = plural or f"{noun}s"
    if total == 1:
        return f"the one {noun}" if n == 1 else f"not the one {noun}"
    if n == total:
        return f"all {total} {many}"
    if n == 0:
        return f"none of the {total} {many}"
    return f"{n} of {total} {many}" if n > 1 else f"1 of {total} {many}"


#: How a share of the AtP error carried downstream reads (bands of ``diagnosis.share_band``).
SHARE_BANDS = {
    "almost_all_downstream": "almost all downstream",
    "mostly_downstream": "mostly downstream",
    "about_even": "about even",
    "mostly_local": "mostly local",
    "almost_all_local": "almost all local",
}

#: What the local map of a kind is, in words.
LOCAL_MAP_OF = {
    "head_q": "queries (the softmax)",
    "head_k": "keys (the softmax)",
    "neuron_pre": "neuron pre-activations (the activation function)",
}


def _checks_hold(v: Mapping[str, Any]) -> str:
    n, total = v["n_passed"], v["n_perturbations"]
    where = "both perturbations" if n == total == 2 else count_phrase(n, total, "perturbation")
    return (
        f"On {where} every check above holds to within 1e{v['exponent']}: the two terms add up "
        "to AP - AtP, the two curvature terms to the HVP's g''(0), and the kinds without a local "
        "map have E_local = 0."
    )


def _dominance(v: Mapping[str, Any]) -> str:
    down, second = v["down_share"], v["second_down_share"]
    return (
        f"`{v['perturbation']}`, {v['kind']}: the AtP error is {SHARE_BANDS[v['band']]} "
        f"({down:.0%} downstream, {1 - down:.0%} local); the curvature g''(0) is "
        f"{SHARE_BANDS[v['second_band']]} ({second:.0%} downstream)."
    )


def _kind_bands(v: Mapping[str, Any]) -> str:
    bands = v["bands"]
    if len(bands) == 2 and len(set(bands.values())) == 1:
        words = f"{SHARE_BANDS[next(iter(bands.values()))]} under both perturbations"
    else:
        words = " and ".join(f"{SHARE_BANDS[b]} under `{p}`" for p, b in bands.items())
    return f"For {LOCAL_MAP_OF[v['kind']]} the error is {words}."


SENTENCES: dict[str, str | Callable[[Mapping[str, Any]], str]] = {
    # notebook 02: diagnosis
    "diagnosis.checks_hold": _checks_hold,
    "diagnosis.dominance": _dominance,
    "diagnosis.worst_all_downstream": (
        "The {n} components with the largest AtP error under `{perturbation}` are all of kinds "
        "without a local map ({kinds}): their error is entirely downstream."
    ),
    "diagnosis.worst_mixed": (
        "Of the {n} components with the largest AtP error under `{perturbation}` ({kinds}), "
        "{n_without_local_map} have no local map; the local term carries {local_share:.0%} of "
        "their sum |E_down| + |E_local|."
    ),
    "diagnosis.split_exact": (
        "The AtP error of every component splits exactly into a downstream and a local term "
        "(every check holds to within 1e{exponent})."
    ),
    "diagnosis.identity_kinds": (
        "Head outputs, MLP outputs and neurons have no local map, and the attention pattern feeds "
        "z linearly: all of their AtP error is downstream, by construction."
    ),
    "diagnosis.kind_bands": _kind_bands,
    "diagnosis.local_everywhere": (
        "Wherever a component has a local non-linearity, its local term carries most of AtP's "
        "error here."
    ),
    "diagnosis.local_in_some": (
        "The local term carries most of the error (more than 60%) in {n_local} of the {total} "
        "pairs of a kind with a local map and a perturbation; in the others the split is about "
        "even or leans downstream."
    ),
    "diagnosis.local_nowhere": (
        "Even where a component has a local non-linearity, the local term does not carry most of "
        "AtP's error here."
    ),
    "diagnosis.largest_downstream": (
        "In absolute terms the largest errors are downstream: the largest mean |AP - AtP| is that "
        "of {kind} under `{perturbation}` ({mean_error:.3f}), {ratio:.1f} times the largest of a "
        "kind with a local map ({local_kind} under `{local_perturbation}`, "
        "{local_mean_error:.3f})."
    ),
    "diagnosis.largest_local": (
        "The largest mean |AP - AtP| is that of {kind} under `{perturbation}` "
        "({mean_error:.3f}), a kind with a local map."
    ),
    # notebook 00: add its verdicts here (patching by hand)
    #
    #
    # notebook 01: add its verdicts here (AP and AtP)
    #
    #
    # notebook 03: add its verdicts here (reliability)
    #
    #
    # notebook 04: add its verdicts here (HVP)
    #
    #
    # notebook 05: add its verdicts here (multi-step and IG)
    #
    #
    # notebook 06: add its verdicts here (circuits)
    #
    #
    # notebook 07: add its verdicts here (Screen-Flag-Fix)
    #
    #
    # notebook 08: add its verdicts here (take-home)
    #
    #
}


def sentence(key: str, values: Mapping[str, Any]) -> str:
    """The sentence of verdict ``key`` stating ``values``."""
    if key not in SENTENCES:
        raise KeyError(f"no wording for verdict {key!r}; add it to SENTENCES in {__name__}")
    template = SENTENCES[key]
    return template(values) if callable(template) else template.format(**values)
