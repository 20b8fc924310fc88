"""The embedded model ``toy-ioi``: a small GPT-2-style HookedTransformer trained on IOI text.

``python -m hvp_utils.core.toy_model`` (``make toy-model``) trains it from a fixed seed on a CPU and
writes ``data/toy-ioi/`` (weights as safetensors, ``config.json``, the word-level tokenizer).
The same seed, step count and thread count give the same weights.

The corpus is generated on the fly: 70% completed IOI sentences from the training templates
(held-out (template, IO, S) combinations excluded), 30% other sentences over the same words,
so the model is a language model that happens to solve IOI, not a classifier.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from jaxtyping import Int
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from hvp_utils.core.ioi_text import (
    DATA_DIR,
    ioi_vocab,
    sample_heldout_prompts,
)

TOY_MODEL_DIR = DATA_DIR / "toy-ioi"
BOS, PAD, UNK, EOS = "<|bos|>", "<|pad|>", "<|unk|>", "<|eos|>"

#: Architecture of toy-ioi (HookedTransformerConfig keyword arguments, d_vocab added at build).
TOY_ARCHITECTURE = dict(
    n_layers=4,
    d_model=128,
    n_heads=8,
    d_head=16,
    d_mlp=512,
    n_ctx=32,
    act_fn="gelu",
    normalization_type="LN",
    positional_embedding_type="standard",
    default_prepend_bos=True,
)


def build_tokenizer(words: list[str], directory: Path):
    """Word-level tokenizer (WordLevel + WhitespaceSplit) with explicit bos/pad/unk/eos.

    It is saved with ``save_pretrained`` and reloaded from ``directory``: TransformerLens
    needs the reloaded ``PreTrainedTokenizerFast`` with a real bos token, or it silently
    drops the first word.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    specials = [BOS, PAD, UNK, EOS]
    vocab = {tok: i for i, tok in enumerate(specials + list(words))}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, pad_token=PAD, unk_token=UNK, eos_token=EOS
    )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    return load_tokenizer(directory)


def load_tokenizer(directory: Path):
    """Reload the saved word-level tokenizer."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def build_model(tokenizer, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0):
    """A freshly initialised toy-ioi architecture for ``tokenizer``."""
    cfg = HookedTransformerConfig(
        **TOY_ARCHITECTURE, d_vocab=len(tokenizer), seed=seed, dtype=dtype, device=device
    )
    return HookedTransformer(cfg, tokenizer=tokenizer)


def encode_batch(tokenizer, sentences: list[str]) -> tuple[Int[Tensor, "b p"], Tensor]:
    """Token ids with a leading bos, right-padded; and the mask of real (non-pad) tokens."""
    ids = [
        [tokenizer.bos_token_id] + tokenizer.encode(s, add_special_tokens=False) for s in sentences
    ]
    width = max(len(x) for x in ids)
    tokens = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    for row, x in enumerate(ids):
        tokens[row, : len(x)] = torch.tensor(x)
    return tokens, tokens != tokenizer.pad_token_id


@torch.no_grad()
def ioi_quality(model: HookedTransformer, n_prompts: int = 400, seed: int = 1234) -> dict:
    """Accuracy (IO logit > S logit) and mean logit difference on held-out IOI prompts."""
    rng = random.Random(seed)
    prompts = sample_heldout_prompts(rng, n_prompts, ioi_vocab()["names"])
    tokenizer = model.tokenizer
    tokens, mask = encode_batch(tokenizer, [p.text for p in prompts])
    last = mask.sum(1) - 1
    logits = model(tokens)[torch.arange(len(prompts)), last]
    io = torch.tensor([tokenizer.convert_tokens_to_ids(p.io) for p in prompts])
    s = torch.tensor([tokenizer.convert_tokens_to_ids(p.s) for p in prompts])
    rows = torch.arange(len(prompts))
    diff = logits[rows, io] - logits[rows, s]
    return {"accuracy": (diff > 0).float().mean().item(), "logit_diff": diff.mean().item()}


def save_model(model: HookedTransformer, out_dir: Path, record: dict) -> None:
    """Write ``model.safetensors`` and ``config.json`` (architecture plus training record)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "model.safetensors"))
    config = {
        "architecture": {**TOY_ARCHITECTURE, "d_vocab": model.cfg.d_vocab},
        "training": record,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_toy_model(
    directory: Path = TOY_MODEL_DIR, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> HookedTransformer:
    """Load toy-ioi (or any directory written by :func:`save_model`) offline."""
    config_file, weights_file = directory / "config.json", directory / "model.safetensors"
    if not weights_file.exists() or not config_file.exists():
        raise FileNotFoundError(
            f"toy-ioi weights not found in {directory}. Restore them from git "
            "(`git checkout -- data/toy-ioi`) or retrain with `make toy-model`."
        )
    architecture = json.loads(config_file.read_text())["architecture"]
    tokenizer = load_tokenizer(directory / "tokenizer")
    cfg = HookedTransformerConfig(**architecture, dtype=dtype, device=device)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    state = load_file(str(weights_file))
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
    torch.nn.Module.to(model, device)  # HookedTransformer.to would print a notice
    model.eval()
    return model
