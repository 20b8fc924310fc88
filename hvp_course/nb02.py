"""Exercises of notebook 02, *Diagnosis: downstream non-linearity or local curvature?*: the
exact split of AtP's error into E_down and E_local from AP, AtP and AtP_out, and AtP_out of one
query head written with plain hooks.

The reference is ``hu.diagnose``; the pass lines also check that the two terms add up to
AP - AtP and compare AtP_out with AtP*'s QK fix (``hu.atp_star(..., graddrop=False)``), which
for a query is the same number.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_course.by_hand import corrupted_gradient
from hvp_course.exercise import Case, Context, Exercise, Mistake, Result
from hvp_course.explain import tensor_pair
from hvp_utils.analysis.diagnosis import diagnose
from hvp_utils.core.components import Component, components
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import atp, atp_star

#: How many query heads the checks use.
N_CASES = 3


def query_component(model: Model, layer: int, head: int) -> Component:
    """The query of head ``L{layer}H{head}`` (``hook_q[:, :, head, :]``, every position)."""
    return components(model, kind="head_q", layers=[layer])[head]


def query_heads(ctx: Context) -> list[tuple[int, int]]:
    """The query heads with the largest local term |AtP_out - AtP| (AtP_out of a query is
    AtP*'s QK fix), and the one with the largest |AtP_out| in the last layer."""
    queries = components(ctx.model, kind="head_q")
    out, first = ctx.cached(
        "AtP* (QK fix) and AtP of the queries",
        lambda: (
            atp_star(ctx.model, ctx.task, queries, graddrop=False).values,
            atp(ctx.model, ctx.task, queries).values,
        ),
    )
    local = (out - first).abs()
    chosen = [divmod(int(i), ctx.n_heads) for i in local.argsort(descending=True)]
    chosen = chosen[: N_CASES - 1]
    last = ctx.n_layers - 1
    per_head = out.view(ctx.n_layers, ctx.n_heads)[last].abs()
    for head in per_head.argsort(descending=True).tolist():
        if (last, head) not in chosen:
            return chosen + [(last, head)]
    return chosen


# --------------------------------------------------------------------------------------------
# 1. The split of the error


def split_error_reference(ap: Tensor, atp: Tensor, atp_out: Tensor) -> tuple[Tensor, Tensor]:
    """``E_down = AP - AtP_out``, ``E_local = AtP_out - AtP`` (the columns of ``hu.diagnose``)."""
    return ap - atp_out, atp_out - atp


def _split_cases(ctx: Context) -> list[Case]:
    """AP, AtP and AtP_out of the query heads of :func:`query_heads` (``hu.diagnose``)."""
    comps = [query_component(ctx.model, *pair) for pair in query_heads(ctx)]
    frame = ctx.cached("diagnosis of the query heads", lambda: diagnose(ctx.model, ctx.task, comps))
    names = list(frame.component)
    columns = tuple(torch.tensor(frame[c].to_numpy()) for c in ("AP", "AtP", "AtP_out"))
    labels = tuple(f"{term} of {n}" for term in ("E_down", "E_local") for n in names)
    return [Case(", ".join(names), columns, labels=labels)]


def _read_split(output, case: Case) -> Tensor:
    return tensor_pair(output, ("E_down", "E_local"), len(case.args[0]))


def _split_passed(r: Result) -> str:
    ap, first, _ = r.cases[0].args
    total = float((r.got[0].sum(0) - (ap - first)).abs().max())
    return (
        f"E_down and E_local of {r.cases[0].label} as hu.diagnose (largest difference "
        f"{r.diff:.1e}); E_down + E_local = AP - AtP to {total:.1e}"
    )


SPLIT_ERROR = Exercise(
    name="split_error",
    notebook="02",
    summary="E_down and E_local of three query heads from their AP, AtP and AtP_out equal "
    "hu.diagnose's columns, and add up to AP - AtP.",
    reference=split_error_reference,
    uses="hu.diagnose",
    what="(E_down, E_local)",
    cases=_split_cases,
    read=_read_split,
    axes=("term", "component"),
    mistakes=(
        Mistake(
            "E_down and E_local are swapped: E_down = AP - AtP_out is what even the exact "
            "output change misses (the downstream map's curvature), E_local = AtP_out - AtP "
            "what linearising the local map adds",
            wrong=lambda ap, atp, out: (out - atp, ap - out),
        ),
        Mistake(
            "E_down = AP - AtP is the whole AtP error; the downstream part is AP - AtP_out, "
            "so that E_down + E_local = AP - AtP",
            wrong=lambda ap, atp, out: (ap - atp, out - atp),
        ),
        Mistake(
            "wrong sign: E_down = AP - AtP_out and E_local = AtP_out - AtP: each term is what "
            "the estimate on its right misses of the one on its left",
            wrong=lambda ap, atp, out: (out - ap, atp - out),
        ),
        Mistake(
            "return two tensors, (E_down, E_local)",
            wrong=lambda ap, atp, out: ap - atp,
        ),
    ),
    passed=_split_passed,
)


# --------------------------------------------------------------------------------------------
# 2. AtP_out of one query head, with hooks


def atp_out_query_reference(model: Model, task: PatchingTask, layer: int, head: int) -> float:
    """``AtP_out = <grad_z m(x_r), z(clean q, corrupted k, v) - z_r>`` of the query of head
    ``L{layer}H{head}`` (``hu.diagnose``'s ``AtP_out`` column)."""
    return float(diagnose(model, task, [query_component(model, layer, head)]).AtP_out.iloc[0])


def _atp_out_by_hand(
    model: Model,
    task: PatchingTask,
    layer: int,
    head: int,
    *,
    every_head: bool = False,
    clean_z: bool = False,
) -> float:
    """AtP_out with plain hooks, and the slips of the mistakes below: the clean query of
    every head of the layer (``every_head``), or the clean run's z in place of the z of the
    clean query over the corrupted keys and values (``clean_z``)."""
    q_name, z_name = get_act_name("q", layer), get_act_name("z", layer)
    heads = slice(None) if every_head else [head]
    with torch.no_grad():
        _, clean = model.run_with_cache(
            task.clean_tokens, names_filter=lambda name: name in (q_name, z_name)
        )
        moved = {}

        def clean_query(q, hook):
            q = q.clone()
            q[:, :, heads] = clean[q_name][:, :, heads]
            return q

        def keep(z, hook):
            moved["z"] = z.detach().clone()
            return z

        model.run_with_hooks(
            task.corrupted_tokens, fwd_hooks=[(q_name, clean_query), (z_name, keep)]
        )
    z_r, grad = corrupted_gradient(model, task, z_name)
    output = clean[z_name] if clean_z else moved["z"]
    change = output - z_r
    return float((grad[:, :, heads] * change[:, :, heads]).sum())


def _atp_out_passed(r: Result) -> str:
    model, task = r.ctx.model, r.ctx.task
    comps = [query_component(model, *case.args[2:]) for case in r.cases]
    qk_fix = atp_star(model, task, comps, graddrop=False).values
    gap = float((qk_fix - torch.stack(r.expected)).abs().max())
    return (
        f"AtP_out of {', '.join(c.name for c in comps)} as hu.diagnose (largest difference "
        f"{r.diff:.1e}; AtP*'s QK fix agrees to {gap:.1e})"
    )


ATP_OUT_QUERY = Exercise(
    name="atp_out_query",
    notebook="02",
    summary="AtP_out of three query heads (the two largest local terms, the largest AtP_out "
    "of the last layer) equals hu.diagnose's AtP_out column (and AtP*'s QK fix).",
    reference=atp_out_query_reference,
    uses="hu.diagnose",
    what="AtP_out",
    cases=lambda ctx: [
        Case(f"L{layer}H{head}.q", (ctx.model, ctx.task, layer, head))
        for layer, head in query_heads(ctx)
    ],
    prompt_hints=True,
    mistakes=(
        Mistake(
            "that is AtP of the head's output, <grad_z m, z_clean - z_r>: the clean run's z "
            "also has the clean keys and values. o_c is the clean query attending over the "
            "corrupted keys and values: patch hook_q in the corrupted run and read its hook_z",
            wrong=partial(_atp_out_by_hand, clean_z=True),
        ),
        Mistake(
            "that is AtP of the query itself, <grad_q m, q_clean - q_r>, at the input side of "
            "the softmax; AtP_out takes the exact change of z and the gradient at hook_z",
            wrong=lambda model, task, layer, head: float(
                atp(model, task, [query_component(model, layer, head)]).values[0]
            ),
        ),
        Mistake(
            "that is AtP_out of the queries of every head of the layer at once: write the "
            "clean query into q[:, :, head] only, and take the inner product on z[:, :, head]",
            wrong=partial(_atp_out_by_hand, every_head=True),
        ),
        Mistake(
            "wrong sign: o_c - o_r = z(clean query, corrupted keys and values) - z(corrupted run)",
            wrong=lambda model, task, layer, head: (
                -atp_out_query_reference(model, task, layer, head)
            ),
        ),
    ),
    passed=_atp_out_passed,
)

EXERCISES = (SPLIT_ERROR, ATP_OUT_QUERY)
