'''Exercises: the learner writes the function, :func:`check` compares it with the package.

The contract (for notebook authors)
-----------------------------------
An exercise is three consecutive cells.

1. A code cell tagged ``exercise`` that defines ONE function, the stub: a docstring with the
   formula and the shapes of the arguments and of the result (jaxtyping style), then the
   ``# your code here`` marker, then ``raise NotImplementedError("...")`` as the last line::

       def patch_head(model, task, layer: int, head: int) -> float:
           """Delta = g(1) - g(0): m(corrupted run with z[:, :, head] <- its clean value) - ...

           Args:
               model: the model; task: clean_tokens [batch pos], corrupted_tokens [batch pos],
                   answer_tokens [batch 2].
           Returns:
               Delta, a float.
           """
           # your code here
           raise NotImplementedError("patch the clean z of one head into the corrupted run")

2. A code cell that checks it, keeping what it returns::

       patch_head = hu.exercises.check("patch_head", patch_head, model=model, task=task)

   On the stub it prints ``○ patch_head: not implemented yet ...`` and returns the reference
   implementation, so the rest of the notebook runs; on a correct function it prints
   ``✓ patch_head passed: ...`` and returns the learner's function; on a wrong one it raises
   :class:`ExerciseFailed` saying what is wrong (the shape and which axis, the sign, a constant
   factor, a known mistake, which components differ). The context (``model=``, ``task=``,
   anything a checker asks for) is optional: without it the embedded model (float64) and a
   small cached task are used, so tests can check any function directly.

3. A markdown cell tagged ``solution`` (collapsed in JupyterLab and on the rendered page)::

       <details><summary>Solution</summary>

       ```python
       def patch_head(model, task, layer, head):
           ...
       ```

       </details>

Rules: the solution defines the same function as the stub; a function uses only its
arguments, the notebook's imports and the functions of earlier exercises (the tests run each
solution in exactly that namespace). The exercise name is the function name and a key of
:data:`EXERCISES`.

A *predict before you run* question is a markdown cell tagged ``predict`` before the code that
answers it, followed by a markdown cell tagged ``answer`` holding
``<details><summary>Answer</summary>...</details>``; an answer that states numbers of this run
is instead a ``hu.Findings("NN", "Answer")`` cell right after the code.

The solutions switch: ``python -m hvp_utils.cli.notebook_tools solutions notebooks/*.ipynb
--out DIR`` writes copies whose exercise cells hold their solutions; ``make solutions``
executes them into ``runs/solutions/``, and ``make rerun-test`` runs them with the CI
parameters, so every solution runs end to end. ``tests/test_exercises.py`` finds every
exercise in every notebook and checks that the stub reports "not implemented", the solution
passes, and every registered mistake fails with its message.

Adding an exercise
------------------
A checker and a registration, in ``hvp_utils/exercises/nbNN.py`` (for a new notebook, create
the module, import it below beside ``nb00`` and add it to :data:`NOTEBOOK_MODULES`)::

    from hvp_utils.analysis.reliability import reliability_score
    from hvp_utils.estimators import hvp_correction
    from hvp_utils.exercises.framework import Context, call, exercise, expect_close

    @exercise(
        "reliability", notebook="03", reference=reliability_score, uses="hu.reliability_score",
        mistakes={  # label: (a wrong implementation, a fragment of its failure message)
            "g'' not halved": (lambda first, second: reliability_score(first, 2 * second),
                               "differ"),
        },
    )
    def check_reliability(fn, ctx: Context) -> str:
        """r_c of every head equals hu.reliability_score."""  # the summary line
        est = ctx.cached("hvp_heads", lambda: hvp_correction(ctx.model, ctx.task, ctx.heads))
        got = call(fn, est.first, est.second, name="reliability")
        expect_close(got, reliability_score(est.first, est.second), what="r_c",
                     rtol=ctx.rtol, labels=est.names)
        return f"r_c of {len(est.names)} heads as hu.reliability_score"

then the three cells in notebook 03. :func:`~hvp_utils.exercises.framework.expect_close`
does the explaining (shape, sign, factor, ``known={message: values}`` mistakes, which entries
differ); ``ctx`` offers the model, the task, the head components, a memo
(:meth:`Context.cached`), activation patching of every head and the dtype's tolerance.
'''

from hvp_utils.exercises import nb00, nb01, nb02, nb03, nb04, nb05, nb06, nb07
from hvp_utils.exercises.cells import (
    ContractError,
    NotebookExercise,
    contract_problems,
    fill_solutions,
    notebook_exercises,
)
from hvp_utils.exercises.framework import (
    EXERCISES,
    Context,
    Exercise,
    ExerciseFailed,
    Mistake,
    as_values,
    call,
    check,
    counting_forward_passes,
    exercise,
    expect_close,
)

#: The modules that register exercises, one per notebook.
NOTEBOOK_MODULES = (nb00, nb01, nb02, nb03, nb04, nb05, nb06, nb07)

__all__ = [
    "EXERCISES",
    "NOTEBOOK_MODULES",
    "Context",
    "ContractError",
    "Exercise",
    "ExerciseFailed",
    "Mistake",
    "NotebookExercise",
    "as_values",
    "call",
    "check",
    "contract_problems",
    "counting_forward_passes",
    "exercise",
    "expect_close",
    "fill_solutions",
    "notebook_exercises",
]
