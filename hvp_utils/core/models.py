"""Loading models: the embedded ``toy-ioi`` offline, anything TransformerLens knows by name, and
local Hugging Face checkpoint directories (a folder with ``config.json`` and weights)."""

from __future__ import annotations

import difflib
import inspect
import json
import re
import tempfile
import warnings
from functools import cache
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from hvp_utils.core.toy_model import TOY_MODEL_DIR, load_toy_model

TOY_MODEL_NAME = "toy-ioi"
#: HookedTransformer weight processing for local checkpoints: off by default, like toy-ioi, so
#: hooked activations and logits equal the Hugging Face model's; pass ``fold_ln=True`` etc.
PROCESSING_DEFAULTS = dict(
    fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False
)

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
LOW_PRECISION_G2_ERROR = {torch.bfloat16: 1.9e-2, torch.float16: 1.8e-3}


class LowPrecisionWarning(UserWarning):
    """Second-order (HVP) results in bfloat16/float16 carry visible rounding error."""


class UnknownModelError(ValueError):
    """The model name is neither ``toy-ioi`` nor a name TransformerLens knows."""


class ModelWeightsUnavailableError(RuntimeError):
    """The model is known but its weights cannot be loaded (no network, no local cache)."""


class UnsupportedArchitectureError(NotImplementedError):
    """A local checkpoint whose architecture TransformerLens cannot convert."""


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
    measured on toy-ioi (a 4-layer model; deeper models accumulate more)."""
    if dtype in LOW_PRECISION_G2_ERROR:
        warnings.warn(
            f"{dtype} model: hvp_correction's second-order term g''(0) was off by up to "
            f"{LOW_PRECISION_G2_ERROR[dtype]:.1%} of its own value against float64 on toy-ioi "
            "(float32: 1e-6), and so are AP and AtP; a correction smaller than that is noise. "
            "Use dtype='float32' (or float64) for second-order results where memory allows.",
            LowPrecisionWarning,
            stacklevel=3,
        )


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
            f"unknown model {name!r}.{hint} Use 'toy-ioi' (embedded, offline), a name from "
            "transformer_lens.loading_from_pretrained.OFFICIAL_MODEL_NAMES, or the path of a "
            "local Hugging Face checkpoint directory (containing config.json)."
        ) from None


def is_local_checkpoint(name: str | Path) -> bool:
    """True when ``name`` is a directory holding a Hugging Face ``config.json``."""
    return (Path(name).expanduser() / "config.json").is_file()


def load_model(
    name: str = TOY_MODEL_NAME,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    n_devices: int = 1,
    **from_pretrained_kwargs,
) -> HookedTransformer:
    """Load ``name`` as a HookedTransformer in eval mode.

    ``toy-ioi`` loads offline from ``data/toy-ioi`` in about a second. A directory with a
    ``config.json`` loads as a local Hugging Face checkpoint (:func:`load_local_checkpoint`).
    Any other name goes through ``HookedTransformer.from_pretrained`` (weights from the network
    or the local Hugging Face cache); ``n_devices`` spreads layers over several GPUs.
    """
    torch_dtype = resolve_dtype(dtype)
    warn_low_precision(torch_dtype)
    with warnings.catch_warnings():
        # transformer-lens 3.x announces HookedTransformer's removal in 4.0 on every build;
        # silenced here only, not for the whole process.
        warnings.filterwarnings(
            "ignore", message="HookedTransformer is deprecated", category=DeprecationWarning
        )
        return _load(name, device, torch_dtype, n_devices, **from_pretrained_kwargs)


def _load(name: str, device: str, torch_dtype: torch.dtype, n_devices: int, **kwargs):
    if name == TOY_MODEL_NAME:
        return load_toy_model(TOY_MODEL_DIR, device=device, dtype=torch_dtype)
    if is_local_checkpoint(name):
        return load_local_checkpoint(name, device, torch_dtype, n_devices, **kwargs)
    official = official_model_name(name)
    try:
        model = HookedTransformer.from_pretrained(
            official,
            device=device,
            dtype=torch_dtype,
            n_devices=n_devices,
            **kwargs,
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


def load_local_checkpoint(
    path: str | Path,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    n_devices: int = 1,
    **kwargs,
) -> HookedTransformer:
    """A local Hugging Face causal-LM checkpoint as a HookedTransformer, fully offline.

    The weights load with ``AutoModelForCausalLM`` and the tokenizer with ``AutoTokenizer``
    from ``path``; TransformerLens converts the config (:func:`local_checkpoint_config`) and
    the weights of the checkpoint's architecture. Weight processing keyword arguments
    (``fold_ln``, ``center_writing_weights``, ``center_unembed``, ``fold_value_biases``) default
    to off; the others go to ``AutoModelForCausalLM.from_pretrained``.
    """
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path).expanduser().resolve()
    hf_cfg = json.loads((path / "config.json").read_text())
    check_architecture(checkpoint_architecture(hf_cfg), hf_cfg.get("model_type", "?"))
    processing = {k: kwargs.pop(k, v) for k, v in PROCESSING_DEFAULTS.items()}
    kwargs.setdefault("dtype", dtype)  # a 9B checkpoint in bfloat16 must not load as float32
    hf_model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    hf_model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    cfg = local_checkpoint_config(path, hf_model, device, dtype, n_devices, processing["fold_ln"])
    state = loading.get_pretrained_state_dict(str(path), cfg, hf_model, dtype=dtype)
    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state, **processing)
    model.move_model_modules_to_device()
    del hf_model
    model.eval()
    return model


def local_checkpoint_config(
    path: Path,
    hf_model,
    device: str,
    dtype: torch.dtype,
    n_devices: int,
    fold_ln: bool = False,
) -> HookedTransformerConfig:
    """The HookedTransformerConfig of a local checkpoint, read from its ``config.json``.

    TransformerLens 3.9 converts a local ``config.json`` only through its architecture
    branches (``LlamaForCausalLM``, ``GPT2LMHeadModel``, ...), and it picks some families from
    substrings of the path (``llama``, ``gemma``). The config is therefore copied to a neutral
    temporary directory, with ``architectures`` filled in from the loaded model class.
    """
    from transformer_lens import loading_from_pretrained as loading

    hf_cfg = json.loads((path / "config.json").read_text())
    architecture = type(hf_model).__name__
    with tempfile.TemporaryDirectory(prefix="hf-config-") as tmp:
        patched = {**legacy_fields(hf_cfg), **hf_cfg, "architectures": [architecture]}
        (Path(tmp) / "config.json").write_text(json.dumps(patched))
        cfg = loading.get_pretrained_model_config(
            tmp,
            hf_cfg=hf_model.config.to_dict(),
            fold_ln=fold_ln,
            device=device,
            n_devices=n_devices,
            dtype=dtype,
        )
    cfg.model_name = path.name
    cfg.tokenizer_name = str(path)
    return cfg


#: Config fields TransformerLens reads that newer ``transformers`` no longer write, and the
#: field each is copied from (GPT-2's ``n_ctx`` is its ``n_positions``).
LEGACY_FIELDS = {"n_ctx": "n_positions"}


def legacy_fields(hf_cfg: dict) -> dict:
    """Values for the :data:`LEGACY_FIELDS` a ``config.json`` lacks but can derive."""
    return {old: hf_cfg[new] for old, new in LEGACY_FIELDS.items() if new in hf_cfg}


@cache
def convertible_architectures() -> tuple[str, ...]:
    """Hugging Face architecture class names whose config TransformerLens converts by
    architecture (not by official model name), read from ``convert_hf_model_config``."""
    from transformer_lens import loading_from_pretrained as loading

    source = inspect.getsource(loading.convert_hf_model_config)
    names = set(re.findall(r'architecture == "(\w+)"', source))
    return tuple(sorted(n for n in names if n.endswith(("ForCausalLM", "LMHeadModel"))))


def checkpoint_architecture(hf_cfg: dict) -> str:
    """The causal-LM class a ``config.json`` loads as with ``AutoModelForCausalLM``: the class
    registered for its ``model_type``, else its first ``architectures`` entry."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = hf_cfg.get("model_type", "?")
    listed = hf_cfg.get("architectures") or [f"<no causal LM for model_type {model_type!r}>"]
    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, listed[0])


def check_architecture(architecture: str, model_type: str) -> None:
    """Raise :class:`UnsupportedArchitectureError` naming what is missing for ``architecture``."""
    supported = convertible_architectures()
    if architecture in supported:
        return
    by_name = "gemma" in model_type.lower() or "olmo" in model_type.lower()
    reason = (
        "TransformerLens derives this family's configuration from official model names only, "
        "not from a config.json"
        if by_name
        else "TransformerLens has no config and weight converter for it"
    )
    raise UnsupportedArchitectureError(
        f"cannot load a local checkpoint of architecture {architecture} (model_type "
        f"{model_type!r}): {reason}. Local checkpoints work for {', '.join(supported)}. If this "
        "is an official model, put it in the Hugging Face cache and pass its TransformerLens "
        "name instead."
    )
