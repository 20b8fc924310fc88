"""Exercises of notebook 00, *Patching by hand*: the metric, activation patching of one head,
AtP of every head from one backward pass, the patch path g(t), and g''(0) as a
Hessian-vector product.

Each reference is the package's own implementation; the checkers also use the independent
references of :mod:`hvp_utils.analysis.checks` (plain hooks, autograd, finite differences).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from hvp_utils.analysis.checks import path_derivative, path_function, slice_function
from hvp_utils.core.components import Component, components
from hvp_utils.core.tasks import PatchingTask
from hvp_utils.core.types import Model
from hvp_utils.estimators import activation_patching, atp, hvp_correction
from hvp_utils.exercises.framework import (
    ATP_MAX_FORWARDS,
    Context,
    ExerciseFailed,
    call,
    counting_forward_passes,
    exercise,
    expect_close,
    scalar,
)

#: Step of the central finite differences that confirm g''(0).
FD_STEP = 1e-4


def head_component(model: Model, layer: int, head: int) -> Component:
    """The head output ``L{layer}H{head}`` (``hook_z[:, :, head, :]``, every position)."""
    return components(model, "head_out", layers=[layer])[head]


def layer_component(model: Model, layer: int) -> Component:
    """Every head of one layer as one component: the whole ``hook_z`` (a common mistake)."""
    hook = head_component(model, layer, 0).hook
    return Component(f"L{layer} (every head)", "custom", hook, layer, ())


def layer_effects(
    model: Model, task: PatchingTask, layers: list[int], estimator, field: str = "values"
) -> Tensor:
    """``estimator``'s ``field`` for the whole ``hook_z`` of each of ``layers`` (repeats
    allowed), as a common mistake gives them."""
    unique = sorted(set(layers))
    result = estimator(model, task, [layer_component(model, layer) for layer in unique])
    values = getattr(result, field)
    return torch.stack([values[unique.index(layer)] for layer in layers])


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


@exercise(
    "logit_diff",
    notebook="00",
    reference=logit_diff_reference,
    uses="task.metric",
    mistakes={
        "S minus IO": (lambda lg, ans: -logit_diff_reference(lg, ans), "wrong sign"),
        "one value per prompt": (
            lambda lg, ans: lg[:, -1].gather(1, ans) @ torch.tensor([1.0, -1.0], dtype=lg.dtype),
            "one entry per prompt",
        ),
        "summed over prompts": (
            lambda lg, ans: logit_diff_reference(lg, ans) * lg.shape[0],
            "a sum where a mean belongs",
        ),
        "first position": (_logit_diff_at_first_position, "final position"),
        "a Python float": (lambda lg, ans: logit_diff_reference(lg, ans).item(), "autograd"),
    },
)
def check_logit_diff(fn, ctx: Context) -> str:
    """The metric on the clean and the corrupted logits equals ``task.metric``, as a
    differentiable scalar."""
    __tracebackhide__ = True
    model, task = ctx.model, ctx.task
    with torch.no_grad():
        runs = {
            "clean run": model(task.clean_tokens),
            "corrupted run": model(task.corrupted_tokens),
        }
    got, expected, first_position = [], [], []
    for label, logits in runs.items():
        leaf = logits.clone().requires_grad_(True)
        value = call(fn, leaf, task.answer_tokens, name="logit_diff")
        got.append(scalar(value, f"logit_diff on the {label}", task.n_prompts))
        if not (isinstance(value, Tensor) and value.requires_grad):
            raise ExerciseFailed(
                "the value is right but autograd cannot differentiate it: return a torch "
                "tensor computed from `logits` (no .item(), float() or numpy), since the next "
                "exercises differentiate the metric"
            )
        expected.append(float(task.metric(logits)))
        first_position.append(float(_logit_diff_at_first_position(logits, task.answer_tokens)))
    diff = expect_close(
        torch.stack(got),
        torch.tensor(expected, dtype=torch.float64),
        what="the logit difference",
        rtol=ctx.rtol,
        labels=list(runs),
        n_prompts=task.n_prompts,
        known={
            "that is the logit difference at the first position; the answer is predicted at "
            "the final position, logits[:, -1]": first_position,
        },
        sign_hint="the metric is logit(IO) - logit(S): answer_tokens[:, 0] is IO, [:, 1] is S",
    )
    return (
        f"clean {expected[0]:.4f}, corrupted {expected[1]:.4f}, as task.metric "
        f"(largest difference {diff:.1e}); differentiable"
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
    corrupted = float(task.metric(model(task.corrupted_tokens)))
    return patch_head_reference(model, task, layer, head) + corrupted


def _cases(ctx: Context) -> list[tuple[int, int]]:
    """The two heads with the largest |AP| and the largest of the last layer."""
    top = ctx.top_heads(2)
    last = ctx.n_layers - 1
    values = ctx.head_ap().values.view(ctx.n_layers, ctx.n_heads)[last]
    extra = (last, int(values.abs().argmax()))
    return top + ([extra] if extra not in top else [ctx.top_heads(3)[2]])


@exercise(
    "patch_head",
    notebook="00",
    reference=patch_head_reference,
    uses="hu.activation_patching",
    mistakes={
        "returns g(1)": (_patched_metric, "g(1) - g(0)"),
        "corrupted minus patched": (
            lambda model, task, layer, head: -patch_head_reference(model, task, layer, head),
            "wrong sign",
        ),
        "every head of the layer": (_patch_whole_layer, "every head of the layer"),
    },
)
def check_patch_head(fn, ctx: Context) -> str:
    """Delta of three heads (the two largest effects, the largest of the last layer) equals
    ``hu.activation_patching``."""
    __tracebackhide__ = True
    model, task = ctx.model, ctx.task
    cases = _cases(ctx)
    labels = [f"L{layer}H{head}" for layer, head in cases]
    got = [
        scalar(
            call(fn, model, task, layer, head, name="patch_head"),
            f"Delta of {label}",
            task.n_prompts,
        )
        for (layer, head), label in zip(cases, labels, strict=True)
    ]
    ap = ctx.head_ap()
    expected = torch.tensor([ap[label] for label in labels], dtype=torch.float64)
    corrupted = ctx.baseline()["corrupted_metric"]
    heads = [head_component(model, *c) for c in cases]
    layers = [layer for layer, _ in cases]
    diff = expect_close(
        torch.stack(got),
        expected,
        what="Delta",
        rtol=ctx.rtol,
        labels=labels,
        known={
            "that is g(1), the patched metric itself; the effect is the change it makes, "
            "Delta = g(1) - g(0) = m(patched) - m(corrupted)": expected + corrupted,
            "that is the noising effect (the corrupted activation patched into the clean "
            "run); here the clean activation goes into the corrupted run": lambda: (
                activation_patching(model, task, heads, direction="noising").values
            ),
            "that is the effect of patching every head of the layer at once: replace only "
            "z[:, :, head, :] (hook_z is [batch pos head d_head])": lambda: layer_effects(
                model, task, layers, activation_patching
            ),
        },
        sign_hint="Delta = m(patched corrupted run) - m(corrupted run), not the reverse",
    )
    return f"Delta of {', '.join(labels)} as hu.activation_patching (largest difference {diff:.1e})"


# --------------------------------------------------------------------------------------------
# 3. AtP of every head from one backward pass


def atp_heads_reference(model: Model, task: PatchingTask) -> Tensor:
    """``AtP[l, h] = <grad_{z_lh} m(x_r), z_lh^clean - z_lh^corrupted>`` (``hu.atp``)."""
    cfg = model.cfg
    return atp(model, task, components(model, "head_out")).values.view(cfg.n_layers, cfg.n_heads)


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


def _atp_heads_many_passes(model: Model, task: PatchingTask) -> Tensor:
    for _ in range(ATP_MAX_FORWARDS + 1):
        model(task.corrupted_tokens)
    return atp_heads_reference(model, task)


@exercise(
    "atp_heads",
    notebook="00",
    reference=atp_heads_reference,
    uses="hu.atp",
    mistakes={
        "transposed": (lambda model, task: atp_heads_reference(model, task).T, "swapped"),
        "delta = corrupted - clean": (
            lambda model, task: -atp_heads_reference(model, task),
            "wrong sign",
        ),
        "detached hooks": (_atp_heads_detached, "detach"),
        "one pass per head": (_atp_heads_many_passes, "forward passes"),
    },
)
def check_atp_heads(fn, ctx: Context) -> str:
    """AtP of every head, ``[n_layers, n_heads]``, equals ``hu.atp``, computed in at most
    four forward passes and one backward pass."""
    __tracebackhide__ = True
    model, task = ctx.model, ctx.task
    with counting_forward_passes(model) as passes:
        got = call(fn, model, task, name="atp_heads")
    expected = atp_heads_reference(model, task)
    diff = expect_close(
        got,
        expected,
        what="AtP",
        rtol=ctx.rtol,
        labels=[c.name for c in ctx.heads],
        axes=("n_layers", "n_heads"),
        n_prompts=task.n_prompts,
        known={
            "these are the gradients with each hook_z detached (a new leaf per layer): a "
            "gradient at an early layer then misses every path through the later heads. Add "
            "a zero tensor that requires grad to each activation instead and differentiate "
            "with respect to it": lambda: _atp_heads_detached(model, task),
            "the gradient was taken on the clean run; AtP linearises the corrupted run, "
            "where the patch starts": lambda: (
                -atp(model, task, ctx.heads, direction="noising").values
            ),
        },
        sign_hint="delta = z(clean) - z(corrupted), the gradient taken on the corrupted run",
    )
    if passes[0] > ATP_MAX_FORWARDS:
        raise ExerciseFailed(
            f"the values are right, but the function ran {passes[0]} forward passes. AtP needs "
            "two (a cache of the clean run, the corrupted run) and ONE backward pass for all "
            "heads: hook every layer's hook_z in the same run_with_hooks call"
        )
    n = expected.numel()
    return (
        f"AtP of all {n} heads as hu.atp (largest difference {diff:.1e}), "
        f"in {passes[0]} forward passes"
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


@exercise(
    "patch_path",
    notebook="00",
    reference=patch_path_reference,
    uses="hu.path_function",
    mistakes={
        "through float()": (
            lambda model, task, layer, head, t: torch.tensor(
                patch_path_reference(model, task, layer, head, t).item()
            ),
            "differentiable",
        ),
        "corrupted minus clean": (
            lambda model, task, layer, head, t: patch_path_reference(model, task, layer, head, -t),
            "the wrong way",
        ),
        "t times the clean activation": (_patch_path_scaling_clean, "a_r + t"),
    },
)
def check_patch_path(fn, ctx: Context) -> str:
    """g(t) of the head with the largest effect at t = 0, 0.25, 0.5, 1, 1.5 equals
    ``hu.path_function``, and its autograd derivative at 0 equals AtP."""
    __tracebackhide__ = True
    model, task = ctx.model, ctx.task
    layer, head = ctx.top_heads(1)[0]
    comp = head_component(model, layer, head)
    ts = (0.0, 0.25, 0.5, 1.0, 1.5)
    labels = [f"g({t:g})" for t in ts]
    got = []
    for t, label in zip(ts, labels, strict=True):
        value = call(fn, model, task, layer, head, torch.tensor(t, dtype=torch.float64))
        got.append(scalar(value, f"{label} of {comp.name}", task.n_prompts))
    reference = path_function(model, task, comp)

    def along(g, scale: float = 1.0):
        return lambda: torch.stack([g(scale * t).detach() for t in ts])

    def scaling_clean():
        phi, _, x_c = slice_function(model, task, comp)
        return torch.stack([phi(t * x_c).detach() for t in ts])

    with torch.no_grad():
        expected = along(reference)()
    known = {
        "that is the path of the clean run (noising): start from the corrupted run, "
        "g(0) = m(corrupted)": along(path_function(model, task, comp, direction="noising")),
        "t multiplies the clean activation; the path moves from the corrupted one, "
        "a_r + t (a_c - a_r), so that g(0) is the corrupted run": scaling_clean,
        "the path runs the wrong way: delta = a_c - a_r (clean minus corrupted), so that "
        "g(1) is the patched run": along(reference, -1.0),
        "that is the path of every head of the layer: move only z[:, :, head, :]": lambda: along(
            path_function(model, task, layer_component(model, layer))
        )(),
    }
    diff = expect_close(
        torch.stack(got),
        expected,
        what=f"g(t) of {comp.name}",
        rtol=ctx.rtol,
        labels=labels,
        known=known,
    )
    t0 = torch.zeros((), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        value = call(fn, model, task, layer, head, t0, name="patch_path")
        if not (isinstance(value, Tensor) and value.requires_grad):
            raise ExerciseFailed(
                "g(t) has the right values but is not differentiable in t: keep t a tensor "
                "all the way (no float(t), t.item(), torch.tensor(...) around it, no "
                "torch.no_grad()) so that autograd can give g'(t)"
            )
        (slope,) = torch.autograd.grad(value.reshape(()), t0, allow_unused=True)
    if slope is None:
        raise ExerciseFailed("g(t) does not depend on t (its derivative is None)")
    atp_value = path_derivative(reference, 0.0, 1)
    expect_close(
        slope,
        torch.tensor(atp_value, dtype=torch.float64),
        what=f"g'(0) of {comp.name} by autograd",
        rtol=ctx.rtol,
    )
    return (
        f"g(t) of {comp.name} at t = {', '.join(f'{t:g}' for t in ts)} as hu.path_function "
        f"(largest difference {diff:.1e}); g'(0) = {atp_value:.4f} = AtP"
    )


# --------------------------------------------------------------------------------------------
# 5. g''(0) as a Hessian-vector product


def hvp_second_derivative_reference(
    model: Model, task: PatchingTask, layer: int, head: int
) -> float:
    """``g''(0) = <delta, H delta>`` of head ``L{layer}H{head}`` (``hu.hvp_correction``)."""
    comp = head_component(model, layer, head)
    return float(hvp_correction(model, task, [comp]).second[0])


@exercise(
    "hvp_second_derivative",
    notebook="00",
    reference=hvp_second_derivative_reference,
    uses="hu.hvp_correction",
    mistakes={
        "the Taylor term": (
            lambda model, task, layer, head: (
                hvp_second_derivative_reference(model, task, layer, head) / 2
            ),
            "second-order term",
        ),
        "the first derivative": (
            lambda model, task, layer, head: float(
                atp(model, task, [head_component(model, layer, head)]).values[0]
            ),
            "g'(0)",
        ),
    },
)
def check_hvp_second_derivative(fn, ctx: Context) -> str:
    """g''(0) of the two heads with the largest effects equals ``hu.hvp_correction``'s
    second derivative (and central finite differences of g')."""
    __tracebackhide__ = True
    model, task = ctx.model, ctx.task
    cases = ctx.top_heads(2)
    comps = [head_component(model, layer, head) for layer, head in cases]
    labels = [c.name for c in comps]
    got = [
        scalar(
            call(fn, model, task, layer, head, name="hvp_second_derivative"),
            f"g''(0) of {n}",
            task.n_prompts,
        )
        for (layer, head), n in zip(cases, labels, strict=True)
    ]
    estimate = hvp_correction(model, task, comps)
    layers = [layer for layer, _ in cases]
    diff = expect_close(
        torch.stack(got),
        estimate.second,
        what="g''(0)",
        rtol=ctx.rtol,
        labels=labels,
        known={
            "that is g'(0), AtP: differentiate <grad m, v> once more and take the inner "
            "product of that Hessian-vector product with v again": estimate.first,
            "that is <v, H v> with v covering every head of the layer: set v to delta on "
            "z[:, :, head, :] and to zero elsewhere": lambda: layer_effects(
                model, task, layers, hvp_correction, "second"
            ),
        },
        factors={
            0.5: "that is g''(0)/2, the second-order term of the Taylor series; return g''(0)",
            2.0: "twice g''(0): <v, H v> needs no factor 2",
        },
        sign_hint="g''(0) = <v, H v> with v = delta; check the sign of delta in both products",
    )
    fd = []
    for comp in comps:
        g = path_function(model, task, comp)
        fd.append(
            (path_derivative(g, FD_STEP, 1) - path_derivative(g, -FD_STEP, 1)) / (2 * FD_STEP)
        )
    fd_gap = float((torch.tensor(fd, dtype=torch.float64) - estimate.second).abs().max())
    return (
        f"g''(0) of {', '.join(labels)} as hu.hvp_correction (largest difference {diff:.1e}; "
        f"central finite differences of g' agree to {fd_gap:.1e})"
    )
