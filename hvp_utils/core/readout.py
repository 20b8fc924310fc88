"""The metric from the final residual stream: two logits at one position, not the vocabulary.

The IOI metric reads ``logit(IO) - logit(S)`` at the final position. The full unembedding
computes ``d_vocab`` logits at every position (50,257 x positions for GPT-2), which dominates
the cost of a small model. Here the forward pass stops after the final norm and only the
answer columns of the unembedding are applied at the final position:

    logit_b(c) = cap * tanh( (LN_final(x_b[-1]) . W_U[:, c] + b_U[c]) / cap )

(the soft-cap only where the model has one, e.g. Gemma 2). This is exact: the same numbers as
``model(tokens)[:, -1].gather(...)``, verified in the tests against the full logits.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.utilities import get_act_name

#: The hook after the final norm: the pass stops there.
FINAL_NORM_HOOK = "ln_final.hook_out"


class _FinalNormReached(Exception):  # noqa: N818 (control flow, not an error)
    """Raised at :data:`FINAL_NORM_HOOK` to stop the forward pass before the unembedding."""

    def __init__(self, normalized: Tensor) -> None:
        super().__init__()
        self.normalized = normalized


def _stop_at_final_norm(act: Tensor, hook) -> None:
    raise _FinalNormReached(act)


def _pass_through(hidden_states: Tensor | None = None, *args, **kwargs) -> Tensor:
    return hidden_states if hidden_states is not None else args[0]


@contextmanager
def blocks_skipped_before(model: TransformerBridge, layer: int | None):
    """Within the context, the Hugging Face layers of blocks ``0 .. layer-1`` return their
    input instead of computing.

    A bridge's ``start_at_layer`` runs every earlier block on the injected residual and then
    discards its output; skipping them changes no value (checked once per model by
    :func:`skipping_is_exact`, else nothing is skipped) and saves their compute.
    """
    if not layer or not skipping_is_exact(model):
        yield
        return
    layers = [block.original_component for block in model.blocks[:layer]]
    for hf_layer in layers:
        hf_layer.forward = _pass_through
    try:
        yield
    finally:
        for hf_layer in layers:
            del hf_layer.forward


def skipping_is_exact(model: TransformerBridge) -> bool:
    """Whether :func:`blocks_skipped_before` leaves a pass started at the last layer
    bit-for-bit unchanged on this model (probed once, cached on the model)."""
    cached = getattr(model, "_hvp_skipping_is_exact", None)
    if cached is not None:
        return cached
    model._hvp_skipping_is_exact = False
    last = model.cfg.n_layers - 1
    if last < 1:
        return False
    tokens = torch.arange(min(6, model.cfg.d_vocab), device=model.W_U.device).unsqueeze(0)
    name = get_act_name("resid_pre", last)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=name)
        resid = cache[name]
        plain = model.run_with_hooks(resid, start_at_layer=last)
        model._hvp_skipping_is_exact = True
        try:
            with blocks_skipped_before(model, last):
                skipped = model.run_with_hooks(resid, start_at_layer=last)
            exact = torch.equal(plain, skipped)
        except Exception:  # noqa: BLE001 (an architecture whose layers cannot be skipped)
            exact = False
    model._hvp_skipping_is_exact = exact
    return exact


def final_normalized(
    model: TransformerBridge,
    start: Tensor,
    fwd_hooks: list | tuple = (),
    layer: int | None = None,
) -> Float[Tensor, "rows pos d_model"]:
    """The residual stream after the final norm, with ``fwd_hooks`` applied.

    Args:
        model: the model.
        start: tokens ``[rows, pos]`` (``layer=None``) or the residual stream entering
            ``layer`` ``[rows, pos, d_model]``.
        fwd_hooks: TransformerLens forward hooks, as for ``run_with_hooks``.
        layer: the block the pass starts at (None: from the tokens).

    Returns:
        ``LN_final(x)`` at every position; the unembedding is never computed.
    """
    hooks = [*fwd_hooks, (FINAL_NORM_HOOK, _stop_at_final_norm)]
    try:
        with blocks_skipped_before(model, layer):
            model.run_with_hooks(start, start_at_layer=layer, fwd_hooks=hooks)
    except _FinalNormReached as stop:
        return stop.normalized
    raise RuntimeError(f"the forward pass never reached {FINAL_NORM_HOOK!r}")


def answer_logits(
    model: TransformerBridge,
    normalized: Float[Tensor, "rows pos d_model"],
    answers: Int[Tensor, "rows k"],
) -> Float[Tensor, "rows k"]:
    """``logit_b(answers[b, j])`` at the final position from the normalized residual.

    Args:
        model: the model (its ``W_U``, ``b_U`` and any output soft-cap).
        normalized: :func:`final_normalized`'s output.
        answers: token ids per row.

    Returns:
        ``softcap(LN_final(x_b[-1]) . W_U[:, a_bj] + b_U[a_bj])``, shape ``[rows, k]``.
    """
    final = normalized[:, -1, :]
    answers = answers.to(final.device)
    columns = model.W_U.T.to(final.device)[answers]  # [rows, k, d_model]
    logits = torch.einsum("rd,rkd->rk", final, columns.to(final.dtype))
    bias = getattr(model, "b_U", None)
    if bias is not None:
        logits = logits + bias.to(final.device, final.dtype)[answers]
    cap = getattr(model.cfg, "output_logits_soft_cap", None) or 0.0
    if cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return logits


def run_with_answer_logits(
    model: TransformerBridge,
    start: Tensor,
    answers: Int[Tensor, "rows k"],
    fwd_hooks: list | tuple = (),
    layer: int | None = None,
    cache: tuple[str, ...] = (),
) -> tuple[Float[Tensor, "rows k"], dict[str, Tensor]]:
    """One forward pass: the answer logits at the final position and, optionally, a cache.

    Args:
        model, start, fwd_hooks, layer: as for :func:`final_normalized`.
        answers: token ids per row of ``start``.
        cache: hook names whose activations to keep (detached), e.g. for a patching context.

    Returns:
        ``(answer_logits, {hook: activation})``.
    """
    stored: dict[str, Tensor] = {}

    def keep(act: Tensor, hook, name: str) -> None:
        stored[name] = act.detach()

    hooks = [*fwd_hooks, *[(name, partial(keep, name=name)) for name in cache]]
    normalized = final_normalized(model, start, hooks, layer)
    return answer_logits(model, normalized, answers), stored
