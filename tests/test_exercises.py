"""The exercises: every one in every notebook fails on its stub, passes on its solution, and
fails with the promised message on every deliberately wrong variant, so that no check can pass
vacuously. Exercises are discovered from the notebooks (cells tagged ``exercise``), so the
exercises added to any notebook later are covered without touching this file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
import torch

import hvp_utils as hu
from hvp_utils.cli.notebook_tools import main as notebook_tools
from hvp_utils.exercises import cells as contract
from hvp_utils.exercises.framework import ExerciseFailed, expect_close, make_context

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REGISTRY = hu.exercises.EXERCISES


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
    (path, ex, mistake)
    for path, ex in CASES
    for mistake in (REGISTRY[ex.name].mistakes if ex.name in REGISTRY else ())
]
MISTAKE_IDS = [f"{path.name[:2]}-{ex.name}-{m.label}" for path, ex, m in MISTAKES]


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
    used = hu.exercises.check(ex.name, stub)
    assert used is REGISTRY[ex.name].reference
    assert f"{ex.name}: not implemented yet" in capsys.readouterr().out


@pytest.mark.parametrize(("path", "ex"), CASES, ids=CASE_IDS)
def test_solution_passes(path, ex, capsys):
    solution = define(ex.solution, ex.name, namespace(path, ex))
    assert hu.exercises.check(ex.name, solution) is solution
    assert f"{ex.name} passed" in capsys.readouterr().out


@pytest.mark.parametrize(("path", "ex", "mistake"), MISTAKES, ids=MISTAKE_IDS)
def test_wrong_variant_fails_with_its_message(path, ex, mistake):
    with pytest.raises(ExerciseFailed, match=re.escape(mistake.says)) as failure:
        hu.exercises.check(ex.name, mistake.fn)
    assert str(failure.value).startswith(f"{ex.name} is not right yet")


def test_check_uses_the_context_it_is_given(capsys):
    model = make_context().model
    task = hu.ioi_dataset(model, n_prompts=5, perturbation="random_token", seed=3)
    path, ex = next((p, ex) for p, ex in CASES if ex.name == "logit_diff")
    solution = define(ex.solution, "logit_diff", namespace(path, ex))
    hu.exercises.check("logit_diff", solution, model=model, task=task)
    with torch.no_grad():
        clean = float(task.metric(model(task.clean_tokens)))
    assert f"clean {clean:.4f}" in capsys.readouterr().out


def test_check_names_the_registered_exercises():
    with pytest.raises(KeyError, match="logit_diff"):
        hu.exercises.check("no_such_exercise", lambda: None)


# --- the explaining comparison, on synthetic values --------------------------------------------


def failure(got, expected, **kwargs) -> str:
    with pytest.raises(ExerciseFailed) as err:
        expect_close(got, expected, what="x", rtol=1e-6, **kwargs)
    return str(err.value)


def test_expect_close_explains_shapes_signs_factors_and_entries():
    ref = torch.arange(1.0, 9.0).view(2, 4)
    axes = ("n_layers", "n_heads")
    assert "swapped" in failure(ref.T, ref, axes=axes)
    assert "axis 1 (n_heads) has size 3, expected 4" in failure(ref[:, :3], ref, axes=axes)
    assert "reshape to (2, 4)" in failure(ref.flatten(), ref, axes=axes)
    assert "one entry per prompt" in failure(torch.ones(5), torch.tensor(1.0), n_prompts=5)
    assert "wrong sign" in failure(-ref, ref)
    assert "a sum where a mean belongs" in failure(5 * ref, ref, n_prompts=5)
    assert "got 0.5 x" in failure(ref / 2, ref)
    assert "NaN" in failure(ref * float("nan"), ref)
    assert "is None" in failure(None, ref)
    labels = [f"c{i}" for i in range(8)]
    bent = ref.clone()
    bent[1, 2] = -bent[1, 2]
    text = failure(bent, ref, labels=labels)
    assert "the sign is wrong at c6" in text and "(1 of 8 entries differ)" in text
    assert "mistake!" in failure(ref + 1, ref, known={"mistake!": lambda: ref + 1})
    assert expect_close(ref + 1e-9, ref, what="x", rtol=1e-6) < 1e-8


# --- the solutions switch ----------------------------------------------------------------------


def tiny_notebook(solution_name: str = "f", with_solution: bool = True):
    stub = nbformat.v4.new_code_cell(
        'def f(x):\n    """2x."""\n    # your code here\n    raise NotImplementedError("2x")'
    )
    stub.metadata["tags"] = ["exercise"]
    cells = [stub, nbformat.v4.new_code_cell('f = hu.exercises.check("f", f, model=model)')]
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
