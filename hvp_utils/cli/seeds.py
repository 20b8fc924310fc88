"""Measure the seed paper's claims on other prompt samples: notebooks 01-07 at several seeds.

    python -m hvp_utils.cli.seeds --seeds 1 2 --out docs/seeds      # make seeds

Each seed reruns notebooks 01-07 (:mod:`hvp_utils.cli.rerun`, ``--param seed=N``, every other
parameter at its default) into ``runs/seeds/seed-N/<model>/``, and
:func:`hvp_utils.analysis.findings.paper.run_measures` and
:func:`hvp_utils.analysis.findings.spread.key_numbers` read the claims' and the key numbers
back from the executed notebooks. The folder ``--out`` receives

- ``measures.csv``: one row per (seed, claim, part, perturbation): value, holds, detail;
- ``key_numbers.csv``: one row per (seed, key number, item, perturbation): value, holds;
- ``run.json``: the command, the wall time and the settings (model, seeds, prompts, dtype).

Notebook 08 reads them and judges every claim and key number over these seeds and its own
run's prompt sample. About 8 minutes per seed for toy-ioi on 2 CPU cores (measured on an idle
machine). ``--collect-only`` reads the runs already under ``--runs`` instead of
executing them (after a change to what is read, not to what the notebooks compute).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import pandas as pd

from hvp_utils.analysis.findings.paper import CLAIM_NOTEBOOKS, MEASURE_COLUMNS, run_measures
from hvp_utils.analysis.findings.spread import KEY_COLUMNS, key_numbers
from hvp_utils.cli import rerun


def measure_seed(
    model: str, seed: int, *, runs: Path, execute: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rerun notebooks 01-07 at ``seed`` under ``runs/seed-<seed>/`` (unless ``execute`` is
    False) and read their claims' numbers and key numbers; a failing notebook raises."""
    out = runs / f"seed-{seed}"
    if execute:
        argv = ["--model", model, "--param", f"seed={seed}", "--out", str(out)]
        argv += ["--notebooks", ",".join(CLAIM_NOTEBOOKS)]
        if rerun.main(argv) != 0:
            raise RuntimeError(f"the rerun at seed {seed} failed; see the message above")
    folder = out / rerun.model_slug(model)
    return run_measures(folder).assign(seed=seed), key_numbers(folder).assign(seed=seed)


def default_settings() -> dict:
    """The parameters of notebooks 01-07 the claims depend on, at their defaults."""
    import papermill

    source = sorted(rerun.NOTEBOOK_DIR.glob("01_*.ipynb"))[0]
    declared = papermill.inspect_notebook(str(source))
    return {k: ast.literal_eval(declared[k]["default"]) for k in ("n_prompts", "dtype")}


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m hvp_utils.cli.seeds", description=__doc__)
    cli.add_argument("--model", default="toy-ioi")
    cli.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    cli.add_argument("--out", type=Path, default=Path("docs/seeds"))
    cli.add_argument("--runs", type=Path, default=Path("runs/seeds"))
    cli.add_argument(
        "--collect-only",
        action="store_true",
        help="read the executed notebooks already under --runs instead of running them",
    )
    args = cli.parse_args(argv)
    start = time.perf_counter()
    if args.collect_only and not (args.out / "run.json").exists():
        cli.error(f"--collect-only needs {args.out}/run.json, the record of the runs")
    frames = [
        measure_seed(args.model, seed, runs=args.runs, execute=not args.collect_only)
        for seed in args.seeds
    ]
    measures = pd.concat(f[0] for f in frames)[["seed", *MEASURE_COLUMNS]]
    numbers = pd.concat(f[1] for f in frames)[["seed", *KEY_COLUMNS]]
    args.out.mkdir(parents=True, exist_ok=True)
    measures.to_csv(args.out / "measures.csv", index=False, float_format="%.6g")
    numbers.to_csv(args.out / "key_numbers.csv", index=False, float_format="%.6g")
    if args.collect_only:  # run.json stays the record of the runs that executed them
        print(f"{len(measures)} measures, {len(numbers)} key numbers read into {args.out}/")
        return 0
    record = {
        "command": "python -m hvp_utils.cli.seeds " + " ".join(argv or sys.argv[1:]),
        "seconds": round(time.perf_counter() - start, 1),
        "settings": {"model_name": args.model, "seeds": args.seeds, **default_settings()},
    }
    (args.out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{len(measures)} measures, {len(numbers)} key numbers, seeds {args.seeds}: {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
