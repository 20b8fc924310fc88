"""``make bench``: every estimator and its peers on the embedded model, side by side.

    python -m hvp_utils.cli.bench [--model toy-ioi] [--n-prompts 8] [--kinds head_out,neuron]
                                  [--quick] [--out docs/bench]

For each perturbation and component kind, every estimator of the grid, Screen-Flag-Fix and the
peers (TransformerLens's own ``patching`` for AP, Captum's ``LayerIntegratedGradients`` for
joint IG) run on the same components in one process and are measured against AP. Writes
``estimators.csv`` (one row per kind, perturbation and estimator: compare() metrics, pass
counts, wall time as ratios to AtP and to AP), ``hutchinson.csv`` (the stochastic
second-order term against the number of probes, at neuron granularity), ``frontier.csv``,
``pareto.png`` and ``targets.md``, and ``README.md`` summing them up with the command that
made them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from hvp_utils.analysis.benchmark import (
    LIKE_AP,
    default_estimators,
    frontier_table,
    probe_sweep,
    run_estimators,
)
from hvp_utils.analysis.circuits import ap_circuit, circuit_recovery, mlp_gap_shares
from hvp_utils.analysis.peers import captum_ig_estimator, tl_patching_estimator
from hvp_utils.analysis.screen_flag_fix import sff_estimator
from hvp_utils.cli.tables import to_markdown
from hvp_utils.core.components import Component, components
from hvp_utils.core.local_maps import CURVED_LOCAL_KINDS
from hvp_utils.core.models import load_model
from hvp_utils.core.results import Estimator
from hvp_utils.core.tasks import PatchingTask, ioi_dataset
from hvp_utils.core.types import PERTURBATIONS, Family
from hvp_utils.estimators import atp_estimator, hvp_estimator, ig_estimator
from hvp_utils.viz.plots import pareto_plot

KINDS = ("head_out", "head_out_pos", "mlp_out", "neuron", "head_q", "head_k", "neuron_pre")
#: The kinds TransformerLens's ``patching`` module has functions for (our AP's peer).
TL_PATCHING_KINDS = ("head_out", "head_out_pos", "neuron")
#: The kinds whose bench components cover each hook entirely: only there is Captum's
#: LayerIntegratedGradients (which interpolates the whole layer) our joint IG.
WHOLE_HOOK_KINDS = ("head_out", "mlp_out", "head_q", "head_k")
#: Neurons per kind in the estimator grid (the probe sweep takes the whole layer, or these with
#: ``--quick``).
N_NEURONS = 128
PEER_FAMILIES = (Family.AP_PEER.value, Family.IG_PEER.value)
#: The task the neuron layer is found on: the notebooks' featured one by default (name swap,
#: 8 prompts), so the bench measures the neurons the notebooks do.
FEATURED = "name_swap"
FEATURED_PROMPTS = 8


def peers(kind: str, *, quick: bool = False) -> list[Estimator]:
    """The peers that compute what one of our estimators computes, for ``kind``: AP through
    ``transformer_lens.patching`` (:data:`TL_PATCHING_KINDS`) and joint IG (midpoint rule)
    through Captum (:data:`WHOLE_HOOK_KINDS`)."""
    rows = []
    if kind in TL_PATCHING_KINDS:
        rows.append(tl_patching_estimator())
    for steps in ((2,) if quick else (2, 8)) if kind in WHOLE_HOOK_KINDS else ():
        rows.append(captum_ig_estimator(steps=steps))
    return rows


def neuron_layer(model, *, seed: int) -> int:
    """The layer whose MLP carries the most of the gap on the notebooks' featured task
    (:data:`FEATURED`, :data:`FEATURED_PROMPTS` prompts), by their rule
    (:func:`~hvp_utils.mlp_gap_shares`); prints which layer and its share."""
    task = ioi_dataset(model, n_prompts=FEATURED_PROMPTS, perturbation=FEATURED, seed=seed)
    shares = mlp_gap_shares(model, task)
    print(f"neurons: {shares.describe()}", flush=True)
    return shares.layer


def bench_components(
    model,
    task: PatchingTask,
    kind: str,
    *,
    layer: int | None,
    n_neurons: int | None = N_NEURONS,
) -> list[Component]:
    """Components of ``kind``: for neurons (outputs or pre-activations) ``n_neurons`` evenly
    spaced ones of ``layer`` (None: all of it; :func:`neuron_layer` finds it), and
    per-position head outputs only at the name slots and the final position (where IOI's
    information sits)."""
    if kind in ("neuron", "neuron_pre"):
        if layer is None:
            raise ValueError(f"{kind} components need layer=neuron_layer(model, seed=...)")
        every = components(model, kind, layers=[layer])
        stride = 1 if n_neurons is None else max(1, len(every) // n_neurons)
        return every[::stride][:n_neurons]
    if kind == "head_out_pos":
        keep = [
            i for i, label in enumerate(task.position_labels) if label in ("N1", "N2", "S2", "end")
        ]
        return components(model, kind, positions=keep)
    return components(model, kind)


def run(
    model_name: str,
    n_prompts: int,
    seed: int,
    quick: bool,
    dtype: str,
    kinds: tuple[str, ...] = KINDS,
    perturbations: tuple[str, ...] = PERTURBATIONS,
) -> pd.DataFrame:
    """Every estimator of the grid, Screen-Flag-Fix and the peers on every kind and
    perturbation; one frame, one row per (perturbation, kind, estimator)."""
    model = load_model(model_name, dtype=dtype)
    needs_layer = any(kind.startswith("neuron") for kind in kinds)
    layer = neuron_layer(model, seed=seed) if needs_layer else None
    frames = []
    for perturbation in perturbations:
        task = ioi_dataset(model, n_prompts=n_prompts, perturbation=perturbation, seed=seed)
        for kind in kinds:
            start = time.perf_counter()
            comps = bench_components(model, task, kind, layer=layer)
            grid = [
                *default_estimators(quick=quick),
                sff_estimator(fix="patch"),
                *peers(kind, quick=quick),
            ]
            frame, results = run_estimators(
                model, task, comps, estimators=grid, perturbation=perturbation, kind=kind
            )
            frames.append(with_circuit_columns(frame, results))
            print(
                f"{perturbation:>12} {kind:>12}: {len(comps)} components, "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
    return pd.concat(frames, ignore_index=True)


def probe_table(
    model_name: str,
    n_prompts: int,
    seed: int,
    dtype: str,
    probes: tuple[int, ...],
    n_neurons: int | None = None,
) -> pd.DataFrame:
    """:func:`~hvp_utils.analysis.benchmark.probe_sweep` on the neurons of the layer whose
    MLP carries the most of the gap (:func:`neuron_layer`), for each perturbation: all of
    them, or ``n_neurons`` evenly spaced ones."""
    model = load_model(model_name, dtype=dtype)
    layer = neuron_layer(model, seed=seed)
    frames = []
    for perturbation in PERTURBATIONS:
        task = ioi_dataset(model, n_prompts=n_prompts, perturbation=perturbation, seed=seed)
        comps = bench_components(model, task, "neuron", layer=layer, n_neurons=n_neurons)
        frame = probe_sweep(model, task, comps, probes=probes, seed=seed)
        frames.append(frame.assign(perturbation=perturbation, n_components=len(comps)))
    return pd.concat(frames, ignore_index=True)


def with_circuit_columns(frame: pd.DataFrame, results: dict) -> pd.DataFrame:
    """Add each estimator's recovery of AP's circuit: AUROC and precision at its size."""
    reference = ap_circuit(results["ap"])
    found = {key: circuit_recovery(result, reference) for key, result in results.items()}
    frame["circuit_auroc"] = frame.key.map(lambda key: found[key].auroc)
    frame["circuit_precision"] = frame.key.map(lambda key: found[key].precision)
    return frame


def _rows(frame: pd.DataFrame, record: Estimator) -> pd.DataFrame:
    return frame[frame.key == record.key]


def targets(frame: pd.DataFrame) -> str:
    """The benchmark's targets, evaluated on the frame of :func:`run`, as markdown: HVP diag
    against AtP where AtP errs most, Screen-Flag-Fix at neuron granularity, circuit AUROC where
    AtP's is below 0.95, joint HVP's time, and multi-step HVP against IG."""
    lines = ["# Targets", ""]
    groups = list(frame.groupby(["perturbation", "kind"], sort=False))
    atp, diag, joint = atp_estimator(), hvp_estimator(), hvp_estimator(mode="joint")
    for perturbation in frame.perturbation.unique():
        first = _rows(frame[frame.perturbation == perturbation], atp)
        for _, worst in first.sort_values("nmae", ascending=False).head(2).iterrows():
            group = frame[(frame.perturbation == perturbation) & (frame["kind"] == worst["kind"])]
            second = _rows(group, diag).nmae.iloc[0]
            ratio = second / worst.nmae
            lines.append(
                f"- {diag.label} vs AtP, {perturbation}/{worst['kind']} (AtP NMAE "
                f"{worst.nmae:.3f}): NMAE {second:.3f}, ratio {ratio:.2f} -> "
                f"{'met' if ratio <= 0.5 else 'missed'} (target <= 0.5)"
            )
    has_circuit = "circuit_auroc" in frame.columns
    for _, row in frame[(frame.family == Family.SFF.value) & has_circuit].iterrows():
        ok = row.spearman >= 0.99 and row.circuit_precision == 1.0 and row.x_AP_time <= 0.25
        lines.append(
            f"- {row.method}, {row.perturbation}/{row['kind']}: Spearman {row.spearman:.4f}, "
            f"same top-k circuit {row.circuit_precision:.3f}, {row.x_AP_time:.2f}x AP time -> "
            f"{'met' if ok else 'missed'} (target at neuron granularity: >= 0.99, 1.0, <= 0.25)"
        )
    for (perturbation, kind), group in groups if has_circuit else []:
        atp_auc = _rows(group, atp).circuit_auroc.iloc[0]
        if atp_auc < 0.95:
            second = group[group.family.isin([Family.HVP.value, Family.MULTISTEP.value])]
            better = (second.circuit_auroc > atp_auc).all()
            lines.append(
                f"- circuit AUROC {perturbation}/{kind}: AtP {atp_auc:.3f} < 0.95; second order "
                f"{'all higher' if better else 'not all higher'}: "
                f"{dict(zip(second.method, second.circuit_auroc.round(3), strict=True))}"
            )
    times = _rows(frame, joint).x_AtP_time
    lines.append(
        f"- {joint.label} wall time / AtP: median {times.median():.2f}, max {times.max():.2f} "
        "(target <= 2)"
    )
    for (perturbation, kind), group in groups:
        ig = group[
            (group.estimator == "ig")
            & (group.opt_mode == "per_component")
            & (group.opt_rule == "midpoint")
        ]
        multi = group[group.estimator == "multistep"]
        for _, row in ig.iterrows():
            good = multi[multi.nmae <= row.nmae]
            if good.empty:
                lines.append(
                    f"- {perturbation}/{kind}: no multi-step rule reaches {row.method} "
                    f"(NMAE {row.nmae:.4f})"
                )
                continue
            best = good.sort_values("seconds").iloc[0]
            lines.append(
                f"- {perturbation}/{kind}: {best.method} reaches {row.method} "
                f"(NMAE {best.nmae:.4f} <= {row.nmae:.4f}) at "
                f"{best.seconds / row.seconds:.2f}x its wall time (target <= 0.5)"
            )
    return "\n".join(lines) + "\n"


def peer_and_local_targets(frame: pd.DataFrame) -> list[str]:
    """The targets of the local-exact estimator and of the peers, as markdown lines: AtP
    (exact local) at most half AtP's NMAE within 2x AtP's time where the error is local,
    our batched AP at least 5x faster than TransformerLens's, Captum's joint IG equal to ours."""
    lines = []
    local_kinds = frame[frame.kind.isin(CURVED_LOCAL_KINDS)]
    for (perturbation, kind), group in local_kinds.groupby(["perturbation", "kind"], sort=False):
        by_key = group.set_index("key")
        if "atp_local" not in by_key.index:
            continue
        ratio = by_key.loc["atp_local"].nmae / by_key.loc["atp"].nmae
        slower = by_key.loc["atp_local"].x_AtP_time
        ok = ratio <= 0.5 and slower <= 2.0
        lines.append(
            f"- AtP (exact local), {perturbation}/{kind}: NMAE {ratio:.2f}x AtP's at "
            f"{slower:.2f}x its time -> {'met' if ok else 'missed'} (target <= 0.5x, <= 2x)"
        )
    for (perturbation, kind), group in frame.groupby(["perturbation", "kind"], sort=False):
        by_key = group.set_index("key")
        if "tl_patching" in by_key.index:
            speedup = by_key.loc["tl_patching"].seconds / by_key.loc["ap"].seconds
            lines.append(
                f"- AP vs transformer_lens.patching, {perturbation}/{kind}: ours {speedup:.1f}x "
                f"faster, NMAE between them {by_key.loc['tl_patching'].nmae:.1e} -> "
                f"{'met' if speedup >= 5 else 'missed'} (target >= 5x)"
            )
        for steps in (2, 8):
            captum = "captum_ig" if steps == 2 else f"captum_ig[steps={steps}]"
            ours = ig_estimator(steps=steps, mode="joint").key
            if captum in by_key.index and ours in by_key.index:
                gap = abs(by_key.loc[captum].nmae - by_key.loc[ours].nmae)
                lines.append(
                    f"- IG joint K={steps} vs Captum, {perturbation}/{kind}: NMAE gap {gap:.1e}, "
                    f"Captum takes {by_key.loc[captum].seconds / by_key.loc[ours].seconds:.2f}x "
                    "our time"
                )
    return lines


def readme(
    frame: pd.DataFrame, probes: pd.DataFrame, front: pd.DataFrame, command: str, seconds: float
) -> str:
    """``docs/bench/README.md``: what was run, the frontier per kind, the peers' rows and the
    probe sweep, all read from the frames."""
    cols = ["perturbation", "kind", "method", "nmae", "spearman", "topk_recall"]
    cols += ["x_AtP_time", "x_AP_time"]
    peer_rows = frame[frame.family.isin(PEER_FAMILIES) | frame.estimator.isin(["ap", "atp"])]
    lines = [
        "# Benchmark: accuracy against compute on the embedded model",
        "",
        f"Made by `{command}` in {seconds / 60:.1f} minutes (2 CPU cores).",
        "Every row is measured against activation patching (AP) on the same components, with",
        "wall times taken in the same process: `x_AP_time` and `x_AtP_time` are ratios to AP's",
        "and AtP's time on that (perturbation, kind). `estimators.csv` has every row and pass",
        "count; `pareto.png` draws NMAE against time with AP on it (a star at NMAE 0).",
        "",
        "## The frontier, per component kind",
        "",
        f"The cheapest estimator that ranks like AP (Spearman >= {LIKE_AP} and the same top-k",
        "components), and the most accurate one within twice AtP's wall time:",
        "",
        to_markdown(front, ".3g"),
        "",
        "## Peers in the same run",
        "",
        "TransformerLens's own `transformer_lens.patching` computes the same AP as ours",
        "(`AP (transformer_lens.patching)`), Captum's `LayerIntegratedGradients` the same joint IG",
        "(`IG joint (Captum LayerIG)`), AtP* is Kramar et al.'s (QK fix and GradDrop):",
        "",
        to_markdown(peer_rows[cols], ".3g"),
        "",
        "## Targets of the local-exact estimator and of the peers",
        "",
        *peer_and_local_targets(frame),
        "",
        "## Hutchinson at neuron granularity",
        "",
        "The second-order term from random-sign probes against the exact per-component one",
        "(`HVP diag`), as the number of probes S grows:",
        "",
        to_markdown(probes, ".3g"),
        "",
    ]
    return "\n".join(lines)


def write_reports(out: Path) -> str:
    """``pareto.png``, ``targets.md`` and ``README.md`` from the CSV files and ``run.json``
    in ``out`` (what a bench run wrote); returns the targets report."""
    frame = pd.read_csv(out / "estimators.csv")
    probes = pd.read_csv(out / "hutchinson.csv")
    front = pd.read_csv(out / "frontier.csv")
    record = json.loads((out / "run.json").read_text())
    fig = pareto_plot(frame, row="kind", col="perturbation")
    fig.savefig(out / "pareto.png", dpi=90, bbox_inches="tight")
    report = targets(frame) + "\n".join(peer_and_local_targets(frame)) + "\n"
    (out / "targets.md").write_text(report)
    text = readme(frame, probes, front, record["command"], record["seconds"])
    (out / "README.md").write_text(text)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="toy-ioi")
    parser.add_argument("--n-prompts", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds")
    parser.add_argument("--probes", default="4,8,16,32,64,128", help="Hutchinson probe counts")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smaller estimator grid, and the probe sweep on {N_NEURONS} neurons",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="write the CSV files and run.json only (no README.md, targets.md or pareto.png): "
        "the benchmark at another seed, which notebook 08 reads from <bench>/seeds/seed<N>/",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild targets.md, README.md and pareto.png from the CSV files in --out",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        write_reports(args.out)
        return
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    kinds = tuple(k for k in args.kinds.split(",") if k)
    frame = run(args.model, args.n_prompts, args.seed, args.quick, args.dtype, kinds)
    probe_counts = tuple(int(p) for p in args.probes.split(",") if p)
    probes = probe_table(
        args.model,
        args.n_prompts,
        args.seed,
        args.dtype,
        probe_counts,
        n_neurons=N_NEURONS if args.quick else None,
    )
    front = frontier_table(frame)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "estimators.csv", index=False)
    probes.to_csv(args.out / "hutchinson.csv", index=False)
    front.to_csv(args.out / "frontier.csv", index=False)
    command = "python -m hvp_utils.cli.bench " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    seconds = time.perf_counter() - start
    record = {
        "command": command.strip(),
        "seconds": round(seconds, 1),
        "settings": {
            "model_name": args.model,
            "n_prompts": args.n_prompts,
            "seed": args.seed,
            "dtype": args.dtype,
            "quick": args.quick,
        },
    }
    (args.out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    if args.tables_only:
        print(f"wrote {args.out}/: estimators.csv, hutchinson.csv, frontier.csv, run.json")
        return
    print(write_reports(args.out))
    print(
        f"wrote {args.out}/: estimators.csv, hutchinson.csv, frontier.csv, pareto.png, "
        f"targets.md, README.md, run.json ({seconds:.0f} s)"
    )


if __name__ == "__main__":
    main()
