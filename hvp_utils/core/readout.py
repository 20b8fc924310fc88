"""The metric from the final residual stream: two logits at one position, not the vocabulary.

The IOI metric reads ``logit(IO) - logit(S)`` at the final position. The full unembedding
computes ``d_vocab`` logits at every position (50,257 x positions for GPT-2), which dominates
the cost of a small model. Here the forward pass stops after the final norm and only the
answer columns of the unembedding are applied at the final position:

    logit_b(c) = cap * tanh( (LN_final(x_b[-1]) . W_U[:, c] + b_U[c]) / cap )

(the soft-cap only where the model has one, e.g. Gemma 2). This is exact: the same numbers as
``model(tokens)[:, -1].gather(...)``, verified in the tests against the full logits.

Two bridge specifics live here and nowhere else. The pass ends at :data:`FINAL_NORM_HOOK`
with the bridge's own early-stop signal (``StopAtLayerException``, which ``forward``
returns as its output, as for ``stop_at_layer``, which can only stop before a block). And a
pass started at a layer skips the blocks before it (:func:`blocks_skipped_before`), a
version-guarded workaround probed bit-identical per model.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from functools import partial
from importlib.metadata import version

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.exceptions import StopAtLayerException
from transformer_lens.utilities import get_act_name

#: The hook after the final norm: the pass stops there.
FINAL_NORM_HOOK = "ln_final.hook_out"
#: TransformerLens releases on which skipping the blocks before ``start_at_layer`` was
#: verified to change nothing (``tests/test_readout.py``); on any other release nothing is
#: skipped (the same numbers, more compute) until the tests pass there and it is added here.
SKIPPING_VERIFIED_ON = ("4.3",)
#: Per model, whether the skipping is exact (probed once; the entry dies with the model).
_SKIPPING_IS_EXACT: weakref.WeakKeyDictionary[TransformerBridge, bool] = weakref.WeakKeyDictionary()


def _stop_the_pass(act: Tensor, hook) -> None:
    """End the forward pass here with ``act`` as its output: the bridge's own early-stop
    signal, which its ``forward`` returns as the result (as for ``stop_at_layer``)."""
    raise StopAtLayerException(act)


def _pass_through(hidden_states: Tensor | None = None, *args, **kwargs) -> Tensor:
    """A Hugging Face decoder layer that returns its input."""
    return hidden_states if hidden_states is not None else args[0]


@contextmanager
def blocks_skipped_before(model: TransformerBridge, layer: int | None):
    """Within the context, the blocks ``0 .. layer-1`` return their input instead of
    computing.

    The bridge's ``start_at_layer`` (TransformerLens 4.3) still runs every earlier block on
    the injected residual and then discards its output. This workaround, the only place
    the package touches the bridge's internals, replaces the ``forward`` of those blocks'
    Hugging Face layers (``block.original_component``) by :func:`_pass_through` for the
    duration of the context. It acts only where :func:`skipping_is_exact` holds (a release
    in :data:`SKIPPING_VERIFIED_ON` and a bit-identical probe on this model); elsewhere the
    context does nothing.
    """
    if not layer or not skipping_is_exact(model):
        yield
        return
    with _layers_passing_through(model, layer):
        yield


@contextmanager
def _layers_passing_through(model: TransformerBridge, layer: int):
    """The Hugging Face layers of blocks ``0 .. layer-1`` return their input (restored on
    exit)."""
    hf_layers = [block.original_component for block in model.blocks[:layer]]
    for hf_layer in hf_layers:
        hf_layer.forward = _pass_through
    try:
        yield
    finally:
        for hf_layer in hf_layers:
            del hf_layer.forward


def skipping_is_exact(model: TransformerBridge) -> bool:
    """Whether :func:`blocks_skipped_before` leaves a pass started at the last layer
    bit-for-bit unchanged on this model.

    False on a TransformerLens release outside :data:`SKIPPING_VERIFIED_ON` and on a
    one-layer model; else probed once per model (cached while the model lives): a pass
    from the last layer's residual stream, with and without the earlier layers skipped,
    must give equal logits. An architecture whose layer loop cannot take a layer's input
    back as its output fails the probe with the error its loop raises, and is not skipped.
    """
    if model not in _SKIPPING_IS_EXACT:
        _SKIPPING_IS_EXACT[model] = _probe_skipping(model)
    return _SKIPPING_IS_EXACT[model]


def _probe_skipping(model: TransformerBridge) -> bool:
    """Logits from the last layer's residual stream, equal with and without skipping."""
    release = ".".join(version("transformer_lens").split(".")[:2])
    last = model.cfg.n_layers - 1
    if release not in SKIPPING_VERIFIED_ON or last < 1:
        return False
    tokens = torch.arange(min(6, model.cfg.d_vocab), device=model.W_U.device).unsqueeze(0)
    name = get_act_name("resid_pre", last)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=name)
        plain = model.run_with_hooks(cache[name], start_at_layer=last)
        try:
            with _layers_passing_through(model, last):
                skipped = model.run_with_hooks(cache[name], start_at_layer=last)
        except (TypeError, IndexError, RuntimeError):  # the loop rejects a passed-through input
            return False
    return torch.equal(plain, skipped)


def final_normalized(
    model: TransformerBridge,
    start: Tensor,
    *,
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
        ``LN_final(x)`` at every position; the unembedding is never computed (the pass
        ends at :data:`FINAL_NORM_HOOK`).
    """
    hooks = [*fwd_hooks, (FINAL_NORM_HOOK, _stop_the_pass)]
    with blocks_skipped_before(model, layer):
        return model.run_with_hooks(start, start_at_layer=layer, fwd_hooks=hooks)


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
    *,
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
    normalized = final_normalized(model, start, fwd_hooks=hooks, layer=layer)
    return answer_logits(model, normalized, answers), stored
