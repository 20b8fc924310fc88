"""Diagnosis: does attribution patching miss because of the component, or of what follows it?

A component's patched activation ``a`` reaches the metric through a *local map* ``o = phi(a)``
and then the *downstream map* ``D`` (everything after ``o``, recomputed), so the patch path is

    g(t) = D(phi(a_r + t delta)),     AP = D(o_c) - D(o_r),   o_c = phi(a_r + delta),
    AtP = g'(0) = <grad D(o_r), J_phi delta>,   AtP_out = <grad D(o_r), o_c - o_r>,

and the AtP error splits exactly into

    AP - AtP = E_down + E_local,
    E_down  = AP - AtP_out  = D(o_c) - D(o_r) - <grad D(o_r), o_c - o_r>   (downstream),
    E_local = AtP_out - AtP = <grad D(o_r), (o_c - o_r) - J_phi delta>      (local curvature).

``AtP_out`` is attribution patching measured at the output side of the local map; note that
``o_c`` is ``phi`` of the patched input with everything else of the base run kept (for a
query patch: the clean query with the base keys and values), not the clean run's ``o``.
The second derivative splits the same way (chain rule twice):

    g''(0) = <grad D, phi''[delta, delta]> + <J_phi delta, hess D  J_phi delta>
           =            second_local        +            second_down.

Local maps, per component kind:

- ``head_q``, ``head_k`` -> the head output ``hook_z`` of the query heads they feed (the
  softmax sits in between; a grouped-query key feeds a group of query heads);
- ``neuron_pre`` -> ``hook_post`` of the same neuron (the activation function; for gated
  MLPs ``act(pre) * pre_linear`` with ``pre_linear`` kept);
- ``head_pattern`` -> ``hook_z`` too, but ``z = pattern @ v`` is *linear* in the pattern
  (which is already post-softmax), so ``phi'' = 0`` and ``E_local = 0`` exactly: the pattern
  sits after the softmax, so its local map has no curvature;
- ``head_out``, ``head_out_pos``, ``neuron``, ``mlp_out``, ``resid_pos`` and anything else:
  the identity, so ``AtP_out = AtP``, ``E_local = 0`` and ``second_local = 0`` exactly.

How it is computed. Heads (and neurons) are independent inside their own layer: the output
slice of head ``h`` depends only on head ``h``'s query. So one partial forward of the
component's layer (``start_at_layer=l, stop_at_layer=l+1``) with the *whole* hook moved along
``a_r + s * delta`` gives every component's local path ``o(s)`` at once, and forward-mode
differentiation in the scalar ``s`` (``torch.func.jvp``, twice) gives ``J_phi delta`` and
``phi''[delta, delta]`` for all of them. The output side is then an ordinary patch path
(:mod:`hvp_utils.core.engine`) on the output hook, with ``o_c - o_r`` or ``J_phi delta`` in place
of the delta. The local maps themselves (:data:`LOCAL_MAPS`, :func:`output_hook`,
:func:`output_slice`) are defined in :mod:`hvp_utils.core.local_maps`.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from hvp_utils.core.components import Component, check_components, group_by_hook
from hvp_utils.core.engine import (
    EngineRun,
    component_inner_products,
    hook_gradients,
    local_output,
    path_derivatives,
    second_order_attention,
)
from hvp_utils.core.local_maps import (  # noqa: F401  (OutputSlice: re-exported)
    LOCAL_MAPS,
    OutputSlice,
    check_local_map,
    output_hook,
    output_slice,
    with_delta,
)
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Direction, Model


def local_path_expansion(
    run: EngineRun, *, in_hook: str, out_hook: str, layer: int
) -> tuple[Tensor, Tensor, Tensor]:
    """For the whole hook moved along ``a_r + s * delta`` (one partial forward of its layer),
    the output hook's ``o(1) - o(0)``, ``do/ds (0) = J_phi delta`` and
    ``d^2o/ds^2 (0) = phi''[delta, delta]``, each shaped like the output activation."""
    delta = run.context.deltas[in_hook]

    def local_path(scale: Tensor) -> Tensor:
        return local_output(
            run.model, run.context, in_hook=in_hook, out_hook=out_hook, scale=scale, layer=layer
        )

    zero, one = (torch.tensor(v, dtype=delta.dtype, device=delta.device) for v in (0.0, 1.0))
    first = lambda s: torch.func.jvp(local_path, (s,), (one,))[1]  # noqa: E731
    with torch.no_grad():
        change = local_path(one) - local_path(zero)
    with second_order_attention(run.model):  # forward-mode derivatives, twice
        slope, curvature = torch.func.jvp(first, (zero,), (one,))
    run.meter.add(forward=2)
    return change, slope.detach(), curvature.detach()


def _local_terms(
    run: EngineRun, comps: list[Component], members: list[int], grads: dict[str, Tensor]
) -> dict[str, Tensor]:
    """AtP_out, second_local and second_down of the components ``members`` of one input hook."""
    ctx = run.context
    first = comps[members[0]]
    outs = [output_slice(run.model, comps[i]) for i in members]
    out_hook = outs[0].hook
    change, slope, curvature = local_path_expansion(
        run, in_hook=first.hook, out_hook=out_hook, layer=first.layer
    )
    field = {out_hook: grads[out_hook]}
    atp_out = component_inner_products(outs, field, with_delta(ctx, out_hook, change))[0]
    local = component_inner_products(outs, field, with_delta(ctx, out_hook, curvature))[0]
    down = path_derivatives(
        run.with_context(with_delta(ctx, out_hook, slope)), outs, t=0.0, order=2
    )
    return {"AtP_out": atp_out.cpu(), "second_local": local.cpu(), "second_down": down.d2}


def diagnose(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    direction: Direction = "denoising",
) -> pd.DataFrame:
    """One row per component: ``AP``, ``AtP``, ``AtP_out``, ``E_down = AP - AtP_out``,
    ``E_local = AtP_out - AtP``, ``second_local = <grad D, phi''[delta, delta]>`` and
    ``second_down = <J delta, hess D J delta>`` (their sum is ``g''(0)``). The cost (seconds,
    pass counts) is in ``frame.attrs["cost"]``. See the module docstring for the maths.
    """
    comps = check_components(comps)
    check_local_map(model, comps)
    out_hooks = tuple(sorted({output_hook(c) for c in comps}))
    run = EngineRun.start(model, task, comps, direction=direction, extra_hooks=out_hooks)
    ctx = run.context
    ap = path_derivatives(run, comps, t=1.0, order=0).g - ctx.base_metric
    hooks = sorted(set(group_by_hook(comps)) | set(out_hooks))
    grads, _ = hook_gradients(run, hooks)
    atp = component_inner_products(comps, grads, ctx)[0].cpu()
    columns = {
        "AtP_out": atp.clone(),
        "second_local": torch.zeros(len(comps), dtype=torch.float64),
        "second_down": torch.zeros(len(comps), dtype=torch.float64),
    }
    identity = [i for i, c in enumerate(comps) if c.kind not in LOCAL_MAPS]
    if identity:
        path = path_derivatives(run, [comps[i] for i in identity], t=0.0, order=2)
        columns["second_down"][identity] = path.d2
    for members in group_by_hook(comps).values():
        if comps[members[0]].kind in LOCAL_MAPS:
            for key, value in _local_terms(run, comps, members, grads).items():
                columns[key][members] = value
    return _frame(comps, ap, atp, columns, run.meter)


def with_error_terms(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (columns ``AP``, ``AtP``, ``AtP_out``) with the two terms of AtP's error:
    ``E_down = AP - AtP_out`` and ``E_local = AtP_out - AtP``."""
    return frame.assign(E_down=frame.AP - frame.AtP_out, E_local=frame.AtP_out - frame.AtP)


def _frame(comps, ap, atp, columns, meter) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "component": [c.name for c in comps],
            "kind": [c.kind for c in comps],
            "AP": ap.numpy(),
            "AtP": atp.numpy(),
            "AtP_out": columns["AtP_out"].numpy(),
        }
    )
    frame = with_error_terms(frame)
    frame["second_local"] = columns["second_local"].numpy()
    frame["second_down"] = columns["second_down"].numpy()
    frame.attrs["cost"] = meter.cost().as_row()
    return frame


def error_shares(frame: pd.DataFrame, *, by: list[str] | None = None) -> pd.DataFrame:
    """Share of the total AtP error carried by each term, per group (default: per kind):

    ``down_share = sum|E_down| / (sum|E_down| + sum|E_local|)`` (``local_share`` = the rest),
    beside ``mean|AP - AtP|``, ``mean|E_down|``, ``mean|E_local|`` and the same split of
    ``|g''(0)|`` into ``|second_down|`` and ``|second_local|``.
    """
    by = by or ["kind"]
    grouped = frame.assign(
        abs_error=(frame.AP - frame.AtP).abs(),
        abs_down=frame.E_down.abs(),
        abs_local=frame.E_local.abs(),
        abs_second_down=frame.second_down.abs(),
        abs_second_local=frame.second_local.abs(),
    ).groupby(by, sort=False)
    sums = grouped[["abs_down", "abs_local", "abs_second_down", "abs_second_local"]].sum()
    out = grouped[["abs_error", "abs_down", "abs_local"]].mean()
    out.columns = ["mean_abs_error", "mean_abs_E_down", "mean_abs_E_local"]
    out.insert(0, "n", grouped.size())
    out["down_share"] = sums.abs_down / (sums.abs_down + sums.abs_local)
    out["local_share"] = 1 - out.down_share
    second = sums.abs_second_down + sums.abs_second_local
    out["second_down_share"] = sums.abs_second_down / second
    return out
