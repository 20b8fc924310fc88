"""Reading what a learner's function returned, and saying what is wrong with it.

:func:`as_values` and the readers turn a return value into a float64 tensor (or fail saying
why it is not one); :func:`mismatch` is the generic diagnosis used when no known mistake
explains a difference: the shape (which axis, expected against got), NaN or inf, a flipped
sign, a constant factor, and otherwise the entries that differ most.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from hvp_utils.core.results import Attribution

#: How many differing entries a failure message lists.
SHOW_ENTRIES = 4


class ExerciseFailed(Exception):
    """The learner's function runs but returns something wrong; the message says what."""


class NotImplementedYet(Exception):  # noqa: N818 (a state, not an error)
    """The learner's function still raises ``NotImplementedError`` (the stub)."""


# --------------------------------------------------------------------------------------------
# Reading


def as_values(got: Any, what: str) -> Tensor:
    """What the learner returned as a detached float64 CPU tensor, or a failure saying why
    it is not a number."""
    __tracebackhide__ = True
    if got is None:
        raise ExerciseFailed(f"{what} is None: the function has no `return` (or returns None)")
    if isinstance(got, Attribution):
        got = got.values
    if isinstance(got, (bool, str, dict, list, tuple)) and not (
        isinstance(got, (list, tuple)) and all(isinstance(x, (int, float, Tensor)) for x in got)
    ):
        raise ExerciseFailed(f"{what} is a {type(got).__name__}; return a number or a tensor")
    try:
        if isinstance(got, (list, tuple)):
            got = torch.stack([_float64(x).reshape(()) for x in got])
        return _float64(got)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ExerciseFailed(
            f"{what} is a {type(got).__name__}, which is not a number or a tensor ({err})"
        ) from err


def _float64(x: Any) -> Tensor:
    """A detached float64 CPU tensor (Python numbers go straight to float64, not float32)."""
    if isinstance(x, Tensor):
        return x.detach().to("cpu", torch.float64)
    if isinstance(x, (int, float)):
        return torch.tensor(float(x), dtype=torch.float64)
    return torch.as_tensor(x).detach().to("cpu", torch.float64)


def scalar(got: Any, what: str, n_prompts: int | None = None) -> Tensor:
    """One number from what the learner returned, or a failure saying which shape it has."""
    __tracebackhide__ = True
    values = as_values(got, what)
    problem = shape_problem(values, torch.zeros(()), None, n_prompts)
    if problem:
        raise ExerciseFailed(f"{what}: {problem}")
    return values.reshape(())


def items(got: Any, names: Sequence[str], what: str) -> list[Any]:
    """The learner's ``len(names)`` returned things (a tuple or a list), or a failure saying
    how many to return."""
    __tracebackhide__ = True
    wanted = f"({', '.join(names)})"
    if not isinstance(got, (tuple, list)) or len(got) != len(names):
        size = f" of {len(got)} items" if isinstance(got, (tuple, list)) else ""
        raise ExerciseFailed(
            f"{what}: return {len(names)} things, {wanted}; got a {type(got).__name__}{size}"
        )
    return list(got)


def tensor_pair(got: Any, names: tuple[str, str], n: int) -> Tensor:
    """The learner's two ``[n]`` tensors (a tuple or a list of two, or one ``[2, n]``
    tensor) as one ``[2, n]`` tensor, or a failure saying why not."""
    __tracebackhide__ = True
    pair = f"({names[0]}, {names[1]})"
    if isinstance(got, Tensor) and tuple(got.shape) == (n,):
        raise ExerciseFailed(
            f"return two tensors, {pair}, one value per component each; got one tensor of "
            f"shape {tuple(got.shape)}"
        )
    if not isinstance(got, (tuple, list)):
        return as_values(got, pair)  # e.g. a stacked [2, n] tensor: the comparison checks it
    parts = [as_values(x, name) for x, name in zip(items(got, names, pair), names, strict=True)]
    for part, name in zip(parts, names, strict=True):
        problem = shape_problem(part, torch.zeros(n), ("component",))
        if problem:
            raise ExerciseFailed(f"{name}: {problem}")
    return torch.stack([part.reshape(n) for part in parts])


def booleans(got: Any, n: int, what: str, *, strict: bool = False) -> Tensor:
    """One True/False per component as a float64 ``[n]`` tensor of 0/1, or a failure saying
    why not (``strict``: only a boolean tensor will do)."""
    __tracebackhide__ = True
    if strict and not (isinstance(got, Tensor) and got.dtype == torch.bool):
        kind = got.dtype if isinstance(got, Tensor) else type(got).__name__
        if not isinstance(got, Tensor):
            as_values(got, what)  # None, a str, ...: says so
        raise ExerciseFailed(
            f"{what} is {kind}; return a boolean tensor (a comparison such as score > tau), "
            "one True/False per component"
        )
    values = as_values(got, what)
    problem = shape_problem(values, torch.zeros(n), ("component",))
    if problem:
        raise ExerciseFailed(f"{what}: {problem}")
    values = values.reshape(n)
    if not bool(((values == 0) | (values == 1)).all()):
        raise ExerciseFailed(
            f"{what} holds values other than True/False (e.g. {float(values.max()):.4g}): "
            "return one boolean per component (a comparison such as score > tau), not the "
            "scores themselves"
        )
    return values


# --------------------------------------------------------------------------------------------
# Shapes


def _shape_text(shape: Sequence[int], axes: Sequence[str] | None) -> str:
    if not shape:
        return "a scalar, shape ()"
    names = f" [{' '.join(axes)}]" if axes and len(axes) == len(shape) else ""
    return f"{tuple(shape)}{names}"


def same_shape(got: Tensor, expected: Tensor) -> bool:
    """Whether ``got`` can be compared with ``expected`` (one number counts as a scalar)."""
    return got.shape == expected.shape or (expected.dim() == 0 and got.numel() == 1)


def shape_problem(
    got: Tensor, expected: Tensor, axes: Sequence[str] | None = None, n_prompts: int | None = None
) -> str | None:
    """Why ``got`` cannot be compared with ``expected`` (None when the shapes agree)."""
    gs, es = tuple(got.shape), tuple(expected.shape)
    if same_shape(got, expected):
        return None
    lines = [
        "wrong shape:",
        f"  expected {_shape_text(es, axes)}",
        f"  got      {_shape_text(gs, None)}",
    ]
    if not es:
        if n_prompts is not None and n_prompts in gs:
            lines.append(
                f"  hint: axis {gs.index(n_prompts)} has one entry per prompt ({n_prompts}); "
                "the metric is the mean over prompts (.mean(0))"
            )
        else:
            lines.append("  hint: return a single number (reduce the extra axes)")
    elif len(gs) == len(es):
        if sorted(gs) == sorted(es) and gs == es[::-1]:
            lines.append("  hint: the axes are swapped (transposed); return the other order")
        for axis, (g, e) in enumerate(zip(gs, es, strict=True)):
            if g != e:
                name = f" ({axes[axis]})" if axes else ""
                lines.append(f"  axis {axis}{name} has size {g}, expected {e}")
    elif got.numel() == expected.numel():
        lines.append(
            f"  hint: the same {expected.numel()} entries in another layout: "
            f"reshape to {es}" + (f" ([{' '.join(axes)}])" if axes else "")
        )
    elif n_prompts is not None and gs[:1] == (n_prompts,) and gs[1:] == es:
        lines.append(
            f"  hint: axis 0 has one entry per prompt ({n_prompts}); sum it away "
            "(the metric's 1/n_prompts is already in the gradient)"
        )
    else:
        lines.append(f"  got {len(gs)} axes, expected {len(es)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Values


def close(got: Tensor, expected: Tensor, rtol: float, scale: float) -> bool:
    """Whether every entry agrees: ``|got - expected| <= rtol (scale + |expected|)``, with
    NaN and inf agreeing only with themselves."""
    if got.shape != expected.shape:
        return False
    same = (got == expected) | (torch.isnan(got) & torch.isnan(expected))
    gap = (got - expected).abs() <= rtol * max(scale, 1e-12) + rtol * expected.abs()
    return bool((same | gap).all())


def scale_of(expected: Tensor) -> float:
    """The comparison's scale: the largest finite ``|expected|``, at least 1."""
    finite = expected[torch.isfinite(expected)]
    return max(1.0, float(finite.abs().max())) if finite.numel() else 1.0


def mismatch(
    got: Tensor,
    expected: Tensor,
    *,
    rtol: float,
    labels: Sequence[str],
    n_prompts: int | None = None,
    boolean: bool = False,
) -> str:
    """What is wrong with ``got`` (flat, the shape of ``expected``) when no known mistake
    explains it: NaN or inf, a flipped sign, a constant factor (with the number of prompts
    as a hint), or which entries differ (and where the sign is wrong)."""
    scale = scale_of(expected)
    if not torch.isfinite(got).all():
        bad = (~torch.isfinite(got)).nonzero().flatten().tolist()
        return f"contains NaN or inf (at {_names(bad, labels)})"
    table = differences(got, expected, labels, rtol, boolean=boolean)
    if not boolean and expected.abs().max() > 0 and close(got, -expected, rtol, scale):
        return f"wrong sign: every value is the negative of the expected one\n{table}"
    norm = float((expected * expected).sum())
    if not boolean and norm > 0:
        k = float((got * expected).sum()) / norm
        if abs(k - 1) > 10 * rtol and k != 0 and close(got, k * expected, 10 * rtol, scale):
            return f"off by a constant factor: got {k:.6g} x the expected values" + (
                f"{_prompt_hint(k, n_prompts)}\n{table}"
            )
    flipped = (got * expected < 0) & (expected.abs() > rtol * scale)
    detail = ""
    if not boolean and flipped.any() and not flipped.all():
        detail = f"\n  the sign is wrong at {_names(flipped.nonzero().flatten().tolist(), labels)}"
    return f"values differ from the reference{detail}\n{table}"


def _prompt_hint(k: float, n_prompts: int | None) -> str:
    """A hint when the factor is the number of prompts (a sum for a mean) or its inverse."""
    if not n_prompts or n_prompts < 2:
        return ""
    hints = {
        float(n_prompts): f"{n_prompts} is the number of prompts: a sum where a mean belongs?",
        1.0 / n_prompts: f"1/{n_prompts}: a mean over prompts where the sum belongs?",
    }
    for factor, hint in hints.items():
        if math.isclose(abs(k), factor, rel_tol=1e-3):
            sign = " (and the sign is flipped)" if k < 0 else ""
            return f"\n  hint: {hint}{sign}"
    return ""


def _names(indices: list[int], labels: Sequence[str]) -> str:
    shown = [labels[i] for i in indices[:SHOW_ENTRIES]]
    more = f" and {len(indices) - SHOW_ENTRIES} more" if len(indices) > SHOW_ENTRIES else ""
    return ", ".join(shown) + more


def differences(
    got: Tensor, expected: Tensor, labels: Sequence[str], rtol: float, *, boolean: bool = False
) -> str:
    """The entries that differ, largest differences first: label, expected, got."""
    scale = scale_of(expected)
    gap = (got - expected).abs().nan_to_num(nan=math.inf)
    wrong = (gap > rtol * scale + rtol * expected.abs()).nonzero().flatten()
    order = wrong[gap[wrong].argsort(descending=True, stable=True)].tolist()
    shown = [labels[i] for i in order]
    width = max((len(n) for n in shown[:SHOW_ENTRIES]), default=0)

    def text(x: float) -> str:
        return str(bool(x)) if boolean else f"{x:+.6g}"

    rows = [
        f"  {n:<{width}}  expected {text(float(expected[i]))}, got {text(float(got[i]))}"
        for n, i in zip(shown[:SHOW_ENTRIES], order, strict=False)
    ]
    if len(order) > SHOW_ENTRIES:
        rows.append(f"  ... {len(order) - SHOW_ENTRIES} more of {expected.numel()} entries differ")
    elif expected.numel() > 1:
        rows.append(f"  ({len(order)} of {expected.numel()} entries differ)")
    return "\n".join(rows)
