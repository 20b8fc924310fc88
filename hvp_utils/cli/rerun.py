"""Rerun the notebook sequence on another model: one command, a manifest and a summary page.

    python -m hvp_utils.cli.rerun --model gpt2-small --param dtype=float32 --notebooks 01,04
    python -m hvp_utils.cli.rerun --model /path/to/hf-checkpoint --param n_prompts=8
    python -m hvp_utils.cli.rerun --grid grid.yaml     # models x parameter sets on Ray: cli.grid

Every numbered notebook (``notebooks/[0-9][0-9]_*.ipynb``) runs with papermill (kernel
``python3``, working directory ``notebooks/``) into ``runs/<model-slug>/``. Next to the executed
notebooks the run writes

- ``manifest.json``: the model, package versions, git revision, and per notebook the injected
  parameters, status (``ok``/``failed``), wall time and the executed notebook's file name;
- ``summary.html``: one page with each notebook's title, its key table(s) and figure(s) (the
  outputs of cells tagged ``summary``, else the last table and the last figure).

The run shows a progress bar over the notebooks and, below it, one over the cells of the
notebook executing. Each notebook's kernel talks to papermill over Unix-domain sockets in a
private temporary directory (:func:`kernel_config`), not TCP on loopback.

Before it executes anything, the run prints its plan (:mod:`hvp_utils.cli.plan`): per notebook,
the passes of each heavy step and an estimate of their seconds from a short calibration of the
model; ``--plan`` prints it and exits. Each notebook stays within a budget of minutes
(``--budget MINUTES``, default :data:`DEFAULT_BUDGET_MINUTES`; ``--budget none`` lifts it): a
notebook whose plan would take longer gets the largest sample of heads and neurons that fits
(``n_heads``, ``n_neurons``, ``sampling="stratified"``), with fewer prompt pairs where even a
head per layer does not fit (:func:`hvp_utils.cli.plan.fit_with_fewer_prompts`).

Rules: a notebook already in the manifest with status ``ok`` and the same parameters is
skipped; a result made with other parameters is never overwritten without ``--force``; a
parameter name that no selected notebook declares is an error (papermill only warns), and a
parameter goes only to the notebooks whose ``parameters`` cell declares it; a failing cell
stops the run, names the notebook and the cell, and exits non-zero.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from traitlets.config import Config

if TYPE_CHECKING:
    from hvp_utils.cli.plan import RerunPlan

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
KERNEL = "python3"
VERSIONED_PACKAGES = (
    "torch",
    "transformer_lens",
    "transformers",
    "papermill",
    "nbval",
    "hvp_utils",
)
SUMMARY_TAG = "summary"


class RerunError(RuntimeError):
    """Bad input or a refused overwrite: the run does not start (nothing is executed)."""


@dataclass
class Job:
    """One notebook to execute: its source, its output and the parameters it receives."""

    key: str
    source: Path
    output: Path
    parameters: dict
    sha: str


# --- input ---------------------------------------------------------------------------------


def available_notebooks(directory: Path = NOTEBOOK_DIR) -> dict[str, Path]:
    """Numbered notebooks by their two-digit number: ``{"01": .../01_....ipynb, ...}``."""
    return {p.name[:2]: p for p in sorted(directory.glob(NOTEBOOK_GLOB))}


def select_notebooks(spec: str | None, available: dict[str, Path]) -> list[Path]:
    """The notebooks named by ``spec`` (``"01,04"``, ``"1,4"``; None or ``"all"``: every one)."""
    if spec is None or spec.strip() == "all":
        return list(available.values())
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    keys = [f"{int(s):02d}" if s.isdigit() else s for s in wanted]
    unknown = [s for s, k in zip(wanted, keys, strict=True) if k not in available]
    if unknown:
        listing = ", ".join(f"{k} ({p.stem})" for k, p in available.items())
        raise RerunError(f"unknown notebook(s) {', '.join(unknown)}; available: {listing}")
    return [available[k] for k in dict.fromkeys(keys)]


def parse_value(text: str):
    """A Python literal when ``text`` is one (``8``, ``None``, ``[1, 2]``), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_params(items: list[str]) -> dict:
    """``["n_prompts=8", "dtype=float32"]`` -> ``{"n_prompts": 8, "dtype": "float32"}``."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise RerunError(f"--param {item!r}: expected key=value with a Python name as key")
        params[key.strip()] = parse_value(value.strip())
    return json.loads(json.dumps(params))  # as the manifest stores them (tuples -> lists)


def declared_parameters(notebook: Path) -> list[str]:
    """Names assigned in the notebook's cell tagged ``parameters``."""
    import papermill

    return list(papermill.inspect_notebook(str(notebook)))


def check_parameters(params: dict, notebooks: list[Path]) -> dict[Path, list[str]]:
    """Each notebook's declared parameters; an error for names no selected notebook declares."""
    declared = {nb: declared_parameters(nb) for nb in notebooks}
    valid = sorted({name for names in declared.values() for name in names})
    unknown = [name for name in params if name not in valid]
    if unknown:
        raise RerunError(
            f"unknown parameter(s) {', '.join(unknown)} for notebooks "
            f"{', '.join(nb.name[:2] for nb in notebooks)}; valid: {', '.join(valid)}"
        )
    missing = [nb.name for nb, names in declared.items() if "model_name" not in names]
    if missing:
        raise RerunError(f"notebooks {missing} declare no model_name parameter")
    return declared


def model_slug(model: str) -> str:
    """Folder name for a model: a checkpoint directory's name, or the name made path-safe."""
    from hvp_utils.core.models import is_local_checkpoint

    name = Path(model).expanduser().resolve().name if is_local_checkpoint(model) else model
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def resolve_model(model: str) -> str:
    """The model as notebooks receive it: a checkpoint as an absolute path; a name checked."""
    from hvp_utils.core.models import TOY_MODEL_NAME, is_local_checkpoint, resolve_model_name

    if is_local_checkpoint(model):
        return str(Path(model).expanduser().resolve())
    if model != TOY_MODEL_NAME:
        try:
            resolve_model_name(model)
        except ValueError as err:
            raise RerunError(str(err)) from None
    return model


# --- manifest ------------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None when absent)."""
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_revision(repo: Path = REPO) -> dict:
    """Commit hash of ``repo`` and whether its working tree has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def load_manifest(out_dir: Path) -> dict:
    """The run folder's manifest, or an empty one."""
    path = out_dir / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {"notebooks": {}}


def save_manifest(out_dir: Path, manifest: dict) -> None:
    """Write ``manifest.json`` (atomically: a crash never leaves half a manifest)."""
    tmp = out_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(out_dir / "manifest.json")


def notebook_sha(path: Path) -> str:
    """Hash of a notebook's code, to notice that a notebook changed since its last run."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    code = "\n\0".join(c.source for c in nb.cells if c.cell_type == "code")
    return hashlib.sha256(code.encode()).hexdigest()[:16]


# --- planning ------------------------------------------------------------------------------


def plan(
    notebooks: list[Path], declared: dict, params: dict, model: str, out_dir: Path
) -> list[Job]:
    """One job per notebook, each receiving ``model_name`` and the parameters it declares; a
    notebook that reads the results of earlier ones (it declares ``results_dir``, as 08 does)
    reads this run's, unless ``params`` names another folder."""
    jobs = []
    for nb in notebooks:
        own = {"model_name": model, **{k: v for k, v in params.items() if k in declared[nb]}}
        if "results_dir" in declared[nb]:
            own.setdefault("results_dir", str(out_dir.resolve()))
        jobs.append(Job(nb.stem, nb, out_dir / nb.name, own, notebook_sha(nb)))
    return jobs


def decide(job: Job, manifest: dict, force: bool) -> str:
    """``"run"``, ``"skip"`` (done, same parameters and code), or a RerunError for a result that
    other parameters made (unless ``force``)."""
    entry = manifest["notebooks"].get(job.key)
    if force:
        return "run"
    if entry is None:
        if job.output.exists():
            raise RerunError(
                f"{job.output} exists but is not in {job.output.parent / 'manifest.json'}; "
                "refusing to overwrite it. Move it away, choose another --out, or pass --force."
            )
        return "run"
    if entry["parameters"] != job.parameters:
        raise RerunError(
            f"{job.output.name} in {job.output.parent} was made with parameters "
            f"{entry['parameters']}, not {job.parameters}; refusing to overwrite it. "
            "Pass --force to overwrite, or --out another folder."
        )
    done = entry["status"] == "ok" and job.output.exists() and entry.get("sha") == job.sha
    return "skip" if done else "run"


# --- execution -----------------------------------------------------------------------------


def execute(job: Job) -> None:
    """Run one notebook with papermill, a progress bar over its cells (:func:`cell_progress`)
    and its kernel on IPC sockets (:func:`kernel_config`); a failing cell raises
    PapermillExecutionError."""
    import papermill

    with tempfile.TemporaryDirectory(prefix="hvp-kernel-") as sockets:
        papermill.execute_notebook(
            str(job.source),
            str(job.output),
            parameters=job.parameters,
            kernel_name=KERNEL,
            cwd=str(job.source.parent),
            progress_bar=cell_progress(job),
            log_output=False,
            config=kernel_config(Path(sockets)),
        )


def cell_progress(job: Job) -> dict:
    """papermill's progress bar over the cells of ``job``'s notebook, labelled with its
    number (``01 cells``), cleared when the notebook is done (the notebooks bar stays)."""
    return {"desc": f"{job.key[:2]} cells", "leave": False}


def kernel_config(socket_dir: Path) -> Config:
    """The kernel manager's configuration (a ``traitlets`` Config, which nbclient hands to
    the kernel manager it creates): ZeroMQ's IPC transport, the kernel's sockets
    ``socket_dir/kernel-1`` to ``-5``.

    Over the default transport, TCP on loopback, the kernel logs at every start (ipykernel
    7's ``IPKernelApp.init_sockets``, on the kernel's stderr, which papermill's process
    shares) "Kernel is running over TCP without encryption. All communication (including
    code and outputs) is sent in plain text ...". Over IPC nothing leaves the machine and only the
    owner of ``socket_dir`` (a fresh 0700 temporary directory per notebook) can connect, so
    the warning has no cause and is not printed; a fresh directory per notebook also keeps
    concurrent runs from picking the same socket names. Where ZeroMQ has no IPC, TCP stays.
    """
    import zmq

    if not zmq.has("ipc"):
        return Config()
    return Config({"KernelManager": {"transport": "ipc", "ip": str(socket_dir / "kernel")}})


class PeakMemory:
    """The largest resident memory (RSS, MB) of this process's child processes (the
    notebook's kernel) while the block runs, sampled every ``interval`` seconds in a thread:
    ``with PeakMemory() as peak: ...; peak.mb``. Short peaks between samples are missed, so
    read it as a lower bound to within one sample."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while True:
            rss = 0
            for child in me.children(recursive=True):
                try:
                    rss += child.memory_info().rss
                except psutil.Error:  # it ended between listing and reading
                    pass
            self.mb = max(self.mb, rss / 2**20)
            if self._stop.wait(self.interval):
                return


def failure_message(job: Job, err: Exception) -> str:
    """What failed, where: the notebook, the cell (index and execution count) and the error."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        first_line = ((err.source or "").strip().splitlines() or [""])[0]
        return (
            f"notebook {job.source.name} failed in cell {err.cell_index} of the executed "
            f"notebook (execution count {err.exec_count}; {first_line!r}): {err.ename}: "
            f"{err.evalue}. The executed notebook with the traceback: {job.output}"
        )
    return f"notebook {job.source.name} failed: {type(err).__name__}: {err}"


def record(
    manifest: dict, job: Job, status: str, seconds: float, error: str | None, *, peak_mb: float
) -> None:
    """Store one notebook's outcome in the manifest (``peak_rss_mb``: its kernel's largest
    resident memory, :class:`PeakMemory`)."""
    manifest["notebooks"][job.key] = {
        "parameters": job.parameters,
        "status": status,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_mb),
        "output": job.output.name,
        "sha": job.sha,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "error": error,
    }


def run_jobs(jobs: list[Job], actions: list[str], manifest: dict, out_dir: Path) -> str | None:
    """Execute the jobs marked ``run`` in order, with a progress bar; the first failure's
    message (the run stops there), or None."""
    from tqdm.auto import tqdm

    bar = tqdm(list(zip(jobs, actions, strict=True)), desc="notebooks", unit="nb")
    for job, action in bar:
        bar.set_postfix_str(f"{job.source.name[:40]} ({action})")
        if action == "skip":
            continue
        start = time.perf_counter()
        try:
            with PeakMemory() as peak:
                execute(job)
        except Exception as err:  # noqa: BLE001 - any failure is recorded and reported
            message = failure_message(job, err)
            seconds = time.perf_counter() - start
            record(manifest, job, "failed", seconds, message, peak_mb=peak.mb)
            save_manifest(out_dir, manifest)
            bar.close()
            return message
        record(manifest, job, "ok", time.perf_counter() - start, None, peak_mb=peak.mb)
        save_manifest(out_dir, manifest)
    return None


# --- summary page --------------------------------------------------------------------------


def notebook_title(nb) -> str:
    """The first Markdown heading of a notebook."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return "(untitled)"


def key_outputs(nb) -> list:
    """Outputs of cells tagged ``summary``; without such cells, the last table (an HTML
    result) and the last figure (a PNG or SVG)."""
    tagged = [c for c in nb.cells if SUMMARY_TAG in c.metadata.get("tags", [])]
    if tagged:
        return [o for c in tagged for o in c.get("outputs", [])]
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    figures = [o for o in outputs if {"image/png", "image/svg+xml"} & set(o.get("data", {}))]
    return [o for o in (tables[-1:] + figures[-1:]) if o]


def summary_notebook(manifest: dict, out_dir: Path):
    """A notebook of Markdown headers and output-only cells gathering every notebook's key
    outputs, the run's parameters and status table first."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    summary = new_notebook(cells=[new_markdown_cell(run_header(manifest))])
    for key, entry in sorted(manifest["notebooks"].items()):
        path = out_dir / entry["output"]
        if not path.exists():
            continue
        nb = nbformat.read(path, as_version=4)
        text = f"## {key[:2]} · {notebook_title(nb)}\n\n`{entry['output']}`: {entry['status']}, "
        text += f"{entry['seconds']} s" + (f"\n\n**{entry['error']}**" if entry["error"] else "")
        summary.cells.append(new_markdown_cell(text))
        for output in key_outputs(nb):
            summary.cells.append(new_code_cell(source="", outputs=[output]))
    return summary


def run_header(manifest: dict) -> str:
    """Markdown: model, revision, versions and a status table of the notebooks."""
    git = manifest.get("git", {})
    versions = ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())
    rows = [
        f"| {key} | {e['status']} | {e['seconds']} | `{e['parameters']}` |"
        for key, e in sorted(manifest["notebooks"].items())
    ]
    return "\n".join(
        [
            f"# Rerun on `{manifest.get('model')}`",
            "",
            f"git {git.get('commit')} (uncommitted changes: {git.get('dirty')}); {versions}",
            "",
            "| notebook | status | seconds | parameters |",
            "|---|---|---|---|",
            *rows,
        ]
    )


def write_summary(manifest: dict, out_dir: Path) -> Path:
    """Render :func:`summary_notebook` to ``summary.html`` with nbconvert (inputs hidden)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True)
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(summary_notebook(manifest, out_dir))
    path = out_dir / "summary.html"
    path.write_text(body, encoding="utf-8")
    return path


# --- command line --------------------------------------------------------------------------


def prepare_run(
    args: argparse.Namespace,
) -> tuple[list[Job], list[str], dict, Path, RerunPlan | None]:
    """Validate everything and decide each notebook's fate before anything executes (with
    ``--budget``, after :func:`apply_budget`, whose plan is returned last, else None; with
    ``--plan``, every action is ``plan``)."""
    notebooks = select_notebooks(args.notebooks, available_notebooks(args.notebook_dir))
    params = parse_params(args.param)
    if "model_name" in params:
        raise RerunError("pass the model with --model, not --param model_name=...")
    declared = check_parameters(params, notebooks)
    model = resolve_model(args.model)
    out_dir = args.run_dir or Path(args.out) / model_slug(args.model)
    manifest = load_manifest(out_dir)
    jobs = plan(notebooks, declared, params, model, out_dir)
    budgeted = None
    if args.budget is not None:
        budgeted = apply_budget(jobs, declared, args.budget, manifest, strict=not args.plan)
    if args.plan:
        return jobs, ["plan"] * len(jobs), manifest, out_dir, budgeted
    actions = [decide(job, manifest, args.force) for job in jobs]
    return jobs, actions, manifest, out_dir, budgeted


def cost_plan(jobs: list[Job], *, budget: float | None = None) -> RerunPlan:
    """The passes and estimated seconds of ``jobs`` (:func:`hvp_utils.cli.plan.plan_rerun`)."""
    from hvp_utils.cli.plan import PlanError, plan_rerun

    try:
        return plan_rerun([(j.key, j.source, j.parameters) for j in jobs], budget_minutes=budget)
    except (PlanError, ValueError, OSError, RuntimeError, NotImplementedError) as err:
        raise RerunError(f"cannot plan the run: {err}") from None


def apply_budget(
    jobs: list[Job], declared: dict, budget: float, manifest: dict, *, strict: bool
) -> RerunPlan:
    """Give each notebook over ``budget`` minutes the sample that fits (the parameters it
    declares: ``n_heads``, ``n_neurons``, ``sampling``, ``n_prompts``; the manifest's sample
    when it still fits); with ``strict``, a RerunError when a notebook cannot fit. Returns
    the plan."""
    report = cost_plan(jobs, budget=budget)
    for job in jobs:
        previous = manifest["notebooks"].get(job.key, {}).get("parameters")
        job.parameters.update(report.sampled(job.key, declared[job.source], previous=previous))
    if strict and report.budget_error():
        raise RerunError(report.budget_error() + "\n" + report.text(note=False))
    return report


#: Minutes per notebook a rerun stays within unless ``--budget`` says otherwise: the heavy
#: steps of the whole sequence on a GPT-2-small-sized model in about 20 minutes on 2 CPU cores.
DEFAULT_BUDGET_MINUTES = 2.0


def budget_minutes(text: str) -> float | None:
    """``--budget``'s value: minutes per notebook, or None for ``none`` (no budget)."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--budget takes minutes per notebook or 'none' (got {text!r})"
        ) from None


def release_memory() -> None:
    """Hand the planning's freed memory (the model loaded to calibrate) back to the system
    before the kernels start: a collection, then glibc's ``malloc_trim`` where there is one
    (on GPT-2 small's shape it keeps about 400 MB that no object uses)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc and sys.platform.startswith("linux"):
        ctypes.CDLL(libc).malloc_trim(0)


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    cli = argparse.ArgumentParser(
        prog="python -m hvp_utils.cli.rerun", description=__doc__.split("\n")[0]
    )
    cli.add_argument("--model", help="toy-ioi, a TransformerLens name, or a path")
    cli.add_argument("--grid", type=Path, help="a grid.yaml of models x parameter sets, on Ray")
    cli.add_argument("--address", default=None, help="--grid: the Ray cluster (default: local)")
    cli.add_argument("--gpus-per-task", type=float, default=0.0, help="--grid: GPUs per task")
    cli.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    cli.add_argument("--notebooks", default=None, help="e.g. 01,04 (default: all)")
    cli.add_argument("--force", action="store_true", help="re-execute and overwrite results")
    cli.add_argument("--out", default="runs", help="parent folder of runs/<model-slug>/")
    cli.add_argument("--plan", action="store_true", help="print passes and time, run nothing")
    cli.add_argument(
        "--budget",
        type=budget_minutes,
        default=DEFAULT_BUDGET_MINUTES,
        metavar="MINUTES",
        help=f"per notebook (default {DEFAULT_BUDGET_MINUTES:g}; 'none': no budget): sample "
        "heads and neurons (stratified), then fewer prompts, where the plan would take longer",
    )
    cli.add_argument("--notebook-dir", type=Path, default=NOTEBOOK_DIR, help=argparse.SUPPRESS)
    cli.add_argument("--run-dir", type=Path, default=None, help=argparse.SUPPRESS)  # grid tasks
    return cli


def main(argv: list[str] | None = None) -> int:
    """Run the command line; 0 on success, 1 when a notebook failed, 2 on bad input."""
    args = parser().parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if (args.model is None) == (args.grid is None):
        print("error: pass either --model or --grid", file=sys.stderr)
        return 2
    if args.grid is not None:
        from hvp_utils.cli import grid

        return grid.main(args)
    try:
        jobs, actions, manifest, out_dir, report = prepare_run(args)
        to_run = [job for job, action in zip(jobs, actions, strict=True) if action != "skip"]
        report = report or cost_plan(to_run)
    except RerunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.text(), flush=True)
    if args.plan:
        return 0
    release_memory()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest.update(model=args.model, versions=package_versions(), git=git_revision())
    failure = run_jobs(jobs, actions, manifest, out_dir)
    summary = write_summary(manifest, out_dir)
    if failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    skipped = actions.count("skip")
    print(f"{len(jobs) - skipped} executed, {skipped} skipped (done already): {out_dir}/")
    print(f"summary: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
