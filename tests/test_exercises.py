"""The exercises: every one in every notebook fails on its stub, passes on its solution, and
fails with the promised message on every deliberately wrong variant, so that no check can pass
vacuously. Exercises are discovered from the notebooks (cells tagged ``exercise``), so the
exercises added to any notebook later are covered without touching this file."""

from __future__ import annotations

import ast
import dataclasses
import gc
import re
import weakref
from pathlib import Path

import nbformat
import pytest
import torch

import hvp_course as course
import hvp_utils as hu
from hvp_course import cells as contract
from hvp_course.exercise import Case, Context, Exercise, Mistake, default_model, explain
from hvp_course.explain import ExerciseFailed, mismatch, shape_problem
from hvp_utils.cli.notebook_tools import main as notebook_tools

pytestmark = pytest.mark.course

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REGISTRY = course.EXERCISES


def read(path: Path):
    return nbformat.read(path, as_version=4)


def discovered(path: Path) -> list[contract.NotebookExercise]:
    """The notebook's exercises ([] when its cells break the contract: the contract test
    below then fails and says why)."""
    try:
        return contract.notebook_exercises(read(path), path.name)
    except contract.ContractError:
        return []


CASES = [(path, ex) for path in NOTEBOOKS for ex in discovered(path)]
CASE_IDS = [f"{path.name[:2]}-{ex.name}" for path, ex in CASES]
MISTAKES = [
    (path, ex, i, mistake)
    for path, ex in CASES
    for i, mistake in enumerate(REGISTRY[ex.name].mistakes if ex.name in REGISTRY else ())
]
MISTAKE_IDS = [f"{path.name[:2]}-{ex.name}-{i}" for path, ex, i, _ in MISTAKES]


def imports_of(nb) -> str:
    """Every import statement of the notebook's code cells (magics dropped)."""
    lines = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        body = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        for node in ast.parse(body).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                lines.append(ast.unparse(node))
    return "\n".join(lines)


def namespace(path: Path, ex: contract.NotebookExercise) -> dict:
    """What a function of exercise ``ex`` may use: the notebook's imports and the solutions
    of the exercises before it (exactly what the contract allows)."""
    nb = read(path)
    ns: dict = {}
    exec(imports_of(nb), ns)
    for earlier in contract.notebook_exercises(nb, path.name):
        if earlier.index >= ex.index:
            break
        exec(earlier.solution, ns)
    return ns


def define(source: str, name: str, ns: dict):
    scope = dict(ns)
    exec(source, scope)
    return scope[name]


def test_there_are_exercises():
    assert CASES, "no notebook holds an exercise"
    assert any(path.name.startswith("00_") for path, _ in CASES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_contract(path):
    assert contract.contract_problems(read(path), path.name) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_cell_has_a_registered_check(path):
    nb = read(path)
    tagged = [i for i, c in enumerate(nb.cells) if "exercise" in c.metadata.get("tags", [])]
    found = contract.notebook_exercises(nb, path.name)
    assert [ex.index for ex in found] == tagged
    for ex in found:
        assert ex.name in REGISTRY, f"{path.name}: exercise {ex.name!r} has no registry entry"
        assert REGISTRY[ex.name].notebook == path.name[:2], (ex.name, REGISTRY[ex.name].notebook)
        assert REGISTRY[ex.name].mistakes, f"{ex.name} registers no wrong variant"


def test_every_registered_exercise_sits_in_its_notebook():
    placed = {(path.name[:2], ex.name) for path, ex in CASES}
    missing = [
        (e.notebook, name) for name, e in REGISTRY.items() if (e.notebook, name) not in placed
    ]
    assert not missing, f"registered but in no notebook: {missing}"


@pytest.mark.parametrize(("path", "ex"), CASES, ids=CASE_IDS)
def test_stub_reports_not_implemented(path, ex, capsys):
    stub = define(ex.stub, ex.name, namespace(path, ex))
    used = course.check(ex.name, stub)
    assert used is REGISTRY[ex.name].reference
    assert f"{ex.name}: not implemented yet" in capsys.readouterr().out


@pytest.mark.parametrize(("path", "ex"), CASES, ids=CASE_IDS)
def test_solution_passes(path, ex, capsys):
    solution = define(ex.solution, ex.name, namespace(path, ex))
    assert course.check(ex.name, solution) is solution
    assert f"{ex.name} passed" in capsys.readouterr().out


@pytest.mark.parametrize(("path", "ex", "index", "mistake"), MISTAKES, ids=MISTAKE_IDS)
def test_known_mistake_fails_with_its_message(path, ex, index, mistake):
    with pytest.raises(ExerciseFailed, match=re.escape(mistake.says)) as failure:
        course.check(ex.name, mistake.wrong)
    assert str(failure.value).startswith(f"{ex.name} is not right yet")


def test_each_exercise_s_mistakes_say_distinct_things():
    for ex in REGISTRY.values():
        says = [m.says for m in ex.mistakes]
        assert len(set(says)) == len(says), ex.name
    assert sum(len(ex.mistakes) for ex in REGISTRY.values()) >= 96


def test_check_uses_the_context_it_is_given(capsys):
    model = default_model()
    task = hu.ioi_dataset(model, n_prompts=5, perturbation="random_token", seed=3)
    path, ex = next((p, ex) for p, ex in CASES if ex.name == "logit_diff")
    solution = define(ex.solution, "logit_diff", namespace(path, ex))
    course.check("logit_diff", solution, model=model, task=task)
    with torch.no_grad():
        clean = float(task.metric(model(task.clean_tokens)))
    assert f"clean {clean:.4f}" in capsys.readouterr().out


def test_check_keeps_no_model_alive():
    model = hu.load_model("toy-ioi", dtype="float64")
    task = hu.ioi_dataset(model, n_prompts=4, perturbation="name_swap", seed=1)
    path, ex = next((p, ex) for p, ex in CASES if ex.name == "logit_diff")
    course.check(
        "logit_diff", define(ex.solution, "logit_diff", namespace(path, ex)), model=model, task=task
    )
    alive = weakref.ref(model)
    del model, task
    gc.collect()
    assert alive() is None


def test_check_names_the_exercises_and_its_keywords():
    with pytest.raises(KeyError, match="logit_diff"):
        course.check("no_such_exercise", lambda: None)
    with pytest.raises(TypeError, match="screen"):
        course.check("overshoots", lambda second, mean: second > 0, screens=None)


def test_the_library_does_not_load_the_course():
    """No module of hvp_utils imports hvp_course when it is imported (the command-line
    tools may, inside the command that needs it)."""
    for path in sorted((ROOT / "hvp_utils").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            assert not any(n.split(".")[0] == "hvp_course" for n in names), path


# --- the explainer, on a synthetic exercise ----------------------------------------------------


def failure(got, expected, **kwargs) -> str:
    labels = [f"c{i}" for i in range(expected.numel())]
    return mismatch(got.flatten(), expected.flatten(), rtol=1e-6, labels=labels, **kwargs)


def test_the_generic_diagnosis_explains_shapes_signs_factors_and_entries():
    ref = torch.arange(1.0, 9.0).view(2, 4).double()
    axes = ("n_layers", "n_heads")
    assert "swapped" in shape_problem(ref.T, ref, axes)
    assert "axis 1 (n_heads) has size 3, expected 4" in shape_problem(ref[:, :3], ref, axes)
    assert "reshape to (2, 4)" in shape_problem(ref.flatten(), ref, axes)
    assert "one entry per prompt" in shape_problem(torch.ones(5), torch.tensor(1.0), None, 5)
    assert "wrong sign" in failure(-ref, ref)
    assert "a sum where a mean belongs" in failure(5 * ref, ref, n_prompts=5)
    assert "got 0.5 x" in failure(ref / 2, ref)
    assert "NaN" in failure(ref * float("nan"), ref)
    bent = ref.clone()
    bent[1, 2] = -bent[1, 2]
    text = failure(bent, ref)
    assert "the sign is wrong at c6" in text and "(1 of 8 entries differ)" in text


def doubling() -> Exercise:
    """A synthetic exercise: return 2 x, on two inputs; one known mistake (x + 1)."""
    return Exercise(
        name="double",
        notebook="99",
        summary="2 x.",
        reference=lambda x: 2 * x,
        uses="2 x",
        what="2 x",
        cases=lambda ctx: [
            Case("a", (torch.tensor([1.0, 2.0, 3.0]),)),
            Case("b", (torch.tensor([-1.0, 0.5, 4.0]),)),
        ],
        mistakes=(Mistake("that is x + 1, not 2 x", wrong=lambda x: x + 1),),
        passed=lambda r: f"largest difference {r.diff:.1e}",
    )


def explained(fn, exercise: Exercise | None = None) -> str:
    ctx = Context.build()
    with pytest.raises(ExerciseFailed) as err:
        explain(exercise or doubling(), fn, ctx)
    return str(err.value)


def test_the_explainer_tries_the_known_mistakes_then_the_generic_diagnosis():
    ctx = Context.build()
    assert explain(doubling(), lambda x: x * 2 + 1e-12, ctx).diff < 1e-9
    assert explained(lambda x: x + 1).startswith("that is x + 1, not 2 x")
    assert "wrong sign" in explained(lambda x: -2 * x)
    assert "got 1.5 x" in explained(lambda x: 3 * x)
    assert "wrong shape" in explained(lambda x: (2 * x)[:2])
    assert "is None" in explained(lambda x: None)
    assert "raised ZeroDivisionError" in explained(lambda x: 1 / 0)
    assert "changed its argument `x` in place" in explained(lambda x: x.mul_(2))


def test_a_predicate_mistake_is_seen_on_the_calls():
    seen = Mistake(
        "it raised a KeyError",
        wrong=lambda x: {}["x"],
        seen=lambda calls: any(isinstance(c.error, KeyError) for c in calls),
    )
    exercise = dataclasses.replace(doubling(), mistakes=(seen,))
    assert explained(lambda x: {}["x"], exercise) == "it raised a KeyError"


# --- the solutions switch ----------------------------------------------------------------------


def tiny_notebook(solution_name: str = "f", with_solution: bool = True):
    stub = nbformat.v4.new_code_cell(
        'def f(x):\n    """2x."""\n    # your code here\n    raise NotImplementedError("2x")'
    )
    stub.metadata["tags"] = ["exercise"]
    cells = [stub, nbformat.v4.new_code_cell('f = course.check("f", f, model=model)')]
    if with_solution:
        solution = nbformat.v4.new_markdown_cell(
            f"<details><summary>Solution</summary>\n\n```python\ndef {solution_name}(x):\n"
            "    return 2 * x\n```\n\n</details>"
        )
        solution.metadata["tags"] = ["solution"]
        cells.append(solution)
    cells.append(nbformat.v4.new_code_cell("f(1)"))
    return nbformat.v4.new_notebook(cells=cells)


def test_solutions_fills_every_exercise(tmp_path):
    nbformat.write(tiny_notebook(), tmp_path / "99_x.ipynb")
    assert (
        notebook_tools(["solutions", str(tmp_path / "99_x.ipynb"), "--out", str(tmp_path / "o")])
        == 0
    )
    filled = read(tmp_path / "o" / "99_x.ipynb")
    assert filled.cells[0].source == "def f(x):\n    return 2 * x"
    assert filled.cells[1:] == read(tmp_path / "99_x.ipynb").cells[1:]


@pytest.mark.parametrize(
    ("notebook", "message"),
    [
        (tiny_notebook(with_solution=False), "has no solution"),
        (tiny_notebook(solution_name="g"), "names must be the same"),
    ],
    ids=["missing", "other-name"],
)
def test_solutions_refuses_a_broken_exercise(tmp_path, capsys, notebook, message):
    nbformat.write(notebook, tmp_path / "99_x.ipynb")
    out = tmp_path / "o"
    assert notebook_tools(["solutions", str(tmp_path / "99_x.ipynb"), "--out", str(out)]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_solution_without_exercise_breaks_the_contract():
    nb = tiny_notebook()
    nb.cells[0].metadata["tags"] = []
    with pytest.raises(contract.ContractError, match="follows no exercise"):
        contract.notebook_exercises(nb)


def test_an_exercise_without_marks_or_hint_breaks_the_contract():
    nb = tiny_notebook()
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("Double it."))
    problems = contract.contract_problems(nb, "99")
    assert len(problems) == 2 and "marks" in problems[0] and "Hint" in problems[1]
    nb.cells[0].source += (
        "\n\n*Difficulty ●○○ · importance ●●○ · about 5 minutes*\n\n"
        "<details><summary>Hint</summary>\n\nMultiply.\n\n</details>"
    )
    assert contract.contract_problems(nb, "99") == []
    assert contract.exercise_marks(nb, "99") == [
        {"name": "f", "difficulty": 1, "importance": 2, "minutes": 5}
    ]


def test_solution_filled_notebooks_keep_everything_but_the_stubs():
    for path in NOTEBOOKS:
        nb = read(path)
        filled = contract.fill_solutions(nb, path.name)
        stubs = {ex.index for ex in contract.notebook_exercises(nb, path.name)}
        for i, (a, b) in enumerate(zip(nb.cells, filled.cells, strict=True)):
            if i in stubs:
                assert "NotImplementedError" not in b.source and b.source != a.source
            else:
                assert a == b
