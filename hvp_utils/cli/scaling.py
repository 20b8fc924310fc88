"""How the estimators' cost grows with model size, and how far low precision moves the HVP term.

    python -m hvp_utils.cli.scaling              # cost table, fitted exponents, precision check
    python -m hvp_utils.cli.scaling --quick      # two small models (a smoke test)
    python -m hvp_utils.cli.scaling --sizes      # every estimator, toy-ioi vs GPT-2-small shape
    python -m hvp_utils.cli.scaling --checkpoint runs/checkpoints/gpt2-small-shape  # write it

Cost: random-initialised GPT-2 models (LayerNorm, GELU, learned positions,
``d_head = 16``, ``d_mlp = 4 d_model``) with the toy-ioi word-level tokenizer, of growing width
(``d_model`` 64..512 at 4 layers) and depth (2..8 layers at ``d_model`` 128). On each, for
the IOI task (8 prompt pairs, ``name_swap``), the components are every head output plus 64
evenly spaced MLP neurons of the middle layer, and each estimator (AP, AtP, HVP diag, HVP
joint) reports

- wall time (seconds, one call on all components) and its pass counts (forward, backward, hvp);
- peak tensor memory: the high-water mark of tensor bytes allocated during a call on 64 evenly
  spaced components (a full replicate chunk: the footprint is per pass, not per component),
  from ``torch.profiler`` allocation events (tensor storage only, no interpreter overhead).

The scaling exponent is the slope of ``log(seconds)`` against ``log(parameters)`` (least
squares), per estimator, over all models. Note that the component count grows with size too
(heads = d_model/16 x layers), so AP and HVP diag grow faster than one
pass does.

Two sizes (``--sizes``): toy-ioi's shape and GPT-2 small's (12 layers x 12 heads, d_model 768,
d_mlp 3072, GPT-2's 50,257-token vocabulary, 1,024 positions and tied embeddings: 124M
parameters), both
random-initialised, in one run on the same machine. On each, 12 evenly spaced head outputs and
12 evenly spaced neurons of the middle layer, and AtP, HVP (diag, joint, Hutchinson with 8
probes), IG K=4 and multi-step HVP K=2 against AP: seconds per component, as a multiple of AP's
and of AtP's time, and pass counts.

Precision: the second-order term ``g''(0)`` of ``hvp_correction`` (``mode="diag"``) on the
embedded model in float32, bfloat16 and float16, against float64, as a relative error
``|x - x64| / max|x64|`` per component (median and max over components).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

import hvp_utils as hu
from hvp_utils.cli.tables import to_markdown
from hvp_utils.core.toy_model import TOY_MODEL_DIR, build_model, load_tokenizer
from hvp_utils.core.types import Model

WIDTHS = (64, 128, 256, 512)
DEPTHS = (2, 4, 8)
BASE_DEPTH, BASE_WIDTH = 4, 128
N_PROMPTS = 8
#: Neurons of the middle layer in the component set (all 4 d_model would make AP and HVP diag
#: on the widest model take ~10 minutes on one core).
N_NEURONS = 64
#: Components in the memory measurement: enough for one full replicate chunk of every
#: estimator, and peak memory is per pass (chunk), not per component count.
MEMORY_SUBSET = 64
#: Components whose float64 value exceeds this share of the largest count as clear effects.
CLEAR_SHARE = 0.05
PRECISIONS = ("float32", "bfloat16", "float16")

#: The estimators whose cost is measured against model size.
MEASURED = (
    hu.ap_estimator(),
    hu.atp_estimator(),
    hu.hvp_estimator(mode="diag"),
    hu.hvp_estimator(mode="joint"),
)


#: ``--sizes``: the two shapes compared (GPT-2 small: Radford et al. 2019, 124M parameters).
SIZES = {
    "toy-ioi shape": {},  # build_model's own architecture: toy-ioi's (TOY_ARCHITECTURE)
    "GPT-2-small shape": dict(
        n_layer=12,
        n_embd=768,
        n_head=12,
        n_inner=3072,
        vocab_size=50257,
        n_positions=1024,
        tie_word_embeddings=True,  # as GPT-2: the unembedding is the embedding
    ),
}
#: ``--sizes``: every estimator of the course against AP (ground truth first).
COMPARED = (
    hu.ap_estimator(),
    hu.atp_estimator(),
    hu.hvp_estimator(mode="diag"),
    hu.hvp_estimator(mode="joint"),
    hu.hvp_estimator(mode="hutchinson", n_probes=8),
    hu.ig_estimator(steps=4),
    hu.multistep_estimator(steps=2),
)
#: ``--sizes``: head outputs and middle-layer neurons in the component set (each).
N_EACH = 12


def random_model(d_model: int, n_layers: int, dtype: torch.dtype = torch.float32):
    """A random-initialised GPT-2 (toy-ioi's architecture at another size) with the toy
    tokenizer, so the IOI names are single tokens."""
    tokenizer = load_tokenizer(TOY_MODEL_DIR)
    size = dict(n_layer=n_layers, n_embd=d_model, n_head=d_model // 16, n_inner=4 * d_model)
    return hu.from_hf_model(build_model(tokenizer, seed=0, **size), tokenizer, dtype=dtype)


def model_grid(quick: bool = False) -> list[tuple[int, int]]:
    """``(d_model, n_layers)`` pairs: the width sweep at 4 layers, the depth sweep at 128."""
    if quick:
        return [(64, 2), (128, 2)]
    grid = [(w, BASE_DEPTH) for w in WIDTHS] + [(BASE_WIDTH, d) for d in DEPTHS]
    return list(dict.fromkeys(grid))


def scaled_components(model: Model, n_neurons: int = N_NEURONS) -> list:
    """Every head output plus ``n_neurons`` evenly spaced neurons of the middle layer."""
    neurons = hu.components(model, "neuron", layers=[model.cfg.n_layers // 2])
    step = max(1, len(neurons) // n_neurons)
    return hu.components(model, "head_out") + neurons[::step][:n_neurons]


def spread_subset(comps: list, n: int = MEMORY_SUBSET) -> list:
    """``n`` evenly spaced components (every hook represented)."""
    return comps[:: max(1, len(comps) // n)][:n]


def peak_tensor_bytes(fn: Callable[[], object]) -> int:
    """High-water mark of tensor bytes allocated while ``fn`` runs (torch.profiler events:
    each op's own allocations, and the frees recorded as ``[memory]`` events)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    changes = []
    for event in prof.events():
        size = event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        if size:
            changes.append((event.time_range.start, size))
    live = peak = 0
    for _, size in sorted(changes):
        live += size
        peak = max(peak, live)
    return peak


def measure(model: Model, estimator: hu.Estimator) -> dict:
    """Seconds, pass counts and peak tensor memory of one estimator on ``model``."""
    task = hu.ioi_dataset(model, n_prompts=N_PROMPTS, perturbation="name_swap", seed=0)
    comps = scaled_components(model)
    result = estimator(model, task, comps)
    subset = spread_subset(comps)
    peak = peak_tensor_bytes(lambda: estimator(model, task, subset))
    cost = result.cost
    return {
        "estimator": estimator.label,
        "components": len(comps),
        "seconds": cost.seconds,
        "forward": cost.forward,
        "backward": cost.backward,
        "hvp": cost.hvp,
        "peak_MB": peak / 2**20,
    }


def cost_table(quick: bool = False) -> pd.DataFrame:
    """One row per (model size, estimator)."""
    rows = []
    for d_model, n_layers in model_grid(quick):
        model = random_model(d_model, n_layers)
        n_params = sum(p.numel() for p in model.parameters())
        for estimator in MEASURED:
            row = measure(model, estimator)
            rows.append({"d_model": d_model, "n_layers": n_layers, "params": n_params, **row})
            print(
                f"{d_model:4d} x {n_layers}  {estimator.label:9s}  {row['seconds']:.3f} s",
                flush=True,
            )
    return pd.DataFrame(rows)


def size_components(model: Model, *, n_each: int = N_EACH) -> list:
    """``n_each`` evenly spaced head outputs and as many evenly spaced middle-layer neurons."""
    heads = hu.components(model, "head_out")
    neurons = hu.components(model, "neuron", layers=[model.cfg.n_layers // 2])
    return spread_subset(heads, n_each) + spread_subset(neurons, n_each)


def size_table() -> pd.DataFrame:
    """One row per (shape, estimator) of :data:`COMPARED` on :data:`SIZES`: seconds per
    component, ``x AP`` = seconds / AP's seconds, ``x AtP`` likewise, and pass counts."""
    rows = []
    for shape in SIZES:
        hf_model, tokenizer = shape_model(shape)
        params = hf_model.num_parameters()  # a tied embedding counted once
        model = hu.from_hf_model(hf_model, tokenizer)
        task = hu.ioi_dataset(model, n_prompts=N_PROMPTS, perturbation="name_swap", seed=0)
        comps = size_components(model, n_each=N_EACH)
        for estimator in COMPARED:
            cost = estimator(model, task, comps).cost
            rows.append(
                {
                    "shape": shape,
                    "params (M)": round(params / 1e6, 1),
                    "estimator": estimator.label,
                    "seconds": cost.seconds,
                    "s per component": cost.seconds / len(comps),
                    "forward": cost.forward,
                    "backward": cost.backward,
                    "hvp": cost.hvp,
                }
            )
            print(f"{shape:18s} {estimator.label:22s} {cost.seconds:8.2f} s", flush=True)
    table = pd.DataFrame(rows)
    for name, label in (("x AP", COMPARED[0].label), ("x AtP", COMPARED[1].label)):
        base = table[table.estimator == label].set_index("shape").seconds
        table[name] = table.seconds / table["shape"].map(base)
    return table


def size_figure(table: pd.DataFrame, path: str) -> None:
    """Each estimator's time as a multiple of AP's, per shape (log scale), saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7.5, 3.4), constrained_layout=True)
    sns.scatterplot(data=table, x="x AP", y="estimator", hue="shape", style="shape", s=90, ax=ax)
    ax.set_xscale("log")
    ax.set_xticks([0.25, 0.5, 1, 2, 4, 8], labels=["0.25", "0.5", "1", "2", "4", "8"])
    ax.minorticks_off()
    ax.axvline(1.0, color="0.3", lw=0.8, ls="--")
    ax.set(xlabel="time / AP's time on the same components (log scale)", ylabel="")
    fig.savefig(path, dpi=110)


def scaling_exponents(table: pd.DataFrame) -> pd.DataFrame:
    """Per estimator, the slope ``b`` of ``log seconds = a + b log params`` (least squares):
    over all models, over the width and the depth sweep alone, and for seconds per component."""
    sweeps = {
        "all": table,
        "width sweep": table[table.n_layers == BASE_DEPTH],
        "depth sweep": table[table.d_model == BASE_WIDTH],
    }
    columns = {name: _slopes(part, "seconds") for name, part in sweeps.items()}
    per_component = table.assign(per_component=table.seconds / table.components)
    columns["per component, all"] = _slopes(per_component, "per_component")
    return pd.DataFrame(columns)


def _slopes(table: pd.DataFrame, column: str) -> pd.Series:
    """Log-log slope of ``column`` against ``params`` per estimator (NaN below 2 sizes)."""

    def slope(group: pd.DataFrame) -> float:
        if group.params.nunique() < 2:
            return float("nan")
        return float(np.polyfit(np.log(group.params), np.log(group[column]), 1)[0])

    return table.groupby("estimator", sort=False).apply(slope, include_groups=False)


def second_order_error(dtypes: tuple[str, ...] = PRECISIONS, n_prompts: int = 8) -> pd.DataFrame:
    """Error of ``g''(0)`` (hvp_correction diag; head outputs and 64 middle-layer neurons of
    toy-ioi) in each dtype against float64: the largest ``|x - x64|`` over components as a
    share of ``max|x64|``, and on components with a clear value (``|x64|`` above 5% of the
    largest) each one's own relative error ``|x - x64| / |x64|`` (median, max). The same for
    the first-order term ``g'(0)`` (AtP) to compare."""
    reference = _derivatives("float64", n_prompts)
    rows = []
    for dtype in dtypes:
        row = {"dtype": dtype}
        for order, values in _derivatives(dtype, n_prompts).items():
            truth = reference[order]
            error = (values - truth).abs()
            clear = truth.abs() > CLEAR_SHARE * truth.abs().max()
            own = error[clear] / truth[clear].abs()
            row[f"{order} max err / max|x|"] = float(error.max() / truth.abs().max())
            row[f"{order} own rel err, median"] = float(own.median())
            row[f"{order} own rel err, max"] = float(own.max())
        rows.append(row)
    return pd.DataFrame(rows).set_index("dtype")


def _derivatives(dtype: str, n_prompts: int) -> dict[str, torch.Tensor]:
    """``g'(0)`` and ``g''(0)`` per component on toy-ioi in ``dtype`` (as float64)."""
    model = hu.load_model("toy-ioi", dtype=dtype)
    task = hu.ioi_dataset(model, n_prompts=n_prompts, perturbation="name_swap", seed=0)
    result = hu.hvp_correction(model, task, scaled_components(model), mode="diag")
    return {"g'(0)": result.first.double(), "g''(0)": result.second.double()}


def markdown(table: pd.DataFrame, exponents: pd.DataFrame) -> str:
    """The cost table and the fitted exponents as Markdown."""
    shown = table.assign(
        params=(table.params / 1e6).round(2),
        seconds=table.seconds.round(3),
        peak_MB=table.peak_MB.round(1),
    ).rename(columns={"params": "params (M)"})
    fits = exponents.round(2).reset_index(names="b in time ~ params^b")
    return to_markdown(shown) + "\n\n" + to_markdown(fits) + "\n"


def shape_model(shape: str):
    """The random-initialised ``GPT2LMHeadModel`` of :data:`SIZES` ``shape`` (seed 0) and the
    toy-ioi tokenizer it is built for (so the IOI names are single tokens)."""
    tokenizer = load_tokenizer(TOY_MODEL_DIR)
    return build_model(tokenizer, seed=0, **SIZES[shape]), tokenizer


def save_checkpoint(shape: str, directory: Path) -> Path:
    """Write :func:`shape_model` ``(shape)`` as a Hugging Face checkpoint that ``load_model``
    and ``rerun --model`` take by its path."""
    model, tokenizer = shape_model(shape)
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    print(f"{shape}, {model.num_parameters() / 1e6:.1f}M parameters, random weights: {directory}")
    return directory


def main(argv: list[str] | None = None) -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("--quick", action="store_true", help="two small models only")
    cli.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    cli.add_argument("--precision-only", action="store_true", help="skip the cost table")
    cli.add_argument("--sizes", action="store_true", help="toy-ioi vs GPT-2-small shape only")
    cli.add_argument("--figure", default=None, help="--sizes: write the figure to this path")
    cli.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the random GPT-2-small-shaped checkpoint to DIR and stop",
    )
    args = cli.parse_args(argv)
    if args.checkpoint is not None:
        save_checkpoint("GPT-2-small shape", args.checkpoint)
        return
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.sizes:
        table = size_table()
        print(to_markdown(table.round(3)))
        if args.figure:
            size_figure(table, args.figure)
        print(f"\ntotal {time.perf_counter() - start:.0f} s, {args.threads} torch thread(s)")
        return
    if not args.precision_only:
        table = cost_table(args.quick)
        print(markdown(table, scaling_exponents(table)))
    print(to_markdown(second_order_error().map(lambda x: f"{x:.1e}").reset_index()))
    print(f"\ntotal {time.perf_counter() - start:.0f} s, {args.threads} torch thread(s)")


if __name__ == "__main__":
    main()
