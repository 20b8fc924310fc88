"""Loading models as TransformerLens 4 ``TransformerBridge`` objects.

Three sources, one loader (:func:`load_model`):

- ``toy-ioi``, the embedded model: a standard Hugging Face GPT-2 checkpoint in ``data/toy-ioi``;
- any Hugging Face causal LM by name (a TransformerLens alias such as ``gpt2-small`` or a hub id
  such as ``EleutherAI/pythia-160m``), weights from the network or the local Hugging Face cache;
- a local checkpoint directory (``config.json`` plus weights).

Every model runs in TransformerLens compatibility mode *without* weight processing: hook names
are HookedTransformer's (``blocks.{l}.attn.hook_z``, ...), and activations, logits and their
derivatives are the Hugging Face model's own (no folded LayerNorm, no centred weights).

Each model's attention implementation (the Hugging Face ``config._attn_implementation``:
``"eager"``, ``"sdpa"``, ...) is recorded when it is bridged and read with
:func:`attention_implementation`; the engine's second-order passes need it
(:func:`hvp_utils.core.engine.second_order_attention`).
"""

from __future__ import annotations

import difflib
import json
import warnings
import weakref
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge

from hvp_utils.core.toy_model import TOY_MODEL_DIR

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


#: Measured by ``python -m hvp_utils.cli.scaling`` on toy-ioi (see docs/rerun.md): the error of
#: hvp_correction's second-order term g''(0) against float64, as a share of each clear
#: component's own value (max over components).
LOW_PRECISION_G2_ERROR = {torch.bfloat16: 2.8e-2, torch.float16: 1.1e-2}


#: Per model, the attention implementation its Hugging Face model runs, recorded when the
#: package bridges it (:func:`prepare_bridge`); the entry dies with the model.
_ATTENTION_IMPLEMENTATION: weakref.WeakKeyDictionary[TransformerBridge, str | None] = (
    weakref.WeakKeyDictionary()
)


class LowPrecisionWarning(UserWarning):
    """Second-order (HVP) results in bfloat16/float16 carry visible rounding error."""


class UnknownModelError(ValueError):
    """The model name is neither ``toy-ioi``, a known name, a hub id nor a local directory."""


class ModelWeightsUnavailableError(RuntimeError):
    """The model is known but its weights cannot be loaded (no network, no local cache)."""


class UnsupportedArchitectureError(NotImplementedError):
    """A checkpoint whose architecture TransformerLens has no bridge for."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float64"`` -> ``torch.float64``; a ``torch.dtype`` passes through."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))}") from None


def warn_low_precision(dtype: torch.dtype) -> None:
    """Warn that second-order results in ``dtype`` are rounding-limited, with the error
    measured on toy-ioi (a 6-layer model; deeper models accumulate more)."""
    if dtype in LOW_PRECISION_G2_ERROR:
        warnings.warn(
            f"{dtype} model: hvp_correction's second-order term g''(0) was off by up to "
            f"{LOW_PRECISION_G2_ERROR[dtype]:.1%} of its own value against float64 on toy-ioi "
            "(float32: 1e-6), and so are AP and AtP; a correction smaller than that is noise. "
            "Use dtype='float32' (or float64) for second-order results where memory allows.",
            LowPrecisionWarning,
            stacklevel=3,
        )


def is_local_checkpoint(name: str | Path) -> bool:
    """True when ``name`` is a directory holding a Hugging Face ``config.json``."""
    return (Path(name).expanduser() / "config.json").is_file()


def checkpoint_architecture(source: str) -> str:
    """The architecture a local checkpoint's ``config.json`` names (else the source itself)."""
    if not is_local_checkpoint(source):
        return source
    config = json.loads((Path(source) / "config.json").read_text())
    return ", ".join(config.get("architectures") or [config.get("model_type", "?")])


def resolve_model_name(name: str) -> str:
    """What :func:`load_model` hands to ``TransformerBridge.boot_transformers``.

    ``toy-ioi`` -> its directory; a local checkpoint directory -> its absolute path; a
    TransformerLens alias (``gpt2-small``) -> its Hugging Face id (``gpt2``); a hub id
    (``owner/name``) passes through. Anything else raises :class:`UnknownModelError` with
    the closest known names.
    """
    from transformer_lens import supported_models

    if name == TOY_MODEL_NAME:
        if not is_local_checkpoint(TOY_MODEL_DIR):
            raise ModelWeightsUnavailableError(
                f"toy-ioi weights not found in {TOY_MODEL_DIR}. Restore them from git "
                "(`git checkout -- data/toy-ioi`) or retrain with `make toy-model`."
            )
        return str(TOY_MODEL_DIR)
    if is_local_checkpoint(name):
        return str(Path(name).expanduser().resolve())
    if Path(name).expanduser().is_dir():
        raise UnknownModelError(
            f"{name!r} is a directory without config.json; a local checkpoint needs the "
            "config.json and weights that `save_pretrained` writes."
        )
    try:
        return supported_models.get_official_model_name(name)
    except ValueError:
        pass
    if "/" in name:
        return name
    known = [TOY_MODEL_NAME, *supported_models.OFFICIAL_MODEL_NAMES]
    for aliases in supported_models.MODEL_ALIASES.values():
        known.extend(aliases)
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Use 'toy-ioi' (embedded, offline), a TransformerLens "
        "name (transformer_lens.supported_models.OFFICIAL_MODEL_NAMES or an alias such as "
        "'gpt2-small'), a Hugging Face hub id ('owner/name'), or the path of a local "
        "checkpoint directory (containing config.json)."
    )


def load_model(
    name: str = TOY_MODEL_NAME,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    n_devices: int = 1,
    device_map: str | dict | None = None,
    attn_implementation: str | None = None,
    **boot_kwargs,
) -> TransformerBridge:
    """Load ``name`` as a TransformerBridge in compatibility mode, unprocessed, in eval mode.

    Args:
        name: ``"toy-ioi"`` (offline, about a second), a TransformerLens name or alias, a
            Hugging Face hub id, or a local checkpoint directory.
        device: where the model runs (``"cpu"``, ``"cuda"``, ...).
        dtype: parameter dtype (``"float32"``, ``"float64"``, ``"bfloat16"``, ...).
        n_devices: spread the layers over this many devices (``device_map="auto"`` style, via
            ``boot_transformers(n_devices=...)``); 1 keeps the model on ``device``.
        device_map: a Hugging Face device map (``"auto"`` or ``{module: device}``), passed to
            ``boot_transformers``; overrides ``n_devices``.
        attn_implementation: the attention implementation the Hugging Face model runs
            (``"eager"``, ``"sdpa"``, ...; see :func:`prepare_bridge`); None keeps
            TransformerLens's choice (eager).
        **boot_kwargs: further ``TransformerBridge.boot_transformers`` keywords (``revision``,
            ``trust_remote_code``, ``hf_config_overrides``, ``max_memory``, ...).

    Returns:
        The model, its parameters frozen (``requires_grad=False``): every derivative the
        package takes is with respect to activations; its attention implementation is
        recorded (:func:`attention_implementation`).
    """
    torch_dtype = resolve_dtype(dtype)
    warn_low_precision(torch_dtype)
    source = resolve_model_name(name)
    placement = {"device_map": device_map} if device_map is not None else {}
    if n_devices > 1 and device_map is None:
        placement = {"n_devices": n_devices}
    if not placement:
        placement = {"device": device}
    try:
        model = _boot(
            source,
            attn_implementation=attn_implementation,
            dtype=torch_dtype,
            **placement,
            **boot_kwargs,
        )
    except (OSError, ConnectionError) as err:
        raise ModelWeightsUnavailableError(
            f"could not load the weights of {source!r}: {err}\n"
            "This machine cannot download them. Either run once where the Hugging Face hub is "
            "reachable (the weights land in the cache, ~/.cache/huggingface, or $HF_HOME), copy "
            "that cache here and set HF_HUB_OFFLINE=1, or pass a local checkpoint directory; "
            "or use the embedded model model_name='toy-ioi'."
        ) from err
    except (ValueError, KeyError, NotImplementedError) as err:
        if "architecture" in str(err).lower() or "not supported" in str(err).lower():
            raise UnsupportedArchitectureError(
                f"TransformerLens has no bridge for {checkpoint_architecture(source)} "
                f"({source!r}): {err}"
            ) from err
        raise
    return model


def _boot(source: str, *, attn_implementation: str | None, **kwargs) -> TransformerBridge:
    """``boot_transformers`` with its load-time progress bars off, then :func:`prepare_bridge`."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = TransformerBridge.boot_transformers(source, **kwargs)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return prepare_bridge(model, attn_implementation=attn_implementation)


def prepare_bridge(
    model: TransformerBridge, *, attn_implementation: str | None = None
) -> TransformerBridge:
    """Compatibility mode without weight processing, eval mode, frozen parameters, and the
    attention implementation recorded.

    Args:
        model: a freshly booted bridge.
        attn_implementation: switch the Hugging Face model to this attention implementation
            first (its ``set_attn_implementation``): ``"eager"``, ``"sdpa"``, ... None keeps the
            one it runs (TransformerLens boots eager). Second-order results need ``"eager"`` or
            ``"sdpa"`` (:func:`hvp_utils.core.engine.second_order_attention`), and attention
            bridges that delegate to the Hugging Face module fire ``hook_pattern`` only in eager.

    Returns:
        ``model``, with :func:`attention_implementation` recorded from its Hugging Face model.
    """
    if attn_implementation is not None:
        model.original_model.set_attn_implementation(attn_implementation)
    _record_attention_implementation(model)
    model.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    model.eval()
    model.requires_grad_(False)
    return model


def attention_implementation(model: TransformerBridge) -> str | None:
    """The attention implementation the model's Hugging Face model runs.

    Returns:
        Its ``config._attn_implementation`` (``"eager"``, ``"sdpa"``, ``"flash_attention_2"``,
        ``"flex_attention"``, ...) as recorded when :func:`load_model` or
        :func:`from_hf_model` bridged it (a bridge made elsewhere is read and recorded on
        first use); None when the config names none. Change it by loading again with
        ``attn_implementation=...``.
    """
    if model not in _ATTENTION_IMPLEMENTATION:
        _record_attention_implementation(model)
    return _ATTENTION_IMPLEMENTATION[model]


def _record_attention_implementation(model: TransformerBridge) -> None:
    """Record ``config._attn_implementation`` of the bridge's Hugging Face model (None if
    absent) as the model's :func:`attention_implementation`."""
    config = getattr(model.original_model, "config", None)
    _ATTENTION_IMPLEMENTATION[model] = getattr(config, "_attn_implementation", None)


def from_hf_model(
    hf_model,
    tokenizer,
    *,
    name: str = "in-memory",
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
) -> TransformerBridge:
    """Wrap a ``transformers`` causal LM held in memory (e.g. a random-initialised config)
    as the same kind of model :func:`load_model` returns.

    Args:
        hf_model: a ``transformers`` causal LM (``GPT2LMHeadModel``, ``LlamaForCausalLM``, ...).
        tokenizer: its tokenizer (a real bos token is needed; TransformerLens prepends it).
        name: a label for the model.
        dtype: cast the model to this dtype first (``boot_transformers`` does not cast an
            in-memory model); None keeps its dtype.
        attn_implementation: the attention implementation to run (see :func:`prepare_bridge`);
            None: TransformerLens's choice, eager (it switches an in-memory model to eager
            whatever it was built with).
    """
    if dtype is not None:
        hf_model = hf_model.to(resolve_dtype(dtype))
    param = next(hf_model.parameters())
    model = TransformerBridge.boot_transformers(
        name, hf_model=hf_model.eval(), tokenizer=tokenizer, device=param.device, dtype=param.dtype
    )
    return prepare_bridge(model, attn_implementation=attn_implementation)


def load_local_checkpoint(
    path: str | Path, *, device: str = "cpu", dtype: str | torch.dtype = "float32", **kwargs
) -> TransformerBridge:
    """A local Hugging Face checkpoint directory, fully offline (:func:`load_model` on a path,
    which must hold a ``config.json``)."""
    if not is_local_checkpoint(path):
        raise UnknownModelError(f"{str(path)!r} holds no config.json; it is not a checkpoint")
    return load_model(str(path), device=device, dtype=dtype, **kwargs)
