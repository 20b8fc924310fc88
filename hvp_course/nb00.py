"""Exercises of notebook 00, *Patching by hand*: the metric, activation patching of one head,
AtP of every head from one backward pass, the patch path g(t), and g''(0) as a
Hessian-vector product.

Each reference is the package's own implementation; the pass lines also confirm them with
independent ones (``hu.atp`` for the path's slope, central finite differences of g').
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from hvp_course.by_hand import head_component, layer_component
from hvp_course.exercise import Case, Context, Exercise, Mistake, Result, too_many_passes
from hvp_utils.analysis.checks import path_derivative, path_function, slice_function
from hvp_utils.core.components import components
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching, atp, hvp_correction

#: AtP needs the clean run (a cache) and the corrupted run it differentiates (plus, at most,
#: a separate corrupted cache); more forward passes than this is patching, not attributing.
ATP_MAX_FORWARDS = 4
#: Step of the central finite differences that confirm g''(0).
FD_STEP = 1e-4
#: The points of the path the g(t) check evaluates.
PATH_TS = (0.0, 0.25, 0.5, 1.0, 1.5)


def head_cases(ctx: Context, n: int) -> list[Case]:
    """``(model, task, layer, head)`` of the ``n`` heads with the largest |AP|."""
    return [
        Case(f"L{layer}H{head}", (ctx.model, ctx.task, layer, head))
        for layer, head in ctx.top_heads(n)
    ]


# --------------------------------------------------------------------------------------------
# 1. The metric


def logit_diff_reference(logits: Tensor, answer_tokens: Tensor) -> Tensor:
    """``mean_b [logits[b, -1, IO_b] - logits[b, -1, S_b]]`` (what ``task.metric`` computes)."""
    final = logits[:, -1, :]
    picked = final.gather(1, answer_tokens.to(final.device))
    return (picked[:, 0] - picked[:, 1]).mean()


def _logit_diff_at_first_position(logits: Tensor, answer_tokens: Tensor) -> Tensor:
    picked = logits[:, 0, :].gather(1, answer_tokens)
    return (picked[:, 0] - picked[:, 1]).mean()


def _logit_diff_cases(ctx: Context) -> list[Case]:
    """The clean and the corrupted logits (leaves that require grad) and the answers."""
    cases = []
    for label, tokens in (
        ("clean run", ctx.task.clean_tokens),
        ("corrupted run", ctx.task.corrupted_tokens),
    ):
        with torch.no_grad():
            logits = ctx.model(tokens)
        cases.append(Case(label, (logits.clone().requires_grad_(True), ctx.task.answer_tokens)))
    return cases


def _not_differentiable(calls) -> bool:
    return any(
        c.error is None and not (isinstance(c.output, Tensor) and c.output.requires_grad)
        for c in calls
    )


def _logit_diff_passed(result: Result) -> str:
    clean, corrupted = (float(task_metric) for task_metric in result.expected)
    return (
        f"clean {clean:.4f}, corrupted {corrupted:.4f}, as task.metric "
        f"(largest difference {result.diff:.1e}); differentiable"
    )


LOGIT_DIFF = Exercise(
    name="logit_diff",
    notebook="00",
    summary="The metric on the clean and the corrupted logits equals task.metric, as a "
    "differentiable scalar.",
    reference=logit_diff_reference,
    uses="task.metric",
    what="the logit difference",
    cases=_logit_diff_cases,
    prompt_hints=True,
    mistakes=(
        Mistake(
            "wrong sign: the metric is logit(IO) - logit(S); answer_tokens[:, 0] is IO, "
            "[:, 1] is S",
            wrong=lambda lg, ans: -logit_diff_reference(lg, ans),
        ),
        Mistake(
            "one entry per prompt: the metric is the mean over prompts (.mean(0)) of "
            "logit(IO) - logit(S)",
            wrong=lambda lg, ans: (
                lg[:, -1].gather(1, ans) @ torch.tensor([1.0, -1.0], dtype=lg.dtype)
            ),
        ),
        Mistake(
            "a sum where a mean belongs: the metric is the mean over prompts, not their sum",
            wrong=lambda lg, ans: logit_diff_reference(lg, ans) * lg.shape[0],
        ),
        Mistake(
            "that is the logit difference at the first position; the answer is predicted at "
            "the final position, logits[:, -1]",
            wrong=_logit_diff_at_first_position,
        ),
        Mistake(
            "autograd cannot differentiate the value: return a torch tensor computed from "
            "`logits` (no .item(), float() or numpy), since the next exercises "
            "differentiate the metric",
            wrong=lambda lg, ans: logit_diff_reference(lg, ans).item(),
            seen=_not_differentiable,
        ),
    ),
    passed=_logit_diff_passed,
)


# --------------------------------------------------------------------------------------------
# 2. Activation patching of one head


def patch_head_reference(model: Model, task: PatchingTask, layer: int, head: int) -> float:
    """``Delta = g(1) - g(0)`` of head ``L{layer}H{head}``, denoising
    (``hu.activation_patching``)."""
    comp = head_component(model, layer, head)
    return float(activation_patching(model, task, [comp]).values[0])


def _patch_whole_layer(model: Model, task: PatchingTask, layer: int, head: int) -> float:
    return float(activation_patching(model, task, [layer_component(model, layer)]).values[0])


def _patched_metric(model: Model, task: PatchingTask, layer: int, head: int) -> float:
    with torch.no_grad():
        corrupted = float(task.metric(model(task.corrupted_tokens)))
    return patch_head_reference(model, task, layer, head) + corrupted


def _noising_effect(model: Model, task: PatchingTask, layer: int, head: int) -> float:
    comp = head_component(model, layer, head)
    return float(activation_patching(model, task, [comp], direction="noising").values[0])


def _patch_head_cases(ctx: Context) -> list[Case]:
    """The two heads with the largest |AP| and the largest of the last layer."""
    top = ctx.top_heads(2)
    last = ctx.n_layers - 1
    values = ctx.head_ap().values.view(ctx.n_layers, ctx.n_heads)[last]
    extra = (last, int(values.abs().argmax()))
    chosen = top + ([extra] if extra not in top else [ctx.top_heads(3)[2]])
    return [Case(f"L{lay}H{h}", (ctx.model, ctx.task, lay, h)) for lay, h in chosen]


PATCH_HEAD = Exercise(
    name="patch_head",
    notebook="00",
    summary="Delta of three heads (the two largest effects, the largest of the last layer) "
    "equals hu.activation_patching.",
    reference=patch_head_reference,
    uses="hu.activation_patching",
    what="Delta",
    cases=_patch_head_cases,
    prompt_hints=True,
    mistakes=(
        Mistake(
            "that is g(1), the patched metric itself; the effect is the change it makes, "
            "Delta = g(1) - g(0) = m(patched) - m(corrupted)",
            wrong=_patched_metric,
        ),
        Mistake(
            "wrong sign: Delta = m(patched corrupted run) - m(corrupted run), not the reverse",
            wrong=lambda model, task, layer, head: -patch_head_reference(model, task, layer, head),
        ),
        Mistake(
            "that is the noising effect (the corrupted activation patched into the clean "
            "run); here the clean activation goes into the corrupted run",
            wrong=_noising_effect,
        ),
        Mistake(
            "that is the effect of patching every head of the layer at once: replace only "
            "z[:, :, head, :] (hook_z is [batch pos head d_head])",
            wrong=_patch_whole_layer,
        ),
    ),
    passed=lambda r: (
        f"Delta of {', '.join(c.label for c in r.cases)} as hu.activation_patching "
        f"(largest difference {r.diff:.1e})"
    ),
)


# --------------------------------------------------------------------------------------------
# 3. AtP of every head from one backward pass


def atp_heads_reference(model: Model, task: PatchingTask) -> Tensor:
    """``AtP[l, h] = <grad_{z_lh} m(x_r), z_lh^clean - z_lh^corrupted>`` (``hu.atp``)."""
    cfg = model.cfg
    heads = components(model, kind="head_out")
    return atp(model, task, heads).values.view(cfg.n_layers, cfg.n_heads)


def _atp_heads_detached(model: Model, task: PatchingTask) -> Tensor:
    """A classic mistake: each hook's activation detached and made a leaf, so a gradient at
    an early layer misses every path through the later hooks."""
    names = [head_component(model, layer, 0).hook for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, clean = model.run_with_cache(task.clean_tokens, names_filter=lambda n: n in names)
    leaves = {}

    def keep(z, hook, name):
        leaves[name] = z.detach().requires_grad_(True)
        return leaves[name]

    with torch.enable_grad():
        logits = model.run_with_hooks(
            task.corrupted_tokens, fwd_hooks=[(n, partial(keep, name=n)) for n in names]
        )
        grads = torch.autograd.grad(task.metric(logits), [leaves[n] for n in names])
    return torch.stack(
        [
            (g * (clean[n] - leaves[n].detach())).sum((0, 1, 3))
            for g, n in zip(grads, names, strict=True)
        ]
    )


def _atp_heads_on_clean_run(model: Model, task: PatchingTask) -> Tensor:
    cfg = model.cfg
    heads = components(model, kind="head_out")
    noising = atp(model, task, heads, direction="noising").values
    return -noising.view(cfg.n_layers, cfg.n_heads)


def _atp_heads_many_passes(model: Model, task: PatchingTask) -> Tensor:
    for _ in range(ATP_MAX_FORWARDS + 1):
        model(task.corrupted_tokens)
    return atp_heads_reference(model, task)


def _atp_heads_cases(ctx: Context) -> list[Case]:
    names = tuple(c.name for c in ctx.heads)
    return [Case("every head", (ctx.model, ctx.task), labels=names, max_passes=ATP_MAX_FORWARDS)]


ATP_HEADS = Exercise(
    name="atp_heads",
    notebook="00",
    summary="AtP of every head, [n_layers, n_heads], equals hu.atp, computed in at most four "
    "forward passes and one backward pass.",
    reference=atp_heads_reference,
    uses="hu.atp",
    what="AtP",
    cases=_atp_heads_cases,
    axes=("n_layers", "n_heads"),
    prompt_hints=True,
    counts_passes=True,
    mistakes=(
        Mistake(
            "the axes are swapped (transposed): return [n_layers, n_heads], row l holding "
            "the heads of layer l",
            wrong=lambda model, task: atp_heads_reference(model, task).T,
        ),
        Mistake(
            "wrong sign: delta = z(clean) - z(corrupted), the gradient taken on the corrupted run",
            wrong=lambda model, task: -atp_heads_reference(model, task),
        ),
        Mistake(
            "these are the gradients with each hook_z detached (a new leaf per layer): a "
            "gradient at an early layer then misses every path through the later heads. Add "
            "a zero tensor that requires grad to each activation instead and differentiate "
            "with respect to it",
            wrong=_atp_heads_detached,
        ),
        Mistake(
            "the gradient was taken on the clean run; AtP linearises the corrupted run, "
            "where the patch starts",
            wrong=_atp_heads_on_clean_run,
        ),
        Mistake(
            f"the function ran more than {ATP_MAX_FORWARDS} forward passes. AtP needs two "
            "(a cache of the clean run, the corrupted run) and ONE backward pass for all "
            "heads: hook every layer's hook_z in the same run_with_hooks call",
            wrong=_atp_heads_many_passes,
            seen=too_many_passes,
        ),
    ),
    passed=lambda r: (
        f"AtP of all {r.expected[0].numel()} heads as hu.atp (largest difference "
        f"{r.diff:.1e}), in {r.calls[0].passes:g} forward passes"
    ),
)


# --------------------------------------------------------------------------------------------
# 4. The patch path g(t)


def patch_path_reference(
    model: Model, task: PatchingTask, layer: int, head: int, t: Tensor | float
) -> Tensor:
    """``g(t) = m(x_r with z_lh <- z_lh^r + t (z_lh^c - z_lh^r))`` (``hu.path_function``)."""
    return path_function(model, task, head_component(model, layer, head))(t)


def _patch_path_scaling_clean(
    model: Model, task: PatchingTask, layer: int, head: int, t: Tensor | float
) -> Tensor:
    phi, _, x_c = slice_function(model, task, head_component(model, layer, head))
    return phi(t * x_c)


def _slope(output, case: Case) -> Tensor:
    """dg/dt at the case's ``t`` (a leaf) by autograd; NaN when g is not differentiable."""
    t = case.args[-1]
    if not (isinstance(output, Tensor) and output.requires_grad and output.numel() == 1):
        return torch.tensor(float("nan"), dtype=torch.float64)
    (slope,) = torch.autograd.grad(output.reshape(()), t, allow_unused=True, retain_graph=True)
    return torch.tensor(float("nan") if slope is None else float(slope), dtype=torch.float64)


def _patch_path_cases(ctx: Context) -> list[Case]:
    """g at the points of ``PATH_TS`` and g'(0) on the path of the head with the largest |AP|."""
    layer, head = ctx.top_heads(1)[0]
    at = (ctx.model, ctx.task, layer, head)
    t0 = torch.zeros((), dtype=torch.float64, requires_grad=True)
    return [Case(f"g({t:g})", (*at, torch.tensor(t, dtype=torch.float64))) for t in PATH_TS] + [
        Case("g'(0) by autograd", (*at, t0), read=_slope)
    ]


def _flat_in_t(calls) -> bool:
    return any(c.case.read is _slope and bool(_slope(c.output, c.case).isnan()) for c in calls)


def _patch_path_passed(r: Result) -> str:
    model, task, layer, head, _ = r.cases[0].args
    comp = head_component(model, layer, head)
    slope = float(r.expected[-1])
    first = float(atp(model, task, [comp]).values[0])
    assert abs(slope - first) <= 1e-6 * max(1.0, abs(first)), (slope, first)
    return (
        f"g(t) of {comp.name} at t = {', '.join(f'{t:g}' for t in PATH_TS)} as "
        f"hu.path_function (largest difference {r.diff:.1e}); g'(0) = {slope:.4f} = AtP"
    )


PATCH_PATH = Exercise(
    name="patch_path",
    notebook="00",
    summary="g(t) of the head with the largest effect at t = 0, 0.25, 0.5, 1, 1.5 equals "
    "hu.path_function, and its autograd derivative at 0 equals AtP.",
    reference=patch_path_reference,
    uses="hu.path_function",
    what="g(t)",
    cases=_patch_path_cases,
    prompt_hints=True,
    mistakes=(
        Mistake(
            "g(t) is not differentiable in t (or does not depend on it): keep t a tensor all "
            "the way (no float(t), t.item(), torch.tensor(...) around it, no torch.no_grad()) "
            "so that autograd can give g'(t)",
            wrong=lambda model, task, layer, head, t: torch.tensor(
                patch_path_reference(model, task, layer, head, t).item()
            ),
            seen=_flat_in_t,
        ),
        Mistake(
            "that is the path of the clean run (noising): start from the corrupted run, "
            "g(0) = m(corrupted)",
            wrong=lambda model, task, layer, head, t: path_function(
                model, task, head_component(model, layer, head), direction="noising"
            )(t),
        ),
        Mistake(
            "t multiplies the clean activation; the path moves from the corrupted one, "
            "a_r + t (a_c - a_r), so that g(0) is the corrupted run",
            wrong=_patch_path_scaling_clean,
        ),
        Mistake(
            "the path runs the wrong way: delta = a_c - a_r (clean minus corrupted), so that "
            "g(1) is the patched run",
            wrong=lambda model, task, layer, head, t: patch_path_reference(
                model, task, layer, head, -t
            ),
        ),
        Mistake(
            "that is the path of every head of the layer: move only z[:, :, head, :]",
            wrong=lambda model, task, layer, head, t: path_function(
                model, task, layer_component(model, layer)
            )(t),
        ),
    ),
    passed=_patch_path_passed,
)


# --------------------------------------------------------------------------------------------
# 5. g''(0) as a Hessian-vector product


def hvp_second_derivative_reference(
    model: Model, task: PatchingTask, layer: int, head: int
) -> float:
    """``g''(0) = <delta, H delta>`` of head ``L{layer}H{head}`` (``hu.hvp_correction``)."""
    comp = head_component(model, layer, head)
    return float(hvp_correction(model, task, [comp]).second[0])


def _first_derivative(model: Model, task: PatchingTask, layer: int, head: int) -> float:
    return float(atp(model, task, [head_component(model, layer, head)]).values[0])


def _layer_second_derivative(model: Model, task: PatchingTask, layer: int, head: int) -> float:
    return float(hvp_correction(model, task, [layer_component(model, layer)]).second[0])


def _hvp_passed(r: Result) -> str:
    gaps = []
    for case, expected in zip(r.cases, r.expected, strict=True):
        model, task, layer, head = case.args
        g = path_function(model, task, head_component(model, layer, head))
        ahead = path_derivative(g, t=FD_STEP, order=1)
        behind = path_derivative(g, t=-FD_STEP, order=1)
        gaps.append(abs((ahead - behind) / (2 * FD_STEP) - float(expected)))
    return (
        f"g''(0) of {', '.join(c.label for c in r.cases)} as hu.hvp_correction (largest "
        f"difference {r.diff:.1e}; central finite differences of g' agree to {max(gaps):.1e})"
    )


HVP_SECOND_DERIVATIVE = Exercise(
    name="hvp_second_derivative",
    notebook="00",
    summary="g''(0) of the two heads with the largest effects equals hu.hvp_correction's "
    "second derivative (and central finite differences of g').",
    reference=hvp_second_derivative_reference,
    uses="hu.hvp_correction",
    what="g''(0)",
    cases=lambda ctx: head_cases(ctx, 2),
    prompt_hints=True,
    mistakes=(
        Mistake(
            "that is g''(0)/2, the second-order term of the Taylor series; return g''(0)",
            wrong=lambda model, task, layer, head: (
                hvp_second_derivative_reference(model, task, layer, head) / 2
            ),
        ),
        Mistake(
            "twice g''(0): <v, H v> needs no factor 2",
            wrong=lambda model, task, layer, head: (
                2 * hvp_second_derivative_reference(model, task, layer, head)
            ),
        ),
        Mistake(
            "that is g'(0), AtP: differentiate <grad m, v> once more and take the inner "
            "product of that Hessian-vector product with v again",
            wrong=_first_derivative,
        ),
        Mistake(
            "wrong sign: g''(0) = <v, H v> with v = delta; check the sign of delta in both "
            "products",
            wrong=lambda model, task, layer, head: (
                -hvp_second_derivative_reference(model, task, layer, head)
            ),
        ),
        Mistake(
            "that is <v, H v> with v covering every head of the layer: set v to delta on "
            "z[:, :, head] and to zero elsewhere",
            wrong=_layer_second_derivative,
        ),
    ),
    passed=_hvp_passed,
)

EXERCISES = (LOGIT_DIFF, PATCH_HEAD, ATP_HEADS, PATCH_PATH, HVP_SECOND_DERIVATIVE)
