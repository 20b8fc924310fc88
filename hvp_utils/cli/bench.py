"""``make bench``: every estimator on the embedded model, both perturbations, six component kinds.

    python -m hvp_utils.cli.bench [--model toy-ioi] [--n-prompts 32] [--quick] [--out runs/bench]

Writes ``estimators.csv`` (one row per kind, perturbation and estimator: compare() metrics,
pass counts, wall time as ratios to AtP and to AP measured in the same process),
``pareto.png`` and ``targets.md`` (the issue's targets, met or missed, with the numbers).
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from hvp_utils.analysis.benchmark import default_estimators, pareto_plot, run_estimators
from hvp_utils.analysis.circuits import ap_circuit, circuit_recovery
from hvp_utils.core.components import Component, components
from hvp_utils.core.models import load_model
from hvp_utils.core.tasks import PERTURBATIONS, PatchingTask, ioi_dataset
from hvp_utils.analysis.screen_flag_fix import screen_flag_fix

KINDS = ("head_out", "head_out_pos", "mlp_out", "neuron", "head_q", "head_k")


def bench_components(model, task: PatchingTask, kind: str) -> list[Component]:
    """Components of ``kind``; neurons of the middle layer only, and per-position head outputs
    only at the name slots and the final position (where IOI's information sits)."""
    if kind == "neuron":
        return components(model, kind, layers=[model.cfg.n_layers // 2])
    if kind == "head_out_pos":
        keep = [
            i for i, label in enumerate(task.position_labels) if label in ("N1", "N2", "S2", "end")
        ]
        return components(model, kind, positions=keep)
    return components(model, kind)


def run(model_name: str, n_prompts: int, seed: int, quick: bool, dtype: str) -> pd.DataFrame:
    model = load_model(model_name, dtype=dtype)
    frames = []
    for perturbation in PERTURBATIONS:
        task = ioi_dataset(model, n_prompts=n_prompts, perturbation=perturbation, seed=seed)
        for kind in KINDS:
            start = time.perf_counter()
            comps = bench_components(model, task, kind)
            grid = default_estimators(quick) + [partial(screen_flag_fix, fix="patch")]
            frame, results = run_estimators(
                model, task, comps, grid, perturbation=perturbation, kind=kind
            )
            frames.append(with_circuit_columns(frame, results))
            print(
                f"{perturbation:>12} {kind:>12}: {len(comps)} components, "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
    return pd.concat(frames, ignore_index=True)


def with_circuit_columns(frame: pd.DataFrame, results: dict) -> pd.DataFrame:
    """Add each method's recovery of AP's circuit: AUROC and precision at the circuit's size."""
    reference = ap_circuit(results["AP"])
    found = {m: circuit_recovery(r, reference) for m, r in results.items()}
    frame["circuit_auroc"] = frame.method.map(lambda m: found[m]["auroc"])
    frame["circuit_precision"] = frame.method.map(lambda m: found[m]["precision"])
    return frame


def targets(frame: pd.DataFrame) -> str:
    """The issue's three targets, evaluated on the benchmark frame, as markdown."""
    lines = ["# Targets", ""]
    by = frame.set_index(["perturbation", "kind", "method"])
    for perturbation in frame.perturbation.unique():
        atp_nmae = by.loc[perturbation].xs("AtP", level="method").nmae.sort_values(ascending=False)
        for kind in atp_nmae.index[:2]:
            diag = by.loc[(perturbation, kind, "HVP diag"), "nmae"]
            ratio = diag / atp_nmae[kind]
            verdict = "met" if ratio <= 0.5 else "missed"
            lines.append(
                f"- HVP diag vs AtP, {perturbation}/{kind} (AtP NMAE {atp_nmae[kind]:.3f}): "
                f"NMAE {diag:.3f}, ratio {ratio:.2f} -> {verdict} (target <= 0.5)"
            )
    has_circuit = "circuit_auroc" in frame.columns
    for _, row in frame[frame.method.str.startswith("SFF") & has_circuit].iterrows():
        ok = row.spearman >= 0.99 and row.circuit_precision == 1.0 and row.x_AP_time <= 0.25
        lines.append(
            f"- {row.method}, {row.perturbation}/{row['kind']}: Spearman {row.spearman:.4f}, "
            f"same top-k circuit {row.circuit_precision:.3f}, {row.x_AP_time:.2f}x AP time -> "
            f"{'met' if ok else 'missed'} (target at neuron granularity: >= 0.99, 1.0, <= 0.25)"
        )
    for (perturbation, kind), group in frame.groupby(["perturbation", "kind"], sort=False):
        if not has_circuit:
            break
        atp_auc = group.loc[group.method == "AtP", "circuit_auroc"].iloc[0]
        if atp_auc < 0.95:
            second = group[group.family.isin(["HVP (one point)", "multi-step HVP"])]
            better = (second.circuit_auroc > atp_auc).all()
            lines.append(
                f"- circuit AUROC {perturbation}/{kind}: AtP {atp_auc:.3f} < 0.95; second order "
                f"{'all higher' if better else 'not all higher'}: "
                f"{dict(zip(second.method, second.circuit_auroc.round(3), strict=True))}"
            )
    joint = frame[frame.method == "HVP joint"]
    lines.append(
        f"- HVP joint wall time / AtP: median {joint.x_AtP_time.median():.2f}, "
        f"max {joint.x_AtP_time.max():.2f} (target <= 2)"
    )
    for (perturbation, kind), group in frame.groupby(["perturbation", "kind"], sort=False):
        ig = group[group.method.str.match(r"IG K=\d+$")]
        multi = group[group.family == "multi-step HVP"]
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="toy-ioi")
    parser.add_argument("--n-prompts", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--quick", action="store_true", help="a smaller estimator grid")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    frame = run(args.model, args.n_prompts, args.seed, args.quick, args.dtype)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "estimators.csv", index=False)
    fig = pareto_plot(frame, row="kind", col="perturbation")
    fig.savefig(args.out / "pareto.png", dpi=110, bbox_inches="tight")
    report = targets(frame)
    (args.out / "targets.md").write_text(report)
    print(report)
    print(f"wrote {args.out}/estimators.csv, pareto.png, targets.md")


if __name__ == "__main__":
    main()
