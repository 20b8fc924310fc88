"""An exercise as data, and the one explainer that checks every exercise.

An :class:`Exercise` declares the reference (a function of the package, or a closed form,
with the learner's signature), how to build the inputs from the notebook's context
(:class:`Case`\\ s), how to read and compare the outputs, and the known mistakes
(:class:`Mistake`: a wrong implementation, or a predicate on the learner's calls, with its
message). :func:`explain` calls the learner's function and the reference on every case; on a
mismatch it tries the known mistakes in order and otherwise falls back on the generic
diagnosis of :func:`hvp_course.explain.mismatch` (shape, sign, factor, which entries).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from hvp_course.explain import (
    ExerciseFailed,
    NotImplementedYet,
    as_values,
    close,
    differences,
    mismatch,
    same_shape,
    scale_of,
    shape_problem,
)
from hvp_utils.core.components import Component, components
from hvp_utils.core.results import Attribution
from hvp_utils.core.tasks import PatchingTask, ioi_dataset
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching, atp

#: What :func:`check` builds when it is called without a model: the embedded model in
#: float64 and a small IOI task.
DEFAULT_MODEL = "toy-ioi"
DEFAULT_TASK = {"n_prompts": 8, "perturbation": "name_swap", "seed": 0}
#: Relative tolerance of a comparison, by the model's dtype (the default for others).
RTOL = {torch.float64: 1e-6, torch.float32: 2e-3}
RTOL_OTHER = 5e-2


# --------------------------------------------------------------------------------------------
# The context of one check


@functools.cache
def default_model() -> Model:
    """The course's own model (the embedded one, float64), loaded once per process; models a
    notebook passes to :func:`check` are never stored."""
    from hvp_utils.core.models import load_model

    return load_model(DEFAULT_MODEL, dtype="float64")


@functools.cache
def default_task() -> PatchingTask:
    """The small task on :func:`default_model`, built once per process, so that the checks
    made without a model share their references (:meth:`Context.cached`)."""
    return ioi_dataset(default_model(), **DEFAULT_TASK)


#: References the checks on one model and task share (a notebook's checks, the tests), weakly
#: keyed by the model and the task so that no model or task is kept alive; the values hold
#: neither (tensors, results, frames, components).
_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _memo(model: Model, task: PatchingTask) -> dict[str, Any]:
    """The shared references of ``model`` and ``task`` (dropped with either of them)."""
    per_task = _SHARED.setdefault(model, {})
    key = id(task)
    held = per_task.get(key)
    if held is None or held[0]() is not task:
        forget = weakref.ref(task, lambda _, d=per_task, k=key: d.pop(k, None))
        held = per_task[key] = (forget, {})
    return held[1]


@dataclass(frozen=True)
class Context:
    """What one :func:`check` call was given: the model and task, and the notebook's results
    that some exercises check against (each None unless passed). Built per call and never
    changed; :meth:`cached` shares references between calls on the same model and task."""

    model: Model
    task: PatchingTask
    layer: int | None = None
    truth: Attribution | None = None
    threshold_share: float | None = None
    estimates: list[Attribution] | None = None
    reference: list[str] | None = None
    screen: Attribution | None = None
    tau: float | None = None
    curve: pd.DataFrame | None = None

    @classmethod
    def build(
        cls, model: Model | None = None, task: PatchingTask | None = None, **given: Any
    ) -> Context:
        """The context of a call: without ``model`` the embedded model (float64) and a small
        task; with a model and no task, a small task on that model."""
        known = {f for f in cls.__dataclass_fields__ if f not in ("model", "task")}
        unknown = sorted(set(given) - known)
        if unknown:
            raise TypeError(f"check() got {unknown}; it takes model=, task= and {sorted(known)}")
        if model is None:
            if task is not None:
                raise TypeError("pass model=... together with task=...")
            model, task = default_model(), default_task()
        elif task is None:
            task = ioi_dataset(model, **DEFAULT_TASK)
        return cls(model=model, task=task, **given)

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` the first time ``key`` is asked for on this model and task (the
        value must depend on nothing else and hold neither)."""
        memo = _memo(self.model, self.task)
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    @property
    def rtol(self) -> float:
        """Relative tolerance for the model's dtype."""
        return RTOL.get(self.model.cfg.dtype, RTOL_OTHER)

    @property
    def n_layers(self) -> int:
        return self.model.cfg.n_layers

    @property
    def n_heads(self) -> int:
        return self.model.cfg.n_heads

    @property
    def end_layers(self) -> list[int]:
        """The first layer and the last: the most and the fewest later layers."""
        return sorted({0, self.n_layers - 1})

    @property
    def heads(self) -> list[Component]:
        """Every head output (``head_out``), layer by layer; the heads of ``screen=`` when the
        notebook screened a sample of them (its ``n_heads``)."""
        every = self.cached("heads", lambda: components(self.model, kind="head_out"))
        if self.screen is None:
            return every
        screened = set(self.screen.names)  # screen_of checks that these are heads
        return [c for c in every if c.name in screened]

    def head(self, layer: int, head: int) -> Component:
        """The head output component ``L{layer}H{head}``."""
        return self.heads[layer * self.n_heads + head]

    def head_ap(self) -> Attribution:
        """Activation patching of every head (denoising)."""
        names = ",".join(c.name for c in self.heads)
        return self.cached(
            f"head_ap of {names}", lambda: activation_patching(self.model, self.task, self.heads)
        )

    def head_atp(self) -> Attribution:
        """AtP of every head (denoising)."""
        names = ",".join(c.name for c in self.heads)
        return self.cached(f"head_atp of {names}", lambda: atp(self.model, self.task, self.heads))

    def top_heads(self, k: int) -> list[tuple[int, int]]:
        """The ``k`` heads with the largest ``|AP|``, as (layer, head)."""
        order = self.head_ap().values.abs().argsort(descending=True)[:k].tolist()
        return [divmod(i, self.n_heads) for i in order]


# --------------------------------------------------------------------------------------------
# The records


@dataclass(frozen=True)
class Case:
    """One call of the learner's function: ``fn(*args)``.

    Attributes:
        label: what the case is, for messages ("L1H6", "K=2").
        args: the arguments.
        labels: one name per entry of the read output (default: ``label`` for one number).
        read: how to read this case's output, when not the exercise's ``read``.
        max_passes: the forward passes (over the prompt batch) the call may run, when the
            exercise counts them.
        max_entries: the most entries any tensor the call makes may hold (None: no limit),
            for exercises whose point is to avoid a large intermediate (every pair of n items).
    """

    label: str
    args: tuple
    labels: tuple[str, ...] | None = None
    read: Callable[[Any, Case], Tensor] | None = None
    max_passes: float | None = None
    max_entries: int | None = None


@dataclass(frozen=True)
class Call:
    """What one call of the learner's function did: its case, what it returned or raised,
    the forward passes it ran (when counted) and the entries of the largest tensor it made
    (when the case limits them)."""

    case: Case
    output: Any = None
    error: BaseException | None = None
    passes: float = 0.0
    largest: int = 0


@dataclass(frozen=True)
class Mistake:
    """A known slip: a wrong implementation (the learner's signature) and what to say.

    The explainer recognises it by its outputs (the learner's equal the wrong function's on
    every case) or, when ``seen`` is given, by that predicate on the learner's calls (an
    error it raised, the forward passes it ran, an output autograd cannot differentiate).
    The tests run ``wrong`` through :func:`check` and expect ``says`` in the failure.
    """

    says: str
    wrong: Callable
    seen: Callable[[list[Call]], bool] | None = None


def _read_values(output: Any, case: Case) -> Tensor:
    return as_values(output, case.label)


@dataclass(frozen=True)
class Exercise:
    """One exercise as data.

    Attributes:
        name: the function the stub defines (and the first argument of :func:`check`).
        notebook: the notebook's two-digit number.
        summary: one line: what the check verifies.
        reference: the package's implementation or a closed form, with the learner's
            signature; :func:`check` returns it while the function is still a stub.
        uses: what the reference is, for people (``"hu.activation_patching"``).
        what: what the values are, for messages ("Delta").
        cases: ``cases(ctx)``: the inputs, built from the check's context.
        mistakes: the known slips, tried in order (at least one).
        passed: ``passed(result)``: the detail of the pass line (it may also confirm the
            reference against an independent one).
        read: how to read an output (default: one tensor, :func:`as_values`).
        rtol: the comparison's tolerance (default: by the model's dtype).
        axes: the names of one case's axes, for shape messages.
        boolean: the outputs are True/False (the messages say so).
        counts_passes: count the forward passes of each call (for ``Case.max_passes``).
        prompt_hints: hints about the prompt axis (a sum for a mean, one value per prompt).
    """

    name: str
    notebook: str
    summary: str
    reference: Callable
    uses: str
    what: str
    cases: Callable[[Context], list[Case]]
    mistakes: tuple[Mistake, ...]
    passed: Callable[[Result], str]
    read: Callable[[Any, Case], Tensor] = _read_values
    rtol: float | None = None
    axes: tuple[str, ...] | None = None
    boolean: bool = False
    counts_passes: bool = False
    prompt_hints: bool = False

    def __post_init__(self) -> None:
        if not self.mistakes:
            raise ValueError(f"exercise {self.name!r} needs at least one known mistake")

    def read_case(self, output: Any, case: Case) -> Tensor:
        return (case.read or self.read)(output, case)


@dataclass(frozen=True)
class Result:
    """A passed check: the context, the cases, what the learner's function and the reference
    gave (one read tensor per case) and the largest difference."""

    ctx: Context
    cases: list[Case]
    calls: list[Call]
    got: list[Tensor]
    expected: list[Tensor]
    diff: float


def too_many_passes(calls: list[Call]) -> bool:
    """A call ran more forward passes than its case allows (a :class:`Mistake` predicate)."""
    return any(c.case.max_passes is not None and c.passes > c.case.max_passes for c in calls)


def too_large(calls: list[Call]) -> bool:
    """A call made a tensor with more entries than its case allows (a :class:`Mistake`
    predicate)."""
    return any(c.case.max_entries is not None and c.largest > c.case.max_entries for c in calls)


def raised(*fragments: str) -> Callable[[list[Call]], bool]:
    """A :class:`Mistake` predicate: a call raised an error whose message holds a fragment."""

    def seen(calls: list[Call]) -> bool:
        return any(c.error is not None and any(f in str(c.error) for f in fragments) for c in calls)

    return seen


# --------------------------------------------------------------------------------------------
# The explainer


class _LargestTensor(TorchFunctionMode):
    """Records the entries of the largest tensor any torch function returns inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, tuple | list) else (out,):
            if isinstance(value, Tensor):
                self.largest = max(self.largest, value.numel())
        return out


@contextmanager
def counting_passes(model: Model, n_prompts: int) -> Iterator[list[float]]:
    """Forward passes inside the block, in units of one pass over the prompt batch: the rows
    reaching the last block's output divided by ``n_prompts``."""
    count = [0.0]
    hook = model.hook_dict[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]

    def tick(module, args, output):
        count[0] += output.shape[0] / n_prompts

    handle = hook.register_forward_hook(tick)
    try:
        yield count
    finally:
        handle.remove()


def _argument_names(reference: Callable, n: int) -> list[str]:
    names = list(inspect.signature(reference).parameters)
    return names[:n] + [f"argument {i}" for i in range(len(names), n)]


def _snapshot(arg: Any) -> Tensor | np.ndarray | None:
    """A copy of a tensor or array argument (to see whether the call changed it)."""
    if isinstance(arg, Tensor):
        return arg.detach().clone()
    return arg.copy() if isinstance(arg, np.ndarray) else None


def _unchanged(old: Tensor | np.ndarray, new: Tensor | np.ndarray) -> bool:
    if isinstance(old, Tensor):
        return torch.equal(old, new.detach())
    return np.array_equal(old, new, equal_nan=True)


def invoke(ex: Exercise, fn: Callable, case: Case, ctx: Context) -> Call:
    """Call ``fn`` on ``case``: a stub becomes :class:`NotImplementedYet`; an error is
    recorded, and a tensor argument changed in place fails."""
    __tracebackhide__ = True
    before = [_snapshot(a) for a in case.args]
    counter = counting_passes(ctx.model, ctx.task.n_prompts) if ex.counts_passes else None
    sizes = _LargestTensor() if case.max_entries is not None else contextlib.nullcontext()
    try:
        with sizes:
            if counter is None:
                output, passes = fn(*case.args), 0.0
            else:
                with counter as spent:
                    output = fn(*case.args)
                passes = spent[0]
    except NotImplementedError as err:
        raise NotImplementedYet(str(err)) from err
    except ExerciseFailed:
        raise
    except Exception as err:  # noqa: BLE001 (the learner's error becomes the diagnosis)
        return Call(case, error=err)
    names = _argument_names(ex.reference, len(case.args))
    for name, old, new in zip(names, before, case.args, strict=True):
        if old is not None and not _unchanged(old, new):
            raise ExerciseFailed(
                f"{case.label}: your function changed its argument `{name}` in place: start "
                f"from a copy ({name}.clone()), or the caller's {name} is overwritten"
            )
    largest = sizes.largest if isinstance(sizes, _LargestTensor) else 0
    return Call(case, output=output, passes=passes, largest=largest)


def _fail_on_error(ex: Exercise, calls: list[Call]) -> None:
    __tracebackhide__ = True
    for call in calls:
        if call.error is None:
            continue
        for mistake in ex.mistakes:
            if mistake.seen is not None and mistake.seen(calls):
                raise ExerciseFailed(mistake.says) from call.error
        err = call.error
        raise ExerciseFailed(
            f"{ex.name} raised {type(err).__name__}: {err}\n(the traceback above shows the line)"
        ) from err


def _matches(ex: Exercise, mistake: Mistake, calls: list[Call], got: list[Tensor], rtol) -> bool:
    """Whether the learner's calls show ``mistake``: its predicate holds, or the wrong
    function gives the learner's outputs on every case."""
    if mistake.seen is not None:
        return mistake.seen(calls)
    for call, values in zip(calls, got, strict=True):
        try:
            theirs = ex.read_case(mistake.wrong(*call.case.args), call.case)
        except ExerciseFailed:
            return False
        if not same_shape(values, theirs):
            return False
        theirs = theirs.reshape(values.shape)
        if not close(values, theirs, rtol, scale_of(theirs)):
            return False
    return True


def explain(ex: Exercise, fn: Callable, ctx: Context) -> Result:
    """Run ``fn`` and the reference on every case of ``ex``; return the :class:`Result` when
    they agree and no predicate mistake holds; otherwise raise :class:`ExerciseFailed` with
    the first known mistake that explains the difference, or the generic diagnosis."""
    __tracebackhide__ = True
    cases = ex.cases(ctx)
    calls = [invoke(ex, fn, case, ctx) for case in cases]
    _fail_on_error(ex, calls)
    got = [ex.read_case(call.output, call.case) for call in calls]
    expected = [ex.read_case(ex.reference(*case.args), case) for case in cases]
    rtol = ctx.rtol if ex.rtol is None else ex.rtol
    if all(same_shape(g, e) for g, e in zip(got, expected, strict=True)):
        flat_got, flat_expected = _flat(got), _flat(expected)
        if close(flat_got, flat_expected, rtol, scale_of(flat_expected)):
            for mistake in ex.mistakes:
                if mistake.seen is not None and mistake.seen(calls):
                    raise ExerciseFailed(mistake.says)
            diff = float((flat_got - flat_expected).abs().max()) if flat_got.numel() else 0.0
            return Result(ctx, cases, calls, got, expected, diff)
    raise ExerciseFailed(_diagnosis(ex, ctx, calls, got, expected, rtol))


def _flat(values: list[Tensor]) -> Tensor:
    return torch.cat([v.reshape(-1) for v in values])


def _diagnosis(
    ex: Exercise, ctx: Context, calls: list[Call], got: list[Tensor], expected: list[Tensor], rtol
) -> str:
    """What is wrong: the first known mistake the calls show (with the entries that differ),
    else the shape of the first case whose shape is wrong, else the generic diagnosis."""
    labels = [
        label
        for call, e in zip(calls, expected, strict=True)
        for label in (call.case.labels or [call.case.label] * max(1, e.numel()))
    ]
    shapes_agree = all(same_shape(g, e) for g, e in zip(got, expected, strict=True))
    for mistake in ex.mistakes:
        if _matches(ex, mistake, calls, got, rtol):
            if not shapes_agree or mistake.seen is not None:
                return mistake.says
            table = differences(_flat(got), _flat(expected), labels, rtol, boolean=ex.boolean)
            return f"{mistake.says}\n{table}"
    n_prompts = ctx.task.n_prompts if ex.prompt_hints else None
    for call, g, e in zip(calls, got, expected, strict=True):
        problem = shape_problem(g, e, ex.axes, n_prompts)
        if problem:
            return f"{ex.what} ({call.case.label}): {problem}"
    problem = mismatch(
        _flat(got),
        _flat(expected),
        rtol=rtol,
        labels=labels,
        n_prompts=n_prompts,
        boolean=ex.boolean,
    )
    return f"{ex.what}: {problem}"
