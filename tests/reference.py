"""Independent references: plain TransformerLens hooks and torch.autograd, no engine.

The per-component path references live in hvp_utils.analysis.checks (notebooks call them
too); the ones below rebuild AtP*'s two fixes and whole-hook Hessian-vector products.
"""

from __future__ import annotations

import torch
from beartype.roar import BeartypeCallHintParamViolation
from jaxtyping import TypeCheckError

import hvp_utils as hu
from hvp_utils.analysis.checks import (  # noqa: F401  (re-exported for the tests)
    component_index,
    endpoints,
    path_derivative,
    path_function,
    slice_function,
)
from hvp_utils.core.components import Component

#: What a bad option raises: the type checker's error under the test suite's beartype hook,
#: the function's own ValueError without it.
BAD_OPTION_ERRORS = (ValueError, TypeCheckError, BeartypeCallHintParamViolation)


class SquaredLogitDiff(hu.PatchingTask):
    """A metric quadratic in the final normalised residual stream, (logit(IO) - logit(S))^2:
    every patch path of that stream is a parabola (third derivative zero)."""

    def answer_metric(self, answer_logits):
        return super().answer_metric(answer_logits) ** 2


def quadratic_case(model, task, whole: bool = False):
    """The squared-logit-difference task and components of the final normalised stream at the
    last two positions (and the whole stream when ``whole``)."""
    squared = SquaredLogitDiff(task.clean_tokens, task.corrupted_tokens, task.answer_tokens)
    last = model.cfg.n_layers - 1
    comps = [
        Component(f"final@{p}", "custom", "ln_final.hook_normalized", last, ((1, p),))
        for p in (task.n_positions - 1, task.n_positions - 2)
    ]
    if whole:
        comps.append(Component("final", "custom", "ln_final.hook_normalized", last, ()))
    return squared, comps


def atp_reference(model, task, comp) -> float:
    """``g_c'(0)`` by autograd on the component's own path (plain hooks)."""
    return path_derivative(path_function(model, task, comp), 0.0, 1)


def _pattern(model, tokens, layer: int, replace=None) -> torch.Tensor:
    """Layer ``layer``'s attention pattern on ``tokens``, optionally with one hook replaced."""
    captured = {}
    hooks = [(f"blocks.{layer}.attn.hook_pattern", lambda act, hook: captured.update(p=act))]
    if replace is not None:
        hooks.append((replace[0], lambda act, hook: replace[1]))
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=hooks)
    return captured["p"]


def qk_fixed_reference(model, task, comp) -> float:
    """AtP*'s QK fix for a query/key component, from its definition: patch the component's
    slice alone, take the exact new pattern of its layer (every head, so a shared GQA key
    moves its whole group), then differentiate the metric along the straight pattern path."""
    clean, corrupt = endpoints(model, task, comp)
    index = component_index(comp, clean.dim())
    patched = corrupt.clone()
    patched[index] = clean[index]
    tokens = task.corrupted_tokens
    base = _pattern(model, tokens, comp.layer)
    change = _pattern(model, tokens, comp.layer, (comp.hook, patched)) - base
    pattern_hook = f"blocks.{comp.layer}.attn.hook_pattern"

    def g(t):
        hooks = [(pattern_hook, lambda act, hook: base + t * change)]
        return task.metric(model.run_with_hooks(tokens, fwd_hooks=hooks))

    return path_derivative(g, 0.0, 1)


def hook_gradients_reference(model, task, comps, frozen=(), caches=None) -> torch.Tensor:
    """``<grad_{a_c} m(x_corrupted), delta_c>`` for each component, by ``torch.autograd.grad``
    with respect to a zero leaf added to each hook's activation (so later hooks still see
    earlier ones); the hooks named in ``frozen`` pass their forward value without gradient
    (``act.detach()``). ``caches``: ``{hook: (clean, corrupt)}`` (computed when None)."""
    by_hook = {c.hook: c for c in comps}
    hooks = sorted(by_hook)
    if caches is None:
        caches = {h: endpoints(model, task, c) for h, c in by_hook.items()}
    leaves = {h: torch.zeros_like(caches[h][1], requires_grad=True) for h in hooks}
    fwd = [(h, lambda act, hook, h=h: act + leaves[h]) for h in hooks]
    fwd += [(h, lambda act, hook: act.detach()) for h in frozen]
    metric = task.metric(model.run_with_hooks(task.corrupted_tokens, fwd_hooks=fwd))
    if metric.requires_grad:
        grads = torch.autograd.grad(metric, [leaves[h] for h in hooks], allow_unused=True)
    else:  # every path from the hooks to the metric is detached
        grads = [None] * len(hooks)
    grads = {
        h: torch.zeros_like(leaves[h]) if g is None else g
        for h, g in zip(hooks, grads, strict=True)
    }
    values = []
    for c in comps:
        clean, corrupt = caches[c.hook]
        index = component_index(c, clean.dim())
        values.append(float((grads[c.hook] * (clean - corrupt))[index].sum()))
    return torch.tensor(values, dtype=torch.float64)


def graddrop_reference(model, task, comps) -> torch.Tensor:
    """Kramar et al.'s GradDrop magnitude, ``1/(L-1) sum_l |AtP_{drop l}(c)|``: for each layer
    ``l`` after the component's own, AtP with ``blocks.l.hook_attn_out`` and
    ``blocks.l.hook_mlp_out`` detached; for ``l`` at or before it, plain AtP."""
    n_layers = model.cfg.n_layers
    caches = {c.hook: endpoints(model, task, c) for c in comps}
    plain = hook_gradients_reference(model, task, comps, caches=caches)
    total = torch.zeros(len(comps), dtype=torch.float64)
    for layer in range(n_layers):
        frozen = (f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out")
        dropped = hook_gradients_reference(model, task, comps, frozen, caches)
        later = torch.tensor([c.layer < layer for c in comps])
        total += torch.where(later, dropped, plain).abs()
    return total / (n_layers - 1)


def whole_hook_function(model, task, hooks: list[str]):
    """``phi(e_1, ..., e_k) = m(corrupted run with e_i added to hook i's activation)`` (later
    hooks recomputed from earlier ones), the zero point and the deltas (clean - corrupted)."""
    with torch.no_grad():
        _, corrupt = model.run_with_cache(task.corrupted_tokens, names_filter=hooks)
        _, clean = model.run_with_cache(task.clean_tokens, names_filter=hooks)
    zeros = tuple(torch.zeros_like(corrupt[h]) for h in hooks)
    deltas = tuple(clean[h] - corrupt[h] for h in hooks)

    def phi(*offsets):
        shift = dict(zip(hooks, offsets, strict=True))
        fwd = [(h, lambda act, hook, h=h: act + shift[h]) for h in hooks]
        return task.metric(model.run_with_hooks(task.corrupted_tokens, fwd_hooks=fwd))

    return phi, zeros, deltas


def made_up(values, names: list[str], label: str = "X") -> hu.Attribution:
    """A result with the given values and no estimator function behind it (for closed forms)."""
    record = hu.Estimator(label, label, label, hu.Family.ATP)
    return hu.Attribution(values, names, [""] * len(names), record, hu.Cost())
