"""Exercises of notebook 02, *Diagnosis: downstream non-linearity or local curvature?*: the
exact split of AtP's error into E_down and E_local from AP, AtP and AtP_out, and AtP_out of one
query head written with plain hooks.

The reference is ``hu.diagnose``; the checkers also compare with an independent rebuild with
hooks and with AtP*'s QK fix (``hu.atp_star(..., graddrop=False)``), which for a query is
the same number as AtP_out.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hvp_utils.analysis.diagnosis import diagnose
from hvp_utils.core.components import Component, components
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import atp, atp_star
from hvp_utils.exercises.framework import (
    Context,
    call,
    corrupted_gradient,
    exercise,
    expect_close,
    scalar,
    tensor_pair,
)

#: How many query heads the checks use.
N_CASES = 3


def query_component(model: Model, layer: int, head: int) -> Component:
    """The query of head ``L{layer}H{head}`` (``hook_q[:, :, head, :]``, every position)."""
    return components(model, "head_q", layers=[layer])[head]


def _cases(ctx: Context) -> list[tuple[int, int]]:
    """The query heads with the largest local term |AtP_out - AtP| (AtP_out of a query is
    AtP*'s QK fix), and the one with the largest |AtP_out| in the last layer."""

    def pick():
        queries = components(ctx.model, "head_q")
        out = atp_star(ctx.model, ctx.task, queries, graddrop=False).values
        local = (out - atp(ctx.model, ctx.task, queries).values).abs()
        chosen = [divmod(int(i), ctx.n_heads) for i in local.argsort(descending=True)]
        chosen = chosen[: N_CASES - 1]
        last = ctx.n_layers - 1
        per_head = out.view(ctx.n_layers, ctx.n_heads)[last].abs()
        for head in per_head.argsort(descending=True).tolist():
            if (last, head) not in chosen:
                return chosen + [(last, head)]
        return chosen

    return ctx.cached("nb02_cases", pick)


def _diagnosis(ctx: Context):
    """``hu.diagnose`` of the query heads of :func:`_cases` (one row each)."""
    comps = [query_component(ctx.model, *case) for case in _cases(ctx)]
    return ctx.cached("nb02_diagnosis", lambda: diagnose(ctx.model, ctx.task, comps))


# --------------------------------------------------------------------------------------------
# 1. The split of the error


def split_error_reference(ap: Tensor, atp: Tensor, atp_out: Tensor) -> tuple[Tensor, Tensor]:
    """``E_down = AP - AtP_out``, ``E_local = AtP_out - AtP`` (the columns of ``hu.diagnose``)."""
    return ap - atp_out, atp_out - atp


@exercise(
    "split_error",
    notebook="02",
    reference=split_error_reference,
    uses="hu.diagnose",
    mistakes={
        "terms swapped": (lambda ap, atp, out: (out - atp, ap - out), "swapped"),
        "the whole error as E_down": (lambda ap, atp, out: (ap - atp, out - atp), "whole"),
        "both signs flipped": (lambda ap, atp, out: (out - ap, atp - out), "wrong sign"),
        "one tensor": (lambda ap, atp, out: ap - atp, "two tensors"),
    },
)
def check_split_error(fn, ctx: Context) -> str:
    """E_down and E_local of three query heads from their AP, AtP and AtP_out equal
    ``hu.diagnose``'s columns, and add up to AP - AtP."""
    __tracebackhide__ = True
    frame = _diagnosis(ctx)
    names = list(frame.component)
    ap, first, out = (torch.tensor(frame[c].to_numpy()) for c in ("AP", "AtP", "AtP_out"))
    got = call(fn, ap.clone(), first.clone(), out.clone(), name="split_error")
    got = tensor_pair(got, ("E_down", "E_local"), len(names))
    expected = torch.tensor(frame[["E_down", "E_local"]].to_numpy().T.copy())
    diff = expect_close(
        got,
        expected,
        what="(E_down, E_local)",
        rtol=ctx.rtol,
        labels=[f"{term} of {n}" for term in ("E_down", "E_local") for n in names],
        axes=("term", "component"),
        known={
            "E_down and E_local are swapped: E_down = AP - AtP_out is what even the exact "
            "output change misses (the downstream map's curvature), E_local = AtP_out - AtP "
            "what linearising the local map adds": torch.stack([out - first, ap - out]),
            "E_down = AP - AtP is the whole AtP error; the downstream part is AP - AtP_out, "
            "so that E_down + E_local = AP - AtP": torch.stack([ap - first, out - first]),
        },
        sign_hint="E_down = AP - AtP_out and E_local = AtP_out - AtP: each term is what the "
        "estimate on its right misses of the one on its left",
    )
    total = float((got.sum(0) - (ap - first)).abs().max())
    return (
        f"E_down and E_local of {', '.join(names)} as hu.diagnose (largest difference "
        f"{diff:.1e}); E_down + E_local = AP - AtP to {total:.1e}"
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


@exercise(
    "atp_out_query",
    notebook="02",
    reference=atp_out_query_reference,
    uses="hu.diagnose",
    mistakes={
        "the clean run's z": (
            lambda model, task, layer, head: _atp_out_by_hand(
                model, task, layer, head, clean_z=True
            ),
            "the head's output",
        ),
        "the input side": (
            lambda model, task, layer, head: float(
                atp(model, task, [query_component(model, layer, head)]).values[0]
            ),
            "input side",
        ),
        "every query of the layer": (
            lambda model, task, layer, head: _atp_out_by_hand(
                model, task, layer, head, every_head=True
            ),
            "every head of the layer",
        ),
        "z_r - z": (
            lambda model, task, layer, head: -atp_out_query_reference(model, task, layer, head),
            "wrong sign",
        ),
    },
)
def check_atp_out_query(fn, ctx: Context) -> str:
    """AtP_out of three query heads (the two largest local terms, the largest AtP_out of the
    last layer) equals ``hu.diagnose``'s ``AtP_out`` column (and AtP*'s QK fix)."""
    __tracebackhide__ = True
    model, task = ctx.model, ctx.task
    cases = _cases(ctx)
    frame = _diagnosis(ctx)
    labels = list(frame.component)
    got = torch.stack(
        [
            scalar(
                call(fn, model, task, layer, head, name="atp_out_query"),
                f"AtP_out of {label}",
                task.n_prompts,
            )
            for (layer, head), label in zip(cases, labels, strict=True)
        ]
    )
    expected = torch.tensor(frame.AtP_out.to_numpy())
    heads = [ctx.head(layer, head) for layer, head in cases]
    diff = expect_close(
        got,
        expected,
        what="AtP_out",
        rtol=ctx.rtol,
        labels=labels,
        n_prompts=task.n_prompts,
        known={
            "that is AtP of the head's output, <grad_z m, z_clean - z_r>: the clean run's z "
            "also has the clean keys and values. o_c is the clean query attending over the "
            "corrupted keys and values: patch hook_q in the corrupted run and read its hook_z": (
                lambda: atp(model, task, heads).values
            ),
            "that is AtP of the query itself, <grad_q m, q_clean - q_r>, at the input side of "
            "the softmax; AtP_out takes the exact change of z and the gradient at hook_z": (
                torch.tensor(frame.AtP.to_numpy())
            ),
            "that is AtP_out of the queries of every head of the layer at once: write the "
            "clean query into q[:, :, head] only, and take the inner product on "
            "z[:, :, head]": lambda: torch.tensor(
                [_atp_out_by_hand(model, task, *case, every_head=True) for case in cases],
                dtype=torch.float64,
            ),
        },
        sign_hint="o_c - o_r = z(clean query, corrupted keys and values) - z(corrupted run)",
    )
    comps = [query_component(model, *case) for case in cases]
    qk_fix = atp_star(model, task, comps, graddrop=False).values
    gap = float((qk_fix - expected).abs().max())
    return (
        f"AtP_out of {', '.join(labels)} as hu.diagnose (largest difference {diff:.1e}; "
        f"AtP*'s QK fix agrees to {gap:.1e})"
    )
