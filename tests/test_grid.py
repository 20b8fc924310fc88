"""Grids of reruns (``rerun --grid``): the grid file's schema, the cross-model report from
hand-made records, and, on a local Ray, a grid of three models run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from hvp_utils.analysis.findings import Findings
from hvp_utils.cli import grid, rerun

# --- the grid file -------------------------------------------------------------------------


def test_a_grid_file_resolves_models_sets_and_notebooks(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    parsed = grid.parse_grid(
        {
            "name": "g1",
            "models": ["toy-ioi", "ckpt"],
            "parameters": {"quick": {"n_prompts": 4, "kinds": ("head_out",)}, "base": None},
            "notebooks": [1, "04"],
        },
        base=tmp_path,
    )
    assert parsed.models == {"toy-ioi": "toy-ioi", "ckpt": str(tmp_path / "ckpt")}
    assert parsed.parameters == {"quick": {"n_prompts": 4, "kinds": ["head_out"]}, "base": {}}
    assert parsed.notebooks == "01,04"
    alone = grid.parse_grid({"name": "g", "models": ["toy-ioi"]}, base=tmp_path)
    assert alone.parameters == {"default": {}} and alone.notebooks is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "g", "model": ["toy-ioi"]}, r"unknown key\(s\) \['model'\].*missing.*models"),
        ({"name": "a b", "models": ["toy-ioi"]}, "not a folder name"),
        ({"name": "g", "models": "toy-ioi"}, "non-empty list"),
        ({"name": "g", "models": ["toy-ioi", "toy-ioi"]}, "share the folder name"),
        ({"name": "g", "models": ["gpt2-smal"]}, "unknown model 'gpt2-smal'"),
        ({"name": "g", "models": ["toy-ioi"], "parameters": [1]}, "mapping of set name"),
        ({"name": "g", "models": ["toy-ioi"], "parameters": {"s": 4}}, r"parameters\.s"),
        (
            {"name": "g", "models": ["toy-ioi"], "parameters": {"s": {"model_name": "x"}}},
            "under models",
        ),
        ({"name": "g", "models": ["toy-ioi"], "notebooks": {"a": 1}}, "'01,04' or a list"),
        (["toy-ioi"], "a mapping with keys"),
    ],
)
def test_bad_grid_files_say_what_to_fix(tmp_path, data, message):
    with pytest.raises(grid.GridError, match=message):
        grid.parse_grid(data, base=tmp_path)


def test_unknown_notebook_parameters_name_their_set(tmp_path):
    bad = grid.parse_grid(
        {"name": "g", "models": ["toy-ioi"], "parameters": {"s": {"n_promts": 4}}, "notebooks": 1},
        base=tmp_path,
    )
    with pytest.raises(grid.GridError, match=r"parameters\.s: unknown parameter\(s\) n_promts"):
        grid.check_grid(bad)


def test_the_example_grid_file_is_valid():
    example = grid.load_grid(rerun.REPO / "docs" / "grid.example.yaml")
    grid.check_grid(example)
    assert "toy-ioi" in example.models


def test_a_bad_grid_exits_with_code_2_before_ray_starts(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text("name: g\nmodels: [toy-ioi]\nparams: {}\n")
    assert rerun.main(["--grid", str(path)]) == 2
    assert "unknown key(s) ['params']" in capsys.readouterr().err
    assert rerun.main(["--grid", str(path), "--model", "toy-ioi"]) == 2
    assert "either --model or --grid" in capsys.readouterr().err
    assert rerun.main(["--grid", str(path), "--param", "n_prompts=4"]) == 2
    assert "in the grid file" in capsys.readouterr().err


def test_each_task_reruns_into_its_own_folder(tmp_path):
    parsed = grid.parse_grid(
        {"name": "g", "models": ["toy-ioi"], "parameters": {"s": {"kinds": ["head_out"]}}},
        base=tmp_path,
    )
    (task,) = grid.plan_tasks(parsed, out=tmp_path, force=False)
    assert task.run_dir == str(tmp_path.resolve() / "g" / "toy-ioi" / "s")
    args = rerun.parser().parse_args(task.command[3:])
    assert args.run_dir == Path(task.run_dir) and rerun.parse_params(args.param) == {
        "kinds": ["head_out"]
    }


# --- the report from hand-made records -----------------------------------------------------


def executed(path: Path, *findings: Findings) -> str:
    """An 'executed notebook' whose outputs display ``findings`` (their records in metadata)."""
    cells = []
    for found in findings:
        data, metadata = found._repr_mimebundle_()
        output = new_output("display_data", data=data, metadata=metadata)
        cells.append(new_code_cell("found", outputs=[output]))
    nbformat.write(new_notebook(cells=cells), path)
    return path.name


def hand_made_run(run_dir: Path) -> None:
    """A rerun folder with notebooks 01, 03 and 04 recording two kinds, one perturbation."""
    run_dir.mkdir(parents=True)
    keys = dict(perturbation=["name_swap"] * 2, kind=["head_out", "mlp_out"])
    nb01, nb03, nb04 = Findings("01"), Findings("03"), Findings("04")
    nb01.table(
        "accuracy", pd.DataFrame(dict(**keys, n=[32, 4], nmae=[0.2, 0.1], spearman=[0.9, 1]))
    )
    nb03.table(
        "reasons",
        pd.DataFrame(
            dict(**keys, n=[32, 4], flags=[7, 2], flag_score=[3, 1], flag_sign=[1, 0])
            | dict(flag_threshold=[4, 2])
        ),
    )
    methods = {"AtP": [0.2, 0.1], "HVP diag": [0.02, 0.3], "HVP joint": [0.5, 0.05]}
    nb04.table("nmae", pd.DataFrame(dict(**keys, **methods)))
    seconds = {"AP": [2.0, 1.0], "AtP": [0.1, 0.1], "HVP diag": [4.0, 2.0], "HVP joint": [1, 0.5]}
    nb04.table("seconds", pd.DataFrame(dict(**keys, **seconds)))
    notebooks = {}
    for key, found in [("01_a", nb01), ("03_b", nb03), ("04_c", nb04)]:
        output = executed(run_dir / f"{key}.ipynb", found)
        notebooks[key] = {"status": "ok", "output": output}
    (run_dir / "manifest.json").write_text(json.dumps({"notebooks": notebooks}))


def test_the_report_reads_every_number_from_the_records(tmp_path):
    hand_made_run(tmp_path / "m1" / "s")
    (tmp_path / "m2" / "s").mkdir(parents=True)  # a task that recorded nothing
    report = grid.build_report({("m1", "s"): tmp_path / "m1" / "s", ("m2", "s"): tmp_path / "m2"})
    assert list(report.columns) == grid.REPORT_COLUMNS
    rows = report.set_index(["model", "kind"])
    head, mlp = rows.loc[("m1", "head_out")], rows.loc[("m1", "mlp_out")]
    assert (head["AtP nmae"], head["AtP spearman"], head["components"]) == (0.2, 0.9, 32)
    assert (head["best correction"], head["its nmae"], head["its x AP time"]) == (
        "HVP diag",
        0.02,
        2,
    )
    assert (mlp["best correction"], mlp["its nmae"], mlp["its x AP time"]) == (
        "HVP joint",
        0.05,
        0.5,
    )
    assert (head["flagged"], head["flag_score"], head["flag_sign"], head["flag_threshold"]) == (
        7,
        3,
        1,
        4,
    )
    assert (head["AtP nmae there"], mlp["AtP nmae there"]) == (0.2, 0.1)  # notebook 04's AtP
    assert len(report) == 2  # the empty task adds no row
    assert "| m1 " in grid.report_markdown(report, grid=grid_of("g"), results=[])


def grid_of(name: str) -> grid.Grid:
    return grid.Grid(name=name, models={}, parameters={"s": {}}, notebooks="01")


def test_notebook_05_competes_for_the_best_correction(tmp_path):
    run_dir = tmp_path / "r"
    hand_made_run(run_dir)
    nb05 = Findings("05")
    timings = dict(perturbation=["name_swap"] * 3, kind=["head_out"] * 3, family=["x"] * 3)
    timings |= dict(method=["AP", "AtP", "IG K=4"], nmae=[0, 0.25, 0.001], x_AP_time=[1, 0.1, 4.0])
    nb05.table("timings", pd.DataFrame(timings))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["notebooks"]["05_d"] = {"status": "ok", "output": executed(run_dir / "05.ipynb", nb05)}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    head = grid.build_report({("m", "s"): run_dir}).set_index("kind").loc["head_out"]
    assert (head["best correction"], head["its nmae"], head["its x AP time"]) == (
        "IG K=4",
        0.001,
        4,
    )
    assert head["AtP nmae there"] == 0.25  # notebook 05's AtP, beside its own correction


# --- a grid on a local Ray -----------------------------------------------------------------


@pytest.fixture
def local_ray():
    """A local Ray of 2 CPUs for one test (so at most two notebooks run at once)."""
    ray = pytest.importorskip("ray")
    # "local": a new Ray, even where /tmp/ray records a cluster that `ray start` left running
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_a_grid_of_three_models_on_ray_reports_what_the_notebooks_recorded(
    tmp_path, local_ray, capsys
):
    from claims import Recorded
    from test_rerun import save_checkpoint

    save_checkpoint(tmp_path / "tiny-gpt2")
    save_checkpoint(tmp_path / "tiny-llama", "llama")
    path = tmp_path / "grid.yaml"
    path.write_text(
        "name: three\n"
        "models: [toy-ioi, tiny-gpt2, tiny-llama]\n"  # checkpoints relative to the grid file
        "parameters:\n"
        "  quick: {n_prompts: 4, kinds: [head_out, mlp_out], remainder_nodes: 2, top_n: 2}\n"
        "notebooks: '01'\n"
    )
    assert rerun.main(["--grid", str(path), "--out", str(tmp_path / "runs")]) == 0
    folder = tmp_path / "runs" / "three"
    report = pd.read_csv(folder / "report.csv")
    assert set(report.groupby(["model", "perturbation", "kind"]).size()) == {1}
    assert len(report) == 3 * 2 * 2  # models x perturbations x kinds
    for model in ("toy-ioi", "tiny-gpt2", "tiny-llama"):
        run_dir = folder / model / "quick"
        entry = json.loads((run_dir / "manifest.json").read_text())["notebooks"]
        (entry,) = entry.values()
        assert entry["status"] == "ok" and entry["parameters"]["n_prompts"] == 4
        recorded = Recorded(run_dir / entry["output"]).table("accuracy")
        rows = report[report.model == model].merge(recorded, on=["perturbation", "kind"])
        assert len(rows) == 4
        assert (rows["AtP nmae"] == rows.nmae).all() and (
            rows["AtP spearman"] == rows.spearman
        ).all()
        assert (rows.components == rows.n).all()
    markdown = (folder / "report.md").read_text()
    assert markdown.count("| ok |") == 3 and "tiny-llama" in markdown
    # each task is a whole rerun: a local checkpoint by its resolved path, versions, git, summary
    run_dir = folder / "tiny-gpt2" / "quick"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (entry,) = manifest["notebooks"].values()
    assert entry["parameters"]["model_name"] == str((tmp_path / "tiny-gpt2").resolve())
    assert entry["seconds"] > 0 and "commit" in manifest["git"]
    assert 100 < entry["peak_rss_mb"] < 8192  # the kernel's memory: torch alone is over 100 MB
    assert manifest["versions"]["torch"] and manifest["versions"]["papermill"]
    html = (run_dir / "summary.html").read_text()
    assert "Activation patching versus attribution patching" in html and "<img" in html
    # a task's command run again resumes: its notebook is finished, so it does not run twice
    tasks = grid.plan_tasks(grid.load_grid(path), out=tmp_path / "runs", force=False)
    (task,) = [t for t in tasks if t.model == "tiny-gpt2"]
    assert task.command[1:3] == ["-m", "hvp_utils.cli.rerun"]
    capsys.readouterr()
    assert rerun.main(task.command[3:]) == 0
    assert "0 executed, 1 skipped" in capsys.readouterr().out
    again = json.loads((run_dir / "manifest.json").read_text())["notebooks"]
    assert again == manifest["notebooks"]
