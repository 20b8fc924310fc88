"""The one engine behind every estimator: the patch path of each component and its derivatives.

For component ``c`` with base activation ``a_c^b`` (the corrupted run when denoising) and
source activation ``a_c^s`` (the clean run), the patch path is

    g_c(t) = m(base input with a_c <- a_c^b + t * delta_c),   delta_c = a_c^s - a_c^b,

with everything downstream of ``c`` recomputed. Activation patching is ``g_c(1) - g_c(0)``;
attribution patching is ``g_c'(0)``; the second-order corrections need ``g_c''``.

Many components share one forward pass by replicating the prompt batch: replicate ``r``
carries only component ``r``'s perturbation ``s_r * delta_r``. With
``F(s) = sum_r g_r(s_r)`` the replicates are independent, so

    dF/ds_r = g_r'(s_r)      and      d/ds_r (sum_j dF/ds_j) = g_r''(s_r),

i.e. one backward pass gives every replicate's first derivative and one double backward
(a Hessian-vector product with the all-ones vector on a diagonal Hessian) every second one.

Every batched pass runs through :func:`replicated_metric`, in chunks of replicates from
:func:`replicate_chunks` (the ``chunk_size`` of every estimator): :func:`path_derivatives` for
per-component paths, :func:`hook_gradients` for gradients (and Hessian-vector products) with
respect to whole hooks. Chunking changes the memory of a pass, never a value or a pass count.
Both take an :class:`EngineRun`: the model, the task, the prepared context, the cost meter and
the chunk size that every call of one estimator shares, e.g.
``path_derivatives(run, comps, t=0.0, order=2)``.

A pass that is differentiated twice runs under :func:`second_order_attention` (both take it
through :func:`autograd_pass`): PyTorch's fused attention kernels have no double backward, so
an ``"sdpa"`` model runs SDPA's math backend there, and an implementation with neither a
double backward nor a math fallback is refused with the fix.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from hvp_utils.core.components import Component, check_components, group_by_hook
from hvp_utils.core.models import attention_implementation
from hvp_utils.core.readout import blocks_skipped_before, run_with_answer_logits
from hvp_utils.core.results import CostMeter
from hvp_utils.core.tasks import PatchingTask, check_finite
from hvp_utils.core.types import DIRECTIONS, Direction, Model, check_choice

#: Token budget of one replicated forward pass, without and with an autograd graph.
TOKENS_PER_PASS = {0: 4096, 1: 4096, 2: 2048, 3: 1024}
#: Activation memory that ``TOKENS_PER_PASS[0]`` tokens of a model may take, estimated by
#: :func:`token_bytes` (bytes); a model with larger tokens gets proportionally fewer tokens
#: per pass (:func:`pass_tokens`). The embedded model and the tests' tiny models stay under it.
PASS_MEMORY_BYTES = 2**29
#: Show a progress bar from this many chunks on.
PROGRESS_MIN_CHUNKS = 100
#: Attention implementations a pass can be differentiated twice through: eager attention is
#: plain tensor operations; SDPA only in its math backend, which :func:`second_order_attention`
#: forces (its fused flash, memory-efficient and cuDNN kernels have no double backward).
SECOND_ORDER_ATTENTION = ("eager", "sdpa")


class UnsupportedAttentionError(RuntimeError):
    """The model's attention implementation cannot be differentiated twice."""


def second_order_attention(model: Model) -> AbstractContextManager:
    """The attention a second-order computation needs, for its duration.

    Args:
        model: the model (its :func:`~hvp_utils.core.models.attention_implementation`).

    Returns:
        A context manager: nothing to do for ``"eager"``; for ``"sdpa"``,
        ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``, so that every
        ``scaled_dot_product_attention`` in it runs the math backend, whose operations have
        double-backward and forward-mode derivatives (the fused kernels have neither, on CPU
        as on CUDA).

    Raises:
        UnsupportedAttentionError: for any other implementation (``"flash_attention_2"``,
            ``"flex_attention"``, an unknown one), naming the fix.
    """
    implementation = attention_implementation(model)
    if implementation == "eager":
        return nullcontext()
    if implementation == "sdpa":
        return sdpa_kernel(SDPBackend.MATH)
    named = repr(implementation) if implementation else "an unknown implementation"
    raise UnsupportedAttentionError(
        f"the model's attention implementation is {named}, which has no double backward: "
        "second-order results (HVP, multi-step HVP) cannot be computed through it; "
        f"{' and '.join(SECOND_ORDER_ATTENTION)} can. Load the model with "
        'attn_implementation="eager": hvp_utils.load_model(..., attn_implementation="eager") '
        'or hvp_utils.from_hf_model(..., attn_implementation="eager").'
    )


@contextmanager
def autograd_pass(model: Model, *, order: int) -> Iterator[None]:
    """Within the context, the autograd mode of a pass differentiated ``order`` times:
    gradients enabled from order 1 on and, from order 2 on (double backward and beyond),
    :func:`second_order_attention` (whose error is raised before anything runs)."""
    attention = second_order_attention(model) if order > 1 else nullcontext()
    with torch.set_grad_enabled(order > 0), attention:
        yield


@dataclass
class PatchContext:
    """What every patch path needs, cached once per (task, direction).

    Attributes:
        base_tokens: the base input (corrupted when denoising, clean when noising).
        base_resid: ``{layer: residual stream entering layer}`` on the base input, at each
            component's layer (passes start there).
        base_acts: ``{hook: a_h^b}``, the base activation at each needed hook.
        deltas: ``{hook: a_h^s - a_h^b}``, source minus base activation.
        base_metric: ``m(x_base)``.
        direction: ``"denoising"`` or ``"noising"``.
    """

    base_tokens: Tensor
    base_resid: dict[int, Tensor]
    base_acts: dict[str, Tensor]
    deltas: dict[str, Tensor]
    base_metric: float
    direction: Direction


def prepare(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    direction: Direction = "denoising",
    meter: CostMeter | None = None,
    extra_hooks: tuple[str, ...] = (),
) -> PatchContext:
    """Run the clean and corrupted inputs once and cache what the patch paths need.

    Denoising patches clean activations into the corrupted run (base = corrupted, source =
    clean); noising patches corrupted activations into the clean run (base = clean).

    Args:
        model: the model.
        task: clean and corrupted prompts and the metric ``m``.
        comps: the components (their hooks and layers are cached).
        direction: ``"denoising"`` or ``"noising"``.
        meter: counts the two forward passes (if given).
        extra_hooks: further hooks to cache (e.g. the attention patterns AtP* needs).

    Returns:
        A :class:`PatchContext` with ``a_h^b`` and ``delta_h = a_h^s - a_h^b`` at each hook,
        the base residual stream entering each component's layer and ``m(x_base)``.
    """
    check_choice(direction, DIRECTIONS, "direction")
    check_components(comps)
    hooks = set(group_by_hook(comps)) | set(extra_hooks)
    resid_hooks = {get_act_name("resid_pre", layer): layer for layer in {c.layer for c in comps}}
    missing = hooks - set(model.hook_dict)
    if missing:
        raise ValueError(f"the model has no hooks {sorted(missing)}; check the component kind")
    base, source = (
        (task.corrupted_tokens, task.clean_tokens)
        if direction == "denoising"
        else (task.clean_tokens, task.corrupted_tokens)
    )
    with torch.no_grad():
        answers = task.answers_for(base.shape[0])
        base_logits, base_cache = run_with_answer_logits(
            model, base, answers, cache=tuple(sorted(hooks | set(resid_hooks)))
        )
        _, source_cache = run_with_answer_logits(model, source, answers, cache=tuple(hooks))
    if meter is not None:
        meter.add(forward=2)
    return PatchContext(
        base_tokens=base,
        base_resid={layer: base_cache[h] for h, layer in resid_hooks.items()},
        base_acts={h: base_cache[h] for h in hooks},
        deltas={h: source_cache[h] - base_cache[h] for h in hooks},
        base_metric=float(check_finite(task.answer_metric(base_logits).mean(), "metric")),
        direction=direction,
    )


def context_for(
    model: Model,
    task: PatchingTask,
    comps: list[Component],
    *,
    direction: Direction,
    meter: CostMeter,
    context: PatchContext | None = None,
    extra_hooks: tuple[str, ...] = (),
) -> PatchContext:
    """The context an estimator works in: a shared one, checked, or a fresh one.

    Args:
        model, task, comps, direction, meter, extra_hooks: as for :func:`prepare`.
        context: a context shared between estimators, or None.

    Returns:
        ``context`` when given (its two forward passes are then not counted again), after
        checking that it was prepared for ``direction`` and caches every hook of ``comps``,
        every ``extra_hooks`` and the residual stream at every component's layer (else a
        ``ValueError`` saying what is missing); otherwise :func:`prepare`'s context.
    """
    if context is None:
        return prepare(
            model, task, comps, direction=direction, meter=meter, extra_hooks=extra_hooks
        )
    check_components(comps)
    if context.direction != direction:
        raise ValueError(
            f"the shared context was prepared for {context.direction!r}, not {direction!r}; "
            "prepare one per direction"
        )
    needed = set(group_by_hook(comps)) | set(extra_hooks)
    missing = sorted(needed - set(context.deltas))
    missing += [
        f"residual stream at layer {layer}"
        for layer in sorted({c.layer for c in comps} - set(context.base_resid))
    ]
    if missing:
        raise ValueError(
            f"the shared context lacks {missing}; build it with prepare(model, task, comps, "
            "direction=..., extra_hooks=...) over every component the estimators will see"
        )
    return context


@dataclass(frozen=True)
class EngineRun:
    """What every engine call of one estimator shares.

    Attributes:
        model, task: the model and the task whose metric is differentiated.
        context: the prepared :class:`PatchContext` (deltas, base residual streams).
        meter: counts every pass of the estimator.
        chunk_size: replicates per pass (None: the token budget of :func:`replicate_chunks`).
    """

    model: Model
    task: PatchingTask
    context: PatchContext
    meter: CostMeter
    chunk_size: int | None = None

    @classmethod
    def start(
        cls,
        model: Model,
        task: PatchingTask,
        comps: list[Component],
        *,
        direction: Direction,
        chunk_size: int | None = None,
        context: PatchContext | None = None,
        extra_hooks: tuple[str, ...] = (),
    ) -> EngineRun:
        """A fresh meter and :func:`context_for`'s context (``context`` when shared)."""
        meter = CostMeter()
        ctx = context_for(
            model,
            task,
            comps,
            direction=direction,
            meter=meter,
            context=context,
            extra_hooks=extra_hooks,
        )
        return cls(model, task, ctx, meter, chunk_size)

    def with_context(self, context: PatchContext) -> EngineRun:
        """The same run on another context (e.g. another patch direction at one hook)."""
        return replace(self, context=context)


@dataclass
class PathDerivatives:
    """``g_c(t_c)`` and its derivatives for each component (None where not asked)."""

    g: Tensor
    d1: Tensor | None = None
    d2: Tensor | None = None
    d3: Tensor | None = None

    def select(self, index) -> PathDerivatives:
        """The same derivatives for a subset of the components.

        Args:
            index: anything that indexes a 1-d tensor (a slice, indices, a mask).

        Returns:
            :class:`PathDerivatives` with every field indexed by ``index``.
        """
        pick = lambda x: None if x is None else x[index]  # noqa: E731
        return PathDerivatives(pick(self.g), pick(self.d1), pick(self.d2), pick(self.d3))


def token_bytes(cfg) -> int:
    """Estimated bytes one token of ``cfg``'s model holds in a first-order pass:

        itemsize * (n_layers * (8 d_model + 2 d_mlp) + 2 d_vocab)

    (per layer about eight residual-width and two MLP-width activations kept for the backward
    pass; the logits and their softmax), in the model's dtype."""
    itemsize = torch.empty((), dtype=cfg.dtype).element_size()
    return itemsize * (cfg.n_layers * (8 * cfg.d_model + 2 * cfg.d_mlp) + 2 * cfg.d_vocab)


def pass_tokens(cfg, order: int) -> int:
    """Tokens per pass at autograd ``order`` for ``cfg``'s model:

        TOKENS_PER_PASS[order] * min(1, PASS_MEMORY_BYTES / (token_bytes(cfg) TOKENS_PER_PASS[0]))

    so that a pass's activations stay near :data:`PASS_MEMORY_BYTES` (times the order's share
    of the token budget) however wide the model and its vocabulary; at least one token."""
    scale = min(1.0, PASS_MEMORY_BYTES / (token_bytes(cfg) * TOKENS_PER_PASS[0]))
    return max(1, int(TOKENS_PER_PASS[min(order, 3)] * scale))


def replicate_chunks(
    keys: Sequence[int],
    *,
    rows_per_replicate: int,
    order: int,
    chunk_size: int | None = None,
    cfg: Any = None,
) -> list[list[int]]:
    """How replicates are split into passes (the one chunking rule of the package).

    Args:
        keys: one key per replicate; replicates with different keys (e.g. the components'
            layers, so each pass starts at its layer from the cached base residual stream)
            never share a chunk.
        rows_per_replicate: tokens in one replicate (prompts times positions).
        order: the autograd order of the pass (0..3), which sets the token budget.
        chunk_size: replicates per pass; None fills the token budget ``tokens`` of a pass,
            i.e. ``max(1, tokens // rows_per_replicate)``.
        cfg: the model's config: ``tokens`` is :func:`pass_tokens` ``(cfg, order)``, fewer
            for a wide model; None: :data:`TOKENS_PER_PASS` ``[order]``.

    Returns:
        The indices ``0..len(keys)-1`` in chunks of at most ``chunk_size``, key by key.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1 (got {chunk_size})")
    if chunk_size is None:
        tokens = TOKENS_PER_PASS[min(order, 3)] if cfg is None else pass_tokens(cfg, order)
        chunk_size = max(1, tokens // rows_per_replicate)
    chunks = []
    for key in sorted(set(keys)):
        members = [i for i, k in enumerate(keys) if k == key]
        chunks += [members[i : i + chunk_size] for i in range(0, len(members), chunk_size)]
    return chunks


def progress(chunks: list, desc: str):
    """Iterate over chunks, with a progress bar when there are many.

    Args:
        chunks: the chunks of :func:`replicate_chunks`.
        desc: the progress bar's label.

    Returns:
        An iterator over ``chunks`` (a tqdm bar from :data:`PROGRESS_MIN_CHUNKS` chunks on).
    """
    return tqdm(chunks, desc=desc, leave=False, disable=len(chunks) < PROGRESS_MIN_CHUNKS)


def replicated_metric(
    model: Model,
    task: PatchingTask,
    start: Tensor,
    *,
    replicates: int,
    fwd_hooks: list,
    layer: int | None = None,
) -> Float[Tensor, "replicates"]:  # noqa: F821
    """The metric of each of ``replicates`` copies of the prompt batch in one forward pass.

    Every batched pass of the package runs through here.

    Args:
        model, task: the model and the task whose metric is taken.
        start: the token batch ``[batch, pos]`` (``layer=None``) or the residual stream
            entering ``layer`` ``[batch, pos, d_model]``; it is repeated replicate-major (rows
            ``r * batch ... (r + 1) * batch - 1`` are replicate ``r``).
        replicates: the number of copies.
        fwd_hooks: TransformerLens forward hooks that tell the replicates apart.
        layer: the block the pass starts at (None: from the tokens).

    Returns:
        ``m_r = mean over the prompts of replicate r of the per-prompt metric``, shape
        ``[replicates]``, differentiable where the hooks are.
    """
    repeats = (replicates,) + (1,) * (start.dim() - 1)
    answers = task.answers_for(replicates * task.n_prompts)
    logits, _ = run_with_answer_logits(
        model, start.repeat(*repeats), answers, fwd_hooks=fwd_hooks, layer=layer
    )
    per_prompt = task.answer_metric(logits)
    return check_finite(per_prompt.view(replicates, task.n_prompts).mean(1), "metric")


def stacked_masks(comps: list[Component], members: list[int], like: Tensor) -> Tensor:
    """The masks of some components of one hook, stacked.

    Args:
        comps: components.
        members: indices into ``comps``, all on one hook.
        like: an activation at that hook (for shape, dtype and device).

    Returns:
        ``[len(members), 1, ...]``: ``comps[i].mask`` for ``i`` in ``members``, broadcast to a
        common shape (axis 1 is the batch).
    """
    masks = [comps[i].mask(like.shape, dtype=like.dtype, device=like.device) for i in members]
    common = torch.broadcast_shapes(*[m.shape for m in masks])
    return torch.stack([m.expand(common) for m in masks])


def local_output(
    model: Model,
    ctx: PatchContext,
    *,
    in_hook: str,
    out_hook: str,
    scale: Tensor,
    layer: int,
) -> Tensor:
    """A later hook of the same layer when a whole hook moves along its patch direction.

    One partial forward of block ``layer`` only, from the cached base residual stream.

    Args:
        model: the model.
        ctx: the context (``in_hook``'s delta and ``layer``'s residual stream).
        in_hook: the hook that moves, ``a <- a^b + scale * delta`` on every entry.
        out_hook: the hook read (in block ``layer``, after ``in_hook``).
        scale: the scalar ``s`` (a tensor; the output is differentiable in it).
        layer: the block of ``in_hook`` (``Component.layer``).

    Returns:
        ``out_hook``'s activation ``phi(a^b + s * delta)`` on the base input.
    """
    delta, captured = ctx.deltas[in_hook], {}

    def move(act, hook):
        return act + scale * delta

    def capture(act, hook):
        captured["out"] = act

    with blocks_skipped_before(model, layer):
        model.run_with_hooks(
            ctx.base_resid[layer],
            start_at_layer=layer,
            stop_at_layer=layer + 1,
            fwd_hooks=[(in_hook, move), (out_hook, capture)],
        )
    return captured["out"]


def _replicated_hooks(
    comps: list[Component], chunk: list[int], s: Tensor, ctx: PatchContext, n_prompts: int
) -> list:
    """Forward hooks adding ``s_r * mask_r * delta`` to replicate ``r`` of each activation."""
    hooks = []
    for hook, local in group_by_hook([comps[i] for i in chunk]).items():
        delta = ctx.deltas[hook]
        masks = stacked_masks(comps, [chunk[j] for j in local], delta)  # [n_local, 1, ...]
        rows = torch.tensor(local, device=delta.device)

        def add_perturbation(act, hook=None, masks=masks, rows=rows, delta=delta):
            reps = act.shape[0] // n_prompts
            act = act.view(reps, n_prompts, *act.shape[1:])
            scale = s[rows].view(-1, *[1] * (act.dim() - 1)).to(act.dtype)
            act = act.index_add(0, rows, scale * masks * delta.unsqueeze(0))
            return act.view(reps * n_prompts, *act.shape[2:])

        hooks.append((hook, add_perturbation))
    return hooks


def path_derivatives(
    run: EngineRun,
    comps: list[Component],
    *,
    t: Float[Tensor, "n_components"] | float,  # noqa: F821
    order: int,
) -> PathDerivatives:
    """Each component's patch path and its derivatives at its own ``t``.

    Component ``i`` is replicate ``i`` of a replicated pass that starts at its layer; the
    replicates run in the chunks of :func:`replicate_chunks` (``run.chunk_size``; values do
    not depend on it). ``run.meter`` counts ``n`` forwards and ``n`` backward/hvp/third-order
    passes up to ``order``.

    Args:
        run: the model, task, context, meter and chunk size.
        comps: the components.
        t: one point for all components, or ``t_i`` per component.
        order: the highest derivative (0..3).

    Returns:
        :class:`PathDerivatives` with ``g = g_i(t_i)``, ``d1 = g_i'(t_i)``, ``d2 = g_i''(t_i)``,
        ``d3 = g_i'''(t_i)`` (float64, up to ``order``).
    """
    model, task, ctx, meter = run.model, run.task, run.context, run.meter
    n, n_prompts = len(comps), task.n_prompts
    dtype = ctx.deltas[comps[0].hook].dtype
    t = torch.as_tensor(t, dtype=torch.float64)
    t = t.expand(n).clone() if t.dim() == 0 else t
    if t.shape != (n,):
        raise ValueError(f"t has shape {tuple(t.shape)}; expected a scalar or ({n},)")
    out = {k: torch.zeros(n, dtype=torch.float64) for k in ("g", "d1", "d2", "d3")[: order + 1]}
    layers = [c.layer for c in comps]
    chunks = replicate_chunks(
        layers,
        rows_per_replicate=n_prompts * task.n_positions,
        order=order,
        chunk_size=run.chunk_size,
        cfg=model.cfg,
    )
    for chunk in progress(chunks, f"patch paths (order {order})"):
        s = (
            t[chunk]
            .to(dtype=dtype, device=ctx.base_tokens.device)
            .detach()
            .requires_grad_(order > 0)
        )
        layer = layers[chunk[0]]
        hooks = _replicated_hooks(comps, chunk, s, ctx, n_prompts)
        with autograd_pass(model, order=order):
            values = replicated_metric(
                model,
                task,
                ctx.base_resid[layer],
                replicates=len(chunk),
                fwd_hooks=hooks,
                layer=layer,
            )
            derivs = [values]
            for k in range(order):
                (grad,) = torch.autograd.grad(derivs[-1].sum(), s, create_graph=k + 1 < order)
                derivs.append(grad)
        for key, value in zip(out, derivs, strict=False):
            out[key][chunk] = value.detach().double().cpu()
        meter.add(forward=len(chunk))
        meter.add(**{name: len(chunk) for name in ("backward", "hvp", "third_order")[:order]})
    return PathDerivatives(**out)


def path_derivatives_at(
    run: EngineRun, comps: list[Component], *, nodes: list[float], order: int
) -> list[PathDerivatives]:
    """:func:`path_derivatives` of every component at every node, in one replicated sweep.

    Args:
        run, comps, order: as for :func:`path_derivatives`.
        nodes: the points ``t_k`` (the same for every component).

    Returns:
        One :class:`PathDerivatives` per node: ``g_i^(j)(t_k)`` for every component ``i``.
    """
    if not nodes:
        return []
    n = len(comps)
    stacked = [c for _ in nodes for c in comps]
    ts = torch.tensor([t for t in nodes for _ in comps], dtype=torch.float64)
    path = path_derivatives(run, stacked, t=ts, order=order)
    return [path.select(slice(k * n, (k + 1) * n)) for k in range(len(nodes))]


def hook_gradients(
    run: EngineRun,
    hooks: list[str],
    *,
    replicates: int = 1,
    offsets: dict[str, Tensor] | None = None,
    directions: dict[str, Tensor] | None = None,
    frozen: dict[str, Bool[Tensor, "replicates"]] | None = None,  # noqa: F821
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """Gradients of the metric with respect to whole hooks, per replicate, and optionally
    Hessian-vector products.

    Replicate ``r`` runs the base input with ``a_h <- a_h^b + offsets[h][r]`` at each hook
    (none: the base run itself). A zero tensor that requires grad is added at each hook (the
    weights stay frozen), so one backward pass gives ``grad_{a_h} m_r`` for every hook and
    replicate. The replicates run in the chunks of :func:`replicate_chunks`.

    Args:
        run: as for :func:`path_derivatives` (``replicates`` forwards and backwards are
            counted, and as many hvp passes with ``directions``; values do not depend on
            ``run.chunk_size``).
        hooks: the hooks to differentiate with respect to.
        replicates: the number of replicates ``R``.
        offsets: ``{h: [R, batch, ...]}``, each replicate's shift of ``a_h``.
        directions: ``{h: [R, batch, ...]}``, each replicate's direction ``v_r``.
        frozen: ``{h: bool [R]}``: the replicates whose gradient through hook ``h`` is
            dropped (forward value kept; GradDrop).

    Returns:
        ``(grads, hvps)``: ``grads[h][r] = grad_{a_h} m_r`` and, with ``directions``,
        ``hvps[h][r] = (H_r v_r)_h`` where ``H_r`` is the Hessian of ``m_r`` in all hooked
        activations jointly (else None); each shaped ``[R, batch, ...]``.
    """
    order = 1 if directions is None else 2
    keys = [0] * replicates
    rows = run.task.n_prompts * run.task.n_positions
    chunks = replicate_chunks(
        keys,
        rows_per_replicate=rows,
        order=order,
        chunk_size=run.chunk_size,
        cfg=run.model.cfg,
    )
    grads, hvps = [], []
    for chunk in progress(chunks, "hook gradients"):
        rows = slice(None) if len(chunk) == replicates else torch.tensor(chunk)
        g, v = _hook_gradients_pass(
            run,
            hooks,
            len(chunk),
            _replicate_rows(offsets, rows),
            _replicate_rows(directions, rows),
            _replicate_rows(frozen, rows),
        )
        grads.append(g)
        hvps.append(v)
        run.meter.add(forward=len(chunk), backward=len(chunk), hvp=len(chunk) * (order - 1))
    join = lambda parts: {h: torch.cat([p[h] for p in parts]) for h in hooks}  # noqa: E731
    return join(grads), None if directions is None else join(hvps)


def _replicate_rows(
    fields: dict[str, Tensor] | None, rows: Tensor | slice
) -> dict[str, Tensor] | None:
    """The replicates ``rows`` of per-replicate tensors (axis 0; a slice keeps views)."""
    if fields is None:
        return None
    pick = lambda v: v[rows] if isinstance(rows, slice) else v[rows.to(v.device)]  # noqa: E731
    return {h: pick(v) for h, v in fields.items()}


def _drop_gradient(act: Tensor, hook, drop: Tensor) -> Tensor:
    """``act`` with no gradient through the rows of the replicates where ``drop`` is set."""
    rows = drop.to(act.device).repeat_interleave(act.shape[0] // len(drop))
    return torch.where(rows.view(-1, *[1] * (act.dim() - 1)), act.detach(), act)


def _hook_gradients_pass(
    run: EngineRun,
    hooks: list[str],
    replicates: int,
    offsets: dict[str, Tensor] | None,
    directions: dict[str, Tensor] | None,
    frozen: dict[str, Tensor] | None,
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """One replicated pass of :func:`hook_gradients` (forward, backward, double backward)."""
    model, task, ctx = run.model, run.task, run.context
    n_prompts = task.n_prompts
    zeros = {
        h: torch.zeros(
            (replicates * n_prompts, *ctx.base_acts[h].shape[1:]),
            dtype=ctx.base_acts[h].dtype,
            device=ctx.base_acts[h].device,
            requires_grad=True,
        )
        for h in hooks
    }

    def perturb(act, hook, name):  # name bound per hook: a bridge's hook.name is its own
        shift = zeros[name]
        if offsets is not None and name in offsets:
            shift = shift + offsets[name].reshape(shift.shape).to(act.dtype)
        return act + shift

    fwd_hooks = [(h, partial(perturb, name=h)) for h in hooks]
    fwd_hooks += [
        (h, partial(_drop_gradient, drop=drop))
        for h, drop in (frozen or {}).items()
        if bool(drop.any())
    ]
    layer = min(ctx.base_resid)
    with autograd_pass(model, order=1 if directions is None else 2):
        per_replicate = replicated_metric(
            model,
            task,
            ctx.base_resid[layer],
            replicates=replicates,
            fwd_hooks=fwd_hooks,
            layer=layer,
        )
        leaves = [zeros[h] for h in hooks]
        grads = _zeros_for_unused(
            torch.autograd.grad(
                per_replicate.sum(), leaves, create_graph=directions is not None, allow_unused=True
            ),
            leaves,
        )
        hvps = None
        if directions is not None:
            inner = sum(
                (g * directions[h].reshape(g.shape)).sum()
                for g, h in zip(grads, hooks, strict=True)
            )
            hvps = _second_backward(inner, leaves)
    shape = lambda t: t.detach().view(replicates, n_prompts, *t.shape[1:])  # noqa: E731
    grads_out = {h: shape(g) for h, g in zip(hooks, grads, strict=True)}
    hvps_out = None if hvps is None else {h: shape(v) for h, v in zip(hooks, hvps, strict=True)}
    return grads_out, hvps_out


def _second_backward(inner: Tensor, leaves: list[Tensor]) -> list[Tensor]:
    """Gradient of ``inner`` with respect to ``leaves`` (zeros where it does not depend)."""
    if not inner.requires_grad:  # the metric is linear in every hooked activation
        return [torch.zeros_like(leaf) for leaf in leaves]
    return _zeros_for_unused(torch.autograd.grad(inner, leaves, allow_unused=True), leaves)


def _zeros_for_unused(grads: Sequence[Tensor | None], leaves: list[Tensor]) -> list[Tensor]:
    """autograd's None (output does not depend on the leaf) as zeros."""
    return [torch.zeros_like(z) if g is None else g for g, z in zip(grads, leaves, strict=True)]


def component_inner_products(
    comps: list[Component], fields: dict[str, Tensor], ctx: PatchContext
) -> Tensor:
    """Inner products of per-replicate fields with each component's delta.

    Args:
        comps: components on hooks of ``fields``.
        fields: ``{h: [R, batch, ...]}`` (gradients or Hessian-vector products); hooks no
            component is on are ignored.
        ctx: the context (the deltas).

    Returns:
        ``[R, n]`` float64: ``<field_h[r], delta_c>`` summed over the batch and the
        component's entries (``h`` the component's hook).
    """
    products = {h: fields[h] * ctx.deltas[h].unsqueeze(0) for h in group_by_hook(comps)}
    columns = [c.take(products[c.hook].flatten(0, 1)) for c in comps]
    replicates = next(iter(products.values())).shape[0]
    return torch.stack([col.reshape(replicates, -1).sum(1) for col in columns], dim=1).double()


def union_masks(comps: list[Component], ctx: PatchContext) -> dict[str, Tensor]:
    """Per hook, the entries some component covers.

    Args:
        comps: components on any hooks.
        ctx: the context (for shapes).

    Returns:
        ``{h: mask [1, ...]}``, the elementwise maximum of the masks of the components on ``h``.
    """
    masks = {}
    for hook, members in group_by_hook(comps).items():
        delta = ctx.deltas[hook]
        mask = torch.zeros((1, *delta.shape[1:]), dtype=delta.dtype, device=delta.device)
        for i in members:
            mask = torch.maximum(
                mask, comps[i].mask(delta.shape, dtype=delta.dtype, device=delta.device)
            )
        masks[hook] = mask
    return masks
