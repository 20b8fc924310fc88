"""The exercise contract on a notebook's cells: find the exercises, fill in their solutions,
and list what breaks the contract.

Works on ``nbformat`` notebooks (or the plain dicts of a ``.ipynb`` file): ``cells``, each
with ``cell_type``, ``source`` and ``metadata.tags``.
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass
from typing import Any

EXERCISE_TAG, SOLUTION_TAG = "exercise", "solution"
PREDICT_TAG, ANSWER_TAG = "predict", "answer"
#: The line above which a stub's docstring and below which the learner's code goes.
STUB_MARKER = "# your code here"
SOLUTION_BLOCK = re.compile(
    r"<details>\s*<summary>Solution</summary>\s*```python\n(?P<code>.*?)```\s*</details>", re.S
)
ANSWER_BLOCK = re.compile(r"<details>\s*<summary>Answer</summary>.+?</details>", re.S)
#: The marks and the folded hint that end the markdown cell before every exercise's stub.
MARKS_LINE = re.compile(
    r"^\*Difficulty (?P<difficulty>[●○]{3}) · importance (?P<importance>[●○]{3}) · "
    r"about (?P<minutes>\d+) minutes\*$",
    re.M,
)
HINT_BLOCK = re.compile(r"<details>\s*<summary>Hint( \d+)?</summary>.+?</details>", re.S)


class ContractError(ValueError):
    """A notebook's exercise cells do not follow the contract (the message says where)."""


@dataclass(frozen=True)
class NotebookExercise:
    """One exercise as it sits in a notebook.

    Attributes:
        name: the function the stub defines (the registry key).
        index: the stub cell's index; the check cell is ``index + 1``, the solution
            ``index + 2``.
        stub: the stub's source.
        check: the check cell's source.
        solution: the code of the solution cell (the whole function definition).
    """

    name: str
    index: int
    stub: str
    check: str
    solution: str


def source(cell: Any) -> str:
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else text


def tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def defined_function(code: str, where: str) -> str:
    """The name of the one function ``code`` defines at top level."""
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        raise ContractError(f"{where}: not valid Python ({err})") from err
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    if len(names) != 1:
        raise ContractError(f"{where}: defines {len(names)} functions {names}; it must define one")
    return names[0]


def solution_code(markdown: str, where: str) -> str:
    """The ```python block inside the solution cell's ``<details><summary>Solution``."""
    match = SOLUTION_BLOCK.search(markdown)
    if match is None:
        raise ContractError(
            f"{where}: a solution cell holds <details><summary>Solution</summary>, a ```python "
            "block with the whole function, and </details>"
        )
    return match["code"].strip("\n") + "\n"


def calls_check(code: str, name: str) -> bool:
    """Whether ``code`` calls ``check("name", name, ...)``."""
    pattern = rf"check\(\s*['\"]{re.escape(name)}['\"]\s*,\s*{re.escape(name)}\b"
    return re.search(pattern, code) is not None


def notebook_exercises(nb: Any, label: str = "notebook") -> list[NotebookExercise]:
    """The exercises of a notebook, in order.

    Raises:
        ContractError: an ``exercise`` cell that is not a code cell defining one function, is
            not followed by a code cell calling ``check`` on it and a ``solution`` cell, or
            whose solution defines another function; a ``solution`` cell after no exercise;
            an exercise name used twice.
    """
    cells = nb["cells"]
    found: list[NotebookExercise] = []
    solutions_used = set()
    for i, cell in enumerate(cells):
        if EXERCISE_TAG not in tags(cell):
            continue
        where = f"{label}, cell {i} (exercise)"
        if cell["cell_type"] != "code":
            raise ContractError(f"{where}: an exercise cell must be a code cell")
        name = defined_function(source(cell), where)
        check_cell = cells[i + 1] if i + 1 < len(cells) else None
        if (
            check_cell is None
            or check_cell["cell_type"] != "code"
            or not calls_check(source(check_cell), name)
        ):
            raise ContractError(
                f"{where}: the next cell must be a code cell calling "
                f'course.check("{name}", {name}, ...)'
            )
        solution = cells[i + 2] if i + 2 < len(cells) else None
        if solution is None or SOLUTION_TAG not in tags(solution):
            raise ContractError(
                f"{where}: exercise {name!r} has no solution: cell {i + 2} must be a markdown "
                "cell tagged 'solution'"
            )
        code = solution_code(source(solution), f"{label}, cell {i + 2} (solution of {name})")
        solved = defined_function(code, f"{label}, cell {i + 2} (solution of {name})")
        if solved != name:
            raise ContractError(
                f"{label}, cell {i + 2}: the solution defines {solved!r} but the exercise "
                f"defines {name!r}; the names must be the same"
            )
        if any(ex.name == name for ex in found):
            raise ContractError(f"{where}: exercise {name!r} appears twice")
        solutions_used.add(i + 2)
        found.append(NotebookExercise(name, i, source(cell), source(check_cell), code))
    for j, cell in enumerate(cells):
        if SOLUTION_TAG in tags(cell) and j not in solutions_used:
            raise ContractError(f"{label}, cell {j}: a solution cell that follows no exercise")
    return found


def fill_solutions(nb: Any, label: str = "notebook") -> Any:
    """A copy of ``nb`` whose exercise cells hold their solutions (outputs cleared)."""
    filled = copy.deepcopy(nb)
    for ex in notebook_exercises(nb, label):
        cell = filled["cells"][ex.index]
        cell["source"] = ex.solution.rstrip("\n")
        cell["outputs"] = []
        cell["execution_count"] = None
    return filled


def stub_problems(code: str, where: str) -> list[str]:
    """What a stub lacks: a docstring, the ``# your code here`` marker, a final
    ``raise NotImplementedError(...)``."""
    problems = []
    name = defined_function(code, where)
    fn = next(n for n in ast.parse(code).body if isinstance(n, ast.FunctionDef))
    if not ast.get_docstring(fn):
        problems.append(f"{where}: the stub {name} has no docstring (formula and shapes)")
    if STUB_MARKER not in code:
        problems.append(f"{where}: the stub {name} lacks the {STUB_MARKER!r} marker")
    last = fn.body[-1]
    raises = (
        isinstance(last, ast.Raise)
        and isinstance(last.exc, ast.Call)
        and getattr(last.exc.func, "id", "") == "NotImplementedError"
    )
    if not raises:
        problems.append(f"{where}: the stub {name} must end in raise NotImplementedError(...)")
    elif STUB_MARKER in code and code.index(STUB_MARKER) > code.rindex("NotImplementedError"):
        problems.append(f"{where}: {STUB_MARKER!r} must come before the raise")
    return problems


def marks_problems(intro: Any | None, where: str) -> list[str]:
    """What the markdown cell before an exercise's stub lacks: the marks line (difficulty and
    importance as three dots each, a time in minutes) and a hint folded in
    ``<details><summary>Hint</summary>`` (or several, ``Hint 1``, ``Hint 2``, ...)."""
    text = source(intro) if intro is not None and intro["cell_type"] == "markdown" else ""
    problems = []
    if not MARKS_LINE.search(text):
        problems.append(
            f"{where}: the markdown cell before an exercise ends with its marks, "
            "'*Difficulty ●●○ · importance ●●● · about 15 minutes*'"
        )
    if not HINT_BLOCK.search(text):
        problems.append(f"{where}: a hint folded in <details><summary>Hint</summary> comes next")
    return problems


def exercise_marks(nb: Any, label: str = "notebook") -> list[dict[str, Any]]:
    """Every exercise of ``nb`` with its marks: name, difficulty and importance (1 to 3) and
    minutes."""
    found = []
    for ex in notebook_exercises(nb, label):
        marks = MARKS_LINE.search(source(nb["cells"][ex.index - 1]))
        if marks is None:
            raise ContractError(f"{label}: exercise {ex.name} has no marks")
        found.append(
            {
                "name": ex.name,
                "difficulty": marks["difficulty"].count("●"),
                "importance": marks["importance"].count("●"),
                "minutes": int(marks["minutes"]),
            }
        )
    return found


def contract_problems(nb: Any, label: str = "notebook") -> list[str]:
    """Every way the notebook breaks the contract (empty when it follows it): the exercise
    cells (see :func:`notebook_exercises`), the stubs (:func:`stub_problems`), the marks and
    hint before each stub (:func:`marks_problems`), and the
    predict-before-you-run questions (each ``predict`` markdown cell is followed by code and
    then by a cell tagged ``answer``: markdown with ``<details><summary>Answer``, or a code
    cell stating this run's findings, before the next question)."""
    try:
        exercises = notebook_exercises(nb, label)
    except ContractError as err:
        return [str(err)]
    problems = []
    cells = nb["cells"]
    for ex in exercises:
        problems += stub_problems(ex.stub, f"{label}, cell {ex.index}")
        intro = cells[ex.index - 1] if ex.index > 0 else None
        problems += marks_problems(intro, f"{label}, cell {ex.index - 1}")
    for i, cell in enumerate(cells):
        if (
            ANSWER_TAG in tags(cell)
            and cell["cell_type"] == "markdown"
            and not ANSWER_BLOCK.search(source(cell))
        ):
            problems.append(
                f"{label}, cell {i}: an answer in markdown is folded in "
                "<details><summary>Answer</summary>...</details>"
            )
        if PREDICT_TAG not in tags(cell):
            continue
        if cell["cell_type"] != "markdown":
            problems.append(f"{label}, cell {i}: a predict cell must be markdown")
        saw_code, answered = False, False
        for later in cells[i + 1 :]:
            if PREDICT_TAG in tags(later):
                break
            if ANSWER_TAG in tags(later):
                answered = saw_code or later["cell_type"] == "code"
                break
            saw_code = saw_code or later["cell_type"] == "code"
        if not answered:
            problems.append(
                f"{label}, cell {i}: the prediction has no answer after the code that "
                "answers it (a cell tagged 'answer': folded markdown, or the findings of this run)"
            )
    return problems
