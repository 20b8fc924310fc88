"""Grids of reruns on Ray: models x parameter sets, one Ray task (one papermill process) each.

    python -m hvp_utils.cli.rerun --grid grid.yaml                      # a local Ray
    python -m hvp_utils.cli.rerun --grid grid.yaml --address auto       # an existing cluster
    python -m hvp_utils.cli.rerun --grid grid.yaml --gpus-per-task 1

``grid.yaml`` (schema: :data:`GRID_KEYS`, :func:`parse_grid`; example:
``docs/grid.example.yaml``)::

    name: small-models            # required: results go to <out>/<name>/
    models:                       # required: names, hub ids or checkpoint directories
      - toy-ioi
      - ./checkpoints/my-gpt2     # relative paths: relative to the grid file
    parameters:                   # optional: parameter-set name -> notebook parameters
      quick: {n_prompts: 8, dtype: float32}
      default: {}                 # (absent: one set, "default", with no parameters)
    notebooks: "01,03,04"         # optional: as --notebooks (a list works too); absent: all

Each (model, parameter set) is one Ray task that runs ``python -m hvp_utils.cli.rerun`` in a
subprocess (one papermill process at a time per task, never papermill in threads) into
``<out>/<name>/<model-slug>/<set>/``, a normal rerun folder with its ``manifest.json`` and
``summary.html``; finished notebooks are skipped, so running a grid again resumes it. Then
:func:`build_report` reads the numbers the executed notebooks recorded (their findings records,
output metadata key ``hvp_utils/findings``) into ``<out>/<name>/report.csv`` and ``report.md``:
a row per (model, parameter set, perturbation, component kind) with AtP's NMAE and Spearman
against AP (notebook 01), the most accurate correction, its cost and AtP's NMAE on the same
components (04, 05), and the flag counts (03). Nothing is recomputed.

Every node of a cluster needs this project at the same path and ``<out>`` on a file system
all of them see (as on a SLURM cluster; start Ray there as Ray documents, then ``--address``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hvp_utils.cli import rerun

#: Keys of a grid file: required ones, then optional ones.
GRID_KEYS = {"name": True, "models": True, "parameters": False, "notebooks": False}
#: The parameter set of a grid file without ``parameters``.
DEFAULT_SET = "default"
#: Recorded methods that are not corrections of AtP: the reference and AtP itself.
NOT_CORRECTIONS = ("AP", "AtP")
#: The report's columns, in order (the first four identify a row).
REPORT_COLUMNS = [
    "model",
    "parameters",
    "perturbation",
    "kind",
    "components",
    "AtP nmae",
    "AtP spearman",
    "best correction",
    "its nmae",
    "its x AP time",
    "AtP nmae there",
    "flagged",
    "flag_score",
    "flag_sign",
    "flag_threshold",
]
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class GridError(rerun.RerunError):
    """A bad grid file: nothing runs."""


@dataclass(frozen=True)
class Grid:
    """A validated grid: models as notebooks receive them, by folder name; parameter sets."""

    name: str
    models: dict[str, str]
    parameters: dict[str, dict[str, Any]]
    notebooks: str | None


@dataclass(frozen=True)
class Task:
    """One (model, parameter set): the rerun command line and the folder it writes."""

    model: str
    parameters: str
    command: list[str]
    run_dir: str


# --- the grid file -------------------------------------------------------------------------


def load_grid(path: Path) -> Grid:
    """Read and validate ``path`` (:func:`parse_grid`), relative checkpoints against its folder."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise GridError(f"cannot read the grid file {path}: {err}") from None
    return parse_grid(data, base=Path(path).resolve().parent)


def parse_grid(data: Any, *, base: Path) -> Grid:
    """A :class:`Grid` from a grid file's content; a GridError naming the fix otherwise."""
    if not isinstance(data, dict):
        raise GridError("a grid file is a mapping with keys " + ", ".join(GRID_KEYS))
    unknown = sorted(set(map(str, data)) - set(GRID_KEYS))
    missing = [key for key, required in GRID_KEYS.items() if required and key not in data]
    if unknown or missing:
        raise GridError(
            f"grid file: unknown key(s) {unknown or 'none'}, missing key(s) {missing or 'none'}; "
            f"valid keys: {', '.join(GRID_KEYS)} (name and models required)"
        )
    return Grid(
        name=safe_name(data["name"], "name"),
        models=parse_models(data["models"], base=base),
        parameters=parse_parameter_sets(data.get("parameters")),
        notebooks=parse_notebooks(data.get("notebooks")),
    )


def safe_name(value: Any, where: str) -> str:
    """``value`` when it can name a folder (letters, digits, ``.``, ``_``, ``-``)."""
    if not isinstance(value, str) or not SAFE_NAME.match(value):
        raise GridError(f"{where}: {value!r} is not a folder name; use letters, digits, . _ -")
    return value


def parse_models(models: Any, *, base: Path) -> dict[str, str]:
    """Models by folder name (:func:`rerun.model_slug`), checkpoints as absolute paths."""
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise GridError("models: give a non-empty list of model names or checkpoint directories")
    resolved = {}
    for model in models:
        local = base / Path(model).expanduser()
        source = str(local) if (local / "config.json").is_file() else model
        slug = rerun.model_slug(source)
        if slug in resolved:
            raise GridError(f"models: two models share the folder name {slug!r}; rename one")
        try:
            resolved[slug] = rerun.resolve_model(source)
        except rerun.RerunError as err:
            raise GridError(f"models: {err}") from None
    return resolved


def parse_parameter_sets(sets: Any) -> dict[str, dict[str, Any]]:
    """Parameter sets by name; none given: one empty set, :data:`DEFAULT_SET`."""
    if sets is None:
        return {DEFAULT_SET: {}}
    if not isinstance(sets, dict) or not sets:
        raise GridError("parameters: give a mapping of set name -> {parameter: value, ...}")
    parsed = {}
    for name, values in sets.items():
        where = f"parameters.{name}"
        if not isinstance(values, dict | None):
            raise GridError(f"{where}: give a mapping of notebook parameters, not {values!r}")
        values = values or {}
        if "model_name" in values:
            raise GridError(f"{where}: list the model under models, not as model_name")
        parsed[safe_name(str(name), "parameters")] = json.loads(json.dumps(values))
    return parsed


def parse_notebooks(notebooks: Any) -> str | None:
    """The notebook selection as ``--notebooks`` takes it (``"01,04"``), or None for all."""
    if notebooks is None or isinstance(notebooks, str):
        return notebooks
    items = notebooks if isinstance(notebooks, list) else [notebooks]
    if not items or not all(isinstance(n, int | str) and not isinstance(n, bool) for n in items):
        raise GridError(f"notebooks: give '01,04' or a list [1, 4], not {notebooks!r}")
    return ",".join(f"{n:02d}" if isinstance(n, int) else n for n in items)


def check_grid(grid: Grid) -> None:
    """Every parameter set against the notebooks it goes to (as a rerun checks them)."""
    available = rerun.available_notebooks()
    notebooks = rerun.select_notebooks(grid.notebooks, available)
    for name, values in grid.parameters.items():
        try:
            rerun.check_parameters(values, notebooks)
        except rerun.RerunError as err:
            raise GridError(f"parameters.{name}: {err}") from None


# --- tasks ---------------------------------------------------------------------------------


def plan_tasks(grid: Grid, *, out: Path, force: bool) -> list[Task]:
    """One rerun command line per (model, parameter set), into its own folder."""
    tasks = []
    for slug, model in grid.models.items():
        for name, values in grid.parameters.items():
            run_dir = Path(out).resolve() / grid.name / slug / name
            command = [sys.executable, "-m", "hvp_utils.cli.rerun", "--model", model]
            command += ["--run-dir", str(run_dir)]
            command += [f"--param={key}={value!r}" for key, value in values.items()]
            command += ["--notebooks", grid.notebooks] if grid.notebooks else []
            command += ["--force"] if force else []
            tasks.append(Task(slug, name, command, str(run_dir)))
    return tasks


def run_task(task: Task, repo: str) -> dict[str, Any]:
    """Run one task's rerun in a subprocess (from ``repo``, which comes first on the path of it
    and its kernels): its exit code, wall time and the end of its error output."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    start = time.perf_counter()
    done = subprocess.run(task.command, cwd=repo, env=env, capture_output=True, text=True)
    return {
        "model": task.model,
        "parameters": task.parameters,
        "returncode": done.returncode,
        "seconds": round(time.perf_counter() - start, 1),
        "run_dir": task.run_dir,
        "error": done.stderr[-2000:] if done.returncode else None,
    }


def run_on_ray(tasks: list[Task], *, address: str | None, gpus_per_task: float) -> list[dict]:
    """Each task as a Ray task (1 CPU, ``gpus_per_task`` GPUs), on the Ray found at ``address``
    (None: this process's Ray if one is running, else a new one on this machine, never a
    cluster that ``ray start`` left running); results as they end."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    # run_task travels by reference: the workers import hvp_utils (Ray runs them in the Python
    # that started Ray on each node: this project's environment, see docs/rerun.md)
    remote = ray.remote(run_task).options(num_cpus=1, num_gpus=gpus_per_task, max_retries=0)
    pending = [remote.remote(task, str(rerun.REPO)) for task in tasks]
    results = []
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        result = ray.get(ready[0])
        status = "ok" if result["returncode"] == 0 else f"exit {result['returncode']}"
        print(f"{result['model']}/{result['parameters']}: {status}, {result['seconds']} s")
        results.append(result)
    return results


# --- the report ----------------------------------------------------------------------------


def recorded_tables(notebook: Path) -> dict[str, pd.DataFrame]:
    """The tables an executed notebook recorded (its ``hvp_utils/findings`` output metadata)."""
    from hvp_utils.analysis.findings import recorded_outputs

    return {
        key: pd.DataFrame(rows)
        for record, _ in recorded_outputs(notebook)
        for key, rows in record.get("tables", {}).items()
    }


def run_tables(run_dir: Path) -> dict[str, dict[str, pd.DataFrame]]:
    """Recorded tables of every notebook a rerun folder's manifest lists as ``ok``, by its
    two-digit number."""
    manifest = rerun.load_manifest(run_dir)
    return {
        key[:2]: recorded_tables(run_dir / entry["output"])
        for key, entry in sorted(manifest["notebooks"].items())
        if entry["status"] == "ok" and (run_dir / entry["output"]).exists()
    }


def atp_accuracy(tables: dict) -> pd.DataFrame:
    """AtP against AP per (perturbation, kind): notebook 01's ``accuracy`` table."""
    renamed = {"n": "components", "nmae": "AtP nmae", "spearman": "AtP spearman"}
    accuracy = tables.get("01", {}).get("accuracy")
    if accuracy is None:
        return pd.DataFrame(columns=["perturbation", "kind", *renamed.values()])
    return accuracy.rename(columns=renamed)[["perturbation", "kind", *renamed.values()]]


def estimates(tables: dict) -> pd.DataFrame:
    """Every estimator's NMAE and time as a multiple of AP's, per (perturbation, kind), with the
    notebook that measured it: notebook 04's ``nmae`` and ``seconds`` tables and notebook 05's
    ``timings`` table."""
    keys = ["perturbation", "kind"]
    frames = []
    nb04 = tables.get("04", {})
    if "nmae" in nb04 and "seconds" in nb04:
        nmae = nb04["nmae"].melt(id_vars=keys, var_name="method", value_name="nmae")
        seconds = nb04["seconds"].set_index(keys)
        ratio = seconds.div(seconds["AP"], axis=0).reset_index()
        ratio = ratio.melt(id_vars=keys, var_name="method", value_name="x_AP_time")
        frames.append(nmae.merge(ratio, on=[*keys, "method"]).assign(notebook="04"))
    if "timings" in tables.get("05", {}):
        timings = tables["05"]["timings"][[*keys, "method", "nmae", "x_AP_time"]]
        frames.append(timings.assign(notebook="05"))
    if not frames:
        return pd.DataFrame(columns=[*keys, "method", "nmae", "x_AP_time", "notebook"])
    return pd.concat(frames, ignore_index=True).dropna(subset=["nmae"])


def best_corrections(tables: dict) -> pd.DataFrame:
    """Per (perturbation, kind), the correction (an estimator other than AP and AtP) of lowest
    NMAE, its NMAE and cost, and AtP's NMAE in the same notebook (on the same components)."""
    keys = ["perturbation", "kind"]
    found = estimates(tables)
    fixes = found[~found.method.isin(NOT_CORRECTIONS)]
    best = fixes.loc[fixes.groupby(keys).nmae.idxmin()] if len(fixes) else fixes
    atp = found[found.method == "AtP"][[*keys, "notebook", "nmae"]]
    best = best.merge(atp, on=[*keys, "notebook"], how="left", suffixes=("", "_atp"))
    renamed = {
        "method": "best correction",
        "nmae": "its nmae",
        "x_AP_time": "its x AP time",
        "nmae_atp": "AtP nmae there",
    }
    return best.rename(columns=renamed)[[*keys, *renamed.values()]]


def flag_counts(tables: dict) -> pd.DataFrame:
    """Components flagged and by which rule, per (perturbation, kind): notebook 03's ``reasons``."""
    columns = ["perturbation", "kind", "flags", "flag_score", "flag_sign", "flag_threshold"]
    reasons = tables.get("03", {}).get("reasons")
    if reasons is None:
        reasons = pd.DataFrame(columns=columns)
    return reasons[columns].rename(columns={"flags": "flagged"})


def task_rows(tables: dict) -> pd.DataFrame:
    """One run folder's rows: the three sources outer-joined on (perturbation, kind)."""
    keys = ["perturbation", "kind"]
    frame = atp_accuracy(tables)
    for part in (best_corrections(tables), flag_counts(tables)):
        frame = frame.merge(part, on=keys, how="outer") if len(part) else frame
    return frame


def build_report(folders: dict[tuple[str, str], Path]) -> pd.DataFrame:
    """The cross-model report: the rows of every (model, parameter set) folder, in the order
    given, columns :data:`REPORT_COLUMNS` (empty where no notebook recorded the number)."""
    parts = []
    for (model, name), run_dir in folders.items():
        rows = task_rows(run_tables(Path(run_dir)))
        parts.append(rows.assign(model=model, parameters=name))
    report = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return report.reindex(columns=REPORT_COLUMNS)


def task_status(result: dict) -> str:
    """``ok``, or ``failed (exit N)``: how one task's rerun ended."""
    code = result["returncode"]
    return "ok" if code == 0 else f"failed (exit {code})"


def report_markdown(report: pd.DataFrame, *, grid: Grid, results: list[dict]) -> str:
    """``report.md``: the grid, each task's status and folder, and the report as a table."""
    statuses = [
        f"| {r['model']} | {r['parameters']} | {task_status(r)} | {r['seconds']} | "
        f"`{r['model']}/{r['parameters']}/` |"
        for r in results
    ]
    return "\n".join(
        [
            f"# Grid `{grid.name}`",
            "",
            f"Notebooks {grid.notebooks or 'all'}; parameter sets: "
            + "; ".join(f"`{k}` {v}" for k, v in grid.parameters.items()),
            "",
            "| model | parameters | status | seconds | folder |",
            "|---|---|---|---|---|",
            *statuses,
            "",
            "AtP against AP from notebook 01 (`accuracy`); the correction of lowest NMAE among "
            "those notebooks 04 (`nmae`, `seconds`) and 05 (`timings`) recorded, its time a "
            "multiple of AP's, and AtP's NMAE in that notebook (on its components: the neuron "
            "sample of 03 and 04 is not 01's); flags from notebook 03 (`reasons`). "
            "Empty: not recorded.",
            "",
            report.astype(object)
            .where(report.notna(), None)
            .to_markdown(index=False, floatfmt=".4g", missingval=""),
            "",
        ]
    )


# --- command line --------------------------------------------------------------------------


def main(args) -> int:
    """``rerun --grid``: validate, run every task on Ray, write the report; 0 when every task
    succeeded, 1 when one failed (the report covers what finished), 2 on a bad grid."""
    try:
        if args.param or args.notebooks:
            raise GridError("with --grid, give parameters and notebooks in the grid file")
        grid = load_grid(Path(args.grid))
        check_grid(grid)
    except rerun.RerunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tasks = plan_tasks(grid, out=Path(args.out), force=args.force)
    results = run_on_ray(tasks, address=args.address, gpus_per_task=args.gpus_per_task)
    order = {(t.model, t.parameters): i for i, t in enumerate(tasks)}
    results.sort(key=lambda r: order[r["model"], r["parameters"]])
    report = build_report({(r["model"], r["parameters"]): Path(r["run_dir"]) for r in results})
    folder = Path(args.out) / grid.name
    folder.mkdir(parents=True, exist_ok=True)
    report.to_csv(folder / "report.csv", index=False)
    (folder / "report.md").write_text(report_markdown(report, grid=grid, results=results))
    failed = [r for r in results if r["returncode"]]
    for r in failed:
        print(f"error: {r['model']}/{r['parameters']} failed:\n{r['error']}", file=sys.stderr)
    print(f"{len(results) - len(failed)} of {len(results)} tasks ok; report: {folder}/report.md")
    return 1 if failed else 0
