"""Loading models: the embedded ``toy-ioi`` offline, anything TransformerLens knows by name."""

from __future__ import annotations

import difflib

import torch
from transformer_lens import HookedTransformer

from hvp_utils.toy_model import TOY_MODEL_DIR, load_toy_model

TOY_MODEL_NAME = "toy-ioi"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float64": torch.float64,
    "fp64": torch.float64,
    "double": torch.float64,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


class UnknownModelError(ValueError):
    """The model name is neither ``toy-ioi`` nor a name TransformerLens knows."""


class ModelWeightsUnavailableError(RuntimeError):
    """The model is known but its weights cannot be loaded (no network, no local cache)."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float64"`` -> ``torch.float64``; a ``torch.dtype`` passes through."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))}") from None


def official_model_name(name: str) -> str:
    """TransformerLens's official name for ``name``, or an error listing close matches."""
    from transformer_lens import loading_from_pretrained as loading

    try:
        return loading.get_official_model_name(name)
    except ValueError:
        known = [TOY_MODEL_NAME, *loading.OFFICIAL_MODEL_NAMES]
        for aliases in loading.MODEL_ALIASES.values():
            known.extend(aliases)
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Use 'toy-ioi' (embedded, offline) or a name from "
            "transformer_lens.loading_from_pretrained.OFFICIAL_MODEL_NAMES."
        ) from None


def load_model(
    name: str = TOY_MODEL_NAME,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    n_devices: int = 1,
    **from_pretrained_kwargs,
) -> HookedTransformer:
    """Load ``name`` as a HookedTransformer in eval mode.

    ``toy-ioi`` loads offline from ``data/toy-ioi`` in about a second. Any other name goes
    through ``HookedTransformer.from_pretrained`` (weights from the network or the local
    Hugging Face cache); ``n_devices`` spreads layers over several GPUs.
    """
    torch_dtype = resolve_dtype(dtype)
    if name == TOY_MODEL_NAME:
        return load_toy_model(TOY_MODEL_DIR, device=device, dtype=torch_dtype)
    official = official_model_name(name)
    try:
        model = HookedTransformer.from_pretrained(
            official,
            device=device,
            dtype=torch_dtype,
            n_devices=n_devices,
            **from_pretrained_kwargs,
        )
    except (OSError, ConnectionError) as err:
        raise ModelWeightsUnavailableError(
            f"could not load the weights of {official!r}: {err}\n"
            "This machine cannot download them. Either run once where the Hugging Face hub is "
            "reachable (the weights land in the cache, ~/.cache/huggingface, or $HF_HOME), copy "
            "that cache here and set HF_HUB_OFFLINE=1; or use the embedded model "
            "model_name='toy-ioi'."
        ) from err
    model.eval()
    return model
