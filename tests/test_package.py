"""The package's shape: a layered import graph, one public API, no import-time side effects."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import hvp_utils

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hvp_utils"
#: Each layer may import only the layers listed (and itself).
ALLOWED = {
    "core": {"core"},
    "estimators": {"core", "estimators"},
    "analysis": {"core", "estimators", "analysis"},
    "viz": {"core", "estimators", "analysis", "viz"},
    "cli": {"core", "estimators", "analysis", "viz", "cli"},
}


def imported_layers(path: Path) -> set[str]:
    """Layers of ``hvp_utils`` a module imports (``hvp_utils.<layer>...``)."""
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "hvp_utils":
                layers.add(parts[1] if len(parts) > 1 else "<top>")
    return layers


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_the_layers_below(layer):
    for path in sorted((PACKAGE / layer).glob("*.py")):
        extra = imported_layers(path) - ALLOWED[layer]
        extra.discard("<top>") if layer == "cli" else None
        assert not extra, f"{path.relative_to(ROOT)} imports {sorted(extra)}"


def test_public_api_is_one_list_of_existing_names():
    assert len(set(hvp_utils.__all__)) == len(hvp_utils.__all__)
    missing = [name for name in hvp_utils.__all__ if not hasattr(hvp_utils, name)]
    assert not missing


@pytest.mark.slow
def test_importing_the_package_has_no_side_effects():
    code = (
        # TransformerLens's bridge installs warning filters of its own when imported
        "import sys, warnings; import torch, pandas, transformers, tqdm.auto; "
        "import transformer_lens.model_bridge, transformer_lens.utilities; "
        "before = list(warnings.filters); import hvp_utils; "
        "print(sys.modules.get('matplotlib.pyplot') is not None, "
        "list(warnings.filters) == before, any(m.startswith('hvp_utils.cli') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.split() == ["False", "True", "False"], out.stdout


def notebook_imports(path: Path) -> set[str]:
    modules = set()
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                modules |= {a.name for a in node.names}
    return {m for m in modules if m.startswith("hvp_utils")}


@pytest.mark.parametrize(
    "path", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.name
)
def test_notebooks_use_only_the_public_api(path):
    assert notebook_imports(path) <= {"hvp_utils", "hvp_utils.viz"}, notebook_imports(path)


#: Modules whose public functions take their options by keyword only.
KEYWORD_OPTION_MODULES = [
    "hvp_utils.core.components",
    "hvp_utils.core.tasks",
    "hvp_utils.core.models",
    "hvp_utils.core.readout",
    "hvp_utils.core.metrics",
    "hvp_utils.core.toy_model",
    "hvp_utils.core.ioi_text",
    "hvp_utils.cli.train_toy",
]
#: Subjects that have a default (the model loaded by default, the embedded tokenizer).
DEFAULTED_SUBJECTS = {("load_model", "name"), ("load_tokenizer", "directory")}


@pytest.mark.parametrize("module", KEYWORD_OPTION_MODULES)
def test_options_are_keyword_only(module):
    """Every parameter with a default, in a public function or method, comes after ``*``."""
    import importlib
    import inspect

    mod = importlib.import_module(module)
    functions = []
    for name, obj in vars(mod).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module:
            continue
        if inspect.isfunction(obj):
            functions.append((name, obj))
        elif inspect.isclass(obj):
            functions += [
                (f"{name}.{m}", f)
                for m, f in vars(obj).items()
                if inspect.isfunction(f) and not m.startswith("_")
            ]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    offenders = [
        f"{name}({p.name}=...)"
        for name, f in functions
        for p in inspect.signature(f).parameters.values()
        if p.kind in positional
        and p.default is not inspect.Parameter.empty
        and (name, p.name) not in DEFAULTED_SUBJECTS
    ]
    assert not offenders, f"options taken positionally: {offenders}; put them after *"
