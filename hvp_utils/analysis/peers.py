"""Peer baselines: the published implementations, run on our tasks, as :class:`Attribution`.

- :func:`tl_patching_ap`: activation patching through ``transformer_lens.patching`` (one
  forward pass over the prompt batch per component), to check and time our batched AP.
- :func:`captum_layer_ig`: joint Integrated Gradients per hook point through Captum's
  ``LayerIntegratedGradients`` on the hook's ``HookPoint`` module, to check and time our
  ``integrated_gradients(..., mode="joint")``.

Captum interpolates the layer's output ``a(alpha) = a(baselines) + alpha (a(inputs) -
a(baselines))`` but runs the rest of the network on ``inputs``: its attributions sum to
``m(inputs) - m(inputs with a <- a(baselines))``. Our denoising path keeps the corrupted run
and moves the hook to its clean value, so :func:`captum_layer_ig` passes ``inputs`` = the
base tokens (corrupted when denoising), ``baselines`` = the source tokens, and negates; its
midpoint or Gauss-Legendre nodes ``alpha`` are then ours at ``t = 1 - alpha``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Literal, get_args

import pandas as pd
import torch
from captum.attr import LayerIntegratedGradients
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import patching
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name

from hvp_utils.core.components import Component, check_components, group_by_hook
from hvp_utils.core.readout import run_with_answer_logits
from hvp_utils.core.results import DIRECTION_SUFFIX, Attribution, CostMeter, Estimator, declare
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import DIRECTIONS, Direction, Family, Model, check_choice

#: Captum's quadrature methods that match our IG rules: ``riemann_middle`` with ``n_steps=K``
#: is our ``rule="midpoint"`` with ``steps=K``; ``gausslegendre`` with ``n_steps=n`` is the
#: ``n``-point Gauss-Legendre rule on [0, 1], our two-point ``rule="gauss"`` only at n = 2.
CaptumMethod = Literal["riemann_middle", "gausslegendre"]
CAPTUM_METHODS: tuple[str, ...] = get_args(CaptumMethod)
#: What a label adds for each Captum method.
METHOD_SUFFIX = {"riemann_middle": "", "gausslegendre": " gausslegendre"}


def _neuron_setter(
    corrupted_activation: Float[Tensor, "batch pos d_mlp"],
    index: list[int],
    clean_activation: Float[Tensor, "batch pos d_mlp"],
) -> Float[Tensor, "batch pos d_mlp"]:
    """A ``transformer_lens.patching`` setter for ``index = [layer, neuron]``."""
    _, neuron = index
    corrupted_activation[..., neuron] = clean_activation[..., neuron]
    return corrupted_activation


#: Per supported kind: the ``transformer_lens.patching`` sweep, its activation name and the
#: columns of its index rows (layer first, then the component's indices by axis).
_TL_SWEEPS: dict[str, tuple[Callable, str, tuple[str, ...]]] = {
    "head_out": (patching.get_act_patch_attn_head_out_all_pos, "z", ("layer", "head_index")),
    "head_out_pos": (
        patching.get_act_patch_attn_head_out_by_pos,
        "z",
        ("layer", "pos", "head_index"),
    ),
    "neuron": (
        partial(
            patching.generic_activation_patch,
            patch_setter=_neuron_setter,
            activation_name="post",
        ),
        "post",
        ("layer", "neuron"),
    ),
}


def tl_patching_ap(model: Model, task: PatchingTask, comps: list[Component]) -> Attribution:
    """Denoising activation patching through ``transformer_lens.patching``.

    Each component is one row of the sweep's ``index_df``: one forward pass of the corrupted
    batch with the component's clean activation patched in, ``patching_metric=task.metric``
    on the full logits, and ``baseline=True`` for the unpatched corrupted run.

    Args:
        model: the model.
        task: the task (clean and corrupted tokens, answers, metric).
        comps: components of kinds ``head_out``, ``head_out_pos`` or ``neuron``; other kinds
            raise a ``ValueError``.

    Returns:
        :class:`Attribution` with ``values[i] = m(corrupted with c_i <- clean) - m(corrupted)``
        in ``comps``' order; cost ``2 + n`` forwards (clean cache, baseline, one per patch).
    """
    comps = check_components(comps)
    kinds = {c.kind for c in comps}
    if len(kinds) != 1 or not kinds <= set(_TL_SWEEPS):
        raise ValueError(
            f"tl_patching_ap takes components of one kind among {sorted(_TL_SWEEPS)}; "
            f"got {sorted(kinds)}"
        )
    sweep, activation, columns = _TL_SWEEPS[comps[0].kind]
    meter = CostMeter()
    index_df = pd.DataFrame([_tl_index(c, activation) for c in comps], columns=list(columns))
    hooks = sorted({c.hook for c in comps})
    _, clean_cache = model.run_with_cache(task.clean_tokens, names_filter=hooks)
    with _default_dtype(model.W_U.dtype):  # TransformerLens stores the metric in this dtype
        result = sweep(
            model,
            task.corrupted_tokens,
            clean_cache,
            task.metric,
            index_axis_names=None,
            index_df=index_df,
            baseline=True,
        )
    meter.add(forward=2 + len(comps))
    return Attribution.build(result.effect().double().cpu(), comps, tl_patching_estimator(), meter)


def tl_patching_estimator() -> Estimator:
    """The record of :func:`tl_patching_ap` (a peer of activation patching)."""
    label = Family.AP_PEER.value
    return declare("tl_patching", tl_patching_ap, label, Family.AP_PEER)


def _tl_index(comp: Component, activation: str) -> list[int]:
    """The ``index_df`` row of a component: its layer, then its indices in axis order."""
    if comp.hook != get_act_name(activation, comp.layer):
        raise ValueError(f"{comp.name} is on {comp.hook!r}, not on {activation!r} of its layer")
    return [comp.layer, *[i for _, i in sorted(comp.select)]]


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Within the context, ``dtype`` is torch's default dtype (a float64 model's metric would
    otherwise be rounded to the float32 tensor ``generic_activation_patch`` allocates)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def captum_layer_ig(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    steps: int = 2,
    method: CaptumMethod = "riemann_middle",
    direction: Direction = "denoising",
) -> Attribution:
    """Joint Integrated Gradients per hook point with Captum's ``LayerIntegratedGradients``.

    For each hook of ``comps``, Captum attributes the per-prompt metric to the output of
    the hook's ``HookPoint`` along a straight path of the whole activation between the base
    and the source run, with ``n_steps=steps`` nodes of ``method``; ``IG_c`` is the sum of
    the attribution over the prompts and ``c``'s entries, divided by the number of prompts,
    and negated (module docstring: Captum's path ends at its ``inputs``, ours starts there).

    It equals ``integrated_gradients(model, task, comps, steps=steps, mode="joint")`` when the
    components of each hook cover its whole activation (Captum interpolates every entry),
    with ``rule="midpoint"`` for ``riemann_middle``; ``gausslegendre`` with ``steps=2`` is
    our ``rule="gauss"`` with ``steps=1``. Captum rounds its step sizes to float32 (exact
    for ``steps`` a power of two).

    Args:
        model: the model.
        task: the task.
        comps: components on any hooks.
        steps: Captum's ``n_steps`` (at least 2 for ``riemann_middle``).
        method: ``"riemann_middle"`` or ``"gausslegendre"``.
        direction: ``"denoising"`` (corrupted run, hook moved to clean; default) or
            ``"noising"`` (clean run, hook moved to corrupted).

    Returns:
        :class:`Attribution` with the IG estimate of each component's patching effect; cost
        per hook ``2 + steps`` forwards (Captum's two layer evaluations and the
        interpolated pass) and ``steps`` backwards.
    """
    comps = check_components(comps)
    _check_captum_options(steps, method, direction)
    meter = CostMeter()
    base, source = _endpoints(task, direction)
    forward = partial(_per_prompt_metric, model, task)
    values = torch.zeros(len(comps), dtype=torch.float64)
    for hook, members in group_by_hook(comps).items():
        lig = LayerIntegratedGradients(forward, model.hook_dict[hook])
        attribution = lig.attribute(base, baselines=source, n_steps=steps, method=method)
        values[members] = _component_sums(model.hook_dict[hook], attribution, comps, members)
        meter.add(forward=2 + steps, backward=steps)
    record = captum_ig_estimator(steps=steps, method=method, direction=direction)
    return Attribution.build(-values / task.n_prompts, comps, record, meter)


def captum_ig_estimator(
    *,
    steps: int = 2,
    method: CaptumMethod = "riemann_middle",
    direction: Direction = "denoising",
) -> Estimator:
    """The record of :func:`captum_layer_ig` with these options (a peer of joint IG)."""
    label = f"IG joint (Captum LayerIG) K={steps}" + METHOD_SUFFIX[method]
    label += DIRECTION_SUFFIX[direction]
    options = {"steps": steps, "method": method, "direction": direction}
    return declare("captum_ig", captum_layer_ig, label, Family.IG_PEER, **options)


def _check_captum_options(steps: int, method: str, direction: str) -> None:
    """Reject a method, direction or step count Captum or we do not take."""
    check_choice(method, CAPTUM_METHODS, "Captum method")
    check_choice(direction, DIRECTIONS, "direction")
    minimum = 2 if method == "riemann_middle" else 1
    if steps < minimum:
        raise ValueError(f"Captum's {method} needs steps >= {minimum}, got {steps}")


def _component_sums(
    hook_point: HookPoint, attribution: Tensor, comps: list[Component], members: list[int]
) -> Float[Tensor, "n_members"]:  # noqa: F821
    """Each member component's attribution summed over the prompts and its entries, with
    the attribution first put in the layout TransformerLens hooks see (the bridge's hook
    conversion: e.g. ``hook_z`` as ``batch pos head d_head``, not ``batch pos d_model``)."""
    conversion = hook_point.hook_conversion
    if conversion is not None:
        attribution = conversion.convert(attribution)
    return torch.stack([comps[i].take(attribution).sum() for i in members]).double().cpu()


def _endpoints(
    task: PatchingTask, direction: Direction
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """``(base, source)`` tokens: Captum's ``inputs`` and ``baselines``."""
    if direction == "denoising":
        return task.corrupted_tokens, task.clean_tokens
    return task.clean_tokens, task.corrupted_tokens


def _per_prompt_metric(
    model: Model, task: PatchingTask, tokens: Int[Tensor, "rows pos"]
) -> Float[Tensor, "rows"]:  # noqa: F821
    """Captum's ``forward_func``: the metric of each row (replicates of the batch,
    replicate-major, as Captum stacks its interpolation nodes)."""
    logits, _ = run_with_answer_logits(model, tokens, task.answers_for(tokens.shape[0]))
    return task.answer_metric(logits)
