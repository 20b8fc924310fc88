"""Project hygiene: packages listed twice agree, the sanitize file works, notebooks are clean."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import nbformat
import pytest
from nbval.plugin import get_sanitize_patterns

from hvp_utils.cli.notebook_tools import problems

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REQUIRED_PARAMETERS = ("model_name", "perturbation", "n_prompts", "seed", "device", "dtype")


def package_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {package_name(r) for r in project["dependencies"]}
    declared |= {package_name(r) for r in project["optional-dependencies"]["dev"]}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    pip_section = [line.strip()[2:] for line in lines[start + 1 :] if line.strip().startswith("- ")]
    listed = {package_name(r) for r in pip_section if not r.startswith("-e")}
    assert listed == declared
    assert "-e ." in pip_section


def pinned_torch(text: str, where: str) -> str:
    pins = set(re.findall(r"\btorch==([0-9][\w.]*)", text))
    assert len(pins) == 1, f"{where} should pin torch once (torch==X.Y.Z), found {sorted(pins)}"
    return pins.pop()


def test_torch_pins_agree_with_the_installed_torch():
    """The Makefile installs torch before the package (an open range pulls a CUDA build) and
    environment.yml lists it: both pin the version this environment runs, and the installed
    TransformerLens lies in pyproject's range."""
    import importlib.metadata

    import torch
    from packaging.requirements import Requirement

    makefile = pinned_torch((ROOT / "Makefile").read_text(), "the Makefile")
    environment = pinned_torch((ROOT / "environment.yml").read_text(), "environment.yml")
    installed = torch.__version__.split("+")[0]  # 2.13.0+cpu: the local build tag aside
    assert makefile == environment == installed
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (lens,) = [r for r in map(Requirement, project["dependencies"]) if r.name == "transformer-lens"]
    assert lens.specifier.contains(importlib.metadata.version("transformer-lens")), lens


def test_sanitize_file_rules_are_all_read_by_nbval():
    text = (ROOT / "notebooks" / "nbval_sanitize.cfg").read_text()
    rule_lines = [line for line in text.splitlines() if re.match(r"^\s*(regex|replace)\s*:", line)]
    patterns = get_sanitize_patterns(text)
    assert patterns and 2 * len(patterns) == len(rule_lines), "a rule lacks the space after ':'"
    for regex, _ in patterns:
        re.compile(regex)
    progress, _ = patterns[0]
    assert re.search(progress, " 45%|####5     | 9/20 [00:01<00:01,  7.12it/s]")


def test_there_are_notebooks():
    assert NOTEBOOKS, "no numbered notebooks under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_executed(path):
    assert problems(path) == []


#: The largest committed notebook, in bytes: quick to open and to review in a diff.
MAX_NOTEBOOK_BYTES = 300_000


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_stays_small(path):
    size = path.stat().st_size
    assert size <= MAX_NOTEBOOK_BYTES, (
        f"{path.name} is {size:,} bytes: keep figures small (viz.set_style stores palette PNGs) "
        "and records in hu.Findings tables, not in printed outputs"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assigned = set(re.findall(r"^(\w+)\s*=", first.source, flags=re.MULTILINE))
    assert set(REQUIRED_PARAMETERS) <= assigned
    assert re.search(r'^model_name\s*=\s*"toy-ioi"', first.source, flags=re.MULTILINE)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_does_not_install_or_chdir(path):
    source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
    for forbidden in ("pip install", "os.chdir", "%cd ", "IN_GITHUB", "from_pretrained("):
        assert forbidden not in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_cell_relies_on_a_trailing_semicolon(path):
    """nbval's kernel does not honour IPython's trailing ';' output suppression, so a cell that
    relies on it stores one output under papermill and shows two under nbval."""
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and cell.source.strip():
            assert not cell.source.rstrip().endswith(";"), cell.source[-80:]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_reads_every_parameter(path):
    """papermill silently skips a parameter line it cannot parse (e.g. '>=' in a comment);
    the rerun tool would then reject that parameter as unknown."""
    import papermill

    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assigned = re.findall(r"^(\w+)\s*=", first.source, flags=re.MULTILINE)
    assert list(papermill.inspect_notebook(str(path))) == assigned
