"""The embedded model ``toy-ioi``: a small GPT-2 trained on IOI text, as a standard checkpoint.

``data/toy-ioi/`` is an ordinary Hugging Face GPT-2 checkpoint (``config.json``,
``model.safetensors``, a ``tokenizers`` WordLevel tokenizer, ``training.json``), so
``transformers.AutoModelForCausalLM.from_pretrained("data/toy-ioi")`` and
``TransformerBridge.boot_transformers("data/toy-ioi")`` load it with no project code.
``python -m hvp_utils.cli.train_toy`` (``make toy-model``) trains it from a fixed seed on a CPU
and writes that directory; the same seed, step count and thread count give the same weights.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from hvp_utils.core.ioi_text import (
    DATA_DIR,
    every_name,
    filler_sentence,
    ioi_vocab,
    sample_heldout_prompts,
)

TOY_MODEL_DIR = DATA_DIR / "toy-ioi"
BOS, PAD, UNK, EOS = "<|bos|>", "<|pad|>", "<|unk|>", "<|eos|>"

#: Architecture of toy-ioi (``transformers.GPT2Config`` fields; the vocabulary is added at build):
#: 6 layers, d_model 128, 8 heads of 16, d_mlp 256, exact-erf GELU, LayerNorm, 96 learned
#: positions, no dropout, an unembedding of its own (not tied to the embedding).
TOY_ARCHITECTURE = dict(
    n_layer=6,
    n_embd=128,
    n_head=8,
    n_inner=256,
    n_positions=96,
    activation_function="gelu",
    layer_norm_epsilon=1e-5,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    tie_word_embeddings=False,
)


def build_tokenizer(words: list[str], directory: Path):
    """Word-level tokenizer (WordLevel; splits on white space and punctuation) with explicit
    bos/pad/unk/eos tokens, saved with ``save_pretrained`` and reloaded from ``directory``.

    The explicit bos token matters: without one TransformerLens silently drops the first word.
    """
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = [BOS, PAD, UNK, EOS]
    vocab = {tok: i for i, tok in enumerate(specials + list(words))}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, pad_token=PAD, unk_token=UNK, eos_token=EOS
    )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    return load_tokenizer(directory)


def load_tokenizer(directory: Path = TOY_MODEL_DIR):
    """Reload the saved word-level tokenizer."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def toy_config(tokenizer, **overrides):
    """The ``GPT2Config`` of toy-ioi for ``tokenizer`` (its special-token ids included);
    ``overrides`` replace any setting, the vocabulary size too (a larger vocabulary keeps the
    tokenizer's ids valid)."""
    from transformers import GPT2Config

    return GPT2Config(
        **{
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **TOY_ARCHITECTURE,
            **overrides,
        }
    )


def build_model(tokenizer, *, seed: int = 0, **overrides):
    """A freshly initialised toy-ioi (a ``GPT2LMHeadModel``) for ``tokenizer``."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    config = toy_config(tokenizer, **overrides)
    config._attn_implementation = "eager"
    return GPT2LMHeadModel(config)


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


def logits_of(model, tokens: Tensor) -> Tensor:
    """Logits of a Hugging Face model (``.logits``) or of a TransformerBridge (a tensor)."""
    out = model(tokens)
    return getattr(out, "logits", out)


@torch.no_grad()
def logit_diffs(model, tokenizer, prompts: list, *, preceding: list[str] | None = None) -> Tensor:
    """IO logit minus S logit at each prompt's last token, optionally after a sentence."""
    texts = [p.text for p in prompts]
    if preceding:
        texts = [f"{pre} {text}" for pre, text in zip(preceding, texts, strict=True)]
    tokens, mask = encode_batch(tokenizer, texts)
    rows = torch.arange(len(prompts))
    logits = logits_of(model, tokens)[rows, mask.sum(1) - 1]
    io = torch.tensor([tokenizer.convert_tokens_to_ids(p.io) for p in prompts])
    s = torch.tensor([tokenizer.convert_tokens_to_ids(p.s) for p in prompts])
    return logits[rows, io] - logits[rows, s]


@torch.no_grad()
def ioi_quality(model, tokenizer, *, n_prompts: int = 400, seed: int = 1234) -> dict:
    """IOI quality on the held-out split (held-out templates and held-out combinations):
    accuracy (IO logit > S logit) and mean logit difference over every name; the same with
    held-out names only (never an IOI name in training); and with a name-free sentence
    before each prompt."""
    rng = random.Random(seed)
    prompts = sample_heldout_prompts(rng, n_prompts, every_name())
    heldout_names = sample_heldout_prompts(rng, n_prompts, ioi_vocab()["heldout_names"])
    preceding = [filler_sentence(rng) for _ in prompts]
    diff = logit_diffs(model, tokenizer, prompts)
    diff_heldout = logit_diffs(model, tokenizer, heldout_names)
    diff_preceded = logit_diffs(model, tokenizer, prompts, preceding=preceding)
    return {
        "accuracy": (diff > 0).float().mean().item(),
        "logit_diff": diff.mean().item(),
        "accuracy_heldout_names": (diff_heldout > 0).float().mean().item(),
        "logit_diff_heldout_names": diff_heldout.mean().item(),
        "accuracy_after_a_sentence": (diff_preceded > 0).float().mean().item(),
        "logit_diff_after_a_sentence": diff_preceded.mean().item(),
    }


def save_model(model, tokenizer, out_dir: Path, record: dict) -> None:
    """Write the checkpoint (``save_pretrained``: config.json, model.safetensors), the
    tokenizer beside it, and ``training.json`` (how it was trained and how well it does)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.float().save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "training.json").write_text(json.dumps(record, indent=2) + "\n")
