"""Keeping the committed notebooks clean and their outputs fresh.

    python -m hvp_utils.cli.notebook_tools refresh notebooks/0*.ipynb   # make refresh
    python -m hvp_utils.cli.notebook_tools check notebooks/0*.ipynb     # exit 1 if unclean
    python -m hvp_utils.cli.notebook_tools solutions notebooks/0*.ipynb --out runs/solutions-src

``refresh`` re-executes every notebook with papermill into a temporary folder and writes them
back only when all of them succeed, with volatile metadata stripped (outputs and execution
counts kept, so nbval compares them).

``solutions`` writes copies of the notebooks in which every ``exercise`` cell holds the code of
its ``solution`` cell (the contract of :mod:`hvp_course`); it fails, writing nothing,
when an exercise has no solution or the solution defines another function. ``make solutions``
and ``make rerun-test`` execute those copies.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from hvp_utils.cli.rerun import kernel_config

KEPT_NOTEBOOK_METADATA = ("kernelspec",)
KEPT_CELL_METADATA = ("tags",)


def strip_metadata(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop run-specific metadata (timings, papermill, widget state); keep outputs and tags."""
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in KEPT_NOTEBOOK_METADATA}
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in KEPT_CELL_METADATA}
        cell.pop("id", None)
    nb.nbformat, nb.nbformat_minor = 4, 4
    return nb


def problems(path: Path) -> list[str]:
    """Why a committed notebook is not clean (empty list when it is)."""
    nb = nbformat.read(path, as_version=4)
    found = []
    extra = set(nb.metadata) - {*KEPT_NOTEBOOK_METADATA, "language_info"}
    if extra:
        found.append(f"notebook metadata {sorted(extra)}")
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or "parameters" not in code[0].metadata.get("tags", []):
        found.append("first code cell is not tagged 'parameters'")
    for i, cell in enumerate(nb.cells):
        extra = set(cell.metadata) - set(KEPT_CELL_METADATA)
        if extra:
            found.append(f"cell {i} metadata {sorted(extra)}")
        if "injected-parameters" in cell.metadata.get("tags", []):
            found.append(f"cell {i} is a papermill injected-parameters cell")
        if cell.cell_type == "code" and cell.source.strip() and cell.execution_count is None:
            found.append(f"cell {i} was not executed (no execution_count)")
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append(f"cell {i} holds an error output")
    counts = [c.execution_count for c in code if c.execution_count is not None]
    if counts != list(range(1, len(counts) + 1)):
        found.append("execution counts are not 1, 2, 3, ... (run top to bottom once)")
    return found


def refresh(paths: list[Path], kernel: str = "python3") -> None:
    """Execute every notebook; write all back only if all succeeded."""
    import papermill

    executed = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            start = time.perf_counter()
            out = Path(tmp) / path.name
            with tempfile.TemporaryDirectory(prefix="hvp-kernel-") as sockets:
                papermill.execute_notebook(
                    str(path),
                    str(out),
                    kernel_name=kernel,
                    cwd=str(path.parent),
                    progress_bar=False,
                    config=kernel_config(Path(sockets)),  # IPC, as the rerun: no TCP warning
                )
            executed[path] = strip_metadata(nbformat.read(out, as_version=4))
            print(f"{path.name}: {time.perf_counter() - start:.1f} s", flush=True)
    for path, nb in executed.items():
        nbformat.write(nb, path)
    print(f"refreshed {len(executed)} notebooks")


def write_solutions(paths: list[Path], out: Path) -> list[Path]:
    """Copies of ``paths`` in ``out`` with every exercise's solution filled in.

    Every notebook is filled before any is written, so a broken one writes nothing.

    Raises:
        ContractError: an exercise without a solution, or whose solution names another
            function (the message names the notebook and the cell).
    """
    from hvp_course.cells import fill_solutions

    filled = {
        path: fill_solutions(nbformat.read(path, as_version=4), label=path.name) for path in paths
    }
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, nb in filled.items():
        nbformat.write(nb, out / path.name)
        written.append(out / path.name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["refresh", "check", "strip", "solutions"])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="solutions: the folder the copies go to")
    args = parser.parse_args(argv)
    if args.command == "solutions":
        from hvp_course.cells import ContractError

        if args.out is None:
            parser.error("solutions needs --out DIR")
        try:
            written = write_solutions(args.notebooks, args.out)
        except ContractError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"wrote {len(written)} notebooks with their solutions filled in to {args.out}")
        return 0
    if args.command == "refresh":
        refresh(args.notebooks)
        return 0
    if args.command == "strip":
        for path in args.notebooks:
            nbformat.write(strip_metadata(nbformat.read(path, as_version=4)), path)
        return 0
    bad = {p: problems(p) for p in args.notebooks}
    for path, found in bad.items():
        for problem in found:
            print(f"{path}: {problem}")
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
