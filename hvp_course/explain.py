"""The machinery behind :func:`check`: the registry, the context, and comparisons that explain.

A checker (one per exercise, see :mod:`hvp_utils.exercises`) calls the learner's function with
:func:`call`, converts what it returned with :func:`as_values` and compares it with the
reference with :func:`expect_close`, which raises :class:`ExerciseFailed` with a message that
says *what* is wrong: the shape (which axis, expected against got), the sign, a constant
factor (with what that factor usually means), a known mistake, or which entries differ.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hvp_utils.core.components import Component, components
from hvp_utils.core.results import Attribution
from hvp_utils.core.tasks import PatchingTask, ioi_dataset, task_baseline
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching

#: What :func:`check` builds when it is called without a model: the embedded model in
#: float64 and a small IOI task (cached for the whole session).
DEFAULT_MODEL = "toy-ioi"
DEFAULT_TASK = {"n_prompts": 8, "perturbation": "name_swap", "seed": 0}
#: Relative tolerance of a comparison, by the model's dtype (the default for others).
RTOL = {torch.float64: 1e-6, torch.float32: 2e-3}
RTOL_OTHER = 5e-2
#: AtP needs the clean run (a cache) and the corrupted run it differentiates (plus, at most,
#: a separate corrupted cache); more forward passes than this is patching, not attributing.
ATP_MAX_FORWARDS = 4
#: How many differing entries a failure message lists.
SHOW_ENTRIES = 4

PASS_MARK, TODO_MARK = "✓", "○"


class ExerciseFailed(Exception):
    """The learner's function runs but returns something wrong; the message says what."""


class NotImplementedYet(Exception):  # noqa: N818 (a state, not an error)
    """The learner's function still raises ``NotImplementedError`` (the stub)."""


# --------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class Mistake:
    """A deliberately wrong implementation, with a fragment the failure message must contain.

    The tests call :func:`check` on every mistake of every exercise and expect
    :class:`ExerciseFailed` whose message contains ``says``: so no check passes vacuously and
    every promised hint is really given.
    """

    label: str
    fn: Callable
    says: str


@dataclass(frozen=True)
class Exercise:
    """One exercise: what the learner writes, the reference, the checker and known mistakes.

    Attributes:
        name: the function the stub defines (and the first argument of :func:`check`).
        notebook: the notebook number the exercise sits in (``"00"``).
        summary: one line: what the checker verifies (shown in reports and the docs).
        reference: the package's implementation, with the learner's signature; :func:`check`
            returns it while the function is still a stub, so the notebook runs on.
        uses: what the reference is, for people (``"hu.activation_patching"``).
        checker: ``checker(fn, ctx) -> str``: calls ``fn``, raises :class:`ExerciseFailed`
            when it is wrong, and returns the detail of the pass line.
        mistakes: wrong variants (at least one) that must fail.
    """

    name: str
    notebook: str
    summary: str
    reference: Callable
    uses: str
    checker: Callable
    mistakes: tuple[Mistake, ...]


#: Every registered exercise by name.
EXERCISES: dict[str, Exercise] = {}


def exercise(
    name: str,
    *,
    notebook: str,
    reference: Callable,
    uses: str,
    mistakes: dict[str, tuple[Callable, str]],
) -> Callable:
    """Decorator registering a checker as exercise ``name`` (see the package docstring).

    Args:
        name: the function name the learner defines.
        notebook: the two-digit number of its notebook.
        reference: the reference implementation (same signature as the learner's function).
        uses: the reference for people (``"hu.atp"``).
        mistakes: ``{label: (wrong_fn, fragment_of_the_failure_message)}``, at least one.

    Returns:
        The decorator; it leaves the checker unchanged. The checker's docstring's first line
        is the exercise's summary.
    """
    if not mistakes:
        raise ValueError(f"exercise {name!r} needs at least one deliberately wrong variant")

    def register(checker: Callable) -> Callable:
        if name in EXERCISES:
            raise ValueError(f"exercise {name!r} is registered twice")
        summary = (checker.__doc__ or name).strip().splitlines()[0]
        EXERCISES[name] = Exercise(
            name=name,
            notebook=notebook,
            summary=summary,
            reference=reference,
            uses=uses,
            checker=checker,
            mistakes=tuple(Mistake(label, fn, says) for label, (fn, says) in mistakes.items()),
        )
        return checker

    return register


# --------------------------------------------------------------------------------------------
# The context a checker works in


@functools.cache
def default_model() -> Model:
    """The embedded model in float64, loaded once."""
    from hvp_utils.core.models import load_model

    return load_model(DEFAULT_MODEL, dtype="float64")


@functools.cache
def default_task() -> PatchingTask:
    """A small IOI task on :func:`default_model`, built once."""
    return ioi_dataset(default_model(), **DEFAULT_TASK)


@dataclass
class Context:
    """What a checker needs: the model, the task, anything else the notebook passed, and a
    memo for references that several checks share (one per model and task)."""

    model: Model
    task: PatchingTask
    extra: dict[str, Any] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` the first time ``key`` is asked for, the stored value afterwards."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def __getattr__(self, name: str) -> Any:
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(
            f"this check needs {name}=...; pass it: hu.exercises.check(name, fn, {name}=...)"
        )

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
    def heads(self) -> list[Component]:
        """Every head output (``head_out``), layer by layer."""
        return self.cached("heads", lambda: components(self.model, "head_out"))

    def head(self, layer: int, head: int) -> Component:
        """The head output component ``L{layer}H{head}``."""
        return self.heads[layer * self.n_heads + head]

    def layer_heads(self, layer: int) -> Component:
        """All heads of one layer as one component (the whole ``hook_z``)."""
        hook = self.head(layer, 0).hook
        return Component(f"L{layer} (every head)", "custom", hook, layer, ())

    def baseline(self) -> dict:
        """:func:`hvp_utils.task_baseline` of the task."""
        return self.cached("baseline", lambda: task_baseline(self.model, self.task))

    def head_ap(self) -> Attribution:
        """Activation patching of every head (denoising)."""
        return self.cached(
            "head_ap", lambda: activation_patching(self.model, self.task, self.heads)
        )

    def top_heads(self, k: int) -> list[tuple[int, int]]:
        """The ``k`` heads with the largest ``|AP|``, as (layer, head)."""
        order = self.head_ap().values.abs().argsort(descending=True)[:k].tolist()
        return [divmod(i, self.n_heads) for i in order]


_CONTEXTS: dict[tuple[int, int], Context] = {}


def make_context(model: Model | None = None, task: PatchingTask | None = None, **extra) -> Context:
    """The context of one :func:`check` call.

    Without ``model`` the embedded model (float64) and a small cached task are used; with a
    model and no task, a small task on that model. The context (and its memo of references)
    is kept per (model, task), so a notebook's checks share their references.
    """
    if model is None:
        if task is not None:
            raise TypeError("pass model=... together with task=...")
        model, task = default_model(), default_task()
    elif task is None:
        task = ioi_dataset(model, **DEFAULT_TASK)
    key = (id(model), id(task))
    ctx = _CONTEXTS.get(key)
    if ctx is None or ctx.model is not model or ctx.task is not task:
        ctx = _CONTEXTS[key] = Context(model, task)
    ctx.extra = extra
    return ctx


# --------------------------------------------------------------------------------------------
# Calling the learner's function


@contextmanager
def counting_forward_passes(model: Model) -> Iterator[list[int]]:
    """Count the model's forward passes (calls of its embedding) inside the block."""
    count = [0]

    def tick(module, args, output):
        count[0] += 1

    embed = getattr(model, "embed", None)
    handle = embed.register_forward_hook(tick) if embed is not None else None
    try:
        yield count
    finally:
        if handle is not None:
            handle.remove()


def call(fn: Callable, *args: Any, name: str = "your function") -> Any:
    """``fn(*args)``; a stub's ``NotImplementedError`` becomes :class:`NotImplementedYet`,
    any other exception an :class:`ExerciseFailed` that says where it came from."""
    __tracebackhide__ = True
    try:
        return fn(*args)
    except NotImplementedError as err:
        raise NotImplementedYet(str(err)) from err
    except ExerciseFailed:
        raise
    except Exception as err:
        raise ExerciseFailed(
            f"{name} raised {type(err).__name__}: {err}\n(the traceback above shows the line)"
        ) from err


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


# --------------------------------------------------------------------------------------------
# Comparisons that explain


def _fmt(x: float) -> str:
    return f"{x:+.6g}"


def _shape_text(shape: Sequence[int], axes: Sequence[str] | None) -> str:
    if not shape:
        return "a scalar, shape ()"
    names = f" [{' '.join(axes)}]" if axes and len(axes) == len(shape) else ""
    return f"{tuple(shape)}{names}"


def shape_problem(
    got: Tensor, expected: Tensor, axes: Sequence[str] | None = None, n_prompts: int | None = None
) -> str | None:
    """Why ``got`` cannot be compared with ``expected`` (None when the shapes agree)."""
    gs, es = tuple(got.shape), tuple(expected.shape)
    if gs == es or (not es and got.numel() == 1):
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
    else:
        if got.numel() == expected.numel():
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


def scalar(got: Any, what: str, n_prompts: int | None = None) -> Tensor:
    """One number from what the learner returned, or a failure saying which shape it has."""
    __tracebackhide__ = True
    values = as_values(got, what)
    problem = shape_problem(values, torch.zeros(()), None, n_prompts)
    if problem:
        raise ExerciseFailed(f"{what}: {problem}")
    return values.reshape(())


def zero_leaf_run(model: Model, task: PatchingTask, name: str) -> tuple[Tensor, Tensor, Tensor]:
    """The corrupted run with a zero leaf added at hook ``name``: ``(a_r, zero, m)``, the
    activation there, the leaf and the metric ``m(x_r)`` as a function of it (one forward
    pass, graph kept). ``torch.autograd.grad(m, zero)`` is ``dm/da`` at ``a_r``; with
    ``create_graph=True`` it can be differentiated again (an HVP). The leaf is needed because
    the weights are frozen: nothing else would carry a gradient."""
    saved = {}

    def add_zero(act, hook):
        saved["act"] = act.detach()
        saved["zero"] = torch.zeros_like(act, requires_grad=True)
        return act + saved["zero"]

    with torch.enable_grad():
        logits = model.run_with_hooks(task.corrupted_tokens, fwd_hooks=[(name, add_zero)])
        metric = task.metric(logits)
    return saved["act"], saved["zero"], metric


def corrupted_gradient(model: Model, task: PatchingTask, name: str) -> tuple[Tensor, Tensor]:
    """The activation ``a_r`` at hook ``name`` on the corrupted run and ``dm(x_r)/da`` there,
    from one forward and one backward pass (:func:`zero_leaf_run`)."""
    act, zero, metric = zero_leaf_run(model, task, name)
    (grad,) = torch.autograd.grad(metric, zero)
    return act, grad


def tensor_pair(got: Any, names: tuple[str, str], n: int) -> Tensor:
    """The learner's two ``[n]`` tensors (a tuple or a list of two, or one ``[2, n]``
    tensor) as one ``[2, n]`` tensor, or a failure saying why not (one tensor of shape
    ``[n]``, the wrong number of items, an item of the wrong shape)."""
    __tracebackhide__ = True
    pair = f"({names[0]}, {names[1]})"
    if isinstance(got, Tensor) and tuple(got.shape) == (n,):
        raise ExerciseFailed(
            f"return two tensors, {pair}, one value per component each; got one tensor of "
            f"shape {tuple(got.shape)}"
        )
    if not isinstance(got, (tuple, list)):
        return as_values(got, pair)  # e.g. a stacked [2, n] tensor: the comparison checks it
    if len(got) != 2:
        raise ExerciseFailed(
            f"return two tensors, {pair}; got a {type(got).__name__} of {len(got)} items"
        )
    parts = [as_values(x, name) for x, name in zip(got, names, strict=True)]
    for part, name in zip(parts, names, strict=True):
        problem = shape_problem(part, torch.zeros(n), ("component",))
        if problem:
            raise ExerciseFailed(f"{name}: {problem}")
    return torch.stack([part.reshape(n) for part in parts])


def _close(a: Tensor, b: Tensor, rtol: float, scale: float) -> bool:
    return bool(((a - b).abs() <= rtol * max(scale, 1e-12) + rtol * b.abs()).all())


def expect_close(
    got: Any,
    expected: Any,
    *,
    what: str,
    rtol: float,
    labels: Sequence[str] | None = None,
    axes: Sequence[str] | None = None,
    n_prompts: int | None = None,
    known: dict[str, Any] | None = None,
    factors: dict[float, str] | None = None,
    sign_hint: str = "",
) -> float:
    """Compare the learner's values with the reference; on a mismatch raise
    :class:`ExerciseFailed` saying what is wrong.

    The diagnosis tries, in order: the shape (which axis, expected against got), NaN/inf,
    each ``known`` mistake (``{message: the values that mistake gives}``), a flipped sign,
    a constant factor (with ``factors[k]`` as the hint when the factor is ``k``), and
    otherwise lists the entries that differ most (named by ``labels``).

    Args:
        got: what the learner's function returned (converted with :func:`as_values`).
        expected: the reference values.
        what: what the values are, for the messages ("Delta for L0H3").
        rtol: relative tolerance; entries agree when ``|got - expected| <= rtol * (scale +
            |expected|)``, ``scale`` the largest ``|expected|`` (at least 1).
        labels: one name per entry (flattened) of ``expected``.
        axes: the names of ``expected``'s axes.
        n_prompts: the task's number of prompts (hints about a prompt axis and a factor).
        known: known mistakes, message -> the values they produce (or a function of no
            arguments computing them, called only when the values differ).
        factors: hints for constant factors.
        sign_hint: what usually flips the sign here.

    Returns:
        The largest absolute difference (for the pass line).
    """
    __tracebackhide__ = True
    got = as_values(got, what)
    expected = as_values(expected, "the reference")
    problem = shape_problem(got, expected, axes, n_prompts)
    if problem:
        raise ExerciseFailed(f"{what}: {problem}")
    got = got.reshape(expected.shape)
    if not torch.isfinite(got).all():
        bad = (~torch.isfinite(got)).flatten().nonzero().flatten().tolist()
        where = ", ".join(labels[i] for i in bad[:SHOW_ENTRIES]) if labels else f"{bad[:4]}"
        raise ExerciseFailed(f"{what}: contains NaN or inf (at {where})")
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    if _close(got, expected, rtol, scale):
        return float((got - expected).abs().max()) if got.numel() else 0.0
    for message, values in (known or {}).items():
        values = values() if callable(values) else values
        values = as_values(values, "a known mistake").reshape(expected.shape)
        if _close(got, values, rtol, scale):
            raise ExerciseFailed(f"{what}: {message}\n{_table(got, expected, labels, rtol, scale)}")
    if _close(got, -expected, rtol, scale) and expected.abs().max() > 0:
        hint = f"\n  hint: {sign_hint}" if sign_hint else ""
        raise ExerciseFailed(
            f"{what}: wrong sign: every value is the negative of the expected one{hint}\n"
            f"{_table(got, expected, labels, rtol, scale)}"
        )
    norm = float((expected * expected).sum())
    if norm > 0:
        k = float((got * expected).sum()) / norm
        if abs(k - 1) > 10 * rtol and k != 0 and _close(got, k * expected, 10 * rtol, scale):
            hint = _factor_hint(k, factors or {}, n_prompts)
            raise ExerciseFailed(
                f"{what}: off by a constant factor: got {k:.6g} x the expected values"
                f"{hint}\n{_table(got, expected, labels, rtol, scale)}"
            )
    flipped = (got * expected < 0) & (expected.abs() > rtol * scale)
    detail = ""
    if flipped.any() and not flipped.all():
        names = _names(flipped.flatten().nonzero().flatten().tolist(), labels)
        detail = f"\n  the sign is wrong at {names}"
    table = _table(got, expected, labels, rtol, scale)
    raise ExerciseFailed(f"{what}: values differ from the reference{detail}\n{table}")


def _factor_hint(k: float, factors: dict[float, str], n_prompts: int | None) -> str:
    hints = dict(factors)
    if n_prompts and n_prompts > 1:
        hints.setdefault(
            float(n_prompts), f"{n_prompts} is the number of prompts: a sum where a mean belongs?"
        )
        hints.setdefault(
            1.0 / n_prompts, f"1/{n_prompts}: a mean over prompts where the sum belongs?"
        )
    for factor, hint in hints.items():
        if math.isclose(k, factor, rel_tol=1e-3) or math.isclose(k, -factor, rel_tol=1e-3):
            sign = " (and the sign is flipped)" if k * factor < 0 else ""
            return f"\n  hint: {hint}{sign}"
    return ""


def _names(indices: list[int], labels: Sequence[str] | None) -> str:
    shown = [labels[i] if labels else f"entry {i}" for i in indices[:SHOW_ENTRIES]]
    more = f" and {len(indices) - SHOW_ENTRIES} more" if len(indices) > SHOW_ENTRIES else ""
    return ", ".join(shown) + more


def _table(
    got: Tensor, expected: Tensor, labels: Sequence[str] | None, rtol: float, scale: float
) -> str:
    """The entries that differ (largest differences first): label, expected, got."""
    g, e = got.flatten(), expected.flatten()
    gap = (g - e).abs()
    wrong = (gap > rtol * scale + rtol * e.abs()).nonzero().flatten()
    order = wrong[gap[wrong].argsort(descending=True)].tolist()
    names = [labels[i] if labels else ("value" if e.numel() == 1 else f"entry {i}") for i in order]
    width = max((len(n) for n in names), default=0)
    rows = [
        f"  {n:<{width}}  expected {_fmt(float(e[i]))}, got {_fmt(float(g[i]))}"
        for n, i in zip(names[:SHOW_ENTRIES], order, strict=False)
    ]
    if len(order) > SHOW_ENTRIES:
        rows.append(f"  ... {len(order) - SHOW_ENTRIES} more of {e.numel()} entries differ")
    elif e.numel() > 1:
        rows.append(f"  ({len(order)} of {e.numel()} entries differ)")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# check


def check(name: str, fn: Callable, **context: Any) -> Callable:
    """Check the learner's ``fn`` for exercise ``name``; print one line; return what to use.

    Args:
        name: the exercise (its function's name), a key of :data:`EXERCISES`.
        fn: the learner's function.
        **context: the notebook's objects, e.g. ``model=model, task=task`` (default: the
            embedded model and a small cached task) and anything a checker asks for.

    Returns:
        ``fn`` when it passes; the reference implementation while ``fn`` is still the stub
        (it raises ``NotImplementedError``), so that the rest of the notebook runs.

    Raises:
        ExerciseFailed: ``fn`` runs but is wrong; the message says what is wrong.
    """
    __tracebackhide__ = True
    if name not in EXERCISES:
        known = ", ".join(sorted(EXERCISES))
        raise KeyError(f"no exercise {name!r}; the registered ones are: {known}")
    ex = EXERCISES[name]
    if not callable(fn):
        raise ExerciseFailed(f"{name}: pass the function itself, not {type(fn).__name__}")
    ctx = make_context(**context)
    try:
        detail = ex.checker(fn, ctx)
    except ExerciseFailed as err:
        err.args = (f"{name} is not right yet. {err}",)
        raise
    except NotImplementedYet:
        print(
            f"{TODO_MARK} {name}: not implemented yet. Write the function above and rerun this "
            f"cell; until then the notebook uses the reference ({ex.uses})."
        )
        sys.stdout.flush()
        return ex.reference
    print(f"{PASS_MARK} {name} passed: {detail}")
    sys.stdout.flush()
    return fn
