'''The course's exercises: the learner writes the function, :func:`check` compares it with
the package and says what is wrong.

This package sits beside the library: the notebooks import it (``import hvp_course as
course``), ``hvp_utils`` never does.

The contract (for notebook authors)
-----------------------------------
An exercise is three consecutive cells.

1. A code cell tagged ``exercise`` that defines ONE function, the stub: a docstring with the
   formula and the shapes of the arguments and of the result (jaxtyping style), then the
   ``# your code here`` marker, then ``raise NotImplementedError("...")`` as the last line::

       def patch_head(model, task, layer: int, head: int) -> float:
           """Delta = g(1) - g(0): m(corrupted run with z[:, :, head] <- its clean value) - ...
           """
           # your code here
           raise NotImplementedError("patch the clean z of one head into the corrupted run")

2. A code cell that checks it, keeping what it returns::

       patch_head = course.check("patch_head", patch_head, model=model, task=task)

   On the stub it prints ``○ patch_head: not implemented yet ...`` and returns the reference
   implementation, so the rest of the notebook runs; on a correct function it prints
   ``✓ patch_head passed: ...`` and returns the learner's function; on a wrong one it raises
   :class:`ExerciseFailed` saying what is wrong (a known mistake, the shape and which axis,
   the sign, a constant factor, which entries differ). ``model=`` and ``task=`` are optional
   (without them: the embedded model in float64 and a small task), and so are the
   notebook's results some checks use (``truth=``, ``screen=``, ... see :class:`Context`).

3. A markdown cell tagged ``solution`` (collapsed in JupyterLab and on the rendered page)
   holding ``<details><summary>Solution</summary>``, a ```python block with the whole
   function, and ``</details>``.

Rules: the solution defines the same function as the stub; a function uses only its
arguments, the notebook's imports and the functions of earlier exercises (the tests run each
solution in exactly that namespace). The exercise name is the function name and a key of
:data:`EXERCISES`. A *predict before you run* question is a markdown cell tagged ``predict``
followed, after the code that answers it, by a markdown cell tagged ``answer`` (or a
``hu.Findings("NN", "Answer")`` cell). :mod:`hvp_course.cells` checks the contract and fills
in the solutions (``python -m hvp_utils.cli.notebook_tools solutions notebooks/*.ipynb --out
DIR``, which ``make solutions`` runs).

Adding an exercise
------------------
A record in ``hvp_course/nbNN.py`` (listed in that module's ``EXERCISES``)::

    Exercise(
        name="reliability_score", notebook="03", summary="r_c equals hu.reliability_score",
        reference=hu.reliability_score, uses="hu.reliability_score", what="r_c",
        cases=lambda ctx: [Case("three components", (first, second), labels=names)],
        mistakes=(
            Mistake("the whole g''(0) was used; the Taylor term is g''(0)/2",
                    wrong=lambda first, second: hu.reliability_score(first, 2 * second)),
        ),
        passed=lambda result: f"r_c of {len(names)} components as hu.reliability_score",
    )

then the three cells in the notebook. The explainer (:func:`hvp_course.exercise.explain`)
calls the function and the reference on every case, tries the mistakes in order on a
mismatch and otherwise says what differs; ``tests/test_exercises.py`` checks that every
stub reports "not implemented", every solution passes and every mistake fails with its
message.
'''

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from hvp_course import nb00, nb01, nb02, nb03, nb04, nb05, nb06, nb07, nb08
from hvp_course.exercise import Case, Context, Exercise, Mistake, explain
from hvp_course.explain import ExerciseFailed, NotImplementedYet

#: Every exercise by name.
EXERCISES: dict[str, Exercise] = {
    ex.name: ex
    for module in (nb00, nb01, nb02, nb03, nb04, nb05, nb06, nb07, nb08)
    for ex in module.EXERCISES
}

PASS_MARK, TODO_MARK = "✓", "○"


def check(name: str, fn: Callable, **context: Any) -> Callable:
    """Check the learner's ``fn`` for exercise ``name``; print one line; return what to use.

    Args:
        name: the exercise (its function's name), a key of :data:`EXERCISES`.
        fn: the learner's function.
        **context: ``model=``, ``task=`` (default: the embedded model and a small task) and
            the notebook's results a check uses (the fields of :class:`Context`).

    Returns:
        ``fn`` when it passes; the reference while ``fn`` is still the stub (it raises
        ``NotImplementedError``), so that the rest of the notebook runs.

    Raises:
        ExerciseFailed: ``fn`` runs but is wrong; the message says what is wrong.
    """
    __tracebackhide__ = True
    if name not in EXERCISES:
        known = ", ".join(sorted(EXERCISES))
        raise KeyError(f"no exercise {name!r}; the exercises are: {known}")
    ex = EXERCISES[name]
    if not callable(fn):
        raise ExerciseFailed(f"{name}: pass the function itself, not {type(fn).__name__}")
    ctx = Context.build(**context)
    try:
        detail = ex.passed(explain(ex, fn, ctx))
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


__all__ = ["EXERCISES", "Case", "Context", "Exercise", "ExerciseFailed", "Mistake", "check"]
