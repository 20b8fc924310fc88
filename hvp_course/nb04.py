"""Exercises of notebook 04, *The second-order (HVP) correction*: ``g''(0)`` by a central
finite difference of the slope ``g'(t)``, with a step the learner derives from the dtype;
``g'(0)`` of every head of a layer and the joint second-order term ``<delta_h, (H v)_h>`` from
one Hessian-vector product with ``v`` the sum of the heads' directions, written with plain
hooks and ``torch.autograd.grad(create_graph=True)``; and the exact condition under which the
correction ``g''(0)/2`` makes AtP worse, which the learner derives in terms of two curvatures:
``g''(0)`` and its weighted average along the path, ``gbar''``.

The finite difference is compared with the exact ``g''(0)`` of synthetic slopes evaluated in
float64 and in float32, and with :func:`hvp_utils.hvp_correction` on the model's patch paths;
the slopes record where they are evaluated, so that the check reads the learner's step and
says which error dominates. The other references are the package's
:func:`hvp_utils.hvp_correction` (``mode="joint"``; the pass line measures the cross terms
against ``mode="diag"``) and the closed form ``g''(0) (g''(0) - 2 gbar'') > 0``; the pass line
of the last compares the condition with the direct comparison ``|e1 - c| > |e1|`` of the two
errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_course.by_hand import zero_leaf_run
from hvp_course.exercise import Call, Case, Context, Exercise, Mistake, Result, raised
from hvp_course.explain import ExerciseFailed, booleans, scalar, scale_of, tensor_pair
from hvp_utils.analysis.checks import path_slope
from hvp_utils.core.components import Component, components
from hvp_utils.core.models import TOY_MODEL_NAME, load_model
from hvp_utils.core.results import Attribution
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.toy_model import TOY_MODEL_DIR
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching, hvp_correction

#: How many heads :func:`atp_heads` picks.
N_CASES = 3


def atp_heads(ctx: Context) -> list[tuple[int, int]]:
    """The two heads with the largest |AtP| and the one with the largest |AtP| of the last
    layer, as (layer, head)."""
    first = ctx.head_atp().values
    chosen = [divmod(int(i), ctx.n_heads) for i in first.abs().argsort(descending=True)]
    chosen = chosen[: N_CASES - 1]
    last = ctx.n_layers - 1
    for head in first.view(ctx.n_layers, ctx.n_heads)[last].abs().argsort(descending=True):
        if (last, int(head)) not in chosen:
            return chosen + [(last, int(head))]
    return chosen


def ap_and_hvp(ctx: Context) -> tuple[list[Component], Tensor, Attribution]:
    """The MLP outputs and the heads of :func:`atp_heads`, their AP and their HVP (diag),
    computed once per model and task for the checks of this notebook."""
    comps = components(ctx.model, kind="mlp_out") + [ctx.head(*p) for p in atp_heads(ctx)]
    ap, est = ctx.cached(
        "AP and HVP of the MLPs and three heads",
        lambda: (
            activation_patching(ctx.model, ctx.task, comps).values,
            hvp_correction(ctx.model, ctx.task, comps),
        ),
    )
    return comps, ap, est


# --------------------------------------------------------------------------------------------
# 1. The step of a finite difference

#: The relative error of g''(0) the check accepts, by dtype: what a central difference with a
#: step of about eps^(1/3) reaches on the check's paths, with a margin. Measured on them (toy-ioi
#: in float64 and the default task; the largest over the paths of each dtype): h = eps^(1/3)
#: leaves 1.4e-10 in float64 and 1.2e-4 in float32, and any of eps^(1/3) / 3, (3 eps)^(1/3) and
#: 3 eps^(1/3) at most 1.5e-9 and 6.2e-4. The slips of the mistakes below leave, in float64,
#: 5.0e-7 or more with h = 1e-3 (truncation), 1.3e-8 or more with h = 1e-9 (rounding), up to
#: 7.0e-8 with h = eps^(1/4) (three of the five paths fail) and up to 4.1e-8 with the result
#: rounded to float32; in float32, 5.4e-2 or more with h = 1e-6, 4.8e-3 or more with
#: h = 100 eps (rounding) and 5.0e-3 or more with h = 0.1 (truncation).
TOLERANCE = {torch.float64: 1e-8, torch.float32: 2e-3}
#: Evaluations of the slope on one path that the check allows: a central difference needs two,
#: an extrapolation from two or three steps (Richardson) four or six, a look at g'(0) one more.
MAX_EVALUATIONS = 8
#: In the diagnosis, a step within this factor of eps^(1/3) is "of the right size".
STEP_BAND = 4.0
#: Synthetic slopes g'(t) = a + b sin(w t) + c exp(t), as (a, b, w, c), so g''(0) = b w + c. The
#: offset a makes float32's rounding of g'(t) (about eps |a|) matter; the curvatures, their
#: derivatives and the path's length are of order 1, like the model's.
SYNTHETIC_SLOPES = ((40.0, 1.1, 2.0, 0.45), (-25.0, -0.7, 3.1, 0.3), (12.0, 1.9, 1.05, -0.95))
#: The model's paths checked in its dtype: the first of the components of :func:`ap_and_hvp`,
#: by |g''(0)|, on which the central difference is smooth (:func:`_smooth`); the first such path
#: is also checked on a float32 copy of toy-ioi.
N_MODEL_PATHS = 2
#: A model path is smooth on the scale of t when the central difference with the step eps^(1/3)
#: times each of these factors is within half the dtype's tolerance on it. Paths bent over a
#: short stretch of t (on toy-ioi, MLP0 under random_token with seed 1 and 6 prompts: 6e-9 at
#: eps^(1/3) in float64, 4e-3 in float32) need a step the dtype alone does not give, and are
#: left out.
SMOOTH_STEPS = (1 / 3, 1.0, 3.0)
DTYPE_NAMES = {torch.float64: "float64", torch.float32: "float32"}


@dataclass(eq=False)
class RecordedSlope:
    """The slope ``g'(t)`` of one path in one dtype, recording every ``t`` it is evaluated at.

    Called with a 0-d tensor of ``dtype``, it returns ``g'(t)`` as a 0-d tensor of ``dtype``
    (anything else raises ``TypeError`` saying how to build ``t``, as the notebook's slopes
    fail on it). ``exact`` is the exact ``g''(0)`` the check compares with; ``points`` the
    ``t`` of every call, in order.
    """

    label: str
    dtype: torch.dtype
    fn: Callable[[Tensor], Tensor]
    exact: float
    points: list[float] = field(default_factory=list)

    def __call__(self, t: Tensor) -> Tensor:
        if not isinstance(t, Tensor) or t.dim() != 0 or t.dtype != self.dtype:
            got = (
                f"a tensor of shape {tuple(t.shape)} and dtype {t.dtype}"
                if isinstance(t, Tensor)
                else f"a {type(t).__name__}"
            )
            raise TypeError(
                f"slope takes t as a 0-d tensor of {self.dtype}, torch.tensor(h, dtype=dtype), "
                f"one t per call; got {got}"
            )
        t = t.detach()
        self.points.append(float(t))
        return self.fn(t).detach()

    def __repr__(self) -> str:
        return f"<g'(t) of {self.label}>"

    @property
    def step(self) -> float | None:
        """The largest ``|t|`` evaluated (None before any call)."""
        return max(abs(p) for p in self.points) if self.points else None


def _synthetic_slope(a: float, b: float, w: float, c: float, t: Tensor) -> Tensor:
    """``a + b sin(w t) + c exp(t)``, computed in the dtype of ``t``."""
    return a + b * torch.sin(w * t) + c * torch.exp(t)


def _is_toy_in_float64(model: Model) -> bool:
    return model.cfg.model_name == str(TOY_MODEL_DIR) and model.cfg.dtype == torch.float64


def _difference_cases(ctx: Context) -> list[Case]:
    """The synthetic slopes in float64 and float32, then, when the model computes in float64
    or float32, the model's paths of :func:`_smooth_paths` (in its dtype and, when it is
    toy-ioi in float64, one on a float32 copy of it); each case's slope records where it is
    evaluated."""
    cases = []
    for i, (a, b, w, c) in enumerate(SYNTHETIC_SLOPES, 1):
        for dtype, name in DTYPE_NAMES.items():
            label = f"synthetic {i} ({name})"
            fn = partial(_synthetic_slope, a, b, w, c)
            cases.append(Case(label, (RecordedSlope(label, dtype, fn, b * w + c), dtype)))
    dtype = ctx.model.cfg.dtype
    if dtype not in DTYPE_NAMES:
        return cases
    comps, _, est = ap_and_hvp(ctx)
    copy = None
    if _is_toy_in_float64(ctx.model):
        copy = ctx.cached("toy-ioi in float32", lambda: load_model(TOY_MODEL_NAME, dtype="float32"))
    paths = ctx.cached(
        "smooth paths for finite differences", lambda: _smooth_paths(ctx, comps, est, copy)
    )
    for i, on_copy in paths:
        model, path_dtype = (copy, torch.float32) if on_copy else (ctx.model, dtype)
        name = "float32 copy of the model" if on_copy else DTYPE_NAMES[dtype]
        label = f"{comps[i].name} ({name})"
        fn = path_slope(model, ctx.task, comps[i])
        slope = RecordedSlope(label, path_dtype, fn, float(est.second[i]))
        cases.append(Case(label, (slope, path_dtype)))
    return cases


def _smooth(
    model: Model, task: PatchingTask, comp: Component, dtype: torch.dtype, exact: float
) -> bool:
    """Whether the central difference with every step of :data:`SMOOTH_STEPS` is within half
    of ``dtype``'s tolerance of ``exact`` on the component's path."""
    if exact == 0:
        return False
    slope = path_slope(model, task, comp)
    for factor in SMOOTH_STEPS:
        got = _with_step(slope, dtype, lambda d, f=factor: f * _balance(d))
        if not abs(got - exact) <= TOLERANCE[dtype] / 2 * abs(exact):
            return False
    return True


def _smooth_paths(
    ctx: Context, comps: list[Component], est: Attribution, copy: Model | None
) -> list[tuple[int, bool]]:
    """The model's paths of the check, as (index in ``comps``, on the float32 copy): the first
    :data:`N_MODEL_PATHS` smooth ones by |g''(0)| in the model's dtype, then the first smooth
    one on ``copy`` (when given)."""
    order = est.second.abs().argsort(descending=True).tolist()
    exact = [float(x) for x in est.second]
    dtype = ctx.model.cfg.dtype
    paths = []
    for i in order:
        if len(paths) == N_MODEL_PATHS:
            break
        if _smooth(ctx.model, ctx.task, comps[i], dtype, exact[i]):
            paths.append((i, False))
    if copy is not None:
        for i in order:
            if _smooth(copy, ctx.task, comps[i], torch.float32, exact[i]):
                paths.append((i, True))
                break
    return paths


def second_by_differences_reference(slope: Callable[[Tensor], Tensor], dtype: torch.dtype):
    """``g''(0)``: on the check's paths their exact value; on any other slope the central
    difference ``(g'(h) - g'(-h)) / 2h`` with ``h = eps^(1/3)``, ``eps`` the dtype's."""
    if isinstance(slope, RecordedSlope):
        return slope.exact
    t = torch.tensor(torch.finfo(dtype).eps ** (1 / 3), dtype=dtype)
    return float((slope(t) - slope(-t)) / (2 * t))


def _relative_error(call: Call) -> float | None:
    """``|got - exact| / |exact|`` of one call (inf for NaN; None when it raised or returned
    no number)."""
    if call.error is not None:
        return None
    try:
        got = float(scalar(call.output, call.case.label))
    except ExerciseFailed:
        return None
    exact = call.case.args[0].exact
    error = abs(got - exact) / abs(exact)
    return error if error == error else float("inf")  # NaN -> inf


def _fails(call: Call) -> bool:
    """The call's g''(0) misses its dtype's accuracy (:data:`TOLERANCE`)."""
    error = _relative_error(call)
    return error is not None and error > TOLERANCE[call.case.args[0].dtype]


def _one_sided(calls: list[Call]) -> bool:
    """A path fails, and some slope was evaluated on one side of 0 only (at two points or
    more)."""
    return any(_fails(c) for c in calls) and any(
        len(set(points)) > 1 and (min(points) >= 0 or max(points) <= 0)
        for points in (c.case.args[0].points for c in calls)
    )


def _too_many(calls: list[Call]) -> bool:
    """Some slope was evaluated more than :data:`MAX_EVALUATIONS` times."""
    return any(len(c.case.args[0].points) > MAX_EVALUATIONS for c in calls)


def _same_step(calls: list[Call]) -> bool:
    """A path fails, and a float64 path and a float32 path were differenced with the same
    step."""
    steps = {dtype: [] for dtype in DTYPE_NAMES}
    for call in calls:
        slope = call.case.args[0]
        if slope.step:
            steps[slope.dtype].append(slope.step)
    return any(_fails(c) for c in calls) and any(
        abs(h64 - h32) <= 1e-6 * h64 for h64 in steps[torch.float64] for h32 in steps[torch.float32]
    )


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def _balance(dtype: torch.dtype) -> float:
    """Where the two errors of a central difference balance for functions whose derivatives
    are of order 1 on a path of length 1: eps^(1/3)."""
    return _eps(dtype) ** (1 / 3)


def _wrong_step(dtype: torch.dtype, side: str) -> Callable[[list[Call]], bool]:
    """A :class:`Mistake` predicate: a ``dtype`` path fails with a step more than
    :data:`STEP_BAND` times below (``side="small"``) or above (``"large"``) eps^(1/3)."""

    def seen(calls: list[Call]) -> bool:
        for call in calls:
            slope = call.case.args[0]
            if slope.dtype != dtype or not slope.step or not _fails(call):
                continue
            ratio = slope.step / _balance(dtype)
            if (ratio < 1 / STEP_BAND) if side == "small" else (ratio > STEP_BAND):
                return True
        return False

    return seen


def _precision_lost(calls: list[Call]) -> bool:
    """A path fails with a step of the right size (within :data:`STEP_BAND` of eps^(1/3)), by
    less than the exercise's own comparison (``rtol``, on the scale of all the paths) notices:
    the formula or the arithmetic loses digits. Larger errors are left to that comparison,
    which says what differs."""
    scale = scale_of(torch.tensor([c.case.args[0].exact for c in calls], dtype=torch.float64))
    rtol = TOLERANCE[torch.float32]
    for call in calls:
        slope = call.case.args[0]
        if not slope.step or not _fails(call):
            continue
        in_band = 1 / STEP_BAND <= slope.step / _balance(slope.dtype) <= STEP_BAND
        gap = _relative_error(call) * abs(slope.exact)
        if in_band and gap <= rtol * (scale + abs(slope.exact)):
            return True
    return False


def _with_step(
    slope: Callable[[Tensor], Tensor], dtype: torch.dtype, step: Callable[[torch.dtype], float]
) -> float:
    """The central difference with the step ``step(dtype)`` (the slips below)."""
    t = torch.tensor(step(dtype), dtype=dtype)
    return float((slope(t) - slope(-t)) / (2 * t))


def _forward_difference(slope: Callable[[Tensor], Tensor], dtype: torch.dtype) -> float:
    """``(g'(h) - g'(0)) / h`` with ``h = eps^(1/3)``."""
    t = torch.tensor(_balance(dtype), dtype=dtype)
    return float((slope(t) - slope(torch.zeros_like(t))) / t)


def _searched_step(slope: Callable[[Tensor], Tensor], dtype: torch.dtype) -> float:
    """Central differences with h = 1e-1 ... 1e-12; the one that changes least to the next."""
    found = [_with_step(slope, dtype, lambda _, k=k: 10.0**-k) for k in range(1, 13)]
    changes = [abs(a - b) for a, b in zip(found, found[1:], strict=False)]
    return found[changes.index(min(changes))]


def _returned_in_float32(slope: Callable[[Tensor], Tensor], dtype: torch.dtype) -> Tensor:
    """The right step, but the result handed back as a float32 tensor (``.float()``)."""
    t = torch.tensor(_balance(dtype), dtype=dtype)
    return ((slope(t) - slope(-t)) / (2 * t)).float()


def _steps_text(cases: list[Case], dtype: torch.dtype) -> str:
    """The steps of the ``dtype`` paths, read from where their slopes were evaluated."""
    steps = sorted(
        {float(f"{c.args[0].step:.2g}") for c in cases if c.args[1] == dtype and c.args[0].step}
    )
    if not steps:
        return "none"
    return f"{steps[0]:.2g}" if len(steps) == 1 else f"{steps[0]:.2g} to {steps[-1]:.2g}"


def _difference_passed(r: Result) -> str:
    worst = {}
    for dtype in DTYPE_NAMES:
        errors = [
            float((g - e).abs() / e.abs())
            for case, g, e in zip(r.cases, r.got, r.expected, strict=True)
            if case.args[1] == dtype
        ]
        worst[dtype] = max(errors, default=0.0)
    paths = [c.label for c in r.cases if not c.label.startswith("synthetic")]
    model = f" and of the model's paths {', '.join(paths)}" if paths else ""
    within = " and ".join(
        f"{worst[d]:.1e} in {name} (asked: {TOLERANCE[d]:.0e})" for d, name in DTYPE_NAMES.items()
    )
    return (
        f"g''(0) of {len(SYNTHETIC_SLOPES)} synthetic paths in float64 and float32{model}, "
        f"with steps h = {_steps_text(r.cases, torch.float64)} (float64) and "
        f"{_steps_text(r.cases, torch.float32)} (float32): largest relative error {within}"
    )


#: How much larger float32's eps is than float64's.
_EPS_RATIO = _eps(torch.float32) / _eps(torch.float64)

SECOND_BY_DIFFERENCES = Exercise(
    name="second_by_differences",
    notebook="04",
    summary="g''(0) by a central difference of the slope g'(t), with a step chosen from the "
    "dtype, to within 1e-8 (float64) and 2e-3 (float32) of the exact value, on synthetic slopes "
    "in both dtypes and on the model's patch paths.",
    reference=second_by_differences_reference,
    uses="a central difference with a step chosen for the dtype",
    what="g''(0)",
    cases=_difference_cases,
    read=lambda output, case: scalar(output, f"g''(0) of {case.label}"),
    rtol=TOLERANCE[torch.float32],
    mistakes=(
        Mistake(
            "you evaluated the slope on one side of 0 only, as in the forward difference "
            "(g'(h) - g'(0)) / h: its error is h g'''(0) / 2, first order in h, so even its "
            "best step leaves an error of about sqrt(eps), half the dtype's digits. Evaluate "
            "at t = +h and t = -h: in (g'(h) - g'(-h)) / 2h the even terms of g'(t) cancel and "
            "the error is h^2 g''''(0) / 6",
            wrong=_forward_difference,
            seen=_one_sided,
        ),
        Mistake(
            f"the slope was evaluated more than {MAX_EVALUATIONS} times on one path: on the "
            "model every evaluation is a forward and a backward pass. A central difference "
            "needs two, at t = +h and t = -h; derive h from the dtype instead of searching "
            "for it",
            wrong=_searched_step,
            seen=_too_many,
        ),
        Mistake(
            "the same step h in float64 and in float32, and it fails in one of them: each "
            "g'(t) is rounded by about eps |g'(t)|, and eps (torch.finfo(dtype).eps) is "
            f"{_EPS_RATIO:.0e} times larger in float32. A step small enough for float64's "
            "accuracy drowns float32 in rounding; one large enough for float32 leaves float64 "
            "a truncation error far above what it can reach. Choose h from the dtype",
            wrong=partial(_with_step, step=lambda dtype: 1e-3),
            seen=_same_step,
        ),
        Mistake(
            "the step is too small for float32: g'(h) and g'(-h) agree in most of float32's "
            "digits, so their difference is mostly rounding, an error of about eps |g'| / h "
            f"(eps = {_eps(torch.float32):.1e}) that grows as h shrinks. Rounding dominates "
            "there; take a larger step in float32",
            wrong=partial(_with_step, step=lambda dtype: 100 * _eps(dtype)),
            seen=_wrong_step(torch.float32, "small"),
        ),
        Mistake(
            "the step is too large for float64: the truncation error h^2 g''''(0) / 6 "
            "dominates, far above the rounding error float64 leaves "
            f"(eps = {_eps(torch.float64):.1e}). A smaller step, derived from float64's eps, "
            "reaches its accuracy",
            wrong=partial(_with_step, step=lambda dtype: _eps(dtype) ** 0.25),
            seen=_wrong_step(torch.float64, "large"),
        ),
        Mistake(
            "the step is too small for float64: float64 rounds g'(t) too, by about eps |g'| "
            f"(eps = {_eps(torch.float64):.1e}), and the difference quotient divides that by "
            "2h. Rounding dominates there; take a larger step in float64",
            wrong=partial(
                _with_step,
                step=lambda dtype: 1e-9 if dtype == torch.float64 else _balance(dtype),
            ),
            seen=_wrong_step(torch.float64, "small"),
        ),
        Mistake(
            "the step is too large for float32: the truncation error h^2 g''''(0) / 6 "
            f"dominates; float32's rounding (eps = {_eps(torch.float32):.1e}) allows a smaller "
            "step",
            wrong=partial(
                _with_step, step=lambda dtype: 0.1 if dtype == torch.float32 else _balance(dtype)
            ),
            seen=_wrong_step(torch.float32, "large"),
        ),
        Mistake(
            "g''(0) misses the dtype's accuracy although the step is of the right size: "
            "something on the way loses digits. A result handed back in float32 (.float() "
            "makes a float32 tensor; float(x) or x.item() gives a Python number), or points "
            "that are not exactly +h and -h (build t in the dtype, torch.tensor(h, "
            "dtype=dtype), and divide by the distance between the points as evaluated)",
            wrong=_returned_in_float32,
            seen=_precision_lost,
        ),
    ),
    passed=_difference_passed,
)


# --------------------------------------------------------------------------------------------
# 2. One HVP for every head of a layer


def joint_hvp_layer_reference(model: Model, task: PatchingTask, layer: int):
    """``(g'_h(0), <delta_h, (H v)_h>)`` of every head ``h`` of ``layer``, ``v = sum_h
    delta_h`` (``hu.hvp_correction(..., mode="joint")``'s ``first`` and ``second``)."""
    heads = components(model, kind="head_out", layers=[layer])
    est = hvp_correction(model, task, heads, mode="joint")
    return est.first, est.second


def _joint_by_hand(
    model: Model,
    task: PatchingTask,
    layer: int,
    *,
    per_head: bool = False,
    unsliced: bool = False,
    create_graph: bool = True,
    flip: bool = False,
    halve: bool = False,
) -> tuple[Tensor, Tensor]:
    """The joint HVP with plain hooks, and the slips of the mistakes below: one HVP per head
    (``per_head``: HVP diag), the whole layer's ``<v, H v>`` for every head (``unsliced``), no
    graph kept (``create_graph=False``), ``v = z_r - z_c`` (``flip``), the second term
    halved (``halve``)."""
    name = get_act_name("z", layer)
    with torch.no_grad():
        _, clean = model.run_with_cache(task.clean_tokens, names_filter=name)
    z_r, zero, metric = zero_leaf_run(model, task, name)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(metric, zero, create_graph=create_graph)
        v = (z_r - clean[name]) if flip else (clean[name] - z_r)
        first = (grad * v).sum((0, 1, 3))
        if per_head:
            second = torch.stack([_own_second(grad, zero, v, h) for h in range(v.shape[2])])
        else:
            (hv,) = torch.autograd.grad(first.sum(), zero)
            second = (hv * v).sum((0, 1, 3))
    if unsliced:
        second = second.sum().expand(len(second))
    return first.detach(), (second / 2 if halve else second).detach()


def _own_second(grad: Tensor, zero: Tensor, v: Tensor, head: int) -> Tensor:
    """``<delta_h, H delta_h>``: one HVP with the direction of head ``head`` alone."""
    delta = torch.zeros_like(v)
    delta[:, :, head] = v[:, :, head]
    (hv,) = torch.autograd.grad((grad * delta).sum(), zero, retain_graph=True)
    return (hv * delta).sum()


def _joint_passed(r: Result) -> str:
    model, task = r.ctx.model, r.ctx.task
    cross = []
    for case, (_, joint) in zip(r.cases, r.expected, strict=True):
        heads = components(model, kind="head_out", layers=[case.args[2]])
        own = hvp_correction(model, task, heads).second
        cross.append(float((joint - own).abs().max() / own.abs().max().clip(min=1e-12)))
    layers = ", ".join(str(case.args[2]) for case in r.cases)
    return (
        f"g'(0) and the joint term of every head of layers {layers} as hu.hvp_correction "
        f"(mode='joint'; largest difference {r.diff:.1e}), from one HVP per layer instead of "
        f"{model.cfg.n_heads}; the cross terms reach {max(cross):.0%} of the largest own "
        "g''(0) of a layer"
    )


JOINT_HVP_LAYER = Exercise(
    name="joint_hvp_layer",
    notebook="04",
    summary="g'(0) and <delta_h, (H v)_h> of every head of the first and the last layer, v the "
    "sum of the heads' directions, equal hu.hvp_correction(mode='joint').",
    reference=joint_hvp_layer_reference,
    uses="hu.hvp_correction",
    what="(g'(0), joint second-order term)",
    cases=lambda ctx: [
        Case(f"layer {layer}", (ctx.model, ctx.task, layer)) for layer in ctx.end_layers
    ],
    read=lambda output, case: tensor_pair(
        output, ("g'(0)", "joint term"), case.args[0].cfg.n_heads
    ),
    axes=("term", "head"),
    prompt_hints=True,
    mistakes=(
        Mistake(
            "the second torch.autograd.grad found no graph to differentiate: the first one "
            "must keep it, torch.autograd.grad(m, zero, create_graph=True), so that "
            "<grad, v> is itself a function of the zero leaf",
            wrong=partial(_joint_by_hand, create_graph=False),
            seen=raised("does not require grad", "does not have a grad_fn"),
        ),
        Mistake(
            "that is each head's own g''(0) (HVP diag), one HVP per head: the exercise spends "
            "one HVP on the whole layer, v = z_clean - z_r on every head, and reads each "
            "head's slice of H v; the difference is the cross terms",
            wrong=partial(_joint_by_hand, per_head=True),
        ),
        Mistake(
            "every head got the same number, <v, H v> of the whole layer: slice H v and v on "
            "head h before the inner product, (hv * v).sum((0, 1, 3))",
            wrong=partial(_joint_by_hand, unsliced=True),
        ),
        Mistake(
            "the second entry is halved, the correction itself; return <delta_h, (H v)_h> "
            "(the estimate adds half of it)",
            wrong=partial(_joint_by_hand, halve=True),
        ),
        Mistake(
            "g'(0) has the wrong sign and the second term the right one: v was taken as "
            "corrupted minus clean; denoising moves the corrupted activation towards the "
            "clean one, v = z_clean - z_corrupted",
            wrong=partial(_joint_by_hand, flip=True),
        ),
    ),
    passed=_joint_passed,
)


# --------------------------------------------------------------------------------------------
# 3. When the correction overshoots


def overshoots_reference(second: Tensor, mean_second: Tensor) -> Tensor:
    """``g''(0) (g''(0) - 2 gbar'') > 0``: with ``e1 = AP - AtP = gbar'' / 2`` and
    ``c = g''(0) / 2``, the corrected estimate AtP + c is further from AP than AtP
    (``|e1 - c| > |e1|``, i.e. ``c (c - 2 e1) > 0``)."""
    return second * (second - 2 * mean_second) > 0


def _overshoot_variant(
    second: Tensor, mean_second: Tensor, *, rule: str = "exact", error_factor: float = 0.5
) -> Tensor:
    """The condition with the slips of the mistakes below: AtP's error taken as
    ``error_factor * gbar''`` (the right one is 1/2), only the corrections that point away
    (``rule="away"``), or every correction larger than AtP's error (``rule="larger"``)."""
    e1, c = error_factor * mean_second, second / 2
    if rule == "away":
        return c * e1 < 0
    if rule == "larger":
        return c.abs() > e1.abs()
    return c * (c - 2 * e1) > 0


#: Synthetic (e1, c) pairs: both ways to overshoot, the helpful corrections in between, and a
#: correction that points the right way and goes between one and two times AtP's error.
SYNTHETIC_E1_C = (
    (1.0, -0.5),  # points away
    (-1.0, 0.25),  # points away
    (1.0, 2.5),  # goes more than twice as far
    (-0.5, -1.2),  # goes more than twice as far
    (0.5, 2.5),  # goes five times as far
    (1.0, 0.5),  # helps
    (-1.0, -1.0),  # exact
    (1.0, 1.5),  # between one and two times e1: still helps
    (-2.0, -3.0),  # the same, negative
    (0.25, 0.0),  # no curvature: no change
)


def _overshoot_cases(ctx: Context) -> list[Case]:
    """g''(0) and gbar'' = 2 (AP - AtP) of the MLP outputs and the heads of :func:`atp_heads`,
    then of the synthetic cases (g''(0) = 2 c, gbar'' = 2 e1)."""
    comps, ap, est = ap_and_hvp(ctx)
    e1, c = torch.tensor(SYNTHETIC_E1_C, dtype=torch.float64).T
    labels = [c.name for c in comps] + [f"e1 = {a:+g}, c = {b:+g}" for a, b in SYNTHETIC_E1_C]
    args = (
        torch.cat([est.second.double(), 2 * c]),
        torch.cat([2 * (ap.double() - est.first.double()), 2 * e1]),
    )
    return [Case("the model and the synthetic cases", args, labels=tuple(labels))]


def _overshoots_passed(r: Result) -> str:
    second, mean_second = r.cases[0].args
    expected = r.expected[0].bool()
    e1, c = mean_second / 2, second / 2
    direct = (e1 - c).abs() > e1.abs()
    decided = ((e1 - c).abs() - e1.abs()).abs() > 1e-9 * (e1.abs() + c.abs()).clamp(min=1e-12)
    assert torch.equal(direct[decided], expected[decided]), (
        "g''(0) (g''(0) - 2 gbar'') > 0 is not |e1 - c| > |e1|"
    )
    n_model = len(expected) - len(SYNTHETIC_E1_C)
    worse = int(expected[:n_model].sum())
    return (
        f"which corrections overshoot, for {n_model} components of the model ({worse} "
        f"overshot) and {len(SYNTHETIC_E1_C)} synthetic cases, equals |AP - (AtP + c)| > "
        f"|AP - AtP|"
    )


OVERSHOOTS = Exercise(
    name="overshoots",
    notebook="04",
    summary="Which corrections overshoot, decided from g''(0) and the path's average curvature "
    "gbar'' alone, for the MLP outputs and three heads of the model and for synthetic cases of "
    "both kinds, equals |AP - (AtP + c)| > |AP - AtP|.",
    reference=overshoots_reference,
    uses="g''(0) (g''(0) - 2 gbar'') > 0",
    what="overshoots",
    cases=_overshoot_cases,
    read=lambda output, case: booleans(output, len(case.args[0]), "overshoots", strict=True),
    axes=("component",),
    boolean=True,
    mistakes=(
        Mistake(
            "that flags every correction larger than AtP's error, |c| > |e1|; a correction in "
            "AP's direction lands closer to AP as long as it goes less than twice as far: "
            "compare |e1 - c| with |e1|, e1 = gbar''/2 and c = g''(0)/2",
            wrong=partial(_overshoot_variant, rule="larger"),
        ),
        Mistake(
            "only the corrections that point away from AP (g''(0) and gbar'' of opposite "
            "signs) are flagged; one that points the right way but goes more than twice as "
            "far overshoots too",
            wrong=partial(_overshoot_variant, rule="away"),
        ),
        Mistake(
            "AtP's error was taken as gbar''; it is half of it, e1 = AP - AtP = "
            "integral of (1 - t) g''(t) dt = gbar'' / 2 (the weights 2 (1 - t) integrate to 1)",
            wrong=partial(_overshoot_variant, error_factor=1.0),
        ),
        Mistake(
            "the sign of AtP's error is flipped: e1 = AP - AtP = +gbar'' / 2 (AtP misses what "
            "the curvature adds along the path); with -gbar'' / 2 the condition flags the "
            "helpful corrections",
            wrong=partial(_overshoot_variant, error_factor=-0.5),
        ),
    ),
    passed=_overshoots_passed,
)

EXERCISES = (SECOND_BY_DIFFERENCES, JOINT_HVP_LAYER, OVERSHOOTS)
